//! The producer side: anomaly events keyed by series id, dead letters with their reason in
//! headers, and delivery reports that feed [`Acks`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use telltale_core::event::EventState;
use telltale_core::event::{StreamName, Streams};
use telltale_engine::pipeline::Sink;
use telltale_engine::shard::{Emitted, Rejected, Snapshotted};

use crate::acks::Acks;
use crate::metrics::{Metrics, now_us};

/// Marks a delivery opaque as a dead letter (the rest is the batch number).
const DLQ_BIT: usize = 1 << (usize::BITS - 1);
/// Marks a delivery opaque as a changelog record.
const CHANGELOG_BIT: usize = 1 << (usize::BITS - 2);

/// Producer context: routes delivery reports to [`Acks`] and the counters; librdkafka's logs go
/// to `tracing`.
#[derive(Debug)]
pub struct DeliveryCtx {
    pub(crate) acks: Arc<Acks>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lost: Arc<crate::acks::BrokersLost>,
    /// The repartition stage's producer: what it sends are forwarded lines, not events.
    pub(crate) forwards: bool,
}

impl ClientContext for DeliveryCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_rdkafka("producer", level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.lost.0.store(true, Ordering::Relaxed);
        }
        tracing::warn!(target: "telltale::kafka", "producer: {error}: {reason}");
    }
}

impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let no = (opaque & !DLQ_BIT & !CHANGELOG_BIT) as u64;
        match result {
            Ok(_) => {
                if opaque & CHANGELOG_BIT != 0 {
                    self.metrics.snapshots_out.fetch_add(1, Ordering::Relaxed);
                } else if opaque & DLQ_BIT != 0 {
                    self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
                } else if self.forwards {
                    self.metrics.repartition_out.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.metrics.events_acked.fetch_add(1, Ordering::Relaxed);
                }
                self.acks.acked(no);
            }
            Err((e, _)) => {
                // Never decremented: the batch stays unconfirmed and its offsets uncommitted.
                if self.acks.failure().is_none() {
                    tracing::error!(target: "telltale::kafka", "delivery failed: {e}");
                }
                self.acks.failed(no, e.to_string());
            }
        }
    }
}

/// The engine's producer.
pub type Producer = ThreadedProducer<DeliveryCtx>;

/// Sends `record`, waiting while the producer's queue is full (backpressure, not failure).
pub(crate) fn send_blocking(
    producer: &Producer,
    metrics: &Metrics,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                metrics.queue_full.fetch_add(1, Ordering::Relaxed);
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// A dead letter's headers: why, and where the record came from.
pub(crate) fn dead_letter_headers(
    reason: &str,
    detail: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    fn h<'a>(key: &'a str, value: &'a [u8]) -> Header<'a, &'a [u8]> {
        Header {
            key,
            value: Some(value),
        }
    }
    let partition = partition.to_string();
    let offset = offset.to_string();
    OwnedHeaders::new_with_capacity(5)
        .insert(h("telltale.reason", reason.as_bytes()))
        .insert(h("telltale.detail", detail.as_bytes()))
        .insert(h("telltale.source.topic", topic.as_bytes()))
        .insert(h("telltale.source.partition", partition.as_bytes()))
        .insert(h("telltale.source.offset", offset.as_bytes()))
}

/// Content type of a structured-mode CloudEvent in JSON (the Kafka binding's `content-type`).
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json; charset=UTF-8";

