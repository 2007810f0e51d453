//! `telltale bench kafka`: the live engine against a bare rdkafka consumer on the same broker,
//! in the same run.
//!
//! 1. A fresh topic is filled with `messages` points (`series` series, keyed by series id).
//! 2. Baseline: a bare `BaseConsumer` in a new group reads the topic and only counts.
//! 3. The engine (`run`, the configured chains) reads it in another new group; it is done when
//!    every message is *fully handled* (scored, events acknowledged, offset stored).
//!
//! Rates are taken from the first message to the last, so the group join (seconds on the test
//! broker) is not counted for either side. Then, at half the engine's measured rate, points are
//! produced live for `latency_secs` and the produce→verdict latency is read from the engine's
//! histogram; the bare consumer's produce→receive latency at the same rate is measured beside it.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Connection, HttpConfig, KafkaConfig, LiveConfig};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use telltale_engine::Config;
use telltale_engine::pipeline::LatencySummary;

use crate::Error;
use crate::client::produce;
use crate::metrics::{Metrics, now_us};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The cluster.
    pub conn: Connection,
    /// Messages in the pre-filled topic.
    pub messages: usize,
    /// Series they belong to.
    pub series: usize,
    /// Partitions of the bench topics.
    pub partitions: i32,
    /// Seconds of live traffic for the latency phase (0 skips it).
    pub latency_secs: f64,
    /// Alternating bare/engine reads of the filled topic (the best of each is reported).
    pub rounds: usize,
    /// Run the engine with `[kafka] exactly_once = true` (a message is handled once its
    /// transaction commits).
    pub exactly_once: bool,
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Messages produced to fill the topic, and the rate.
    pub fill_rate: f64,
    /// Bare consumer: messages per second.
    pub bare_rate: f64,
    /// Engine: messages per second (fully handled).
    pub engine_rate: f64,
    /// Events the engine produced while reading the topic.
    pub engine_events: u64,
    /// Live rate of the latency phase (messages per second).
    pub latency_rate: f64,
    /// Engine produce→verdict latency percentiles.
    pub engine_latency: LatencySummary,
    /// Bare consumer produce→receive latency percentiles.
    pub bare_latency: LatencySummary,
}

/// Consumer settings both sides get: quick group joins on the test broker, short fetch waits,
/// and the engine's fetch-queue backoff (so the bare consumer is tuned like the engine).
fn consumer_overrides() -> [(&'static str, &'static str); 4] {
    [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
        ("fetch.wait.max.ms", "10"),
        ("fetch.queue.backoff.ms", "10"),
    ]
}

fn lines(series: usize, count: usize, t0: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * 100);
    for k in 0..count {
        let (i, j) = (k % series, k / series);
        let noise = ((i * 7919 + j * 104_729) % 1000) as f64 / 100.0;
        out.extend_from_slice(
            format!(
                "{{\"metric\":\"bench_latency_ms\",\"labels\":{{\"series\":\"s{i}\"}},\"timestamp\":{},\"value\":{}}}\n",
                t0 + j as i64 * 1000,
                100.0 + noise
            )
            .as_bytes(),
        );
    }
    out
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), now_us())
}

fn bare_consumer(conn: &Connection, topic: &str) -> Result<BaseConsumer, Error> {
    let mut cfg = conn.client_config(
        &[
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
        ],
        &[],
    )?;
    cfg.set("group.id", unique("telltale-bench-bare"));
    for (k, v) in consumer_overrides() {
        cfg.set(k, v);
    }
    let c: BaseConsumer = cfg.create()?;
    c.subscribe(&[topic])?;
    Ok(c)
}

/// Reads `n` messages with a bare consumer; returns the rate from the first to the last.
fn bare_rate(conn: &Connection, topic: &str, n: usize) -> Result<f64, Error> {
    let c = bare_consumer(conn, topic)?;
    let mut count = 0usize;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while count < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            count += 1;
            std::hint::black_box(m.payload());
        }
    }
    let secs = first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
    Ok(count as f64 / secs)
}

/// A running engine on `topic`, stopped (drained) on drop.
struct Engine {
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<crate::run::RunSummary, Error>>>,
}

