//! The anomaly event (one JSON object per event) and where a point came from.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::key::{SERIES_SEED, SeriesKey};
use crate::time::format_rfc3339;

/// The state an anomaly event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// A new anomaly.
    Open,
    /// An open anomaly got worse (warning → critical).
    Update,
    /// The series is behaving again.
    Resolved,
}

/// How bad an anomaly is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Score between `open` and `critical`.
    Warning,
    /// Score at or above `critical`.
    Critical,
}

/// Where an input stream lives: a file, standard input, or a Kafka topic partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamName {
    /// A file (or `-` for standard input); offsets are line numbers from 1.
    File(String),
    /// A Kafka topic partition; offsets are Kafka offsets.
    Kafka {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
}

/// The engine's table of input streams, indexed by [`Source::stream`].
///
/// Replay knows its files up front; a Kafka source appends topic partitions as it first sees
/// them. The lock is taken to append a stream (once per partition) and to render an event's or a
/// reject's source (rare); never per point.
#[derive(Debug, Default)]
pub struct Streams(std::sync::RwLock<Vec<StreamName>>);

impl Streams {
    /// A table holding `names`.
    pub fn new(names: Vec<StreamName>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::RwLock::new(names)))
    }

    /// Appends a stream and returns its index.
    pub fn push(&self, name: StreamName) -> u32 {
        let mut v = self.0.write().unwrap_or_else(|e| e.into_inner());
        v.push(name);
        (v.len() - 1) as u32
    }

    /// Calls `f` with the stream at `index` (a placeholder file name if there is none).
    pub fn with<R>(&self, index: u32, f: impl FnOnce(&StreamName) -> R) -> R {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        match v.get(index as usize) {
            Some(s) => f(s),
            None => f(&StreamName::File(String::from("?"))),
        }
    }
}

/// Position of one input record: index of its stream plus offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Source {
    /// Index into the engine's stream table.
    pub stream: u32,
    /// Line number (files) or offset (Kafka).
    pub offset: u64,
}

/// Serialises a source as `{"file": .., "line": ..}` or `{"topic": .., "partition": .., "offset": ..}`.
#[derive(Debug)]
pub struct SourceJson<'a>(pub &'a StreamName, pub u64);

impl Serialize for SourceJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            StreamName::File(f) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("file", f)?;
                m.serialize_entry("line", &self.1)?;
                m.end()
            }
            StreamName::Kafka { topic, partition } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("topic", topic)?;
                m.serialize_entry("partition", partition)?;
                m.serialize_entry("offset", &self.1)?;
                m.end()
            }
        }
    }
}

/// Deterministic event id: the same series, chain and onset always give the same id, so a
/// replay reproduces ids and consumers can deduplicate. `open`, `update` and `resolved` of one
/// anomaly share it.
pub fn event_id(series_id: u64, chain: &str, onset_ms: i64) -> u64 {
    let mut buf = Vec::with_capacity(24 + chain.len());
    buf.extend_from_slice(&series_id.to_le_bytes());
    buf.extend_from_slice(&(chain.len() as u32).to_le_bytes());
    buf.extend_from_slice(chain.as_bytes());
    buf.extend_from_slice(&onset_ms.to_le_bytes());
    xxh3_64_with_seed(&buf, SERIES_SEED)
}

/// One detector's part in an event.
#[derive(Debug, Serialize)]
pub struct DetectorScore<'a> {
    /// Detector parameters, including its `kind`.
    pub params: &'a RawValue,
    /// Its score for this point.
    pub score: f64,
}

/// An anomaly event as written (JSON, one object per line or message).
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    /// 16 hex digits; see [`event_id`].
    pub id: String,
    /// open | update | resolved.
    pub state: EventState,
    /// Metric name and labels.
    pub series: &'a SeriesKey,
    /// The series id, 16 hex digits.
    pub series_id: String,
    /// The chain (rule) that scored it.
    pub chain: &'a str,
    /// Timestamp of the point that caused this event (RFC 3339, UTC, ms).
    pub timestamp: String,
    /// Timestamp of the anomaly's first high point.
    pub onset: String,
    /// The point's value.
    pub value: f64,
    /// What the chain expected (null while it had no forecast).
    pub expected: Option<f64>,
    /// Combined score in [0, 1].
    pub score: f64,
    /// warning | critical.
    pub severity: Severity,
    /// Per-detector scores and parameters.
    pub detectors: Vec<DetectorScore<'a>>,
    /// Where the point came from.
    pub source: SourceJson<'a>,
}

impl Event<'_> {
    /// Formats timestamps and ids; the rest is borrowed.
    #[allow(clippy::too_many_arguments)]
    pub fn build<'a>(
        state: EventState,
        severity: Severity,
        series: &'a SeriesKey,
        series_id: u64,
        chain: &'a str,
        ts: i64,
        onset: i64,
        value: f64,
        expected: f64,
        score: f64,
        detectors: Vec<DetectorScore<'a>>,
        source: SourceJson<'a>,
    ) -> Event<'a> {
        Event {
            id: format!("{:016x}", event_id(series_id, chain, onset)),
            state,
            series,
            series_id: format!("{series_id:016x}"),
            chain,
            timestamp: format_rfc3339(ts),
            onset: format_rfc3339(onset),
            value,
            expected: expected.is_finite().then_some(expected),
            score,
            severity,
            detectors,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_depends_on_series_chain_and_onset_only() {
        let a = event_id(1, "default", 1000);
        assert_eq!(a, event_id(1, "default", 1000));
        assert_ne!(a, event_id(2, "default", 1000));
        assert_ne!(a, event_id(1, "other", 1000));
        assert_ne!(a, event_id(1, "default", 1001));
    }

    #[test]
    fn serialises_the_documented_schema() {
        let key = SeriesKey::new("lat", &[("model", "m1")]);
        let params =
            RawValue::from_string(r#"{"kind":"ewma","alpha":0.05,"warmup":30}"#.into()).unwrap();
        let stream = StreamName::File("in.jsonl".into());
        let e = Event::build(
            EventState::Open,
            Severity::Critical,
            &key,
            key.id(),
            "default",
            1_700_000_000_000,
            1_700_000_000_000,
            250.0,
            f64::NAN,
            0.9999999,
            vec![DetectorScore {
                params: &params,
                score: 0.9999999,
            }],
            SourceJson(&stream, 7),
        );
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["state"], "open");
        assert_eq!(v["series"]["labels"]["model"], "m1");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["expected"], serde_json::Value::Null);
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["detectors"][0]["params"]["kind"], "ewma");
        assert_eq!(v["source"]["line"], 7);
        assert_eq!(v["id"].as_str().unwrap().len(), 16);
    }
}
