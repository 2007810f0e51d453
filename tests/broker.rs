//! Helpers for tests against the real broker (nisshi, started by `scripts/test-broker.sh`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use telltale_core::event::event_id;
use telltale_core::key::SeriesKey;

use crate::repo_root;

/// The shared test broker's address: `$TELLTALE_KAFKA_BROKERS`, else the one
/// `scripts/test-broker.sh start` starts (or finds running).
pub fn brokers() -> String {
    static B: OnceLock<String> = OnceLock::new();
    B.get_or_init(|| {
        if let Ok(b) = std::env::var("TELLTALE_KAFKA_BROKERS") {
            return b;
        }
        start_broker(None)
    })
    .clone()
}

/// Runs `scripts/test-broker.sh start` (state in `state`, default `target/test-broker`) and
/// returns the address it prints.
pub fn start_broker(state: Option<&Path>) -> String {
    start_broker_advertising(state, None)
}

/// [`start_broker`], the broker advertising `advertise` (`host:port`) instead of its own
/// address; returns the address it listens on.
pub fn start_broker_advertising(state: Option<&Path>, advertise: Option<&str>) -> String {
    let mut cmd = Command::new(repo_root().join("scripts/test-broker.sh"));
    cmd.arg("start").stderr(Stdio::inherit());
    if let Some(s) = state {
        cmd.env("TELLTALE_BROKER_STATE", s);
    }
    if let Some(a) = advertise {
        cmd.env("TELLTALE_BROKER_ADVERTISE", a);
    }
    let out = cmd.output().expect("run scripts/test-broker.sh");
    assert!(out.status.success(), "the test broker did not start");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("TELLTALE_KAFKA_BROKERS="))
        .expect("broker address")
        .trim()
        .to_owned()
}

/// Stops the broker whose state lives in `state`.
pub fn stop_broker(state: &Path) {
    let ok = Command::new(repo_root().join("scripts/test-broker.sh"))
        .arg("stop")
        .env("TELLTALE_BROKER_STATE", state)
        .status()
        .expect("run scripts/test-broker.sh")
        .success();
    assert!(ok, "the test broker did not stop");
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a topic.
pub fn create_topic(brokers: &str, name: &str, partitions: i32) {
    telltale_kafka::admin::ensure_topics(
        &telltale_kafka::config::Connection::plain(brokers),
        &[(name, partitions)],
        None,
    )
    .expect("create topic");
}

/// The chain used by the broker tests: a static bound, so every anomaly's id depends only on its
/// points (no warm-up), whichever instance or restart scores it.
pub const CHAIN: &str = "spikes";

/// One test series: metric `tt_test_latency`, label `series=<i>`.
pub fn series_key(i: usize) -> SeriesKey {
    SeriesKey::new("tt_test_latency", &[("series", &i.to_string())])
}

/// Timestamp of point `j`.
pub fn ts(j: usize) -> i64 {
    1_700_000_000_000 + j as i64 * 1000
}

/// Whether point `j` is a spike (above the bound): one every `every` points, from `every / 2`.
pub fn is_spike(j: usize, every: usize) -> bool {
    j % every == every / 2
}

/// The JSON line of point `j` of series `i`.
pub fn point_line(i: usize, j: usize, every: usize) -> String {
    let value = if is_spike(j, every) {
        5000.0
    } else {
        100.0 + ((i * 31 + j * 17) % 13) as f64
    };
    format!(
        r#"{{"metric":"tt_test_latency","labels":{{"series":"{i}"}},"timestamp":{},"value":{value}}}"#,
        ts(j)
    )
}

/// Expected anomaly ids of series `i` over points `range`.
pub fn expected_ids(i: usize, range: std::ops::Range<usize>, every: usize) -> BTreeSet<String> {
    let id = series_key(i).id();
    range
        .filter(|j| is_spike(*j, every))
        .map(|j| format!("{:016x}", event_id(id, CHAIN, ts(j))))
        .collect()
}

/// A producer for test input.
pub fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces points `range` of series `0..series`, series `i` to partition `i % partitions`,
/// Sends `rec`, waiting while the producer's queue is full.
pub fn send<K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
    p: &BaseProducer,
    mut rec: BaseRecord<'_, K, P>,
) {
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((_, r)) => {
                rec = r;
                p.poll(Duration::from_millis(5));
            }
        }
    }
}