/// Writes `e` into `out` as a CloudEvents 1.0 structured JSON event: `data` is the event,
/// `type` is `dev.telltale.anomaly.<state>`, `subject` the anomaly id, `time` the point's time.
/// `id` is `<anomaly id>-<state>-<point time in ms>`: open, update and resolved of one anomaly
/// are distinct events (consumers treat a repeated source and id as a duplicate), while a
/// re-sent event (at-least-once) keeps its id.
fn cloudevent(e: &Emitted, source: &str, out: &mut Vec<u8>) -> std::io::Result<()> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        id: &'a str,
    }
    let head: Head<'_> = serde_json::from_slice(&e.json).map_err(std::io::Error::other)?;
    let state = match e.state {
        EventState::Open => "open",
        EventState::Update => "update",
        EventState::Resolved => "resolved",
    };
    let envelope = serde_json::json!({
        "specversion": "1.0",
        "id": format!("{}-{state}-{}", head.id, e.timestamp),
        "source": source,
        "type": format!("dev.telltale.anomaly.{state}"),
        "subject": head.id,
        "time": telltale_core::time::format_rfc3339(e.timestamp),
        "datacontenttype": "application/json",
    });
    out.clear();
    serde_json::to_writer(&mut *out, &envelope).map_err(std::io::Error::other)?;
    // The event itself goes in as written (not re-serialised): `…,"data":<event>}`.
    out.pop();
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(&e.json);
    out.push(b'}');
    Ok(())
}

/// The topic and partition of a Kafka input stream.
fn kafka_stream(streams: &Streams, stream: u32) -> Option<(String, i32)> {
    streams.with(stream, |s| match s {
        StreamName::Kafka { topic, partition } => Some((topic.clone(), *partition)),
        StreamName::File(_) => None,
    })
}

/// Opaque for a dead letter of batch `no`.
pub(crate) fn dlq_opaque(no: u64) -> usize {
    no as usize | DLQ_BIT
}

/// Kafka timestamps (ms) of the messages in each batch, for the latency histogram.
pub(crate) type Stamps = (u64, Vec<i64>);

/// The merger's sink in Kafka mode.
pub(crate) struct KafkaSink {
    pub(crate) producer: Arc<Producer>,
    pub(crate) acks: Arc<Acks>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) topic: String,
    pub(crate) dlq: String,
    /// The batch being merged.
    pub(crate) batch: u64,
    pub(crate) stamps: Receiver<Stamps>,
    pub(crate) recycle: Sender<Vec<i64>>,
    pub(crate) waiting: Option<Stamps>,
    pub(crate) key: String,
    /// CloudEvents envelope: its `source`, when `event_format = "cloudevents"`.
    pub(crate) cloudevents: Option<String>,
    pub(crate) envelope: Vec<u8>,
    /// The changelog topic (`changelog = true`), and the stream names that map a snapshot to
    /// its input partition.
    pub(crate) changelog: Option<(String, Arc<Streams>)>,
    /// Input whose outputs were delivered before a restore.
    pub(crate) delivered: Arc<crate::acks::Delivered>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("dlq", &self.dlq)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    fn fail(&self, e: KafkaError) {
        tracing::error!(target: "telltale::kafka", "produce failed, stopping: {e}");
        self.acks.failed(self.batch, e.to_string());
    }
}

