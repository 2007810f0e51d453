//! A shard: owns the state of its series (shared-nothing) and turns batches of points into
//! events. One shard runs on one worker thread.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::alert::{EventState, Severity};
use crate::chain::ChainGroup;
use crate::config::Plan;
use crate::snapshot::SeriesState;
use telltale_core::event::{DetectorScore, Event, Source, SourceJson, Streams};
use telltale_core::key::SeriesKey;
use telltale_core::reject::RejectReason;

/// One entry of a batch sent to a shard.
#[derive(Debug, Clone)]
pub enum Item {
    /// A new series: it takes the shard's next slot, fresh or in a snapshot's state.
    Register {
        /// Its key.
        key: Arc<SeriesKey>,
        /// Its id.
        id: u64,
        /// Its chain (index into the plan's chains).
        chain: u32,
        /// The input stream it first came from (whose snapshots hold it).
        stream: u32,
        /// Its restored state (decoded for its chain), if it comes from a snapshot.
        state: Option<Box<SeriesState>>,
    },
    /// A live series' state replaced by a snapshot (its partition came back from another
    /// instance).
    Reset {
        /// Shard slot of the series.
        slot: u32,
        /// Its state (decoded for its chain).
        state: Box<SeriesState>,
    },
    /// Export every series whose stream is `stream` ([`Snapshotted`]), as of every point sent
    /// before this item; `offset` is handed through to the sink.
    Snapshot {
        /// The input stream.
        stream: u32,
        /// What the snapshot corresponds to (live: the next input offset to read).
        offset: i64,
    },
    /// A point of a registered series.
    Point {
        /// Shard slot of the series.
        slot: u32,
        /// Milliseconds since the epoch.
        ts: i64,
        /// Value (finite).
        value: f64,
        /// Global input sequence number: the merge order of outputs.
        seq: u64,
        /// Where it came from.
        source: Source,
    },
}

/// A rejected input record.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Global sequence number.
    pub seq: u64,
    /// Where it came from.
    pub source: Source,
    /// Why.
    pub reason: RejectReason,
    /// The record (its text, or a JSON rendering of the point).
    pub record: String,
}

/// A batch of work for one shard.
#[derive(Debug, Default)]
pub struct ShardBatch {
    /// Batch number (the same for every shard's part of one batch).
    pub no: u64,
    /// Registrations and points, in input order.
    pub items: Vec<Item>,
    /// Records rejected before routing (only ever in shard 0's part).
    pub rejects: Vec<Rejected>,
}

/// An event a shard emitted, rendered to JSON.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// Sequence number of the point that caused it.
    pub seq: u64,
    /// Its series id.
    pub id: u64,
    /// The event as one line of JSON (no newline).
    pub json: Vec<u8>,
    /// Its state.
    pub state: EventState,
    /// Its severity.
    pub severity: Severity,
    /// Its series.
    pub series: Arc<SeriesKey>,
    /// Timestamp of the point.
    pub timestamp: i64,
    /// Onset of the anomaly.
    pub onset: i64,
    /// The input record of the point.
    pub source: Source,
}

/// One series' snapshot, exported by a shard.
#[derive(Debug, Clone)]
pub struct Snapshotted {
    /// The input stream whose snapshots hold it.
    pub stream: u32,
    /// What the snapshot corresponds to (the `offset` of [`Item::Snapshot`]).
    pub offset: i64,
    /// Its id.
    pub id: u64,
    /// Its key.
    pub key: Arc<SeriesKey>,
    /// Its chain's name.
    pub chain: Arc<str>,
    /// Its state, encoded ([`SeriesState::encode`]).
    pub state: Vec<u8>,
}

/// What a shard produced from one batch.
#[derive(Debug, Default)]
pub struct ShardOutput {
    /// Batch number.
    pub no: u64,
    /// Events, in sequence order.
    pub events: Vec<Emitted>,
    /// Rejects, in sequence order.
    pub rejects: Vec<Rejected>,
    /// Points scored.
    pub points: u64,
    /// Series snapshots exported.
    pub snapshots: Vec<Snapshotted>,
    /// Snapshot rounds finished: (stream, offset) of each [`Item::Snapshot`].
    pub rounds: Vec<(u32, i64)>,
}

#[derive(Debug)]
struct SlotInfo {
    group: u32,
    gslot: u32,
    id: u64,
    key: Arc<SeriesKey>,
    stream: u32,
}

