//! `telltale run`: the live engine between a consumer group and the anomaly topic.
//!
//! One consumer thread polls messages in bursts (up to `kafka.batch`), decodes them with the
//! decode layer replay uses (`telltale_codec::decode`: points and `llm_prediction` records) and
//! routes them through the same front end (`telltale_engine::front`) to the shards; each burst ends with a pipeline
//! flush and becomes a *group* remembering, per partition, the next offset to store. A group's
//! offsets are stored (for librdkafka's auto-commit) only when every batch up to its last one is
//! confirmed by [`Acks`]: handed to the producer by the merger and acknowledged by the broker.
//! Hence at-least-once: a crash loses nothing that was not committed, and a committed offset
//! never runs ahead of an unacknowledged event.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::Producer as _;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use telltale_codec::decode::{Decoded, Decoder};
use telltale_core::event::{StreamName, Streams};
use telltale_engine::front::Front;
use telltale_engine::{Pipeline, Report};

use crate::config::{EventFormat, KafkaConfig, LiveConfig};

use crate::Error;
use crate::acks::Acks;
use crate::burst::Burst;
use crate::ingest::Ingest;
use crate::metrics::{Metrics, now_ms};
use crate::sink::{DeliveryCtx, KafkaSink, Producer, Stamps};
use crate::stage::{Dlq, Repartition, Score, Stage, wait_for_room};

/// What a run did, once it stopped.
#[derive(Debug)]
pub struct RunSummary {
    /// The pipeline's report (points, events, series).
    pub report: Report,
    /// Messages consumed.
    pub messages: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_letters: u64,
}

/// A burst of messages: per partition (stream index) the offset of its last message, stored
/// once the last batch holding the burst's outputs is confirmed (librdkafka's
/// `rd_kafka_offset_store` then commits that offset + 1, the next one to read). The consumer
/// thread records a group as it hands the burst over; the stage thread fills in `last_batch`
/// once it has handled the burst.
#[derive(Debug)]
struct Group {
    seq: u64,
    last_batch: Option<u64>,
    offsets: Vec<(u32, i64)>,
    messages: u64,
}

/// Offset bookkeeping shared by the poll loop, the rebalance callback (both on the consumer
/// thread) and the stage thread (the mutex is taken about twice per burst).
#[derive(Debug, Default)]
struct Tracker {
    confirmed: u64,
    groups: VecDeque<Group>,
    /// Stream index → (topic, partition).
    names: Vec<(String, i32)>,
    stage: Kind,
    /// Number of the next burst (bursts are handled in this order).
    seq: u64,
    /// Per stream: the offset of the last message handed to the stage thread (-1: none).
    last: Vec<i64>,
    /// Per stream: the last offset a snapshot round covered (-1: none).
    snapped: Vec<i64>,
    /// Where bursts go (the stage thread); `None` once the session is ending.
    to_stage: Option<Sender<Burst>>,
    /// `exactly_once`: per stream, the next offset to read of what confirmed groups covered,
    /// waiting for the next transaction (`None`: offsets are stored for auto-commit).
    txn_offsets: Option<Vec<(u32, i64)>>,
    /// `exactly_once`: batches handed over when the last transaction committed.
    txn_handed: u64,
    /// `exactly_once`: messages of the confirmed groups waiting for the next transaction
    /// (counted as done once it commits).
    txn_messages: u64,
}

/// Which stage a session runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Decode, route and score (the engine).
    #[default]
    Score,
    /// Forward each line to the repartition topic by series.
    Repartition,
}

impl Tracker {
    /// Stores the offsets of every confirmed group, oldest first.
    fn store_confirmed<C: ConsumerContext>(
        &mut self,
        acks: &Acks,
        consumer: &BaseConsumer<C>,
        metrics: &Metrics,
    ) {
        acks.advance(&mut self.confirmed);
        while self
            .groups
            .front()
            .is_some_and(|g| g.last_batch.is_some_and(|b| b < self.confirmed))
        {
            let g = self.groups.pop_front().expect("front exists");
            if let Some(pending) = &mut self.txn_offsets {
                self.txn_messages += g.messages;
                for (stream, offset) in g.offsets {
                    match pending.iter_mut().find(|(s, _)| *s == stream) {
                        Some(p) => p.1 = p.1.max(offset + 1),
                        None => pending.push((stream, offset + 1)),
                    }
                    metrics.offsets_stored.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            match self.stage {
                Kind::Score => metrics
                    .messages_done
                    .fetch_add(g.messages, Ordering::Relaxed),
                Kind::Repartition => metrics
                    .repartition_done
                    .fetch_add(g.messages, Ordering::Relaxed),
            };
            for (stream, offset) in g.offsets {
                let (topic, partition) = &self.names[stream as usize];
                match consumer.store_offset(topic, *partition, offset) {
                    Ok(()) => {
                        metrics.offsets_stored.fetch_add(1, Ordering::Relaxed);
                    }
                    // The partition was revoked since: its new owner reprocesses from the last
                    // commit (at-least-once).
                    Err(e) => tracing::debug!(
                        target: "telltale::kafka",
                        "offset {offset} of {topic}/{partition} not stored: {e}"
                    ),
                }
            }
        }
    }

    /// Whether an unconfirmed group holds an offset of one of `parts`.
    fn waits_on(&self, parts: &[(String, i32)]) -> bool {
        self.groups.iter().any(|g| {
            g.offsets
                .iter()
                .any(|(s, _)| parts.contains(&self.names[*s as usize]))
        })
    }
}

/// Consumer context: drains on revocation, tracks the assignment and librdkafka statistics.
#[derive(Debug)]
struct SourceCtx {
    tracker: Mutex<Tracker>,
    acks: Arc<Acks>,
    metrics: Arc<Metrics>,
    drain: Duration,
    lost: Arc<crate::acks::BrokersLost>,
    stage: Kind,
    streams: Arc<Streams>,
    /// The changelog (`changelog = true`, scoring stage): where to read it, its topic.
    changelog: Option<(crate::config::Connection, String)>,
    /// `exactly_once`: the transactional producer.
    txn: Option<TxnProducer>,
    /// Input whose outputs were delivered before a restore (marked here, on assignment).
    delivered: Arc<crate::acks::Delivered>,
}

/// The transactional producer (`exactly_once`).
struct TxnProducer(Arc<Producer>);

impl std::fmt::Debug for TxnProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxnProducer")
    }
}

