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
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::producer::BaseRecord;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use telltale_codec::decode::{Decoded, Decoder};
use telltale_core::event::{Source, StreamName, Streams};
use telltale_core::reject::RejectReason;
use telltale_engine::front::Front;
use telltale_engine::{Pipeline, Report};

use crate::config::{KafkaConfig, LiveConfig};

use crate::Error;
use crate::acks::{Acks, RING};
use crate::metrics::{Metrics, now_ms};
use crate::sink::{
    DeliveryCtx, KafkaSink, Producer, Stamps, dead_letter_headers, dlq_opaque, send_blocking,
};

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

/// A burst of messages: the last pipeline batch holding its points, and per partition (stream
/// index) the offset of its last message, stored once that batch is confirmed (librdkafka's
/// `rd_kafka_offset_store` then commits that offset + 1, the next one to read).
#[derive(Debug)]
struct Group {
    last_batch: u64,
    offsets: Vec<(u32, i64)>,
    messages: u64,
}

/// Offset bookkeeping shared by the poll loop and the rebalance callback (both run on the
/// consumer thread; the mutex is taken once per burst).
#[derive(Debug, Default)]
struct Tracker {
    confirmed: u64,
    groups: VecDeque<Group>,
    /// Stream index → (topic, partition).
    names: Vec<(String, i32)>,
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
            .is_some_and(|g| g.last_batch < self.confirmed)
        {
            let g = self.groups.pop_front().expect("front exists");
            metrics
                .messages_done
                .fetch_add(g.messages, Ordering::Relaxed);
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
}

impl SourceCtx {
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
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 && part.fetch_state != "none" {
                    lag.push((topic.clone(), *p, part.consumer_lag));
                }
            }
        }
        lag.sort();
        *self.metrics.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
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
            self.metrics.ready.store(false, Ordering::Relaxed);
            let parts = partitions(tpl);
            let started = Instant::now();
            let in_time = self.drain(consumer, Some(&parts));
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
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => {}
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(target: "telltale::kafka", "revoke: commit failed: {e}"),
            }
            let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            let names = std::mem::take(&mut t.names);
            for g in &mut t.groups {
                g.offsets
                    .retain(|(s, _)| !parts.contains(&names[*s as usize]));
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
        self.metrics.assigned.store(owned as i64, Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(
                    target: "telltale::kafka",
                    "assigned {} partition(s); {owned} owned",
                    tpl.count()
                );
                self.metrics.ready.store(true, Ordering::Relaxed);
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
    let mut cfg = k.connection().client_config(
        &[("linger.ms", "5"), ("client.id", "telltale-engine")],
        &[&k.producer],
    )?;
    cfg.set("enable.idempotence", "true");
    Ok(cfg.create_with_context(ctx)?)
}

fn consumer(k: &KafkaConfig, ctx: SourceCtx) -> Result<BaseConsumer<SourceCtx>, Error> {
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
    cfg.set("group.id", &k.group_id)
        .set("enable.auto.offset.store", "false");
    Ok(cfg.create_with_context(ctx)?)
}

/// Decodes one message with the decode layer replay uses and routes its records through the
/// same front end; a message with any bad record goes to the dead-letter topic whole and none
/// of its records are scored.
struct MessageDecoder {
    decoder: Decoder,
    decoded: Decoded,
}

enum Verdict {
    Routed,
    Dead(RejectReason),
}

impl MessageDecoder {
    fn decode(&mut self, payload: Option<&[u8]>, front: &mut Front, source: Source) -> Verdict {
        let Some(bytes) = payload.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) else {
            return Verdict::Dead(RejectReason::EmptyMessage);
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Verdict::Dead(RejectReason::NotUtf8);
        };
        let d = &mut self.decoded;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.decoder.json_line(line, source.offset, d);
        }
        if let Some(reason) = d.first_reject() {
            d.records.clear();
            // The keys announced stay with the front end: the decoder will not announce them
            // again.
            front.take_keys(d);
            return Verdict::Dead(reason);
        }
        front.push(d, source.stream);
        Verdict::Routed
    }
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
pub fn run(
    config: &LiveConfig,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<RunSummary, Error> {
    let mut started = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        let began = Instant::now();
        let result = session(config, shutdown.clone(), metrics.clone(), &mut started);
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

/// One Kafka session: clients, pipeline and models, from the committed offsets on.
fn session(
    config: &LiveConfig,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    started: &mut bool,
) -> Result<RunSummary, Error> {
    let k = config.kafka.as_ref().ok_or(Error::NoKafka)?;
    let drain = Duration::from_millis(k.validate()?);
    let linger = Duration::from_millis(
        telltale_core::time::parse_duration_ms(&k.linger).unwrap_or(2) as u64,
    );
    let plan = config.engine.plan()?;
    // Output topics are created when missing (as many partitions as the first input topic has,
    // else 8); input topics belong to whoever produces them.
    let partitions = input_partitions(k).unwrap_or(8);
    crate::admin::ensure_topics(
        &k.connection(),
        &[
            (&k.anomaly_topic, partitions),
            (&k.dead_letter_topic, partitions),
        ],
        k.replication_factor,
    )?;
    let acks = Arc::new(Acks::default());
    let lost = Arc::new(crate::acks::BrokersLost::default());
    let producer = Arc::new(producer(
        k,
        DeliveryCtx {
            acks: acks.clone(),
            metrics: metrics.clone(),
            lost: lost.clone(),
        },
    )?);
    let consumer = consumer(
        k,
        SourceCtx {
            tracker: Mutex::new(Tracker::default()),
            acks: acks.clone(),
            metrics: metrics.clone(),
            drain,
            lost: lost.clone(),
        },
    )?;
    let topics: Vec<&str> = k.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    *started = true;
    tracing::info!(
        target: "telltale::kafka",
        "consuming {:?} as group `{}` from {}; anomalies to `{}`, dead letters to `{}`",
        k.topics, k.group_id, k.brokers, k.anomaly_topic, k.dead_letter_topic
    );

    let streams = Streams::new(Vec::new());
    let (stamps_tx, stamps_rx): (Sender<Stamps>, Receiver<Stamps>) = unbounded();
    let (recycle_tx, recycle_rx) = unbounded::<Vec<i64>>();
    let window_ms = plan.llm_window_ms;
    let llm = Arc::new(plan.llm.clone());
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
        },
    );

    // (topic → partition → stream index), filled as partitions first deliver.
    let mut index: Vec<(String, Vec<u32>)> = Vec::new();
    let mut front = Front::new(pipe, window_ms);
    let mut dec = MessageDecoder {
        decoder: Decoder::new(llm),
        decoded: Decoded::default(),
    };
    let mut slot_of_stream: Vec<u32> = Vec::new();
    let mut messages = 0u64;
    let mut dead = 0u64;
    let ctx = consumer.context();
    let mut fatal = None;
    let mut stamps: Vec<i64> = Vec::new();

    while !shutdown.load(Ordering::Relaxed) {
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
        {
            let mut t = ctx.tracker.lock().unwrap_or_else(|e| e.into_inner());
            t.store_confirmed(&acks, &consumer, &metrics);
            if front.pipe.open_batch() - t.confirmed >= RING / 2 {
                drop(t);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        let mut offsets: Vec<(u32, i64)> = Vec::new();
        let mut n = 0usize;
        // Records routed (live: points, as a rejected message never reaches the pipeline).
        let routed_before = front.pipe.records();
        let mut burst_end: Option<Instant> = None;
        while n < k.batch {
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
                    // No message to dead-letter (librdkafka moves past what it cannot
                    // deliver): counted, logged and shown on /readyz.
                    metrics.consume_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "telltale::kafka", "consumer: {e}");
                    *metrics
                        .last_consume_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = e.to_string();
                    break;
                }
                Some(Ok(m)) => m,
            };
            if n == 0 {
                burst_end = Some(Instant::now() + linger);
            }
            n += 1;
            let stream = stream_index(&mut index, &streams, ctx, &m);
            let s = stream as usize;
            if slot_of_stream.len() <= s {
                slot_of_stream.resize(s + 1, u32::MAX);
            }
            match slot_of_stream[s] {
                u32::MAX => {
                    slot_of_stream[s] = offsets.len() as u32;
                    offsets.push((stream, m.offset()));
                }
                i => offsets[i as usize].1 = m.offset(),
            }
            if let Some(ts) = m.timestamp().to_millis() {
                stamps.push(ts);
            }
            let source = Source {
                stream,
                offset: m.offset() as u64,
            };
            if let Verdict::Dead(reason) = dec.decode(m.payload(), &mut front, source) {
                dead += 1;
                if let Err(e) = dead_letter(&producer, &acks, &metrics, k, &front.pipe, &m, &reason)
                {
                    fatal = Some(Error::Kafka(e));
                    break;
                }
            }
        }
        if n == 0 {
            continue;
        }
        messages += n as u64;
        metrics.messages_in.fetch_add(n as u64, Ordering::Relaxed);
        let split = front.pipe.split_series();
        if split > 0 && metrics.split_series.swap(split, Ordering::Relaxed) == 0 {
            tracing::warn!(
                target: "telltale::kafka",
                "a series arrives on more than one partition: the input is not keyed by series, \
                 so its points can come out of order and, with several instances, reach two \
                 models (key messages by series; telltale_series_on_several_partitions counts them)"
            );
        }
        metrics
            .points_in
            .fetch_add(front.pipe.records() - routed_before, Ordering::Relaxed);
        for (stream, _) in &offsets {
            slot_of_stream[*stream as usize] = u32::MAX;
        }
        // The burst's timestamps go to the sink before its last batch does, so the sink has them
        // when that batch is done, however fast the shards are.
        let last_batch = front.pipe.open_batch();
        let full = std::mem::replace(&mut stamps, recycle_rx.try_recv().unwrap_or_default());
        let _ = stamps_tx.send((last_batch, full));
        let flushed = front.pipe.flush();
        debug_assert_eq!(flushed, last_batch);
        ctx.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .groups
            .push_back(Group {
                last_batch,
                offsets,
                messages: n as u64,
            });
        if fatal.is_some() {
            break;
        }
    }

    metrics.ready.store(false, Ordering::Relaxed);
    if let Some(e) = fatal.or_else(|| acks.failure().map(|f| Error::Delivery(f.to_owned()))) {
        // Nothing unacknowledged is committed: the pipeline and producer are dropped without
        // a drain (their threads wind down on their own; the producer's queue is purged).
        let e = match e {
            Error::Kafka(k) => Error::Delivery(k.to_string()),
            other => other,
        };
        return Err(e);
    }
    tracing::info!(target: "telltale::kafka", "shutting down: draining in-flight events");
    let started = Instant::now();
    let drained = ctx.drain(&consumer, None);
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(target: "telltale::kafka", "final commit failed: {e}"),
    }
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
        started.elapsed()
    );
    drop(stamps_tx);
    // A window of derived LLM series still open stays unemitted: its requests were read, but a
    // partial mean would be a false point (a restart resumes from the committed offsets).
    let report = front.pipe.finish()?;
    consumer.unsubscribe();
    drop(consumer);
    Ok(RunSummary {
        report,
        messages,
        dead_letters: dead,
    })
}

