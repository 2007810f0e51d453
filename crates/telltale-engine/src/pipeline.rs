//! The threaded pipeline: the caller's thread parses and routes points (the series table lives
//! here), shard workers score them, and a merger thread writes events and rejects in input
//! order, so the output is byte-identical whatever the shard count.
//!
//! Hand-off uses bounded lock-free channels (crossbeam's array flavour), one per shard in each
//! direction; batch buffers travel back to the router for reuse, so the steady state allocates
//! nothing per point.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use hdrhistogram::Histogram;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::config::Plan;
use crate::shard::{Emitted, Item, Rejected, Shard, ShardBatch, ShardOutput, Snapshotted};
use crate::snapshot::{SeriesState, SnapshotError};
use telltale_codec::json::PointBuf;
use telltale_core::event::EventState;
use telltale_core::event::{Source, SourceJson, Streams};
use telltale_core::key::{IdMap, SeriesKey};
use telltale_core::reject::RejectReason;

/// Batches in flight per shard before the router waits.
const DEPTH: usize = 4;

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Points scored (accepted).
    pub points: u64,
    /// Records read (points + rejects).
    pub records: u64,
    /// Distinct series.
    pub series: u64,
    /// Events by state: open, update, resolved.
    pub events: [u64; 3],
    /// Rejects by reason code.
    pub rejects: BTreeMap<&'static str, u64>,
    /// Bytes of engine state per series with the default chain.
    pub bytes_per_series: usize,
    /// Average heap bytes of a series key (name and labels).
    pub key_bytes_per_series: usize,
    /// Shards used.
    pub shards: usize,
    /// Per-point latency inside the engine, in microseconds: from the moment the first point of
    /// a batch entered the router to the merger holding the verdicts of the whole batch, counted
    /// once per point of the batch (an upper bound for every point but the first).
    pub latency: LatencySummary,
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// Samples (points).
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl LatencySummary {
    /// The percentiles of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

impl Report {
    /// Total rejects.
    pub fn total_rejects(&self) -> u64 {
        self.rejects.values().sum()
    }
    /// Total events.
    pub fn total_events(&self) -> u64 {
        self.events.iter().sum()
    }
}

/// Where the merger hands events and rejects, in input order.
///
/// [`Outputs`] writes JSON lines; the Kafka sink produces them to topics. `batch_done` tells the
/// sink that every event and reject of pipeline batch `no` (see [`Pipeline::flush`]) has been
/// handed to it, which is what at-least-once offset tracking waits for.
pub trait Sink: Send {
    /// One event (`e.json` is its JSON, no newline).
    fn event(&mut self, e: &Emitted) -> io::Result<()>;
    /// One rejected record; `streams` names its source.
    fn reject(&mut self, r: &Rejected, streams: &Streams) -> io::Result<()>;
    /// One series' snapshot ([`Pipeline::snapshot`]); ignored unless the sink keeps them.
    fn snapshot(&mut self, s: &Snapshotted) -> io::Result<()> {
        let _ = s;
        Ok(())
    }
    /// Every snapshot of one [`Pipeline::snapshot`] round has been passed to
    /// [`Sink::snapshot`]: `series` of them, for input stream `stream` at `offset`.
    fn snapshot_round(&mut self, stream: u32, offset: i64, series: u64) -> io::Result<()> {
        let _ = (stream, offset, series);
        Ok(())
    }
    /// Every output of batch `no` has been passed to [`Sink::event`] / [`Sink::reject`].
    fn batch_done(&mut self, no: u64) -> io::Result<()> {
        let _ = no;
        Ok(())
    }
    /// The pipeline is finishing: write out anything buffered.
    fn flush(&mut self) -> io::Result<()>;
}

/// Where the pipeline writes.
pub struct Outputs {
    /// Anomaly events, one JSON object per line.
    pub events: Box<dyn Write + Send>,
    /// Rejected records, one JSON object per line.
    pub rejects: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outputs")
    }
}

/// A running pipeline. Feed it with [`Pipeline::push`] and [`Pipeline::reject`], then call
/// [`Pipeline::finish`].
#[derive(Debug)]
pub struct Pipeline {
    plan: Arc<Plan>,
    to_shards: Vec<Sender<ShardBatch>>,
    recycled: Receiver<Vec<Item>>,
    workers: Vec<JoinHandle<usize>>,
    merger: Option<JoinHandle<io::Result<MergeResult>>>,
    /// Series id → where it lives.
    table: IdMap<Route>,
    /// Series seen in more than one input stream (each counted once).
    split: u64,
    per_shard: Vec<u32>,
    pending: Vec<Vec<Item>>,
    pending_rejects: Vec<Rejected>,
    pending_count: usize,
    /// When the first record of the pending batch arrived.
    batch_started: Option<Instant>,
    clocks: Sender<BatchClock>,
    batch_no: u64,
    seq: u64,
    scratch: Vec<u8>,
    key_bytes: usize,
}

