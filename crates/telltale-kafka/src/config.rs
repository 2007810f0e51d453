//! The live engine's configuration: the `[kafka]` and `[http]` sections of the configuration
//! file. The engine's `Config` keeps them as TOML; this crate owns their types and checks them
//! with the same rules (unknown fields refused, errors naming the path of the bad field).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};
use telltale_core::time::parse_duration_ms;
use telltale_engine::{Config, ConfigError};

/// `[kafka]`: where `telltale run` reads telemetry and writes anomalies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Consumer group id (default `telltale`).
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Telemetry topics; an entry starting with `^` is a regular expression (librdkafka's).
    pub topics: Vec<String>,
    /// Where anomaly events go, keyed by series id (default `telltale-anomalies`).
    #[serde(default = "default_anomaly_topic")]
    pub anomaly_topic: String,
    /// Where undecodable messages and invalid points go, unchanged, with the reason in headers
    /// (default `telltale-dead-letters`).
    #[serde(default = "default_dlq")]
    pub dead_letter_topic: String,
    /// Most messages taken into one engine batch (default 4096).
    #[serde(default = "default_kafka_batch")]
    pub batch: usize,
    /// How long a batch keeps collecting messages after its first one before it is handed to
    /// the shards (default `2ms`; `0s` hands over whatever librdkafka has queued at once).
    /// Larger batches cost fewer thread hand-offs per message; this bounds the latency added.
    #[serde(default = "default_linger")]
    pub linger: String,
    /// How long a rebalance or a shutdown may wait for in-flight events to be acknowledged
    /// before committing (default `10s`; must be below `session.timeout.ms`).
    #[serde(default = "default_drain")]
    pub drain_timeout: String,
    /// Raw librdkafka properties for both clients (strings), e.g. `"client.id" = "edge-1"`.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
    /// Raw librdkafka properties for the consumer only, e.g. `"session.timeout.ms" = "6000"`.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// Raw librdkafka properties for the producer only, e.g. `"linger.ms" = "1"`.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// Copies of each output topic the engine creates (default: the broker's
    /// `default.replication.factor`).
    #[serde(default)]
    pub replication_factor: Option<u16>,
    /// `[kafka.tls]`: connect over TLS (absent: plaintext).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `[kafka.sasl]`: authenticate with SASL (only over TLS).
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// How anomaly events are written: `json` (default, the event schema) or `cloudevents`
    /// (CloudEvents 1.0, structured JSON mode: the event is the `data` of an envelope whose
    /// `type` is `dev.telltale.anomaly.<state>`).
    #[serde(default)]
    pub event_format: EventFormat,
    /// Re-key the input by series before scoring (default `false`): for producers that do not
    /// key messages by series. A first stage (consumer group `<group_id>-repartition`) decodes
    /// the input topics and forwards each valid line to the repartition topic, on the partition
    /// of its series; the scoring stage consumes that topic. The input's offsets are stored
    /// only once the forwarded lines are acknowledged.
    #[serde(default)]
    pub repartition: bool,
    /// The repartition topic (default `<group_id>-repartition`), created when missing.
    #[serde(default)]
    pub repartition_topic: Option<String>,
    /// Partitions of the repartition topic when the engine creates it (default: as many as the
    /// first input topic has, else 8). An existing topic keeps its own count.
    #[serde(default)]
    pub repartition_partitions: Option<i32>,
    /// Keep each series' state in a changelog topic (default `false`): every
    /// `snapshot_interval`, when partitions are revoked and at shutdown, the series of each owned
    /// input partition are written to the same partition of the changelog topic (compacted,
    /// keyed by series), with the input offset they correspond to; a partition's next owner
    /// restores them before it scores the partition's first message and resumes from that
    /// offset. Offsets are stored only once the snapshot is acknowledged.
    #[serde(default)]
    pub changelog: bool,
    /// The changelog topic (default `<group_id>-changelog`), created compacted with as many
    /// partitions as the first input topic; an existing one must have that many.
    #[serde(default)]
    pub changelog_topic: Option<String>,
    /// How often the series of every owned partition are written to the changelog (default
    /// `1m`).
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: String,
    /// Exactly-once (default `false`): a transactional producer writes the anomaly events, dead
    /// letters and changelog records of every burst consumed since the last transaction, with
    /// the input offsets they correspond to (`send_offsets_to_transaction`), in one
    /// transaction every `transaction_interval`. A reader with `isolation.level =
    /// read_committed` sees each event once, however often an instance crashes; offsets are
    /// committed only through transactions. Not with `repartition = true`.
    #[serde(default)]
    pub exactly_once: bool,
    /// The producer's `transactional.id` with `exactly_once` (default `<group_id>-<random>`,
    /// new at each start). A fixed id, distinct per instance (the host or pod name), lets a
    /// restarted instance abort its crashed predecessor's open transaction at once instead of
    /// after `transaction.timeout.ms` (10 s by default here); two live instances with one id
    /// fence each other.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// How often a transaction commits with `exactly_once` (default `100ms`): the latency a
    /// `read_committed` reader adds, and what a crash re-scores.
    #[serde(default = "default_transaction_interval")]
    pub transaction_interval: String,
}