impl SourceCtx {
    /// The stream index of `(topic, partition)`, registered on first use.
    fn register_stream(&self, topic: &str, partition: i32) -> u32 {
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = t
            .names
            .iter()
            .position(|(n, p)| n == topic && *p == partition)
        {
            return s as u32;
        }
        let s = self.streams.push(StreamName::Kafka {
            topic: topic.to_owned(),
            partition,
        });
        // Stream indexes are shared with streams that are not partitions (HTTP input): the
        // name goes at the stream's own index.
        if t.names.len() <= s as usize {
            t.names.resize(s as usize + 1, (String::new(), -1));
        }
        t.names[s as usize] = (topic.to_owned(), partition);
        s
    }

    /// Asks the stage thread to write a snapshot round of each stream of `parts` (all when
    /// `None`) that has delivered messages since its last round, as of the last one handed
    /// over: a group of its own, so the round's offsets are stored only once its snapshots are
    /// acknowledged. Returns whether a round was asked for.
    fn request_snapshot(&self, parts: Option<&[(String, i32)]>) -> bool {
        if self.changelog.is_none() {
            return false;
        }
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = t.to_stage.clone() else {
            return false;
        };
        let streams: Vec<(u32, i64)> = t
            .last
            .iter()
            .enumerate()
            .filter(|(s, last)| {
                **last > t.snapped.get(*s).copied().unwrap_or(-1)
                    && parts.is_none_or(|p| p.contains(&t.names[*s]))
            })
            .map(|(s, last)| (s as u32, *last))
            .collect();
        if streams.is_empty() {
            return false;
        }
        for &(s, last) in &streams {
            let s = s as usize;
            if t.snapped.len() <= s {
                t.snapped.resize(s + 1, -1);
            }
            t.snapped[s] = last;
        }
        let seq = t.seq;
        t.seq += 1;
        t.groups.push_back(Group {
            seq,
            last_batch: None,
            offsets: streams.clone(),
            messages: 0,
        });
        drop(t);
        let mut burst = Burst::default();
        burst.clear(seq);
        burst.snapshot = streams.iter().map(|(s, last)| (*s, last + 1)).collect();
        tx.send(burst).is_ok()
    }

