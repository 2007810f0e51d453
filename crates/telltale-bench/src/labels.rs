//! Labelled faults of a recorded stream (`labels.json`) and how a run's events score against
//! them: which faults were caught, how late, and which anomalies were opened outside any fault.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crossbeam_channel::{Receiver, Sender};
use telltale_core::event::{EventState, Severity, Streams};
use telltale_core::key::SeriesKey;
use telltale_core::time::{format_rfc3339, parse_rfc3339};
use telltale_engine::pipeline::Sink;
use telltale_engine::shard::{Emitted, Rejected};

/// A labels file: `{"faults": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsFile {
    /// How the stream was made (free text).
    #[serde(default)]
    pub generator: String,
    /// The injected faults.
    pub faults: Vec<Fault>,
}

/// The series a fault was injected into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesRef {
    /// Metric name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl SeriesRef {
    /// The series key.
    pub fn key(&self) -> SeriesKey {
        let labels: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        SeriesKey::new(&self.name, &labels)
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Identifier.
    pub id: String,
    /// Kind, e.g. `latency_creep`.
    pub kind: String,
    /// Affected series (a fault may touch several; each is listed).
    pub series: Vec<SeriesRef>,
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339).
    pub end: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// How one fault fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultResult {
    /// Fault id.
    pub id: String,
    /// Fault kind.
    pub kind: String,
    /// Whether an anomaly was opened on one of its series within the window.
    pub caught: bool,
    /// Series of the earliest detection.
    pub series: Option<String>,
    /// Delay from fault start to the earliest `open` event, in ms of event time.
    pub delay_ms: Option<i64>,
}

/// The score of a run against a labels file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultReport {
    /// Per fault, in file order.
    pub faults: Vec<FaultResult>,
    /// `open` events that fall in no fault window of their series (false alarms).
    pub unexpected_opens: Vec<(String, String)>,
}

impl FaultReport {
    /// Faults caught.
    pub fn caught(&self) -> usize {
        self.faults.iter().filter(|f| f.caught).count()
    }
}

impl LabelsFile {
    /// Reads a labels file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let me: Self = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a labels file: {e}", path.display()))?;
        for f in &me.faults {
            for t in [&f.start, &f.end] {
                parse_rfc3339(t)
                    .ok_or_else(|| format!("{}: fault {}: bad time `{t}`", path.display(), f.id))?;
            }
        }
        Ok(me)
    }

    /// Scores events against the faults. An `open` counts for a fault when its series is one of
    /// the fault's and its onset lies in `[start, end + grace]`, grace being a quarter of the
    /// fault's duration (the detectors need a few points to notice the end of a ramp).
    pub fn score(&self, events: &[EventSummary]) -> FaultReport {
        let windows: Vec<(SeriesKey, i64, i64)> = self
            .faults
            .iter()
            .flat_map(|f| {
                let (s, e) = (
                    parse_rfc3339(&f.start).expect("checked"),
                    parse_rfc3339(&f.end).expect("checked"),
                );
                let grace = (e - s) / 4;
                f.series.iter().map(move |r| (r.key(), s, e + grace))
            })
            .collect();
        let opens: Vec<&EventSummary> = events
            .iter()
            .filter(|e| e.state == EventState::Open)
            .collect();
        let mut faults = Vec::new();
        for f in &self.faults {
            let (s, e) = (
                parse_rfc3339(&f.start).expect("checked"),
                parse_rfc3339(&f.end).expect("checked"),
            );
            let end = e + (e - s) / 4;
            let keys: Vec<SeriesKey> = f.series.iter().map(SeriesRef::key).collect();
            let first = opens
                .iter()
                .filter(|ev| keys.contains(&ev.series) && (s..=end).contains(&ev.onset))
                .min_by_key(|ev| ev.timestamp);
            faults.push(FaultResult {
                id: f.id.clone(),
                kind: f.kind.clone(),
                caught: first.is_some(),
                series: first.map(|ev| ev.series.to_string()),
                delay_ms: first.map(|ev| ev.timestamp - s),
            });
        }
        let unexpected_opens = opens
            .iter()
            .filter(|ev| {
                !windows
                    .iter()
                    .any(|(k, s, e)| *k == *ev.series && (*s..=*e).contains(&ev.onset))
            })
            .map(|ev| (ev.series.to_string(), format_rfc3339(ev.onset)))
            .collect();
        FaultReport {
            faults,
            unexpected_opens,
        }
    }
}

/// A compact record of an emitted event, kept for reports (fault scoring).
#[derive(Debug, Clone, PartialEq)]
pub struct EventSummary {
    /// Its series.
    pub series: Arc<SeriesKey>,
    /// Its state.
    pub state: EventState,
    /// Its severity.
    pub severity: Severity,
    /// Timestamp of the point.
    pub timestamp: i64,
    /// Onset of the anomaly.
    pub onset: i64,
}

/// A sink that passes everything to `inner` and keeps a summary of every event for
/// [`LabelsFile::score`]: evaluation collects what it needs here, so the live pipeline keeps no
/// per-event history.
#[derive(Debug)]
pub struct Collect<S> {
    inner: S,
    tx: Sender<EventSummary>,
}

impl<S: Sink> Collect<S> {
    /// Wraps `inner`; the receiver yields the summaries once the pipeline has finished.
    pub fn new(inner: S) -> (Self, Receiver<EventSummary>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Self { inner, tx }, rx)
    }
}

impl<S: Sink> Sink for Collect<S> {
    fn event(&mut self, e: &Emitted) -> std::io::Result<()> {
        let _ = self.tx.send(EventSummary {
            series: e.series.clone(),
            state: e.state,
            severity: e.severity,
            timestamp: e.timestamp,
            onset: e.onset,
        });
        self.inner.event(e)
    }
    fn reject(&mut self, r: &Rejected, streams: &Streams) -> std::io::Result<()> {
        self.inner.reject(r, streams)
    }
    fn batch_done(&mut self, no: u64) -> std::io::Result<()> {
        self.inner.batch_done(no)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn caught_missed_and_unexpected() {
        let labels: LabelsFile = serde_json::from_str(
            r#"{"faults": [
              {"id": "a", "kind": "level_shift", "series": [{"name": "m", "labels": {"x": "1"}}],
               "start": "2024-01-01T00:00:00Z", "end": "2024-01-01T01:00:00Z"},
              {"id": "b", "kind": "error_burst", "series": [{"name": "m", "labels": {"x": "2"}}],
               "start": "2024-01-01T00:00:00Z", "end": "2024-01-01T01:00:00Z"}
            ]}"#,
        )
        .unwrap();
        let t0 = parse_rfc3339("2024-01-01T00:00:00Z").unwrap();
        let ev = |x: &str, onset: i64, ts: i64| EventSummary {
            series: Arc::new(SeriesKey::new("m", &[("x", x)])),
            state: EventState::Open,
            severity: Severity::Warning,
            timestamp: t0 + ts,
            onset: t0 + onset,
        };
        let r = labels.score(&[
            ev("1", 60_000, 120_000),
            ev("1", -60_000, -60_000),
            ev("2", 5_000_000, 5_000_000),
        ]);
        assert!(r.faults[0].caught);
        assert_eq!(r.faults[0].delay_ms, Some(120_000));
        assert!(!r.faults[1].caught, "onset after end + grace");
        assert_eq!(r.caught(), 1);
        assert_eq!(r.unexpected_opens.len(), 2);
    }
}