impl KafkaSink {
    /// Produces one changelog record (postcard) to `partition`, counted in the current batch.
    fn send_changelog(
        &mut self,
        changelog: &str,
        partition: i32,
        key: &str,
        record: &impl serde::Serialize,
    ) -> std::io::Result<()> {
        let value = postcard::to_allocvec(record).map_err(std::io::Error::other)?;
        self.acks.sent(self.batch);
        let record = BaseRecord::with_opaque_to(changelog, self.batch as usize | CHANGELOG_BIT)
            .partition(partition)
            .key(key.as_bytes())
            .payload(&value[..]);
        if let Err(err) = send_blocking(&self.producer, &self.metrics, record) {
            self.fail(err);
        }
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn event(&mut self, e: &Emitted) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let (stream, offset) = (e.source.stream, e.source.offset as i64);
        if self
            .delivered
            .skip(stream, offset, &self.metrics.already_delivered)
        {
            return Ok(());
        }
        self.key.clear();
        let _ = write!(self.key, "{:016x}", e.id);
        self.acks.sent(self.batch);
        let mut record = BaseRecord::with_opaque_to(&self.topic, self.batch as usize)
            .key(self.key.as_bytes())
            .payload(&e.json[..]);
        if let Some(source) = &self.cloudevents {
            cloudevent(e, source, &mut self.envelope)?;
            record = record.payload(&self.envelope[..]).headers(
                OwnedHeaders::new_with_capacity(1).insert(Header {
                    key: "content-type",
                    value: Some(CLOUDEVENTS_JSON.as_bytes()),
                }),
            );
        }
        if let Err(err) = send_blocking(&self.producer, &self.metrics, record) {
            self.fail(err);
        }
        let state = match e.state {
            EventState::Open => 0,
            EventState::Update => 1,
            EventState::Resolved => 2,
        };
        self.metrics.events_out[state].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn reject(&mut self, r: &Rejected, streams: &Streams) -> std::io::Result<()> {
        // Rejected after routing (a point older than its series' last one): the message was
        // valid JSON, so the dead letter carries the point as the engine read it.
        let (stream, offset) = (r.source.stream, r.source.offset as i64);
        if self
            .delivered
            .skip(stream, offset, &self.metrics.already_delivered)
        {
            return Ok(());
        }
        let (topic, partition) = streams.with(r.source.stream, |s| match s {
            StreamName::Kafka { topic, partition } => (topic.clone(), *partition),
            StreamName::File(f) => (f.clone(), -1),
        });
        let detail = r.reason.to_string();
        let headers = dead_letter_headers(
            r.reason.code(),
            &detail,
            &topic,
            partition,
            r.source.offset as i64,
        );
        self.metrics.reject(&r.reason);
        self.acks.sent(self.batch);
        let record = BaseRecord::with_opaque_to(&self.dlq, dlq_opaque(self.batch))
            .payload(r.record.as_bytes())
            .headers(headers);
        if let Err(err) = send_blocking(&self.producer, &self.metrics, record) {
            self.fail(err);
        }
        Ok(())
    }

    fn snapshot(&mut self, s: &Snapshotted) -> std::io::Result<()> {
        let Some((changelog, streams)) = &self.changelog else {
            return Ok(());
        };
        let Some((topic, partition)) = kafka_stream(streams, s.stream) else {
            return Ok(());
        };
        let record = crate::changelog::SeriesRecord {
            offset: s.offset,
            name: s.key.name.to_string(),
            labels: s
                .key
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: s.state.clone(),
        };
        self.metrics
            .snapshot_bytes
            .fetch_add(s.state.len() as u64, Ordering::Relaxed);
        let key = crate::changelog::series_key(&topic, s.id);
        let changelog = changelog.clone();
        self.send_changelog(&changelog, partition, &key, &record)
    }

    fn snapshot_round(&mut self, stream: u32, offset: i64, series: u64) -> std::io::Result<()> {
        let Some((changelog, streams)) = &self.changelog else {
            return Ok(());
        };
        let Some((topic, partition)) = kafka_stream(streams, stream) else {
            return Ok(());
        };
        let key = crate::changelog::round_key(&topic);
        let changelog = changelog.clone();
        let round = crate::changelog::RoundRecord { offset, series };
        self.send_changelog(&changelog, partition, &key, &round)
    }

    fn batch_done(&mut self, no: u64) -> std::io::Result<()> {
        self.acks.handed(no);
        self.batch = no + 1;
        let now = now_us();
        let mut h = None;
        loop {
            let next = match self.waiting.take() {
                Some(s) => s,
                None => match self.stamps.try_recv() {
                    Ok(s) => s,
                    Err(_) => break,
                },
            };
            if next.0 > no {
                self.waiting = Some(next);
                break;
            }
            let hist = h.get_or_insert_with(|| {
                self.metrics
                    .latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
            });
            let (_, mut v) = next;
            for ts in v.drain(..) {
                let us = (now - ts * 1000).max(1);
                let _ = hist.record(us as u64);
                self.metrics.latency_seconds.observe(us as f64 / 1e6);
            }
            let _ = self.recycle.send(v);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.acks.failure().is_some() {
            // The session is being torn down: what is queued will be consumed again.
            self.producer
                .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            return Ok(());
        }
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(std::io::Error::other)
    }
}