#[derive(Debug)]
struct MergeResult {
    points: u64,
    events: [u64; 3],
    rejects: BTreeMap<&'static str, u64>,
    latency: LatencySummary,
}

/// Where a series lives, and the input stream it first came from.
#[derive(Debug, Clone, Copy)]
struct Route {
    shard: u32,
    slot: u32,
    /// [`SPLIT`] once the series has come from a second stream.
    stream: u32,
}

/// [`Route::stream`] of a series seen in more than one stream.
const SPLIT: u32 = u32::MAX;

/// When a batch's first record entered the router, and how many records it holds.
type BatchClock = (Instant, u64);

impl Sink for Outputs {
    fn event(&mut self, e: &Emitted) -> io::Result<()> {
        self.events.write_all(&e.json)?;
        self.events.write_all(b"\n")
    }

    fn reject(&mut self, r: &Rejected, streams: &Streams) -> io::Result<()> {
        let detail = r.reason.to_string();
        let line = streams.with(r.source.stream, |s| {
            serde_json::json!({
                "source": SourceJson(s, r.source.offset),
                "reason": r.reason.code(),
                "detail": detail,
                "record": r.record,
            })
        });
        serde_json::to_writer(&mut *self.rejects, &line)?;
        self.rejects.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.events.flush()?;
        self.rejects.flush()
    }
}

fn merge(
    from_shards: Vec<Receiver<ShardOutput>>,
    mut sink: Box<dyn Sink>,
    streams: Arc<Streams>,
    clocks: Receiver<BatchClock>,
) -> io::Result<MergeResult> {
    let mut res = MergeResult {
        points: 0,
        events: [0; 3],
        rejects: BTreeMap::new(),
        latency: LatencySummary::default(),
    };
    // 1 µs .. 1 h, 3 significant digits.
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
    let mut events: Vec<Emitted> = Vec::new();
    let mut rejects: Vec<Rejected> = Vec::new();
    let mut snapshots: Vec<Snapshotted> = Vec::new();
    let mut rounds: Vec<(u32, i64)> = Vec::new();
    'batches: for no in 0u64.. {
        for rx in &from_shards {
            let Ok(mut out) = rx.recv() else {
                break 'batches;
            };
            res.points += out.points;
            events.append(&mut out.events);
            rejects.append(&mut out.rejects);
            snapshots.append(&mut out.snapshots);
            rounds.append(&mut out.rounds);
        }
        events.sort_unstable_by_key(|e| e.seq);
        rejects.sort_unstable_by_key(|r| r.seq);
        for e in events.drain(..) {
            sink.event(&e)?;
            res.events[match e.state {
                EventState::Open => 0,
                EventState::Update => 1,
                EventState::Resolved => 2,
            }] += 1;
        }
        for r in rejects.drain(..) {
            *res.rejects.entry(r.reason.code()).or_default() += 1;
            sink.reject(&r, &streams)?;
        }
        // Every shard reports each round; a round ends once, after its series.
        rounds.sort_unstable();
        rounds.dedup();
        snapshots.sort_unstable_by_key(|s| (s.stream, s.offset, s.id));
        for s in &snapshots {
            sink.snapshot(s)?;
        }
        for (stream, offset) in rounds.drain(..) {
            let n = snapshots
                .iter()
                .filter(|s| s.stream == stream && s.offset == offset)
                .count();
            sink.snapshot_round(stream, offset, n as u64)?;
        }
        snapshots.clear();
        sink.batch_done(no)?;
        // The router sends a batch's clock before the batch itself.
        if let Ok((started, n)) = clocks.try_recv()
            && n > 0
        {
            let us = started.elapsed().as_micros().max(1) as u64;
            let _ = latency.record_n(us, n);
        }
    }
    sink.flush()?;
    res.latency = LatencySummary::of(&latency);
    Ok(res)
}