    /// Restores the series of newly assigned partitions from the changelog (before their first
    /// message: the restore burst goes to the stage thread ahead of any burst holding one) and
    /// moves each partition to the offset its snapshots correspond to.
    fn restore(&self, consumer: &BaseConsumer<Self>, parts: &[(String, i32)]) {
        let Some((conn, changelog)) = &self.changelog else {
            return;
        };
        let Some(tx) = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_stage
            .clone()
        else {
            return;
        };
        // No mark of an earlier ownership survives (one is set below where a round is restored).
        for (topic, partition) in parts {
            let stream = self.register_stream(topic, *partition);
            self.delivered.set(stream, -1);
        }
        let started = Instant::now();
        let read = crate::changelog::read(conn, changelog, parts);
        self.metrics
            .restores
            .fetch_add(parts.len() as u64, Ordering::Relaxed);
        self.metrics
            .restore_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    target: "telltale::kafka",
                    "changelog `{changelog}` unreadable ({e}): the series of the {} assigned \
                     partition(s) start afresh",
                    parts.len()
                );
                return;
            }
        };
        // What the group has committed: input from a round's offset up to there is read again
        // only to bring the restored models up to date; its outputs were delivered.
        let committed = committed_offsets(consumer, parts);
        for (((topic, partition), restored), committed) in parts.iter().zip(read).zip(committed) {
            let Some(restored) = restored else { continue };
            let stream = self.register_stream(topic, *partition);
            let delivered_below = committed.filter(|c| *c > restored.offset).unwrap_or(-1);
            if !self.delivered.set(stream, delivered_below) && delivered_below >= 0 {
                tracing::warn!(
                    target: "telltale::kafka",
                    "{topic}/{partition}: more input streams than the delivered table holds; \
                     the outputs of offsets {}..{delivered_below} will be sent again",
                    restored.offset
                );
            }
            self.metrics
                .restore_ignored
                .fetch_add(restored.stale, Ordering::Relaxed);
            let n = restored.series.len();
            let mut burst = Burst::default();
            {
                let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
                burst.clear(t.seq);
                t.seq += 1;
            }
            burst.restore = restored
                .series
                .into_iter()
                .map(|(id, key, state)| (stream, id, key, state))
                .collect();
            if tx.send(burst).is_err() {
                return;
            }
            match consumer.seek(
                topic,
                *partition,
                rdkafka::Offset::Offset(restored.offset),
                Duration::from_secs(10),
            ) {
                Ok(()) => tracing::info!(
                    target: "telltale::kafka",
                    "restored {n} series of {topic}/{partition} from the changelog in {:?}; \
                     resuming at offset {}{}",
                    started.elapsed(),
                    restored.offset,
                    if delivered_below > restored.offset {
                        format!(" (up to the committed {delivered_below} without sending outputs again)")
                    } else {
                        String::new()
                    }
                ),
                Err(e) => tracing::warn!(
                    target: "telltale::kafka",
                    "restored {n} series of {topic}/{partition}, but could not move to offset \
                     {} ({e}): resuming from the committed offset",
                    restored.offset
                ),
            }
        }
    }

    /// `exactly_once`: waits (up to the drain timeout) until every burst handed over is
    /// confirmed, then commits the open transaction (its events, dead letters and changelog
    /// records) with the input offsets they correspond to, and opens the next one. Nothing to
    /// commit, nothing done.
    fn commit_txn(&self, consumer: &BaseConsumer<Self>) -> Result<(), String> {
        let Some(TxnProducer(producer)) = &self.txn else {
            return Ok(());
        };
        if !self.drain(consumer, None) {
            return Err(self.acks.failure().map_or_else(
                || {
                    format!(
                        "outputs not acknowledged within the drain timeout ({:?})",
                        self.drain
                    )
                },
                str::to_owned,
            ));
        }
        let handed = self.acks.handed_batches();
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let offsets = t
            .txn_offsets
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        if offsets.is_empty() && handed == t.txn_handed {
            return Ok(());
        }
        t.txn_handed = handed;
        let messages = std::mem::take(&mut t.txn_messages);
        let mut tpl = TopicPartitionList::new();
        for (stream, next) in offsets {
            let (topic, partition) = &t.names[stream as usize];
            tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(next))
                .map_err(|e| e.to_string())?;
        }
        drop(t);
        if tpl.count() > 0 {
            let group = consumer
                .group_metadata()
                .ok_or("the consumer has no group metadata")?;
            producer
                .send_offsets_to_transaction(&tpl, &group, self.drain)
                .map_err(|e| format!("sending offsets to the transaction: {e}"))?;
        }
        producer
            .commit_transaction(self.drain)
            .map_err(|e| format!("committing the transaction: {e}"))?;
        self.metrics.txn_commits.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .messages_done
            .fetch_add(messages, Ordering::Relaxed);
        producer
            .begin_transaction()
            .map_err(|e| format!("beginning a transaction: {e}"))
    }

    /// `exactly_once`: aborts the open transaction (best effort: a new session's producer
    /// fences it anyway).
    fn abort_txn(&self) {
        if let Some(TxnProducer(producer)) = &self.txn {
            self.metrics.txn_aborts.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = producer.abort_transaction(self.drain) {
                tracing::warn!(target: "telltale::kafka", "aborting the transaction: {e}");
            }
        }
    }

    /// Waits (up to the drain timeout) until no unconfirmed group holds an offset of `parts`,
    /// storing offsets as groups complete; returns whether it finished in time.
    fn drain(&self, consumer: &BaseConsumer<Self>, parts: Option<&[(String, i32)]>) -> bool {
        let deadline = Instant::now() + self.drain;
        loop {
            let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            t.store_confirmed(&self.acks, consumer, &self.metrics);
            let waiting = match parts {
                Some(p) => t.waits_on(p),
                None => !t.groups.is_empty(),
            };
            drop(t);
            if !waiting {
                return true;
            }
            if self.acks.failure().is_some() || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The group's committed offsets of `parts` (`None` where there is none or it cannot be read).
fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    parts: &[(String, i32)],
) -> Vec<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in parts {
        tpl.add_partition(topic, *partition);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok();
    parts
        .iter()
        .map(
            |(topic, partition)| match got.as_ref()?.find_partition(topic, *partition)?.offset() {
                rdkafka::Offset::Offset(o) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// Logs librdkafka's own log lines through `tracing`.
pub(crate) fn log_rdkafka(client: &str, level: RDKafkaLogLevel, fac: &str, msg: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "telltale::kafka", "{client} librdkafka {fac}: {msg}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "telltale::kafka", "{client} librdkafka {fac}: {msg}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "telltale::kafka", "{client} librdkafka {fac}: {msg}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "telltale::kafka", "{client} librdkafka {fac}: {msg}")
        }
    }
}

impl ClientContext for SourceCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_rdkafka("consumer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.lost.0.store(true, Ordering::Relaxed);
        }
        tracing::warn!(target: "telltale::kafka", "consumer: {error}: {reason}");
    }

    fn stats(&self, s: Statistics) {
        let mut lag = Vec::new();
        let mine: Vec<&String> = s.topics.keys().collect();
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 && part.fetch_state != "none" {
                    lag.push((topic.clone(), *p, part.consumer_lag));
                }
            }
        }
        // Both stages of `repartition = true` report here: each replaces its own topics' lag.
        let mut all = self.metrics.lag.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(t, _, _)| !mine.contains(&t));
        all.extend(lag);
        all.sort();
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ConsumerContext for SourceCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.metrics.rebalances.fetch_add(1, Ordering::Relaxed);
        if let Rebalance::Revoke(tpl) = rebalance {
            if self.stage == Kind::Score {
                self.metrics.ready.store(false, Ordering::Relaxed);
            }
            let parts = partitions(tpl);
            let started = Instant::now();
            // The revoked partitions' series go to the changelog first; the drain below waits
            // for that round like any group, so their snapshots and offsets move together.
            self.request_snapshot(Some(&parts));
            let in_time = if self.txn.is_some() {
                // Exactly-once: everything handed over commits now, with its offsets; a
                // failure ends the session (the next one starts from the committed offsets).
                match self.commit_txn(consumer) {
                    Ok(()) => true,
                    Err(e) => {
                        self.acks.fail(format!("transaction on revoke: {e}"));
                        false
                    }
                }
            } else {
                self.drain(consumer, Some(&parts))
            };
            if let Some(f) = self.acks.failure() {
                tracing::warn!(
                    target: "telltale::kafka",
                    "revoke: not draining, a delivery failed ({f}); unacknowledged messages will \
                     be consumed again"
                );
            } else if !in_time {
                tracing::warn!(
                    target: "telltale::kafka",
                    "revoke: drain timeout ({:?}) passed with events unacknowledged; their \
                     messages will be consumed again by the partitions' next owner",
                    self.drain
                );
            }
            // Exactly-once committed the offsets in its transaction above.
            if self.txn.is_none() {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => {
                        tracing::warn!(target: "telltale::kafka", "revoke: commit failed: {e}")
                    }
                }
            }
            let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            let names = std::mem::take(&mut t.names);
            for g in &mut t.groups {
                g.offsets
                    .retain(|(s, _)| !parts.contains(&names[*s as usize]));
            }
            // No more snapshot rounds of partitions another instance now owns.
            for s in 0..t.last.len() {
                if names.get(s).is_some_and(|n| parts.contains(n)) {
                    t.last[s] = -1;
                    if let Some(snapped) = t.snapped.get_mut(s) {
                        *snapped = -1;
                    }
                }
            }
            t.names = names;
            tracing::info!(
                target: "telltale::kafka",
                "revoked {} partition(s); drained and committed in {:?}",
                parts.len(),
                started.elapsed()
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let owned = consumer.assignment().map_or(0, |a| a.count());
        let stage = match self.stage {
            Kind::Score => "",
            Kind::Repartition => "repartition stage: ",
        };
        match self.stage {
            Kind::Score => self.metrics.assigned.store(owned as i64, Ordering::Relaxed),
            Kind::Repartition => self
                .metrics
                .repartition_assigned
                .store(owned as i64, Ordering::Relaxed),
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(
                    target: "telltale::kafka",
                    "{stage}assigned {} partition(s); {owned} owned",
                    tpl.count()
                );
                self.restore(consumer, &partitions(tpl));
                if self.stage == Kind::Score {
                    self.metrics.ready.store(true, Ordering::Relaxed);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(target: "telltale::kafka", "rebalance error: {e}")
            }
        }
    }
}