impl Engine {
    fn start(base: &Config, conn: &Connection, topic: &str, exactly_once: bool) -> Self {
        let mut k = KafkaConfig {
            brokers: conn.brokers.clone(),
            group_id: unique("telltale-bench-engine"),
            topics: vec![topic.to_owned()],
            anomaly_topic: format!("{topic}-anomalies"),
            dead_letter_topic: format!("{topic}-dead-letters"),
            batch: 4096,
            linger: "2ms".into(),
            drain_timeout: "4s".into(),
            librdkafka: conn.librdkafka.clone(),
            consumer: Default::default(),
            producer: Default::default(),
            replication_factor: None,
            tls: conn.tls.clone(),
            sasl: conn.sasl.clone(),
            event_format: Default::default(),
            repartition: false,
            repartition_topic: None,
            repartition_partitions: None,
            changelog: false,
            changelog_topic: None,
            snapshot_interval: "1m".into(),
            exactly_once,
            transactional_id: None,
            transaction_interval: "100ms".into(),
        };
        for (key, v) in consumer_overrides() {
            k.consumer.insert(key.into(), v.into());
        }
        let config = LiveConfig {
            engine: base.clone(),
            kafka: Some(k),
            http: HttpConfig::default(),
        };
        let metrics = Arc::new(Metrics::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let thread = {
            let (m, s) = (metrics.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name("telltale-consume".into())
                .spawn(move || crate::run::run(&config, s, m))
                .expect("spawn engine thread")
        };
        Self {
            metrics,
            shutdown,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> Result<crate::run::RunSummary, Error> {
        self.shutdown.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .map_err(|_| Error::Delivery("the engine thread panicked".into()))?
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// Reads all `n` messages of `topic` with a new engine (new group); returns the rate from its
/// first message to the last fully handled one, and the events it produced.
fn engine_read(
    config: &Config,
    b: &Connection,
    topic: &str,
    n: u64,
    exactly_once: bool,
) -> Result<(f64, u64), Error> {
    let mut engine = Engine::start(config, b, topic, exactly_once);
    let (mut first, mut last) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if first.is_none() && engine.metrics.messages_in.load(Ordering::Relaxed) > 0 {
            first = Some(Instant::now());
        }
        if engine.metrics.messages_done.load(Ordering::Relaxed) >= n {
            last = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let summary = engine.stop()?;
    match (first, last) {
        (Some(f), Some(l)) => Ok((
            n as f64 / (l - f).as_secs_f64(),
            summary.report.total_events(),
        )),
        _ => Err(Error::Delivery(format!(
            "the engine handled {} of {n} messages in 300 s",
            summary.messages
        ))),
    }
}

/// Runs the whole benchmark; `config` supplies the chains (its `[kafka]` section is ignored).
pub fn bench(opts: &BenchOptions, config: &Config) -> Result<BenchResult, Error> {
    let b = &opts.conn;
    let t0 = 1_700_000_000_000;
    let topic = unique("telltale-bench");
    crate::admin::ensure_topics(b, &[(&topic, opts.partitions)], None)?;
    let data = lines(opts.series, opts.messages, t0);
    let filled = produce(
        b,
        &topic,
        &mut Cursor::new(&data[..]),
        None,
        &Default::default(),
    )?;
    let fill_rate = filled.sent as f64 / filled.elapsed.as_secs_f64();
    eprintln!(
        "filled {topic}: {} messages at {fill_rate:.0} msg/s",
        filled.sent
    );

    // The first read of a freshly filled topic runs at a different speed on the test broker
    // than later ones (whoever comes first gets it), so one untimed warm-up read comes first,
    // then bare and engine alternate; the best of each is reported.
    let warm = bare_rate(b, &topic, opts.messages)?;
    eprintln!("warm-up read (not counted): {warm:.0} msg/s");
    let (mut bare, mut engine_rate, mut engine_events) = (0.0f64, 0.0f64, 0);
    for round in 0..opts.rounds.max(1) {
        let r = bare_rate(b, &topic, opts.messages)?;
        eprintln!("round {round}: bare rdkafka consumer {r:.0} msg/s");
        bare = bare.max(r);
        let (r, events) = engine_read(config, b, &topic, opts.messages as u64, opts.exactly_once)?;
        eprintln!("round {round}: telltale engine {r:.0} msg/s (fully handled)");
        engine_rate = engine_rate.max(r);
        engine_events = events;
    }

    let mut result = BenchResult {
        fill_rate,
        bare_rate: bare,
        engine_rate,
        engine_events,
        latency_rate: 0.0,
        engine_latency: LatencySummary::default(),
        bare_latency: LatencySummary::default(),
    };
    if opts.latency_secs <= 0.0 {
        return Ok(result);
    }

    // Latency at half the engine's maximum rate.
    let rate = (engine_rate / 2.0).max(1.0);
    let count = (rate * opts.latency_secs) as usize;
    result.latency_rate = rate;
    let live = lines(opts.series, count, t0);

    let topic = unique("telltale-bench-live");
    crate::admin::ensure_topics(b, &[(&topic, opts.partitions)], None)?;
    let mut engine = Engine::start(config, b, &topic, opts.exactly_once);
    wait_ready(&engine.metrics)?;
    produce(
        b,
        &topic,
        &mut Cursor::new(&live[..]),
        Some(rate),
        &Default::default(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.metrics.messages_done.load(Ordering::Relaxed) < count as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    result.engine_latency = LatencySummary::of(
        &engine
            .metrics
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    engine.stop()?;

    let topic = unique("telltale-bench-live-bare");
    crate::admin::ensure_topics(b, &[(&topic, opts.partitions)], None)?;
    let c = bare_consumer(b, &topic)?;
    // Join the group before producing: poll until an assignment arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.assignment().map_or(0, |a| a.count()) == 0 && Instant::now() < deadline {
        let _ = c.poll(Duration::from_millis(100));
    }
    let producer = {
        let conn = b.clone();
        let topic = topic.clone();
        std::thread::spawn(move || {
            produce(
                &conn,
                &topic,
                &mut Cursor::new(&live[..]),
                Some(rate),
                &Default::default(),
            )
        })
    };
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let deadline = Instant::now() + Duration::from_secs_f64(opts.latency_secs + 60.0);
    let mut got = 0;
    while got < count && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            got += 1;
            if let Some(ts) = m.timestamp().to_millis() {
                let _ = h.record((now_us() - ts * 1000).max(1) as u64);
            }
        }
    }
    producer
        .join()
        .map_err(|_| Error::Delivery("the producer thread panicked".into()))??;
    result.bare_latency = LatencySummary::of(&h);
    Ok(result)
}

fn wait_ready(m: &Metrics) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !m.ready.load(Ordering::Relaxed) {
        if Instant::now() > deadline {
            return Err(Error::Delivery(
                "the engine got no partitions in 60 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