impl Pipeline {
    /// Starts `plan.shards` shard workers and the merger, which hands outputs to `sink`.
    pub fn start(plan: Plan, streams: Arc<Streams>, sink: impl Sink + 'static) -> Self {
        let sink: Box<dyn Sink> = Box::new(sink);
        let plan = Arc::new(plan);
        let n = plan.shards;
        let (recycle_tx, recycled) = unbounded();
        let mut to_shards = Vec::with_capacity(n);
        let mut from_shards = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = bounded::<ShardBatch>(DEPTH);
            let (otx, orx) = bounded::<ShardOutput>(DEPTH);
            let recycle_tx: Sender<Vec<Item>> = recycle_tx.clone();
            let mut shard = Shard::new(&plan, streams.clone());
            let handle = std::thread::Builder::new()
                .name(format!("telltale-shard-{i}"))
                .spawn(move || {
                    for mut batch in rx {
                        let mut out = ShardOutput::default();
                        shard.process(&mut batch, &mut out);
                        if otx.send(out).is_err() {
                            break;
                        }
                        let _ = recycle_tx.send(batch.items);
                    }
                    shard.series()
                })
                .expect("spawn shard thread");
            to_shards.push(tx);
            from_shards.push(orx);
            workers.push(handle);
        }
        let (clocks, clocks_rx) = unbounded();
        let merger = std::thread::Builder::new()
            .name("telltale-merge".into())
            .spawn(move || merge(from_shards, sink, streams, clocks_rx))
            .expect("spawn merger thread");
        let batch = plan.batch;
        Self {
            to_shards,
            recycled,
            workers,
            merger: Some(merger),
            table: IdMap::default(),
            split: 0,
            per_shard: vec![0; n],
            pending: (0..n).map(|_| Vec::with_capacity(batch)).collect(),
            pending_rejects: Vec::new(),
            pending_count: 0,
            batch_started: None,
            clocks,
            batch_no: 0,
            seq: 0,
            scratch: Vec::new(),
            key_bytes: 0,
            plan,
        }
    }

    /// The shard a series id lives on (Lemire's multiply-shift range reduction of its high bits).
    #[inline]
    pub fn shard_of(id: u64, shards: usize) -> usize {
        (((id >> 32) * shards as u64) >> 32) as usize
    }

    /// Routes one parsed point (labels sorted, value finite).
    #[inline]
    pub fn push(&mut self, p: &PointBuf, source: Source) {
        let id = p.series_id(&mut self.scratch);
        self.push_id(id, || p.series_key(), p.timestamp, p.value, source);
    }

    /// Routes a point of the series `id`; `key` is called only when the series is new.
    #[inline]
    pub fn push_id(
        &mut self,
        id: u64,
        key: impl FnOnce() -> SeriesKey,
        ts: i64,
        value: f64,
        source: Source,
    ) {
        let (shard, slot) = match self.table.get_mut(&id) {
            Some(r) => {
                // A series arriving on a second input stream: live, a producer that does not
                // key by series (each partition then holds a part of the series).
                if r.stream != source.stream && r.stream != SPLIT {
                    r.stream = SPLIT;
                    self.split += 1;
                }
                (r.shard, r.slot)
            }
            None => self.register(id, key(), source.stream, None),
        };
        if self.pending_count == 0 {
            self.batch_started = Some(Instant::now());
        }
        self.pending[shard as usize].push(Item::Point {
            slot,
            ts,
            value,
            seq: self.seq,
            source,
        });
        self.seq += 1;
        self.pending_count += 1;
        if self.pending_count >= self.plan.batch {
            self.flush();
        }
    }

    /// Gives the new series `id` its shard and slot, fresh or in a restored `state`.
    #[cold]
    fn register(
        &mut self,
        id: u64,
        key: SeriesKey,
        stream: u32,
        state: Option<Box<SeriesState>>,
    ) -> (u32, u32) {
        let key = Arc::new(key);
        self.key_bytes += key.heap_bytes();
        let chain = self.plan.chain_for(&key) as u32;
        let shard = Self::shard_of(id, self.plan.shards);
        let slot = self.per_shard[shard];
        self.per_shard[shard] += 1;
        self.pending[shard].push(Item::Register {
            key,
            id,
            chain,
            stream,
            state,
        });
        self.table.insert(
            id,
            Route {
                shard: shard as u32,
                slot,
                stream,
            },
        );
        (shard as u32, slot)
    }

    /// Asks every shard to export the series whose input stream is `stream` (the one each first
    /// came from) as of every point pushed so far; the snapshots reach the sink with the batch
    /// this item goes out in, then [`Sink::snapshot_round`] with `offset`.
    pub fn snapshot(&mut self, stream: u32, offset: i64) {
        if self.pending_count == 0 {
            self.batch_started = Some(Instant::now());
        }
        for p in &mut self.pending {
            p.push(Item::Snapshot { stream, offset });
        }
        self.pending_count += 1;
    }

    /// Restores the series `id` (key `key`, from input stream `stream`) from an encoded
    /// snapshot before any of its points: refused (and nothing registered: the series starts
    /// afresh on its first point) when the snapshot is of another build or chain configuration
    /// or unreadable. A series already live here (its partition came back after another
    /// instance had it) takes the snapshot's state.
    pub fn restore(
        &mut self,
        id: u64,
        key: SeriesKey,
        stream: u32,
        bytes: &[u8],
    ) -> Result<(), SnapshotError> {
        let chain = self.plan.chain_for(&key);
        let state = SeriesState::decode(bytes, &self.plan.chains[chain])?;
        if let Some(r) = self.table.get(&id) {
            self.pending[r.shard as usize].push(Item::Reset {
                slot: r.slot,
                state: Box::new(state),
            });
            return Ok(());
        }
        self.register(id, key, stream, Some(Box::new(state)));
        Ok(())
    }

    /// Series seen in more than one input stream so far (live: on more than one partition).
    pub fn split_series(&self) -> u64 {
        self.split
    }

    /// Whether the series `id` is already in the table.
    pub fn knows(&self, id: u64) -> bool {
        self.table.contains_key(&id)
    }

    /// Series routed so far (each has its model on one shard).
    pub fn series(&self) -> usize {
        self.table.len()
    }

    /// Records a record rejected before routing (parse errors), in input order.
    pub fn reject(&mut self, source: Source, reason: RejectReason, record: &str) {
        const MAX_RECORD: usize = 4096;
        let mut end = record.len().min(MAX_RECORD);
        while !record.is_char_boundary(end) {
            end -= 1;
        }
        if self.pending_count == 0 {
            self.batch_started = Some(Instant::now());
        }
        self.pending_rejects.push(Rejected {
            seq: self.seq,
            source,
            reason,
            record: record[..end].to_owned(),
        });
        self.seq += 1;
        self.pending_count += 1;
        if self.pending_count >= self.plan.batch {
            self.flush();
        }
    }

    /// Number of the batch being filled: the next [`Pipeline::flush`] sends it.
    pub fn open_batch(&self) -> u64 {
        self.batch_no
    }

    /// Sends the pending batch to the shards and returns its number (batches are numbered from 0
    /// in the order they are sent; every point pushed so far is in this batch or an earlier one).
    pub fn flush(&mut self) -> u64 {
        let started = self.batch_started.take().unwrap_or_else(Instant::now);
        // Sent before the batch, so the merger finds it when the batch is merged.
        let _ = self.clocks.send((started, self.pending_count as u64));
        for (i, tx) in self.to_shards.iter().enumerate() {
            let fresh = self
                .recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(self.plan.batch));
            let items = std::mem::replace(&mut self.pending[i], fresh);
            let rejects = if i == 0 {
                std::mem::take(&mut self.pending_rejects)
            } else {
                Vec::new()
            };
            // A send only fails if the worker died, which join reports in finish().
            let _ = tx.send(ShardBatch {
                no: self.batch_no,
                items,
                rejects,
            });
        }
        self.batch_no += 1;
        self.pending_count = 0;
        self.batch_no - 1
    }

    /// Records routed so far (points and rejects).
    pub fn records(&self) -> u64 {
        self.seq
    }

    /// Flushes, stops the workers and returns the report.
    pub fn finish(mut self) -> io::Result<Report> {
        if self.pending_count > 0 {
            self.flush();
        }
        self.to_shards.clear();
        let mut series = 0;
        for w in self.workers.drain(..) {
            series += w
                .join()
                .map_err(|_| io::Error::other("a shard worker panicked"))?;
        }
        let merged = self
            .merger
            .take()
            .expect("merger")
            .join()
            .map_err(|_| io::Error::other("the merger panicked"))??;
        let probe = Shard::new(&self.plan, Streams::new(Vec::new()));
        Ok(Report {
            points: merged.points,
            records: self.seq,
            series: series as u64,
            events: merged.events,
            rejects: merged.rejects,
            bytes_per_series: probe.bytes_per_series(0)
                + size_of::<(u64, Route)>()
                + 1
                + size_of::<SeriesKey>()
                + 2 * size_of::<usize>(),
            key_bytes_per_series: self.key_bytes / series.max(1),
            shards: self.plan.shards,
            latency: merged.latency,
        })
    }
}