/// The engine's producer, configured from `[kafka]`.
fn producer(k: &KafkaConfig, ctx: DeliveryCtx) -> Result<Producer, Error> {
    let mut defaults = vec![("linger.ms", "5"), ("client.id", "telltale-engine")];
    if k.exactly_once {
        // A crashed instance's open transaction holds back `read_committed` readers until
        // the broker aborts it: 10 s rather than librdkafka's minute.
        defaults.push(("transaction.timeout.ms", "10000"));
    }
    let mut cfg = k.connection().client_config(&defaults, &[&k.producer])?;
    cfg.set("enable.idempotence", "true");
    if k.exactly_once {
        cfg.set("transactional.id", k.transactional_id());
    }
    Ok(cfg.create_with_context(ctx)?)
}

fn consumer(
    k: &KafkaConfig,
    group: &str,
    ctx: SourceCtx,
) -> Result<BaseConsumer<SourceCtx>, Error> {
    let mut cfg = k.connection().client_config(
        &[
            ("auto.offset.reset", "earliest"),
            // librdkafka's default (1 s) idles a partition's fetcher for a whole second
            // whenever the local queue is over its threshold; the engine drains in bursts, so
            // it would spend most of its time waiting (210k msg/s instead of 500k+ on the test
            // broker).
            ("fetch.queue.backoff.ms", "10"),
            ("statistics.interval.ms", "5000"),
            ("client.id", "telltale-engine"),
        ],
        &[&k.consumer],
    )?;
    cfg.set("group.id", group)
        .set("enable.auto.offset.store", "false");
    if k.exactly_once {
        // Offsets are committed only inside transactions; input written by transactional
        // producers is read once committed.
        cfg.set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
    }
    Ok(cfg.create_with_context(ctx)?)
}

