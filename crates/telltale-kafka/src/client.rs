//! The CLI's Kafka clients: `telltale produce` and `telltale tail`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use telltale_codec::json::{PointBuf, parse_json_line};

use crate::Error;
use crate::config::Connection;

/// Counts delivery reports.
#[derive(Debug, Default)]
struct Count {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::OnceLock<String>,
}

#[derive(Debug, Default)]
struct CountCtx(Arc<Count>);

impl ClientContext for CountCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_rdkafka("produce", level, fac, log_message);
    }
}

impl ProducerContext for CountCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                let _ = self.0.first_error.set(e.to_string());
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// What `produce` did.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    /// Lines sent.
    pub sent: u64,
    /// Lines the broker acknowledged.
    pub acked: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// How far ahead of its rate `produce` may run before it sleeps.
const PACE: Duration = Duration::from_millis(5);

/// Sends every non-blank line of `input` as one message to `topic`, keyed by its series id
/// (16 hex digits, the engine's id; lines that are not points are sent without a key), at most
/// `rate` messages per second if given. Waits for every acknowledgement.
pub fn produce(
    conn: &Connection,
    topic: &str,
    input: &mut dyn BufRead,
    rate: Option<f64>,
    overrides: &BTreeMap<String, String>,
) -> Result<Produced, Error> {
    let count = Arc::new(Count::default());
    let cfg = conn.client_config(
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("client.id", "telltale-produce"),
        ],
        &[overrides],
    )?;
    let producer: ThreadedProducer<CountCtx> = cfg.create_with_context(CountCtx(count.clone()))?;
    let started = Instant::now();
    let mut point = PointBuf::default();
    let mut scratch = Vec::new();
    let mut key = String::new();
    let mut line = String::new();
    let mut sent = 0u64;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        if let Some(rate) = rate {
            // Sleep only once ahead by a few milliseconds: messages then go in small bursts
            // instead of one wake-up of the producer's threads each (which cost ~0.35 ms of
            // CPU per message at 2,000 msg/s).
            let due = Duration::from_secs_f64(sent as f64 / rate);
            let now = started.elapsed();
            if due > now + PACE {
                std::thread::sleep(due - now);
            }
        }
        key.clear();
        if parse_json_line(text, &mut point).is_ok() {
            use std::fmt::Write as _;
            let _ = write!(key, "{:016x}", point.series_id(&mut scratch));
        }
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(text);
        if !key.is_empty() {
            record = record.key(key.as_str());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        sent += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let failed = count.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(Error::Delivery(format!(
            "{failed} of {sent} messages not acknowledged; first error: {}",
            count.first_error.get().map_or("?", String::as_str)
        )));
    }
    Ok(Produced {
        sent,
        acked: count.acked.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

/// How `tail` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFormat {
    /// One line per event: time, state, severity, series, value, expected, score, id.
    Human,
    /// The event JSON as it is on the topic.
    Json,
}

/// Options of `tail`.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Start at the beginning of the topic (else at its end).
    pub from_beginning: bool,
    /// Stop after this many events.
    pub max: Option<u64>,
    /// Stop when no event arrived for this long.
    pub idle_exit: Option<Duration>,
    /// Output format.
    pub format: TailFormat,
}

/// Prints the events of `topic` to `out` (every partition, no consumer group, nothing committed).
/// Returns how many were printed.
pub fn tail(
    conn: &Connection,
    topic: &str,
    opts: &TailOptions,
    overrides: &BTreeMap<String, String>,
    out: &mut dyn Write,
) -> Result<u64, Error> {
    let cfg = conn.client_config(
        &[
            ("group.id", "telltale-tail"),
            ("enable.auto.commit", "false"),
            ("client.id", "telltale-tail"),
        ],
        &[overrides],
    )?;
    let consumer: BaseConsumer = cfg.create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| Error::Kafka(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopic)))?;
    let mut tpl = TopicPartitionList::new();
    let start = if opts.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), start)?;
    }
    consumer.assign(&tpl)?;
    let mut printed = 0u64;
    let mut last = Instant::now();
    while opts.max.is_none_or(|m| printed < m) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                if opts.idle_exit.is_some_and(|d| last.elapsed() >= d) {
                    break;
                }
            }
            Some(Err(e)) => tracing::warn!(target: "telltale::kafka", "tail: {e}"),
            Some(Ok(m)) => {
                last = Instant::now();
                let payload = m.payload().unwrap_or(&[]);
                match opts.format {
                    TailFormat::Json => {
                        out.write_all(payload)?;
                        out.write_all(b"\n")?;
                    }
                    TailFormat::Human => writeln!(out, "{}", human(payload))?,
                }
                out.flush()?;
                printed += 1;
            }
        }
    }
    Ok(printed)
}

/// One event as a line a person reads.
pub fn human(payload: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return String::from_utf8_lossy(payload).into_owned();
    };
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    let labels = v["series"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let num = |k: &str| v[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.4}"));
    format!(
        "{} {:<8} {:<8} {}{{{}}} value={} expected={} score={} chain={} id={}",
        s("timestamp"),
        s("state").to_uppercase(),
        s("severity"),
        v["series"]["name"].as_str().unwrap_or("?"),
        labels,
        num("value"),
        num("expected"),
        num("score"),
        s("chain"),
        s("id"),
    )
}

/// The librdkafka this build links: its version and its `builtin.features` (compression codecs,
/// TLS, SASL), for `telltale --version`.
pub fn librdkafka_description() -> String {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    format!("{version} (features: {features})")
}

/// Reads `partitions` of `topic` (all when `None`) from their beginnings to their ends, handing
/// every message to `visit` in order (per partition): an assigned reader, never a group member;
/// a partition's end is librdkafka's partition-EOF event. Gives up after 60 s.
pub fn read_to_end(
    conn: &Connection,
    topic: &str,
    partitions: Option<&[i32]>,
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), Error> {
    let consumer: BaseConsumer = conn
        // A group id only to satisfy librdkafka: the reader never subscribes or commits.
        .client_config(
            &[
                ("group.id", "telltale-reader"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("fetch.wait.max.ms", "10"),
            ],
            &[],
        )?
        .create()?;
    let all: Vec<i32>;
    let partitions = match partitions {
        Some(p) => p,
        None => {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            all = md
                .topics()
                .iter()
                .filter(|t| t.name() == topic)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            &all
        }
    };
    if partitions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut open = partitions.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while open > 0 {
        if Instant::now() > deadline {
            return Err(Error::Delivery(format!(
                "reading {topic}: {open} partition(s) without an end after 60 s"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => visit(&m),
        }
    }
    Ok(())
}
