//! The reference remediator: it reads telltale's anomaly events and runs, for each anomaly a
//! policy matches, a *ladder* of steps — low-risk first — each followed by a wait for the
//! anomaly's `resolved` event: resolved in time, the incident closes as fixed by that step; not,
//! the next step runs; ladder exhausted, the incident is escalated. A `high`-risk step waits for
//! a human's approval (from the approvals topic), and a timeout escalates or aborts. Every
//! decision goes to an audit topic as JSON, keyed by incident. Event data fills action
//! arguments through a small template language, one argument at a time: it never reaches a
//! shell.
//!
//! - [`policy`]: the configuration (`[remediator]`, `[[policy]]`, `[[policy.step]]`), checked at
//!   start-up with every error naming its field.
//! - [`template`]: `{{series}}`, `{{label.NAME}}`, `{{value}}`, … in argv elements and bodies.
//! - [`machine`]: incidents and their ladders, a pure state machine driven by events, approvals,
//!   action results and the clock (unit-tested without Kafka).
//! - [`run`]: the Kafka loop: anomaly and approval topics in (at-least-once, deduplicated on
//!   event id and state), actions executed, audit records out.

pub mod http;
pub mod machine;
pub mod policy;
pub mod run;
pub mod template;

/// Why the remediator stopped or refused to start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (the path names the field).
    #[error("invalid configuration at `{path}`: {message}")]
    Config {
        /// Dotted path of the bad field.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Kafka refused or failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Reading the configuration failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