/// Runs the live engine until `shutdown` is set (then drains, commits and returns).
///
/// When the broker stops acknowledging (a delivery fails after librdkafka's own retries, e.g.
/// `message.timeout.ms`, or the idempotent producer hits a fatal error, as when a broker lost its
/// producer state), or every broker is lost at once, the session is torn down without
/// committing anything unacknowledged and a new one starts from the committed offsets (after
/// 1 s, doubling up to 30 s while sessions keep failing): new producer, new consumer, fresh
/// models. So the engine outlives broker restarts and never skips a message; it may repeat
/// events (at-least-once). Configuration errors, and a first session that cannot start, end the
/// run.
///
/// With `[kafka] repartition = true` a second thread runs the first stage (input topics →
/// repartition topic, by series) the same way, and the engine scores the repartition topic.
pub fn run(
    config: &LiveConfig,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<RunSummary, Error> {
    run_with(config, shutdown, metrics, None)
}

/// [`run`], also scoring the points HTTP requests hand to `ingest` (Prometheus remote write).
pub fn run_with(
    config: &LiveConfig,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    ingest: Option<Arc<Ingest>>,
) -> Result<RunSummary, Error> {
    let k = config.kafka.as_ref().ok_or(Error::NoKafka)?;
    k.validate()?;
    if !k.repartition {
        return run_stage(config, Kind::Score, &shutdown, &metrics, ingest.as_ref());
    }
    let topic = k.repartition_topic();
    let partitions = k
        .repartition_partitions
        .or_else(|| input_partitions(k))
        .unwrap_or(8);
    crate::admin::ensure_topics(
        &k.connection(),
        &[(&topic, partitions)],
        k.replication_factor,
    )?;
    // The scoring stage reads the repartition topic; the first stage stops once the scoring
    // stage has (so a shutdown drains both, first stage last is harmless: what it forwarded
    // after the scoring stage stopped is read on the next start).
    let mut scoring = config.clone();
    if let Some(sk) = scoring.kafka.as_mut() {
        sk.topics = vec![topic];
        sk.repartition = false;
    }
    let first = {
        let (config, shutdown, metrics) = (config.clone(), shutdown.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("telltale-repart".into())
            .spawn(move || {
                let r = run_stage(&config, Kind::Repartition, &shutdown, &metrics, None);
                // A first stage that cannot go on stops the engine.
                shutdown.store(true, Ordering::Relaxed);
                r
            })
            .map_err(Error::Io)?
    };
    let scored = run_stage(&scoring, Kind::Score, &shutdown, &metrics, ingest.as_ref());
    shutdown.store(true, Ordering::Relaxed);
    let forwarded = first
        .join()
        .map_err(|_| Error::Delivery("the repartition stage panicked".into()))?;
    let mut summary = scored?;
    let forwarded = forwarded?;
    summary.messages += forwarded.messages;
    summary.dead_letters += forwarded.dead_letters;
    Ok(summary)
}

fn run_stage(
    config: &LiveConfig,
    stage: Kind,
    shutdown: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
    ingest: Option<&Arc<Ingest>>,
) -> Result<RunSummary, Error> {
    let mut started = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        let began = Instant::now();
        let result = session(
            config,
            stage,
            shutdown.clone(),
            metrics.clone(),
            ingest,
            &mut started,
        );
        if began.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        match result {
            // A session that ran ended on a delivery failure or lost brokers; or a later
            // session could not set up (brokers still away): try again from the committed
            // offsets. A first session that cannot start is a start-up error.
            Err(e @ (Error::Delivery(_) | Error::Kafka(_)))
                if started && !shutdown.load(Ordering::Relaxed) =>
            {
                metrics.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    target: "telltale::kafka",
                    "session ended ({e}); starting a new one from the committed offsets in {backoff:?}"
                );
                let deadline = Instant::now() + backoff;
                while Instant::now() < deadline && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                metrics.fatal.store(true, Ordering::Relaxed);
                return Err(e);
            }
            ok => return ok,
        }
    }
}

/// The input stream name of points that came over HTTP (remote write).
const REMOTE_WRITE: &str = "POST /api/v1/write";

/// What the stage thread hands back when its input ends.
type StageEnd = (Box<dyn Stage>, Result<(), Error>);