/// interleaved in time order; waits for every acknowledgement.
pub fn produce_points(
    brokers: &str,
    topic: &str,
    series: usize,
    partitions: i32,
    range: std::ops::Range<usize>,
    every: usize,
) -> usize {
    let p = producer(brokers);
    let mut n = 0;
    for j in range {
        for i in 0..series {
            let line = point_line(i, j, every);
            let key = format!("{:016x}", series_key(i).id());
            send(
                &p,
                BaseRecord::to(topic)
                    .key(&key)
                    .payload(&line)
                    .partition(i as i32 % partitions),
            );
            n += 1;
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    n
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Msg {
    /// The payload as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("json payload")
    }
    /// A header's value as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads `topic` from the beginning until `done` holds for what was read (checked whenever
/// the topic is idle) or `timeout` passes; returns everything read.
pub fn read_until(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Msg]) -> bool,
) -> Vec<Msg> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "telltale-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut assigned = 0;
    while Instant::now() < deadline {
        // The topic may not exist yet (the engine creates its output topics at start).
        if assigned == 0 {
            if let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5))
                && let Some(t) = md.topics().iter().find(|t| t.name() == topic)
                && !t.partitions().is_empty()
            {
                let mut tpl = TopicPartitionList::new();
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                        .expect("tpl");
                }
                c.assign(&tpl).expect("assign");
                assigned = t.partitions().len();
            } else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        }
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Msg {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or(&[]).to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_owned(), x.value.unwrap_or(&[]).to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(_)) => {}
            None => {
                if done(&out) {
                    break;
                }
            }
        }
    }
    out
}

/// Distinct event ids in JSON lines of events (what `kcat -C` or `telltale tail --json` print).
pub fn event_ids_in_lines(text: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// Distinct event ids among anomaly-topic messages.
pub fn event_ids(msgs: &[Msg]) -> BTreeSet<String> {
    msgs.iter()
        .map(|m| m.json()["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Committed offsets of `group` on partitions `0..partitions` of `topic` (-1: none).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Everything a test engine needs in its configuration.
#[derive(Debug, Clone)]
pub struct EngineSetup {
    /// Bootstrap servers.
    pub brokers: String,
    /// Input topic.
    pub input: String,
    /// Anomaly topic.
    pub anomalies: String,
    /// Dead-letter topic.
    pub dlq: String,
    /// Consumer group.
    pub group: String,
}

impl EngineSetup {
    /// Fresh names on the shared broker, the input topic created with `partitions`.
    pub fn new(name: &str, partitions: i32) -> Self {
        Self::on(brokers(), name, partitions)
    }

    /// Fresh names on the broker at `brokers`.
    pub fn on(brokers: String, name: &str, partitions: i32) -> Self {
        let input = unique(&format!("{name}-in"));
        create_topic(&brokers, &input, partitions);
        Self {
            anomalies: unique(&format!("{name}-anomalies")),
            dlq: unique(&format!("{name}-dlq")),
            group: unique(&format!("{name}-group")),
            input,
            brokers,
        }
    }

    /// The engine's configuration (TOML).
    pub fn config(&self) -> String {
        format!(
            r#"[engine]
shards = 2

[chain]
name = "{CHAIN}"
detectors = [{{ kind = "threshold", above = 1000.0 }}]
alert = {{ min_points = 1, resolve_points = 1 }}

[kafka]
brokers = "{}"
group_id = "{}"
topics = ["{}"]
anomaly_topic = "{}"
dead_letter_topic = "{}"
drain_timeout = "4s"

[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"fetch.wait.max.ms" = "10"
"auto.commit.interval.ms" = "200"

[kafka.producer]
"message.timeout.ms" = "5000"

[http]
listen = "127.0.0.1:0"
"#,
            self.brokers, self.group, self.input, self.anomalies, self.dlq
        )
    }
}

/// The `telltale` binary, brought up to date once per test process (`cargo test -p
/// telltale-tests` alone would not rebuild it).
pub fn telltale_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "telltale", "--bin", "telltale"])
            .env(
                "CARGO_TARGET_DIR",
                profile_dir.parent().expect("target dir"),
            )
            .current_dir(repo_root())
            .status()
            .expect("cargo build")
            .success();
        assert!(ok, "cannot build the telltale binary");
        profile_dir.join("telltale")
    })
    .clone()
}