fn default_snapshot_interval() -> String {
    "1m".into()
}

fn default_transaction_interval() -> String {
    "100ms".into()
}

/// How anomaly events are written to the anomaly topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// The event schema, one JSON object per message.
    #[default]
    Json,
    /// CloudEvents 1.0 in structured JSON mode.
    Cloudevents,
}

/// A password: given in the configuration or, better, named by an environment variable; never
/// printed (its `Debug` form is `***`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Reads a secret given either as `value` or as the environment variable `env`.
fn secret(
    path: &str,
    value: Option<&Secret>,
    env: Option<&str>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, env) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            format!("{path}_env"),
            format!("give `{path}` or `{path}_env`, not both"),
        )),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(var)) => std::env::var(var).map(|v| Some(Secret(v))).map_err(|_| {
            ConfigError::new(
                format!("{path}_env"),
                format!("the environment variable `{var}` is not set"),
            )
        }),
        (None, None) => Ok(None),
    }
}

/// `[kafka.tls]`: TLS to the brokers, verified against a CA; optionally a client certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) the brokers' certificates must chain to (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for brokers that authenticate clients by certificate.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The private key's password, if it has one.
    #[serde(default)]
    pub key_password: Option<Secret>,
    /// The environment variable holding the private key's password.
    #[serde(default)]
    pub key_password_env: Option<String>,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// `PLAIN`: user name and password.
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `[kafka.sasl]`: SASL authentication (over TLS: it sends credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// What every client of one cluster shares: where it is and how to connect. The engine's
/// consumer, producer, admin and metadata clients, `produce`, `tail` and `bench kafka` all get
/// their librdkafka configuration from [`Connection::client_config`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Connection {
    /// Bootstrap servers.
    pub brokers: String,
    /// TLS, if any.
    pub tls: Option<TlsConfig>,
    /// SASL, if any.
    pub sasl: Option<SaslConfig>,
    /// Raw librdkafka properties for every client.
    pub librdkafka: BTreeMap<String, String>,
}