/// One Kafka session: clients, stage thread (and, scoring, pipeline and models), from the
/// committed offsets on.
///
/// The consumer thread only polls: it copies each burst of messages into a [`Burst`] (recycled)
/// and hands it to the stage thread, which decodes, routes or forwards, and produces; the
/// consumer thread stores the offsets of bursts whose outputs are acknowledged.
fn session(
    config: &LiveConfig,
    stage_kind: Kind,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    ingest: Option<&Arc<Ingest>>,
    started: &mut bool,
) -> Result<RunSummary, Error> {
    let k = config.kafka.as_ref().ok_or(Error::NoKafka)?;
    let drain = Duration::from_millis(k.validate()?);
    let linger = Duration::from_millis(
        telltale_core::time::parse_duration_ms(&k.linger).unwrap_or(2) as u64,
    );
    let plan = config.engine.plan()?;
    let partitions = input_partitions(k).unwrap_or(8);
    // Output topics are created when missing (as many partitions as the first input topic has,
    // else 8); input topics belong to whoever produces them.
    let outputs: Vec<(&str, i32)> = match stage_kind {
        Kind::Score => vec![
            (&k.anomaly_topic, partitions),
            (&k.dead_letter_topic, partitions),
        ],
        Kind::Repartition => vec![(&k.dead_letter_topic, partitions)],
    };
    crate::admin::ensure_topics(&k.connection(), &outputs, k.replication_factor)?;
    let changelog = (k.changelog && stage_kind == Kind::Score).then(|| k.changelog_topic());
    if let Some(topic) = &changelog {
        crate::admin::ensure_compacted_topic(
            &k.connection(),
            topic,
            partitions,
            k.replication_factor,
        )?;
        let n = topic_partitions(k, topic).unwrap_or(0);
        if n != partitions {
            return Err(Error::Delivery(format!(
                "the changelog topic `{topic}` has {n} partitions, the input {partitions}: a \
                 changelog partition holds the series of the input partition of the same number"
            )));
        }
    }
    let streams = Streams::new(Vec::new());
    let acks = Arc::new(Acks::default());
    let delivered = Arc::new(crate::acks::Delivered::default());
    let lost = Arc::new(crate::acks::BrokersLost::default());
    let producer = Arc::new(producer(
        k,
        DeliveryCtx {
            acks: acks.clone(),
            metrics: metrics.clone(),
            lost: lost.clone(),
            forwards: stage_kind == Kind::Repartition,
        },
    )?);
    let txn = (k.exactly_once && stage_kind == Kind::Score).then(|| TxnProducer(producer.clone()));
    if let Some(TxnProducer(p)) = &txn {
        // Fences any earlier producer with this transactional id (and aborts its open
        // transaction).
        p.init_transactions(Duration::from_secs(30))?;
        p.begin_transaction()?;
    }
    let group = match stage_kind {
        Kind::Score => k.group_id.clone(),
        Kind::Repartition => format!("{}-repartition", k.group_id),
    };
    let consumer = consumer(
        k,
        &group,
        SourceCtx {
            tracker: Mutex::new(Tracker {
                stage: stage_kind,
                txn_offsets: txn.is_some().then(Vec::new),
                ..Tracker::default()
            }),
            acks: acks.clone(),
            metrics: metrics.clone(),
            drain,
            lost: lost.clone(),
            stage: stage_kind,
            streams: streams.clone(),
            changelog: changelog.clone().map(|t| (k.connection(), t)),
            txn,
            delivered: delivered.clone(),
        },
    )?;

    let topics: Vec<&str> = k.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    *started = true;

    let llm = Arc::new(plan.llm.clone());
    let precision = plan.influx_precision;
    let dlq = Dlq {
        producer: producer.clone(),
        acks: acks.clone(),
        metrics: metrics.clone(),
        topic: k.dead_letter_topic.clone(),
        streams: streams.clone(),
        delivered: delivered.clone(),
    };
    let stage: Box<dyn Stage> = match stage_kind {
        Kind::Score => {
            tracing::info!(
                target: "telltale::kafka",
                "consuming {:?} as group `{group}` from {}; anomalies to `{}`, dead letters to `{}`",
                k.topics, k.brokers, k.anomaly_topic, k.dead_letter_topic
            );
            let (stamps_tx, stamps_rx): (Sender<Stamps>, Receiver<Stamps>) = unbounded();
            let (recycle_tx, recycle_rx) = unbounded::<Vec<i64>>();
            let window_ms = plan.llm_window_ms;
            let pipe = Pipeline::start(
                plan,
                streams.clone(),
                KafkaSink {
                    producer: producer.clone(),
                    acks: acks.clone(),
                    metrics: metrics.clone(),
                    topic: k.anomaly_topic.clone(),
                    dlq: k.dead_letter_topic.clone(),
                    batch: 0,
                    stamps: stamps_rx,
                    recycle: recycle_tx,
                    waiting: None,
                    key: String::new(),
                    cloudevents: (k.event_format == EventFormat::Cloudevents)
                        .then(|| format!("/telltale/{}", k.group_id)),
                    envelope: Vec::new(),
                    changelog: changelog.clone().map(|t| (t, streams.clone())),
                    delivered: delivered.clone(),
                },
            );
            let http_stream = streams.push(StreamName::File(REMOTE_WRITE.into()));
            Box::new(Score {
                http_stream,
                front: Front::new(pipe, window_ms),
                decoder: Decoder::new(llm).with_precision(precision),
                decoded: Decoded::default(),
                dlq,
                stamps: stamps_tx,
                recycled: recycle_rx,
                dead: 0,
            })
        }
        Kind::Repartition => {
            let topic = k.repartition_topic();
            let n = topic_partitions(k, &topic).ok_or_else(|| {
                Error::Delivery(format!("the repartition topic `{topic}` has no partitions"))
            })?;
            tracing::info!(
                target: "telltale::kafka",
                "repartition stage: consuming {:?} as group `{group}`; lines to `{topic}` \
                 ({n} partitions) by series, dead letters to `{}`",
                k.topics, k.dead_letter_topic
            );
            Box::new(Repartition::new(
                Decoder::new(llm).with_precision(precision),
                dlq,
                topic,
                n as usize,
            ))
        }
    };

    // Bursts go to the stage thread and come back empty; two in flight keep both threads busy.
    let (burst_tx, burst_rx) = crossbeam_channel::bounded::<Burst>(2);
    let (empty_tx, empty_rx) = unbounded::<Burst>();
    let ctx = consumer.context().clone();
    let worker = {
        let (ctx, acks) = (ctx.clone(), acks.clone());
        let http = ingest
            .filter(|_| stage_kind == Kind::Score)
            .map(|i| i.receiver());
        std::thread::Builder::new()
            .name(match stage_kind {
                Kind::Score => "telltale-route".into(),
                Kind::Repartition => "telltale-forward".into(),
            })
            .spawn(move || -> StageEnd {
                let mut stage = stage;
                let mut confirmed = 0;
                // HTTP input, when there is any, is taken between bursts.
                let http = http.unwrap_or_else(crossbeam_channel::never);
                loop {
                    let mut burst = crossbeam_channel::select! {
                        recv(burst_rx) -> b => match b {
                            Ok(b) => b,
                            Err(_) => break,
                        },
                        recv(http) -> h => {
                            let Ok(h) = h else { continue };
                            if !wait_for_room(&acks, &mut confirmed, stage.open_batch()) {
                                return (stage, Ok(()));
                            }
                            if let Err(e) = stage.http(h) {
                                return (stage, Err(e));
                            }
                            continue;
                        }
                    };
                    if !wait_for_room(&acks, &mut confirmed, stage.open_batch()) {
                        return (stage, Ok(()));
                    }
                    let last = match stage.burst(&mut burst) {
                        Ok(last) => last,
                        Err(e) => return (stage, Err(e)),
                    };
                    {
                        let mut t = ctx.tracker.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(g) = t.groups.iter_mut().find(|g| g.seq == burst.seq) {
                            g.last_batch = Some(last);
                        }
                    }
                    let _ = empty_tx.send(burst);
                }
                (stage, Ok(()))
            })
            .map_err(Error::Io)?
    };

    ctx.tracker
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .to_stage = Some(burst_tx.clone());
    // (topic → partition → stream index), filled as partitions first deliver.
    let mut index: Vec<(String, Vec<u32>)> = Vec::new();
    let mut slot_of_stream: Vec<u32> = Vec::new();
    let mut messages = 0u64;
    let mut fatal = None;
    let mut burst = Burst::default();
    let interval = Duration::from_millis(k.snapshot_interval_ms() as u64);
    let mut next_snapshot = Instant::now() + interval;
    let txn_interval = Duration::from_millis(k.transaction_interval_ms() as u64);
    let mut next_txn = Instant::now() + txn_interval;

    'session: while !shutdown.load(Ordering::Relaxed) {
        metrics.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(f) = acks.failure() {
            fatal = Some(Error::Delivery(f.to_owned()));
            break;
        }
        if lost.0.load(Ordering::Relaxed) {
            // Every broker went away. Whatever comes back may have lost data, groups and the
            // idempotent producer's state (a broker without persistent storage, a rebuilt
            // cluster); a consumer that did not notice could sit at a stale position for good.
            // A new session from the committed offsets is the safe way on.
            fatal = Some(Error::Delivery("lost every broker".into()));
            break;
        }
        ctx.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .store_confirmed(&acks, &consumer, &metrics);
        if changelog.is_some() && Instant::now() >= next_snapshot {
            ctx.request_snapshot(None);
            next_snapshot = Instant::now() + interval;
        }
        if ctx.txn.is_some() && Instant::now() >= next_txn {
            if let Err(e) = ctx.commit_txn(&consumer) {
                fatal = Some(Error::Delivery(format!("transaction: {e}")));
                break;
            }
            next_txn = Instant::now() + txn_interval;
        }
        burst.clear(0);
        let mut offsets: Vec<(u32, i64)> = Vec::new();
        let mut burst_end: Option<Instant> = None;
        while burst.msgs.len() < k.batch {
            // Queued messages are taken without a timeout (and without reading the clock);
            // only an empty queue waits: up to 100 ms for a burst's first message, then until
            // the burst's linger time is up.
            let polled = match consumer.poll(Duration::ZERO) {
                Some(r) => Some(r),
                None => {
                    let wait = match burst_end {
                        None => Duration::from_millis(100),
                        Some(end) => end.saturating_duration_since(Instant::now()),
                    };
                    if wait.is_zero() {
                        None
                    } else {
                        consumer.poll(wait)
                    }
                }
            };
            let m = match polled {
                None => break,
                Some(Err(e)) => {
                    consume_error(&metrics, &e.to_string());
                    break;
                }
                Some(Ok(m)) => m,
            };
            if burst.msgs.is_empty() {
                burst_end = Some(Instant::now() + linger);
            }
            let stream = stream_index(&mut index, &ctx, m.topic(), m.partition());
            note_offset(&mut slot_of_stream, &mut offsets, stream, m.offset());
            burst.push(stream, &m);
        }
        let n = burst.msgs.len() as u64;
        if n == 0 {
            continue;
        }
        for (stream, _) in &offsets {
            slot_of_stream[*stream as usize] = u32::MAX;
        }
        messages += n;
        match stage_kind {
            Kind::Score => metrics.messages_in.fetch_add(n, Ordering::Relaxed),
            Kind::Repartition => metrics.repartition_in.fetch_add(n, Ordering::Relaxed),
        };
        {
            let mut t = ctx.tracker.lock().unwrap_or_else(|e| e.into_inner());
            burst.seq = t.seq;
            t.seq += 1;
            for &(stream, offset) in &offsets {
                let s = stream as usize;
                if t.last.len() <= s {
                    t.last.resize(s + 1, -1);
                }
                t.last[s] = offset;
            }
            t.groups.push_back(Group {
                seq: burst.seq,
                last_batch: None,
                offsets,
                messages: n,
            });
        }
        // Hand the burst over; while the stage thread is busy, keep storing offsets and
        // watching for failures.
        let mut full = std::mem::replace(&mut burst, empty_rx.try_recv().unwrap_or_default());
        loop {
            match burst_tx.send_timeout(full, Duration::from_millis(5)) {
                Ok(()) => break,
                Err(crossbeam_channel::SendTimeoutError::Timeout(b)) => {
                    full = b;
                    metrics.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
                    ctx.tracker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .store_confirmed(&acks, &consumer, &metrics);
                    if acks.failure().is_some() {
                        continue 'session;
                    }
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                    fatal = Some(Error::Delivery("the stage thread stopped".into()));
                    break 'session;
                }
            }
        }
    }

    if stage_kind == Kind::Score {
        metrics.ready.store(false, Ordering::Relaxed);
    }
    // The owned partitions' series go to the changelog (the drain below waits for them), then
    // the stage thread handles what it was given and hands the stage back.
    if fatal.is_none() && acks.failure().is_none() {
        ctx.request_snapshot(None);
    }
    ctx.tracker
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .to_stage = None;
    drop(burst_tx);
    let (stage, ended) = worker
        .join()
        .map_err(|_| Error::Delivery("the stage thread panicked".into()))?;
    let fatal = fatal.or(ended.err());
    if let Some(e) = fatal.or_else(|| acks.failure().map(|f| Error::Delivery(f.to_owned()))) {
        // Nothing unacknowledged is committed: the pipeline and producer are dropped without
        // a drain (their threads wind down on their own; the producer's queue is purged).
        ctx.abort_txn();
        let e = match e {
            Error::Kafka(k) => Error::Delivery(k.to_string()),
            other => other,
        };
        return Err(e);
    }
    tracing::info!(target: "telltale::kafka", "shutting down: draining in-flight events");
    let drain_started = Instant::now();
    let drained = if ctx.txn.is_some() {
        match ctx.commit_txn(&consumer) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(target: "telltale::kafka", "final transaction failed: {e}");
                ctx.abort_txn();
                false
            }
        }
    } else {
        let drained = ctx.drain(&consumer, None);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(target: "telltale::kafka", "final commit failed: {e}"),
        }
        drained
    };
    if !drained {
        tracing::warn!(
            target: "telltale::kafka",
            "drain timeout ({drain:?}) passed with events unacknowledged; their messages will be \
             consumed again"
        );
    }
    tracing::info!(
        target: "telltale::kafka",
        "drained and committed in {:?}",
        drain_started.elapsed()
    );
    let dead = stage.dead_letters();
    let report = stage.finish()?.unwrap_or_default();
    consumer.unsubscribe();
    drop(consumer);
    Ok(RunSummary {
        report,
        messages,
        dead_letters: dead,
    })
}