/// The state of every series a shard owns.
#[derive(Debug)]
pub struct Shard {
    groups: Vec<ChainGroup>,
    slots: Vec<SlotInfo>,
    streams: Arc<Streams>,
}

impl Shard {
    /// An empty shard for `plan`; `streams` names the sources that `Source::stream` indexes.
    pub fn new(plan: &Plan, streams: Arc<Streams>) -> Self {
        Self {
            groups: plan.chains.iter().map(ChainGroup::new).collect(),
            slots: Vec::new(),
            streams,
        }
    }

    /// Series on this shard.
    pub fn series(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of state per series of chain `chain`, including the shard's slot table entry.
    pub fn bytes_per_series(&self, chain: usize) -> usize {
        self.groups[chain].bytes_per_series() + size_of::<SlotInfo>()
    }

    /// Processes a batch, appending events and rejects to `out`.
    pub fn process(&mut self, batch: &mut ShardBatch, out: &mut ShardOutput) {
        out.no = batch.no;
        out.rejects.append(&mut batch.rejects);
        for item in batch.items.drain(..) {
            match item {
                Item::Register {
                    key,
                    id,
                    chain,
                    stream,
                    state,
                } => {
                    let group = &mut self.groups[chain as usize];
                    // A restored state was decoded for this chain by the router, so it fits; a
                    // cold series otherwise.
                    let gslot = state
                        .and_then(|s| group.add_series_from(&s).ok())
                        .unwrap_or_else(|| group.add_series());
                    self.slots.push(SlotInfo {
                        group: chain,
                        gslot: gslot as u32,
                        id,
                        key,
                        stream,
                    });
                }
                Item::Reset { slot, state } => {
                    let info = &self.slots[slot as usize];
                    let group = &mut self.groups[info.group as usize];
                    // Decoded for this chain by the router: a mismatch leaves the model as it was.
                    let _ = group.restore(info.gslot as usize, &state);
                }
                Item::Snapshot { stream, offset } => {
                    for info in self.slots.iter().filter(|i| i.stream == stream) {
                        let group = &self.groups[info.group as usize];
                        out.snapshots.push(Snapshotted {
                            stream,
                            offset,
                            id: info.id,
                            key: info.key.clone(),
                            chain: group.plan().name.as_str().into(),
                            state: group.export(info.gslot as usize).encode(group.plan()),
                        });
                    }
                    out.rounds.push((stream, offset));
                }
                Item::Point {
                    slot,
                    ts,
                    value,
                    seq,
                    source,
                } => {
                    let info = &self.slots[slot as usize];
                    let group = &mut self.groups[info.group as usize];
                    match group.process(info.gslot as usize, ts, value) {
                        Ok(o) => {
                            out.points += 1;
                            if let Some(tr) = o.transition {
                                let plan = group.plan();
                                let detectors = plan
                                    .params_json
                                    .iter()
                                    .zip(&o.scores[..o.n])
                                    .map(|(p, s)| DetectorScore {
                                        params: &**p as &RawValue,
                                        score: *s,
                                    })
                                    .collect();
                                let json = self.streams.with(source.stream, |stream| {
                                    let event = Event::build(
                                        tr.state,
                                        tr.severity,
                                        &info.key,
                                        info.id,
                                        &plan.name,
                                        ts,
                                        tr.onset,
                                        value,
                                        o.expected,
                                        o.score,
                                        detectors,
                                        SourceJson(stream, source.offset),
                                    );
                                    serde_json::to_vec(&event).expect("event serialises")
                                });
                                out.events.push(Emitted {
                                    seq,
                                    id: info.id,
                                    json,
                                    state: tr.state,
                                    severity: tr.severity,
                                    series: info.key.clone(),
                                    timestamp: ts,
                                    onset: tr.onset,
                                    source,
                                });
                            }
                        }
                        Err(reason) => {
                            let record = serde_json::json!({
                                "metric": &*info.key.name,
                                "labels": serde_json::to_value(&*info.key).expect("key")["labels"],
                                "timestamp": ts,
                                "value": value,
                            })
                            .to_string();
                            out.rejects.push(Rejected {
                                seq,
                                source,
                                reason,
                                record,
                            });
                        }
                    }
                }
            }
        }
        out.rejects.sort_by_key(|r| r.seq);
    }
}