impl Connection {
    /// A plaintext connection to `brokers`.
    pub fn plain(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            ..Self::default()
        }
    }

    /// Checks the TLS and SASL settings: files readable, secrets resolvable, SASL only over TLS.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.tls {
            for (field, file) in [
                ("ca_file", &t.ca_file),
                ("cert_file", &t.cert_file),
                ("key_file", &t.key_file),
            ] {
                if let Some(f) = file
                    && let Err(e) = std::fs::File::open(f)
                {
                    return Err(ConfigError::new(
                        format!("kafka.tls.{field}"),
                        format!("cannot read {}: {e}", f.display()),
                    ));
                }
            }
            if t.cert_file.is_some() != t.key_file.is_some() {
                return Err(ConfigError::new(
                    "kafka.tls.key_file",
                    "a client certificate needs both `cert_file` and `key_file`",
                ));
            }
            secret(
                "kafka.tls.key_password",
                t.key_password.as_ref(),
                t.key_password_env.as_deref(),
            )?;
        }
        if let Some(s) = &self.sasl {
            if self.tls.is_none() {
                return Err(ConfigError::new(
                    "kafka.sasl",
                    "SASL sends credentials: configure [kafka.tls] too",
                ));
            }
            if s.username.is_empty() {
                return Err(ConfigError::new("kafka.sasl.username", "must not be empty"));
            }
            if secret(
                "kafka.sasl.password",
                s.password.as_ref(),
                s.password_env.as_deref(),
            )?
            .is_none()
            {
                return Err(ConfigError::new(
                    "kafka.sasl.password",
                    "give `password` or `password_env`",
                ));
            }
        }
        Ok(())
    }

    /// A librdkafka configuration: `defaults`, the connection's settings, its raw properties,
    /// then `extra` maps in order (later wins).
    pub fn client_config(
        &self,
        defaults: &[(&str, &str)],
        extra: &[&BTreeMap<String, String>],
    ) -> Result<ClientConfig, ConfigError> {
        let mut cfg = ClientConfig::new();
        for (k, v) in defaults {
            cfg.set(*k, *v);
        }
        cfg.set("bootstrap.servers", &self.brokers);
        if let Some(t) = &self.tls {
            cfg.set(
                "security.protocol",
                if self.sasl.is_some() {
                    "sasl_ssl"
                } else {
                    "ssl"
                },
            );
            match &t.ca_file {
                Some(f) => cfg.set("ssl.ca.location", f.display().to_string()),
                // The build's OpenSSL does not know where the system keeps its CAs.
                None => cfg.set("ssl.ca.location", "probe"),
            };
            if let (Some(c), Some(k)) = (&t.cert_file, &t.key_file) {
                cfg.set("ssl.certificate.location", c.display().to_string())
                    .set("ssl.key.location", k.display().to_string());
            }
            if let Some(p) = secret(
                "kafka.tls.key_password",
                t.key_password.as_ref(),
                t.key_password_env.as_deref(),
            )? {
                cfg.set("ssl.key.password", p.0);
            }
        }
        if let Some(s) = &self.sasl {
            cfg.set("sasl.mechanisms", s.mechanism.name())
                .set("sasl.username", &s.username);
            if let Some(p) = secret(
                "kafka.sasl.password",
                s.password.as_ref(),
                s.password_env.as_deref(),
            )? {
                cfg.set("sasl.password", p.0);
            }
        }
        for m in std::iter::once(&&self.librdkafka).chain(extra) {
            for (k, v) in m.iter() {
                cfg.set(k, v);
            }
        }
        Ok(cfg)
    }
}

fn default_group() -> String {
    "telltale".into()
}
fn default_anomaly_topic() -> String {
    "telltale-anomalies".into()
}
fn default_dlq() -> String {
    "telltale-dead-letters".into()
}
fn default_kafka_batch() -> usize {
    4096
}
fn default_linger() -> String {
    "2ms".into()
}
fn default_drain() -> String {
    "10s".into()
}

/// librdkafka properties `telltale run` sets itself because its guarantees depend on them.
pub const KAFKA_RESERVED: &[&str] = &[
    "enable.auto.offset.store",
    "enable.idempotence",
    "transactional.id",
    "group.id",
    "bootstrap.servers",
];

impl KafkaConfig {
    /// Where and how every client connects.
    pub fn connection(&self) -> Connection {
        Connection {
            brokers: self.brokers.clone(),
            tls: self.tls.clone(),
            sasl: self.sasl.clone(),
            librdkafka: self.librdkafka.clone(),
        }
    }

    /// The changelog topic's name.
    pub fn changelog_topic(&self) -> String {
        self.changelog_topic
            .clone()
            .unwrap_or_else(|| format!("{}-changelog", self.group_id))
    }

    /// `transaction_interval` in milliseconds (validated).
    pub fn transaction_interval_ms(&self) -> i64 {
        parse_duration_ms(&self.transaction_interval).unwrap_or(100)
    }