/// Partitions of `topic`, if it exists.
fn topic_partitions(k: &KafkaConfig, topic: &str) -> Option<i32> {
    let consumer: BaseConsumer = k.connection().client_config(&[], &[]).ok()?.create().ok()?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let n = md.topics().first()?.partitions().len() as i32;
    (n > 0).then_some(n)
}

/// Partitions of the first listed (non-regex) input topic, if it exists.
fn input_partitions(k: &KafkaConfig) -> Option<i32> {
    let topic = k.topics.iter().find(|t| !t.starts_with('^'))?;
    topic_partitions(k, topic)
}

/// The stream index of a message's partition, registering it on first sight.
fn stream_index(
    index: &mut Vec<(String, Vec<u32>)>,
    ctx: &SourceCtx,
    topic: &str,
    partition: i32,
) -> u32 {
    let p = partition.max(0) as usize;
    // A consumer reads a handful of topics: a scan beats hashing the name per message.
    if let Some((_, v)) = index.iter().find(|(t, _)| t == topic)
        && let Some(&s) = v.get(p)
        && s != u32::MAX
    {
        return s;
    }
    let s = ctx.register_stream(topic, partition);
    let i = match index.iter().position(|(t, _)| t == topic) {
        Some(i) => i,
        None => {
            index.push((topic.to_owned(), Vec::new()));
            index.len() - 1
        }
    };
    let v = &mut index[i].1;
    if v.len() <= p {
        v.resize(p + 1, u32::MAX);
    }
    v[p] = s;
    s
}

/// Notes `offset` as the last of `stream` in the burst being read.
fn note_offset(slots: &mut Vec<u32>, offsets: &mut Vec<(u32, i64)>, stream: u32, offset: i64) {
    let s = stream as usize;
    if slots.len() <= s {
        slots.resize(s + 1, u32::MAX);
    }
    match slots[s] {
        u32::MAX => {
            slots[s] = offsets.len() as u32;
            offsets.push((stream, offset));
        }
        i => offsets[i as usize].1 = offset,
    }
}

/// An error librdkafka's consumer reported in place of a message: nothing to dead-letter
/// (librdkafka moves past what it cannot deliver), so it is counted, logged and shown on
/// `/readyz`.
fn consume_error(metrics: &Metrics, e: &str) {
    metrics.consume_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(target: "telltale::kafka", "consumer: {e}");
    *metrics
        .last_consume_error
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = e.to_owned();
}
