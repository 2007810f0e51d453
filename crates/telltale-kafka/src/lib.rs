//! Kafka in, anomalies out: the live engine's source and sinks on librdkafka (via `rdkafka`).
//!
//! - [`run::run`]: a consumer group reads telemetry topics, the engine scores every point, anomaly
//!   events go to the anomaly topic keyed by series id (idempotent producer), and messages that
//!   cannot be decoded go to a dead-letter topic unchanged, the reason in their headers. Offsets
//!   are stored only after every event they led to is acknowledged ([`acks`]), so delivery is
//!   at-least-once across crashes, restarts and rebalances.
//! - [`metrics`]: counters, consumer lag and the verdict latency histogram, served as Prometheus
//!   text with `/healthz` and `/readyz`.
//! - [`config`]: the `[kafka]` and `[http]` sections, typed and checked ([`config::LiveConfig`]).
//! - [`client`]: `telltale produce` (recorded telemetry into a topic, keyed by series) and
//!   `telltale tail` (anomaly events out of a topic).

pub mod acks;
pub mod admin;
pub mod bench;
mod burst;
mod changelog;
pub mod client;
pub mod config;
pub mod demo;
pub mod ingest;
pub mod metrics;
pub mod run;
pub mod sink;
mod stage;

pub(crate) use run::log_rdkafka;

/// Why the live engine or a client stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration has no `[kafka]` section.
    #[error(
        "the configuration has no [kafka] section (brokers, topics, ...): `telltale run` needs one"
    )]
    NoKafka,
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] telltale_engine::ConfigError),
    /// librdkafka refused or failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker did not acknowledge an event or a dead letter; offsets after it stay
    /// uncommitted.
    #[error("delivery failed (offsets left uncommitted): {0}")]
    Delivery(String),
    /// Reading input or writing output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