    /// The producer's `transactional.id` with `exactly_once`: the configured one, else
    /// `<group_id>-<random>` (one per process).
    pub fn transactional_id(&self) -> String {
        static RANDOM: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        self.transactional_id.clone().unwrap_or_else(|| {
            let r = RANDOM.get_or_init(|| {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u32(std::process::id());
                h.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                );
                h.finish()
            });
            format!("{}-{r:016x}", self.group_id)
        })
    }

    /// The snapshot interval in milliseconds (validated).
    pub fn snapshot_interval_ms(&self) -> i64 {
        parse_duration_ms(&self.snapshot_interval).unwrap_or(60_000)
    }

    /// The repartition topic's name.
    pub fn repartition_topic(&self) -> String {
        self.repartition_topic
            .clone()
            .unwrap_or_else(|| format!("{}-repartition", self.group_id))
    }

    /// Checks the section; `Ok` carries the drain timeout in milliseconds.
    pub fn validate(&self) -> Result<u64, ConfigError> {
        self.connection().validate()?;
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::new("kafka.brokers", "must not be empty"));
        }
        if self.group_id.is_empty() {
            return Err(ConfigError::new("kafka.group_id", "must not be empty"));
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                "kafka.topics",
                "must list at least one topic (no empty names)",
            ));
        }
        let repartition_topic = self.repartition_topic();
        if self.repartition_partitions.is_some_and(|p| p < 1) {
            return Err(ConfigError::new(
                "kafka.repartition_partitions",
                "must be >= 1",
            ));
        }
        let mut outputs = vec![
            ("anomaly_topic", &self.anomaly_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ];
        if self.repartition {
            outputs.push(("repartition_topic", &repartition_topic));
        }
        let changelog_topic = self.changelog_topic();
        if self.changelog {
            outputs.push(("changelog_topic", &changelog_topic));
        }
        if parse_duration_ms(&self.snapshot_interval).is_none_or(|ms| ms < 1000) {
            return Err(ConfigError::new(
                "kafka.snapshot_interval",
                "expected a duration of at least `1s`, such as `1m`",
            ));
        }
        if self.exactly_once {
            if self.repartition {
                return Err(ConfigError::new(
                    "kafka.exactly_once",
                    "not available with `repartition = true` (the two stages commit apart)",
                ));
            }
            if self.transactional_id.as_deref() == Some("") {
                return Err(ConfigError::new(
                    "kafka.transactional_id",
                    "must not be empty",
                ));
            }
            if parse_duration_ms(&self.transaction_interval).is_none_or(|ms| ms < 1) {
                return Err(ConfigError::new(
                    "kafka.transaction_interval",
                    "expected a duration of at least `1ms`, such as `100ms`",
                ));
            }
        }
        for (field, t) in outputs {
            if t.is_empty() {
                return Err(ConfigError::new(
                    format!("kafka.{field}"),
                    "must not be empty",
                ));
            }
            if self.topics.contains(t) {
                return Err(ConfigError::new(
                    format!("kafka.{field}"),
                    format!("`{t}` is also an input topic: the engine would read its own output"),
                ));
            }
        }
        if self.batch == 0 {
            return Err(ConfigError::new("kafka.batch", "must be >= 1"));
        }
        if parse_duration_ms(&self.linger).is_none_or(|l| !(0..=1000).contains(&l)) {
            return Err(ConfigError::new(
                "kafka.linger",
                "expected a duration from `0s` to `1s`, such as `2ms`",
            ));
        }
        for (table, map) in [
            ("librdkafka", &self.librdkafka),
            ("consumer", &self.consumer),
            ("producer", &self.producer),
        ] {
            if let Some(key) = map.keys().find(|k| KAFKA_RESERVED.contains(&k.as_str())) {
                return Err(ConfigError::new(
                    format!("kafka.{table}.\"{key}\""),
                    "is set by telltale (use the [kafka] fields; offsets are stored only after \
                     events are acknowledged)",
                ));
            }
        }
        let drain = parse_duration_ms(&self.drain_timeout)
            .filter(|d| *d > 0)
            .ok_or_else(|| {
                ConfigError::new("kafka.drain_timeout", "expected a duration such as `10s`")
            })?;
        let session = match (
            self.consumer.get("session.timeout.ms"),
            self.librdkafka.get("session.timeout.ms"),
        ) {
            (None, None) => 45_000,
            (Some(v), _) | (None, Some(v)) => v.parse::<i64>().map_err(|_| {
                ConfigError::new(
                    "kafka.consumer.\"session.timeout.ms\"",
                    "expected milliseconds",
                )
            })?,
        };
        if drain >= session {
            return Err(ConfigError::new(
                "kafka.drain_timeout",
                format!(
                    "{} ms is not below session.timeout.ms ({session} ms): a rebalance would \
                     time out before the drain ends",
                    drain
                ),
            ));
        }
        Ok(drain as u64)
    }
}

