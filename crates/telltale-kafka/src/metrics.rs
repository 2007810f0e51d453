//! Counters of the live engine and the HTTP endpoint that serves them.
//!
//! Counters are plain atomics bumped once per message or per batch; labels are fixed sets
//! (event state, reject reason) or come from librdkafka's statistics (owned partitions), never
//! from message contents. The exposition is `prometheus-client`'s (OpenMetrics text): the
//! atomics are read at scrape time by a collector, the latency histogram is the library's. The
//! endpoint is `tiny_http`'s server: each connection is read on its own thread, so a slow or
//! idle client holds up no one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use telltale_core::reject::RejectReason;

use crate::ingest::Ingest;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    /// Kafka messages consumed.
    pub messages_in: AtomicU64,
    /// Points decoded and routed.
    pub points_in: AtomicU64,
    /// Messages fully handled: scored, their events and dead letters acknowledged, their
    /// offsets stored for commit.
    pub messages_done: AtomicU64,
    /// Events handed to the producer: open, update, resolved.
    pub events_out: [AtomicU64; 3],
    /// Events the broker acknowledged.
    pub events_acked: AtomicU64,
    /// Rejects by reason (by [`RejectReason::index`]).
    pub rejects: [AtomicU64; RejectReason::COUNT],
    /// Messages written to the dead-letter topic (acknowledged).
    pub dead_letters: AtomicU64,
    /// Offsets stored for commit.
    pub offsets_stored: AtomicU64,
    /// Rebalances seen (assignments and revocations).
    pub rebalances: AtomicU64,
    /// Producer queue-full waits (backpressure).
    pub queue_full: AtomicU64,
    /// Kafka sessions restarted after a delivery failure.
    pub restarts: AtomicU64,
    /// Partitions currently assigned.
    pub assigned: AtomicI64,
    /// Set while the consumer has an assignment and is not shutting down.
    pub ready: AtomicBool,
    /// Last time (ms since the epoch) the consumer loop went round.
    pub heartbeat_ms: AtomicI64,
    /// A fatal error stops the engine; health turns red.
    pub fatal: AtomicBool,
    /// Series seen on more than one partition: the input is not keyed by series, so one
    /// series' points are spread over partitions (and, with several instances, models).
    pub split_series: AtomicU64,
    /// Errors librdkafka's consumer reported instead of a message (a batch that cannot be
    /// decompressed, a partition error): nothing to dead-letter, so they are counted, logged
    /// and shown on `/readyz`.
    pub consume_errors: AtomicU64,
    /// The last of them.
    pub last_consume_error: Mutex<String>,
    /// Series with a model in this instance.
    pub series: AtomicU64,
    /// Remote-write requests whose points went into the engine.
    pub remote_write_requests: AtomicU64,
    /// Samples in them (points and rejects; staleness markers not counted).
    pub remote_write_samples: AtomicU64,
    /// Remote-write requests refused as unreadable or too large (400, 413).
    pub remote_write_refused: AtomicU64,
    /// Remote-write requests answered 503 (engine not taking points, or too many at once).
    pub remote_write_busy: AtomicU64,
    /// Input partitions the repartition stage owns.
    pub repartition_assigned: AtomicI64,
    /// Input messages read by the repartition stage (`repartition = true`).
    pub repartition_in: AtomicU64,
    /// Of those, messages fully handled: their lines forwarded and acknowledged (or the message
    /// dead-lettered), their offsets stored.
    pub repartition_done: AtomicU64,
    /// Messages the repartition stage wrote to the repartition topic (acknowledged).
    pub repartition_out: AtomicU64,
    /// Series snapshots written to the changelog (acknowledged).
    pub snapshots_out: AtomicU64,
    /// Events and dead letters of input read again after a restore, below the committed
    /// offset: delivered before, not sent again.
    pub already_delivered: AtomicU64,
    /// Transactions committed (`exactly_once`).
    pub txn_commits: AtomicU64,
    /// Transactions aborted (`exactly_once`): their outputs are invisible to `read_committed`
    /// readers and their input is consumed again.
    pub txn_aborts: AtomicU64,
    /// Bytes of those snapshots (their states).
    pub snapshot_bytes: AtomicU64,
    /// Series restored from the changelog.
    pub restored: AtomicU64,
    /// Changelog snapshots not restored: another build or chain configuration, unreadable, or
    /// not of the partition's last complete round.
    pub restore_ignored: AtomicU64,
    /// Time spent reading the changelog on assignment, in microseconds, and how many reads.
    pub restore_us: AtomicU64,
    /// Changelog reads on assignment.
    pub restores: AtomicU64,
    /// Consumer lag per owned partition, from librdkafka statistics: (topic, partition, lag).
    pub lag: Mutex<Vec<(String, i32, i64)>>,
    /// Microseconds from a message's Kafka timestamp to the moment its points were scored and
    /// their events handed to the producer.
    pub latency: Mutex<Histogram<u64>>,
    /// The same latency, in seconds, for the exposition.
    pub latency_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            messages_in: AtomicU64::new(0),
            points_in: AtomicU64::new(0),
            messages_done: AtomicU64::new(0),
            events_out: Default::default(),
            events_acked: AtomicU64::new(0),
            rejects: Default::default(),
            dead_letters: AtomicU64::new(0),
            offsets_stored: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            assigned: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            heartbeat_ms: AtomicI64::new(now_ms()),
            fatal: AtomicBool::new(false),
            consume_errors: AtomicU64::new(0),
            split_series: AtomicU64::new(0),
            last_consume_error: Mutex::new(String::new()),
            series: AtomicU64::new(0),
            remote_write_requests: AtomicU64::new(0),
            remote_write_samples: AtomicU64::new(0),
            remote_write_refused: AtomicU64::new(0),
            remote_write_busy: AtomicU64::new(0),
            repartition_assigned: AtomicI64::new(0),
            repartition_in: AtomicU64::new(0),
            repartition_done: AtomicU64::new(0),
            repartition_out: AtomicU64::new(0),
            snapshots_out: AtomicU64::new(0),
            already_delivered: AtomicU64::new(0),
            txn_commits: AtomicU64::new(0),
            txn_aborts: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            restored: AtomicU64::new(0),
            restore_ignored: AtomicU64::new(0),
            restore_us: AtomicU64::new(0),
            restores: AtomicU64::new(0),
            lag: Mutex::new(Vec::new()),
            // 1 µs .. 1 h, 3 significant digits.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            ),
            latency_seconds: prometheus_client::metrics::histogram::Histogram::new(
                BUCKETS.iter().copied(),
            ),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Metrics {
    /// Counts a reject.
    pub fn reject(&self, reason: &RejectReason) {
        self.rejects[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the consumer loop is alive (went round in the last 30 s) and nothing failed.
    pub fn healthy(&self) -> bool {
        !self.fatal.load(Ordering::Relaxed)
            && now_ms() - self.heartbeat_ms.load(Ordering::Relaxed) < 30_000
    }

    /// The exposition of every metric (OpenMetrics text, which Prometheus scrapes).
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collect(self.clone())));
        registry.register(
            "telltale_verdict_latency_seconds",
            "From a message's Kafka timestamp to its points scored and their events handed to the producer",
            self.latency_seconds.clone(),
        );
        let mut out = String::with_capacity(4096);
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

/// Reads the atomics at scrape time.
#[derive(Debug)]
struct Collect(Arc<Metrics>);

impl Collector for Collect {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.0;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, &AtomicU64); 25] = [
            (
                "telltale_remote_write_requests",
                "Prometheus remote-write requests whose points went into the engine",
                &m.remote_write_requests,
            ),
            (
                "telltale_remote_write_samples",
                "Samples in accepted remote-write requests (staleness markers not counted)",
                &m.remote_write_samples,
            ),
            (
                "telltale_remote_write_refused",
                "Remote-write requests refused as unreadable or too large (400, 413)",
                &m.remote_write_refused,
            ),
            (
                "telltale_remote_write_busy",
                "Remote-write requests answered 503 (to be retried)",
                &m.remote_write_busy,
            ),
            (
                "telltale_consume_errors",
                "Errors the consumer reported instead of a message (e.g. a batch that cannot be decompressed)",
                &m.consume_errors,
            ),
            (
                "telltale_messages_in",
                "Kafka messages consumed",
                &m.messages_in,
            ),
            (
                "telltale_points_in",
                "Points decoded and scored",
                &m.points_in,
            ),
            (
                "telltale_messages_done",
                "Messages fully handled: scored, events acknowledged, offsets stored",
                &m.messages_done,
            ),
            (
                "telltale_events_acked",
                "Anomaly events acknowledged by the broker",
                &m.events_acked,
            ),
            (
                "telltale_dead_letters",
                "Messages acknowledged on the dead-letter topic",
                &m.dead_letters,
            ),
            (
                "telltale_offsets_stored",
                "Offsets stored for commit after their events were acknowledged",
                &m.offsets_stored,
            ),
            (
                "telltale_rebalances",
                "Partition assignments and revocations",
                &m.rebalances,
            ),
            (
                "telltale_producer_queue_full",
                "Times the producer queue was full and the engine waited (backpressure)",
                &m.queue_full,
            ),
            (
                "telltale_repartition_messages_in",
                "Input messages read by the repartition stage ([kafka] repartition = true)",
                &m.repartition_in,
            ),
            (
                "telltale_repartition_messages_done",
                "Input messages whose lines the repartition stage forwarded (acknowledged) or dead-lettered, offsets stored",
                &m.repartition_done,
            ),
            (
                "telltale_repartition_forwarded",
                "Messages written to the repartition topic (acknowledged)",
                &m.repartition_out,
            ),
            (
                "telltale_changelog_snapshots",
                "Series snapshots written to the changelog (acknowledged)",
                &m.snapshots_out,
            ),
            (
                "telltale_outputs_already_delivered",
                "Events and dead letters of input read again after a restore (below the committed offset), not sent again",
                &m.already_delivered,
            ),
            (
                "telltale_transactions_committed",
                "Transactions committed (exactly_once)",
                &m.txn_commits,
            ),
            (
                "telltale_transactions_aborted",
                "Transactions aborted (exactly_once): their input is consumed again",
                &m.txn_aborts,
            ),
            (
                "telltale_changelog_snapshot_bytes",
                "Bytes of series state written to the changelog",
                &m.snapshot_bytes,
            ),
            (
                "telltale_changelog_restored_series",
                "Series restored from the changelog on assignment",
                &m.restored,
            ),
            (
                "telltale_changelog_ignored_snapshots",
                "Changelog snapshots not restored (another build or chain configuration, unreadable, or not of the last complete round)",
                &m.restore_ignored,
            ),
            (
                "telltale_changelog_restores",
                "Changelog partitions read on assignment",
                &m.restores,
            ),
            (
                "telltale_session_restarts",
                "Kafka sessions restarted from the committed offsets (delivery failure, brokers lost)",
                &m.restarts,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(r(v));
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let c = ConstCounter::new(r(&m.restore_us) as f64 / 1e6);
        c.encode(e.encode_descriptor(
            "telltale_changelog_restore",
            "Time spent reading the changelog on assignment",
            Some(&prometheus_client::registry::Unit::Seconds),
            c.metric_type(),
        )?)?;
        let mut family = e.encode_descriptor(
            "telltale_events_out",
            "Anomaly events handed to the producer",
            None,
            MetricType::Counter,
        )?;
        for (i, state) in ["open", "update", "resolved"].into_iter().enumerate() {
            ConstCounter::new(r(&m.events_out[i]))
                .encode(family.encode_family(&[("state", state)])?)?;
        }
        let mut family = e.encode_descriptor(
            "telltale_rejects",
            "Records rejected (sent to the dead-letter topic), by reason",
            None,
            MetricType::Counter,
        )?;
        for (i, code) in RejectReason::codes().into_iter().enumerate() {
            ConstCounter::new(r(&m.rejects[i]))
                .encode(family.encode_family(&[("reason", code)])?)?;
        }
        let g = ConstGauge::new(r(&m.split_series) as i64);
        g.encode(e.encode_descriptor(
            "telltale_series_on_several_partitions",
            "Series seen on more than one partition: the input is not keyed by series",
            None,
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(r(&m.series) as i64);
        g.encode(e.encode_descriptor(
            "telltale_series",
            "Series with a model in this instance",
            None,
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(m.assigned.load(Ordering::Relaxed));
        g.encode(e.encode_descriptor(
            "telltale_assigned_partitions",
            "Partitions this instance owns",
            None,
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(m.repartition_assigned.load(Ordering::Relaxed));
        g.encode(e.encode_descriptor(
            "telltale_repartition_assigned_partitions",
            "Input partitions the repartition stage of this instance owns",
            None,
            g.metric_type(),
        )?)?;
        let mut family = e.encode_descriptor(
            "telltale_consumer_lag",
            "Messages behind the partition's end (librdkafka statistics)",
            None,
            MetricType::Gauge,
        )?;
        for (topic, partition, lag) in m.lag.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let partition = partition.to_string();
            ConstGauge::new(*lag).encode(
                family.encode_family(&[("topic", topic.as_str()), ("partition", &partition)])?,
            )?;
        }
        Ok(())
    }
}

/// The library's OpenMetrics text in Prometheus' classic text format (0.0.4): a counter family
/// is named with the `_total` suffix its samples carry, and there is no `# EOF`. Everything
/// else (samples, histograms, escaping) is the same in both.
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {rest}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Most bytes of a request's head (request line and headers) the endpoint reads.
const MAX_HEAD: usize = 8 * 1024;

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from background threads; returns the
/// bound address (port 0 picks a free one).
///
/// With `ingest`, `POST /api/v1/write` takes Prometheus remote write: each request on its own
/// thread (at most [`MAX_WRITES`] at once), answered 204 once its points are in the engine,
/// 400 when the body cannot be read (not to be retried), 413 when it is too large, 503 when the
/// engine does not take it in time (to be retried).
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ingest: Option<Arc<Ingest>>,
) -> std::io::Result<SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
    std::thread::Builder::new()
        .name("telltale-http".into())
        .spawn(move || {
            let writes = Arc::new(AtomicU64::new(0));
            for request in server.incoming_requests() {
                if let Some(ingest) = &ingest
                    && *request.method() == tiny_http::Method::Post
                    && matches!(request.url(), "/api/v1/write" | "/v1/metrics")
                    && head_size(&request) <= MAX_HEAD
                {
                    if writes.fetch_add(1, Ordering::AcqRel) >= MAX_WRITES {
                        writes.fetch_sub(1, Ordering::AcqRel);
                        metrics.remote_write_busy.fetch_add(1, Ordering::Relaxed);
                        let _ = request.respond(plain(503, "too many writes in flight\n".into()));
                        continue;
                    }
                    let (metrics, ingest, writes) =
                        (metrics.clone(), ingest.clone(), writes.clone());
                    let spawned = std::thread::Builder::new()
                        .name("telltale-write".into())
                        .spawn(move || {
                            let mut request = request;
                            let response = if request.url() == "/v1/metrics" {
                                otlp_http(&mut request, &metrics, &ingest)
                            } else {
                                remote_write(&mut request, &metrics, &ingest)
                            };
                            if let Err(e) = request.respond(response) {
                                tracing::debug!("http: {e}");
                            }
                            writes.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = spawned {
                        tracing::warn!("http: cannot start a write thread: {e}");
                    }
                    continue;
                }
                let response = if ingest.is_none()
                    && *request.method() == tiny_http::Method::Post
                    && matches!(request.url(), "/api/v1/write" | "/v1/metrics")
                {
                    plain(
                        404,
                        "this engine takes no HTTP input (off with [kafka] exactly_once)\n".into(),
                    )
                } else {
                    answer(&request, &metrics)
                };
                if let Err(e) = request.respond(response) {
                    tracing::debug!("http: {e}");
                }
            }
        })?;
    Ok(local)
}

/// Remote-write requests handled at once; more get 503.
pub const MAX_WRITES: u64 = 8;

/// Largest remote-write body read (compressed).
const MAX_BODY: usize = 32 << 20;

fn plain(status: u16, body: String) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(
            tiny_http::Header::from_bytes("Content-Type", "text/plain; charset=utf-8")
                .expect("valid header"),
        )
}

fn head_size(request: &tiny_http::Request) -> usize {
    request.url().len()
        + request
            .headers()
            .iter()
            .map(|h| h.field.as_str().as_str().len() + h.value.as_str().len() + 4)
            .sum::<usize>()
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
fn read_body(
    request: &mut tiny_http::Request,
) -> Result<Vec<u8>, tiny_http::Response<std::io::Cursor<Vec<u8>>>> {
    use std::io::Read as _;
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(plain(413, format!("body over {MAX_BODY} bytes\n")));
    }
    let mut body = Vec::new();
    if let Err(e) = request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
    {
        return Err(plain(400, format!("cannot read the body: {e}\n")));
    }
    if body.len() > MAX_BODY {
        return Err(plain(413, format!("body over {MAX_BODY} bytes\n")));
    }
    Ok(body)
}

fn header<'a>(request: &'a tiny_http::Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// `POST /v1/metrics` (OTLP/HTTP, protobuf): decode, hand to the engine, answer 200 with an
/// empty `ExportMetricsServiceResponse`.
fn otlp_http(
    request: &mut tiny_http::Request,
    metrics: &Metrics,
    ingest: &Ingest,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let content_type = header(request, "Content-Type").unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        metrics.remote_write_refused.fetch_add(1, Ordering::Relaxed);
        return plain(
            415,
            "only the protobuf encoding (application/x-protobuf) is accepted\n".into(),
        );
    }
    if header(request, "Content-Encoding").is_some_and(|e| e != "identity") {
        metrics.remote_write_refused.fetch_add(1, Ordering::Relaxed);
        return plain(
            415,
            "compressed bodies are not accepted; send them uncompressed\n".into(),
        );
    }
    let ok = tiny_http::Response::from_data(Vec::new()).with_header(
        tiny_http::Header::from_bytes("Content-Type", "application/x-protobuf")
            .expect("valid header"),
    );
    take_points(request, metrics, ingest, ok, |body, pos, decoded| {
        let mut state = ingest.cumulative.lock().unwrap_or_else(|e| e.into_inner());
        telltale_codec::otlp::decode(body, pos, &mut state, decoded)
            .map(|s| s.data_points)
            .map_err(|e| e.to_string())
    })
}

/// Reads a request's body, decodes it into points (the samples it held, or why it cannot be
/// read: 400), hands them to the engine and answers `ok` once they are routed (503 if the
/// engine does not take them in time).
fn take_points(
    request: &mut tiny_http::Request,
    metrics: &Metrics,
    ingest: &Ingest,
    ok: tiny_http::Response<std::io::Cursor<Vec<u8>>>,
    decode: impl FnOnce(&[u8], u64, &mut telltale_codec::decode::Decoded) -> Result<usize, String>,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let body = match read_body(request) {
        Ok(b) => b,
        Err(response) => {
            metrics.remote_write_refused.fetch_add(1, Ordering::Relaxed);
            return response;
        }
    };
    let mut decoded = telltale_codec::decode::Decoded::default();
    let samples = match decode(&body, ingest.next_request(), &mut decoded) {
        Ok(n) => n,
        Err(e) => {
            metrics.remote_write_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("{}: refused: {e}", request.url());
            return plain(400, format!("{e}\n"));
        }
    };
    match ingest.submit(decoded, std::time::Duration::from_secs(10)) {
        Ok(()) => {
            metrics
                .remote_write_requests
                .fetch_add(1, Ordering::Relaxed);
            metrics
                .remote_write_samples
                .fetch_add(samples as u64, Ordering::Relaxed);
            ok
        }
        Err(_) => {
            metrics.remote_write_busy.fetch_add(1, Ordering::Relaxed);
            plain(503, "the engine is not taking points now; retry\n".into())
        }
    }
}

/// `POST /api/v1/write`: decode, hand to the engine, answer.
fn remote_write(
    request: &mut tiny_http::Request,
    metrics: &Metrics,
    ingest: &Ingest,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let ok = tiny_http::Response::from_string(String::new()).with_status_code(204);
    take_points(request, metrics, ingest, ok, |body, pos, decoded| {
        telltale_codec::remote_write::decode(body, pos, decoded)
            .map(|s| s.samples)
            .map_err(|e| e.to_string())
    })
}

fn answer(
    request: &tiny_http::Request,
    metrics: &Arc<Metrics>,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let text = plain;
    let head = head_size(request);
    if head > MAX_HEAD {
        return text(431, "request header fields too large\n".into());
    }
    if *request.method() != tiny_http::Method::Get {
        return text(405, "method not allowed\n".into());
    }
    match request.url() {
        "/metrics" => {
            // Prometheus asks for OpenMetrics; anyone else (curl, promtool) gets the classic
            // text format.
            let openmetrics = request.headers().iter().any(|h| {
                h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
            });
            let (body, content_type) = if openmetrics {
                (
                    metrics.render(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    classic(&metrics.render()),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            tiny_http::Response::from_string(body).with_header(
                tiny_http::Header::from_bytes("Content-Type", content_type).expect("valid header"),
            )
        }
        "/healthz" if metrics.healthy() => text(200, "ok\n".into()),
        "/healthz" => text(503, "unhealthy\n".into()),
        "/readyz" => {
            let errors = metrics.consume_errors.load(Ordering::Relaxed);
            let note = if errors == 0 {
                String::new()
            } else {
                let last = metrics
                    .last_consume_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                format!("{errors} consumer error(s), last: {last}\n")
            };
            if metrics.ready.load(Ordering::Relaxed) && metrics.healthy() {
                text(200, format!("ready\n{note}"))
            } else {
                text(503, format!("not ready\n{note}"))
            }
        }
        _ => text(404, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn renders_openmetrics_text_with_an_exact_latency_sum() {
        let m = Arc::new(Metrics::default());
        m.messages_in.fetch_add(3, Ordering::Relaxed);
        m.reject(&RejectReason::Malformed("test"));
        m.latency_seconds.observe(0.0015);
        m.latency_seconds.observe(0.03);
        let t = m.render();
        assert!(t.contains("telltale_messages_in_total 3\n"), "{t}");
        assert!(
            t.contains("telltale_rejects_total{reason=\"malformed\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("telltale_verdict_latency_seconds_bucket{le=\"0.001\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("telltale_verdict_latency_seconds_bucket{le=\"0.002\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("telltale_verdict_latency_seconds_bucket{le=\"0.05\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("telltale_verdict_latency_seconds_count 2\n"),
            "{t}"
        );
        assert!(
            t.contains("telltale_verdict_latency_seconds_sum 0.0315\n"),
            "{t}"
        );
        assert!(t.ends_with("# EOF\n"), "{t}");
    }

    #[test]
    fn endpoint_answers_health_readiness_and_metrics() {
        let m = Arc::new(Metrics::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), m.clone(), None).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            std::io::Read::read_to_string(&mut s, &mut out).unwrap();
            out
        };
        // A client that connects and says nothing holds up no one.
        let _idle = TcpStream::connect(addr).unwrap();
        assert!(get("/healthz").starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").starts_with("HTTP/1.1 503"));
        m.ready.store(true, Ordering::Relaxed);
        assert!(get("/readyz").starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").contains("telltale_points_in_total 0"));
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
        // Prometheus asks for OpenMetrics and gets it; others get the classic format, where a
        // counter's family carries its `_total` name.
        let mut c = TcpStream::connect(addr).unwrap();
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut om = String::new();
        std::io::Read::read_to_string(&mut c, &mut om).unwrap();
        assert!(
            om.contains("application/openmetrics-text") && om.ends_with("# EOF\n"),
            "{om}"
        );
        assert!(om.contains("# TYPE telltale_points_in counter\n"), "{om}");
        let text = get("/metrics");
        assert!(
            text.contains("# TYPE telltale_points_in_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        let huge = format!("/metrics?{}", "x".repeat(MAX_HEAD));
        assert!(get(&huge).starts_with("HTTP/1.1 431"), "{}", get(&huge));
    }
}