/// Partitions of the first listed (non-regex) input topic, if it exists.
fn input_partitions(k: &KafkaConfig) -> Option<i32> {
    let topic = k.topics.iter().find(|t| !t.starts_with('^'))?;
    let consumer: BaseConsumer = k.connection().client_config(&[], &[]).ok()?.create().ok()?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let n = md.topics().first()?.partitions().len() as i32;
    (n > 0).then_some(n)
}

/// The stream index of a message's partition, registering it on first sight.
fn stream_index(
    index: &mut Vec<(String, Vec<u32>)>,
    streams: &Streams,
    ctx: &SourceCtx,
    m: &BorrowedMessage<'_>,
) -> u32 {
    let p = m.partition().max(0) as usize;
    let topic = m.topic();
    // A consumer reads a handful of topics: a scan beats hashing the name per message.
    if let Some((_, v)) = index.iter().find(|(t, _)| t == topic)
        && let Some(&s) = v.get(p)
        && s != u32::MAX
    {
        return s;
    }
    let s = streams.push(StreamName::Kafka {
        topic: m.topic().to_owned(),
        partition: m.partition(),
    });
    ctx.tracker
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .names
        .push((m.topic().to_owned(), m.partition()));
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

/// Sends a message, unchanged, to the dead-letter topic with the reason in its headers.
fn dead_letter(
    producer: &Producer,
    acks: &Acks,
    metrics: &Metrics,
    k: &KafkaConfig,
    pipe: &Pipeline,
    m: &BorrowedMessage<'_>,
    reason: &RejectReason,
) -> KafkaResult<()> {
    metrics.reject(reason);
    let (code, detail) = (reason.code(), reason.to_string());
    tracing::debug!(
        target: "telltale::kafka",
        "dead letter {}/{}@{}: {code}: {detail}",
        m.topic(),
        m.partition(),
        m.offset()
    );
    let mut headers = dead_letter_headers(code, &detail, m.topic(), m.partition(), m.offset());
    if let Some(h) = m.headers() {
        for i in 0..h.count() {
            let header = h.get(i);
            headers = headers.insert(header);
        }
    }
    let no = pipe.open_batch();
    acks.sent(no);
    let mut record = BaseRecord::with_opaque_to(&k.dead_letter_topic, dlq_opaque(no))
        .payload(m.payload().unwrap_or(&[]))
        .headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    if let Some(ts) = m.timestamp().to_millis() {
        record = record.timestamp(ts);
    }
    send_blocking(producer, metrics, record).inspect_err(|_| acks.failed(no, "dead letter".into()))
}