/// `[http]`: the live engine's endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on (default `127.0.0.1:9464`; empty disables the endpoint).
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

/// A whole configuration for `telltale run`: the engine's, and the live sections checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveConfig {
    /// Chains, rules, engine and LLM settings.
    pub engine: Config,
    /// `[kafka]`, if present.
    pub kafka: Option<KafkaConfig>,
    /// `[http]` (defaults when absent).
    pub http: HttpConfig,
}

/// Reads a raw section as `T`, naming a bad field as `<section>.<path>`.
fn section<T: serde::de::DeserializeOwned>(
    name: &str,
    table: &toml::Table,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let path = e.path().to_string();
        let path = if path.is_empty() || path == "." {
            name.to_owned()
        } else {
            format!("{name}.{path}")
        };
        ConfigError::new(path, e.into_inner().message().to_owned())
    })
}

impl LiveConfig {
    /// Checks the live sections of `engine` (and its chains, so that nothing fails after
    /// start-up).
    pub fn new(engine: Config) -> Result<Self, ConfigError> {
        engine.plan()?;
        let kafka = engine
            .kafka
            .as_ref()
            .map(|t| section::<KafkaConfig>("kafka", t))
            .transpose()?;
        if let Some(k) = &kafka {
            k.validate()?;
        }
        let http = engine
            .http
            .as_ref()
            .map(|t| section::<HttpConfig>("http", t))
            .transpose()?
            .unwrap_or_default();
        http.validate()?;
        Ok(Self {
            engine,
            kafka,
            http,
        })
    }

    /// Reads, parses and checks a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::new(Config::from_file(path)?).map_err(|mut e| {
            e.message = format!("{} (in {})", e.message, path.display());
            e
        })
    }

    /// Parses and checks TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::new(Config::from_toml(text)?)
    }
}

impl HttpConfig {
    /// Checks the listen address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "http.listen",
                format!("`{}` is not an address such as 127.0.0.1:9464", self.listen),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(extra: &str) -> Result<LiveConfig, ConfigError> {
        LiveConfig::from_toml(&format!(
            "[kafka]\nbrokers = \"127.0.0.1:9092\"\ntopics = [\"telemetry\"]\n{extra}"
        ))
    }

    #[test]
    fn kafka_section_has_sane_defaults() {
        let c = LiveConfig::from_toml("[kafka]\nbrokers = \"b:9092\"\ntopics = [\"t\"]").unwrap();
        let k = c.kafka.as_ref().unwrap();
        assert_eq!(k.group_id, "telltale");
        assert_eq!(k.anomaly_topic, "telltale-anomalies");
        assert_eq!(k.dead_letter_topic, "telltale-dead-letters");
        assert_eq!(k.validate().unwrap(), 10_000);
        assert_eq!(c.http.listen, "127.0.0.1:9464");
    }