/// Starts the `telltale` binary with `args` in the background (`TELLTALE_LOG=info`, no
/// stdin), its stderr to the file `log`.
pub fn spawn_telltale(args: &[&std::ffi::OsStr], log: &Path) -> Child {
    Command::new(telltale_bin())
        .args(args)
        .env("TELLTALE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn telltale {args:?}: {e}"))
}

/// A `telltale run` child process.
#[derive(Debug)]
pub struct Engine {
    child: Child,
    /// Its log file (stderr).
    pub log: PathBuf,
}

impl Engine {
    /// Starts `telltale run` with `config` (TOML); `name` names its folder.
    pub fn start(name: &str, config: &str) -> Self {
        let dir = crate::temp_dir(&unique(name));
        let cfg = dir.join("telltale.toml");
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.join("engine.log");
        let child = spawn_telltale(
            &["run".as_ref(), "--config".as_ref(), cfg.as_os_str()],
            &log,
        );
        Self { child, log }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of its HTTP endpoint (from its log).
    pub fn http_addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log_text();
            if let Some(a) = log
                .lines()
                .find_map(|l| l.split("on http://").nth(1))
                .map(|a| a.trim().to_owned())
            {
                return a;
            }
            assert!(Instant::now() < deadline, "no HTTP address in log:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` on its HTTP endpoint: (status line, body).
    pub fn get(&self, path: &str) -> (String, String) {
        http_get(&self.http_addr(), path)
    }

    /// A metric's value from `/metrics` (the first sample whose name and labels start with
    /// `name`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until `f` holds (polling every 100 ms) or panics after `timeout`, with the log.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; metrics:\n{}\nengine log:\n{}",
                self.get("/metrics").1,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for it to exit (panics after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "engine did not exit in {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET: (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    http_request(addr, "GET", path)
}

/// A plain HTTP/1.1 request without a body: (status line, body).
pub fn http_request(addr: &str, method: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text.lines().next().unwrap_or("").to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Debian's `kcat` on the broker at `brokers`, with the librdkafka our build compiled (`lib`, from
/// [`built_librdkafka_dir`]: Debian's 2.0.2 cannot talk to the test broker, its ApiVersion
/// request fails).
pub fn kcat(lib: &Path, brokers: &str, args: &[&str]) -> std::process::Output {
    Command::new("kcat")
        .env("LD_LIBRARY_PATH", lib)
        .arg("-b")
        .arg(brokers)
        .args(args)
        .output()
        .expect("kcat (Debian package `kcat`) must be installed: scripts/test.sh installs it")
}

/// The folder holding the librdkafka shared library our build compiled (2.12.x), for running
/// Debian's `kcat` against it: Debian's own librdkafka (2.0.2) cannot talk to the test broker.
pub fn built_librdkafka_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let build = exe.parent()?.parent()?.join("build");
    let mut found: Vec<PathBuf> = std::fs::read_dir(build)
        .ok()?
        .flatten()
        .map(|e| e.path().join("out/src"))
        .filter(|p| p.join("librdkafka.so.1").exists())
        .collect();
    // The newest build: an older one (other features) may still be in the folder.
    found.sort_by_key(|p| {
        p.join("librdkafka.so.1")
            .metadata()
            .and_then(|m| m.modified())
            .ok()
    });
    found.pop()
}
