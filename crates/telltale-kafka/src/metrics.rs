//! Counters of the live engine and the HTTP endpoint that serves them.
//!
//! Counters are plain atomics bumped once per message or per batch; labels are fixed sets
//! (event state, reject reason) or come from librdkafka's statistics (owned partitions), never
//! from message contents. The latency histogram is recorded once per batch under a mutex that
//! only the scrape contends for.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use telltale_core::reject::RejectReason;

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
    /// Errors librdkafka's consumer reported instead of a message (a batch that cannot be
    /// decompressed, a partition error): nothing to dead-letter, so they are counted, logged
    /// and shown on `/readyz`.
    pub consume_errors: AtomicU64,
    /// The last of them.
    pub last_consume_error: Mutex<String>,
    /// Consumer lag per owned partition, from librdkafka statistics: (topic, partition, lag).
    pub lag: Mutex<Vec<(String, i32, i64)>>,
    /// Microseconds from a message's Kafka timestamp to the moment its points were scored and
    /// their events handed to the producer.
    pub latency: Mutex<Histogram<u64>>,
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
            last_consume_error: Mutex::new(String::new()),
            lag: Mutex::new(Vec::new()),
            // 1 µs .. 1 h, 3 significant digits.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "telltale_consume_errors_total",
                "Errors the consumer reported instead of a message (e.g. a batch that cannot be decompressed).",
                &self.consume_errors,
            ),
            (
                "telltale_messages_in_total",
                "Kafka messages consumed.",
                &self.messages_in,
            ),
            (
                "telltale_points_in_total",
                "Points decoded and scored.",
                &self.points_in,
            ),
            (
                "telltale_messages_done_total",
                "Messages fully handled: scored, events acknowledged, offsets stored.",
                &self.messages_done,
            ),
            (
                "telltale_events_acked_total",
                "Anomaly events acknowledged by the broker.",
                &self.events_acked,
            ),
            (
                "telltale_dead_letters_total",
                "Messages acknowledged on the dead-letter topic.",
                &self.dead_letters,
            ),
            (
                "telltale_offsets_stored_total",
                "Offsets stored for commit after their events were acknowledged.",
                &self.offsets_stored,
            ),
            (
                "telltale_rebalances_total",
                "Partition assignments and revocations.",
                &self.rebalances,
            ),
            (
                "telltale_producer_queue_full_total",
                "Times the producer queue was full and the engine waited (backpressure).",
                &self.queue_full,
            ),
            (
                "telltale_session_restarts_total",
                "Kafka sessions restarted from the committed offsets (delivery failure, brokers lost).",
                &self.restarts,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                r(v)
            );
        }
        let _ = writeln!(
            s,
            "# HELP telltale_events_out_total Anomaly events handed to the producer.\n\
             # TYPE telltale_events_out_total counter"
        );
        for (i, state) in ["open", "update", "resolved"].iter().enumerate() {
            let _ = writeln!(
                s,
                "telltale_events_out_total{{state=\"{state}\"}} {}",
                r(&self.events_out[i])
            );
        }
        let _ = writeln!(
            s,
            "# HELP telltale_rejects_total Records rejected (sent to the dead-letter topic).\n\
             # TYPE telltale_rejects_total counter"
        );
        for (i, code) in RejectReason::codes().iter().enumerate() {
            let _ = writeln!(
                s,
                "telltale_rejects_total{{reason=\"{code}\"}} {}",
                r(&self.rejects[i])
            );
        }
        let _ = writeln!(
            s,
            "# HELP telltale_assigned_partitions Partitions this instance owns.\n\
             # TYPE telltale_assigned_partitions gauge\ntelltale_assigned_partitions {}",
            self.assigned.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP telltale_consumer_lag Messages behind the partition's end (librdkafka statistics).\n\
             # TYPE telltale_consumer_lag gauge"
        );
        for (topic, partition, lag) in self.lag.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                s,
                "telltale_consumer_lag{{topic=\"{}\",partition=\"{partition}\"}} {lag}",
                escape(topic)
            );
        }
        let h = self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = writeln!(
            s,
            "# HELP telltale_verdict_latency_seconds From a message's Kafka timestamp to its points \
             scored and their events handed to the producer.\n\
             # TYPE telltale_verdict_latency_seconds histogram"
        );
        for b in BUCKETS {
            let us = (b * 1e6) as u64;
            let n = if h.is_empty() {
                0
            } else {
                h.count_between(0, us)
            };
            let _ = writeln!(
                s,
                "telltale_verdict_latency_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "telltale_verdict_latency_seconds_bucket{{le=\"+Inf\"}} {}\n\
             telltale_verdict_latency_seconds_sum {}\n\
             telltale_verdict_latency_seconds_count {}",
            h.len(),
            h.mean() * h.len() as f64 / 1e6,
            h.len()
        );
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from a background thread; returns the
/// bound address (port 0 picks a free one).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("telltale-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                if let Err(e) = answer(stream, &metrics) {
                    tracing::debug!("http: {e}");
                }
            }
        })?;
    Ok(local)
}

fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/healthz") => {
            if metrics.healthy() {
                ("200 OK", "text/plain", "ok\n".into())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "unhealthy\n".into(),
                )
            }
        }
        ("GET", "/readyz") => {
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
                ("200 OK", "text/plain", format!("ready\n{note}"))
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_latency_buckets() {
        let m = Metrics::default();
        m.messages_in.fetch_add(3, Ordering::Relaxed);
        m.reject(&RejectReason::Malformed("test"));
        m.latency.lock().unwrap().record(1_500).unwrap();
        m.latency.lock().unwrap().record(30_000).unwrap();
        let t = m.render();
        assert!(t.contains("telltale_messages_in_total 3\n"));
        assert!(t.contains("telltale_rejects_total{reason=\"malformed\"} 1\n"));
        assert!(t.contains("telltale_verdict_latency_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(t.contains("telltale_verdict_latency_seconds_bucket{le=\"0.002\"} 1\n"));
        assert!(t.contains("telltale_verdict_latency_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(t.contains("telltale_verdict_latency_seconds_count 2\n"));
    }

    #[test]
    fn endpoint_answers_health_readiness_and_metrics() {
        let m = Arc::new(Metrics::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            std::io::Read::read_to_string(&mut s, &mut out).unwrap();
            out
        };
        assert!(get("/healthz").starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").starts_with("HTTP/1.1 503"));
        m.ready.store(true, Ordering::Relaxed);
        assert!(get("/readyz").starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").contains("telltale_points_in_total 0"));
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
    }
}