    #[test]
    fn drain_timeout_must_be_below_the_session_timeout() {
        let e =
            kafka("drain_timeout = \"10s\"\n[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"")
                .unwrap_err();
        assert_eq!(e.path, "kafka.drain_timeout");
        assert!(e.message.contains("6000"), "{e}");
        assert!(
            kafka("drain_timeout = \"2s\"\n[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"")
                .is_ok()
        );
        let e = kafka("drain_timeout = \"soon\"").unwrap_err();
        assert_eq!(e.path, "kafka.drain_timeout");
    }

    #[test]
    fn kafka_settings_that_guarantees_depend_on_cannot_be_overridden() {
        let e = kafka("[kafka.consumer]\n\"enable.auto.offset.store\" = \"true\"").unwrap_err();
        assert_eq!(e.path, "kafka.consumer.\"enable.auto.offset.store\"");
        let e = kafka("[kafka.producer]\n\"enable.idempotence\" = \"false\"").unwrap_err();
        assert_eq!(e.path, "kafka.producer.\"enable.idempotence\"");
    }

    #[test]
    fn exactly_once_settings_are_checked_and_the_transactional_id_is_stable() {
        let e = kafka("exactly_once = true\nrepartition = true").unwrap_err();
        assert_eq!(e.path, "kafka.exactly_once");
        let e = kafka("exactly_once = true\ntransaction_interval = \"never\"").unwrap_err();
        assert_eq!(e.path, "kafka.transaction_interval");
        let e = kafka("exactly_once = true\ntransactional_id = \"\"").unwrap_err();
        assert_eq!(e.path, "kafka.transactional_id");
        let e = kafka("[kafka.producer]\n\"transactional.id\" = \"x\"").unwrap_err();
        assert_eq!(e.path, "kafka.producer.\"transactional.id\"");
        let c = kafka("exactly_once = true").unwrap();
        let k = c.kafka.as_ref().unwrap();
        assert_eq!(k.transaction_interval_ms(), 100);
        // One random id per process, so a session restarted in it fences its predecessor.
        let id = k.transactional_id();
        assert!(
            id.starts_with("telltale-") && id.len() == "telltale-".len() + 16,
            "{id}"
        );
        assert_eq!(k.transactional_id(), id);
        let c = kafka("exactly_once = true\ntransactional_id = \"edge-1\"").unwrap();
        assert_eq!(c.kafka.unwrap().transactional_id(), "edge-1");
    }

    #[test]
    fn kafka_output_topics_must_differ_from_inputs() {
        let e = kafka("anomaly_topic = \"telemetry\"").unwrap_err();
        assert_eq!(e.path, "kafka.anomaly_topic");
        let e = LiveConfig::from_toml("[kafka]\nbrokers = \"b\"\ntopics = []").unwrap_err();
        assert_eq!(e.path, "kafka.topics");
    }

    #[test]
    fn unknown_kafka_fields_are_named() {
        let e = kafka("brokerz = \"x\"").unwrap_err();
        assert!(e.to_string().contains("brokerz"), "{e}");
        assert_eq!(e.path, "kafka.brokerz", "{e}");
        let e = kafka("[kafka.consumer]\n\"fetch.wait.max.ms\" = 10").unwrap_err();
        assert!(e.path.starts_with("kafka.consumer"), "{e}");
        let e = LiveConfig::from_toml("[http]\nlisten = \"nowhere\"").unwrap_err();
        assert_eq!(e.path, "http.listen");
    }

    #[test]
    fn tls_and_sasl_reach_the_client_configuration_and_secrets_stay_hidden() {
        let ca = std::env::temp_dir().join(format!("telltale-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not checked here").unwrap();
        // A variable name nothing sets.
        let var = format!("TELLTALE_TEST_SASL_PASSWORD_{}", std::process::id());
        let c = |sasl: &str| {
            LiveConfig::from_toml(&format!(
                "[kafka]\nbrokers = \"b:9093\"\ntopics = [\"t\"]\n[kafka.tls]\nca_file = {:?}\n{sasl}",
                ca.display().to_string()
            ))
        };
        let k = c(
            "[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword = \"hunter2\"",
        )
        .unwrap()
        .kafka
        .unwrap();
        assert!(!format!("{k:?}").contains("hunter2"), "{k:?}");
        let cfg = k.connection().client_config(&[], &[]).unwrap();
        assert_eq!(cfg.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cfg.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(cfg.get("sasl.password"), Some("hunter2"));
        assert_eq!(
            cfg.get("ssl.ca.location"),
            Some(ca.display().to_string().as_str())
        );
        let e = c(&format!(
            "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword_env = \"{var}\""
        ))
        .unwrap_err();
        assert_eq!(e.path, "kafka.sasl.password_env", "{e}");
        let e = LiveConfig::from_toml(
            "[kafka]\nbrokers = \"b\"\ntopics = [\"t\"]\n[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"",
        )
        .unwrap_err();
        assert_eq!(e.path, "kafka.sasl", "SASL only over TLS: {e}");
        let e = LiveConfig::from_toml(
            "[kafka]\nbrokers = \"b\"\ntopics = [\"t\"]\n[kafka.tls]\nca_file = \"/no/such/ca.pem\"",
        )
        .unwrap_err();
        assert_eq!(e.path, "kafka.tls.ca_file", "{e}");
        let e = LiveConfig::from_toml(
            "[kafka]\nbrokers = \"b\"\ntopics = [\"t\"]\n[kafka.sasl]\nmechanism = \"GSSAPI\"\nusername = \"u\"",
        )
        .unwrap_err();
        assert!(e.path.starts_with("kafka.sasl"), "{e}");
        let _ = std::fs::remove_file(ca);
    }
}
