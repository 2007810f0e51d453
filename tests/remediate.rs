//! `telltale remediate` against the real broker: ladders verified by `resolved`, approvals, dry
//! runs, redelivery, and event data kept away from any shell. Incidents are told apart by
//! their ids; assertions are on the audit topic's records of each.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telltale_tests::broker::*;

/// Topics and a folder for one remediator.
struct Setup {
    brokers: String,
    anomalies: String,
    audit: String,
    approvals: String,
    group: String,
    dir: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Self {
        let brokers = brokers();
        let s = Self {
            anomalies: unique(&format!("{name}-anomalies")),
            audit: unique(&format!("{name}-audit")),
            approvals: unique(&format!("{name}-approvals")),
            group: unique(&format!("{name}-group")),
            dir: telltale_tests::temp_dir(&unique(name)),
            brokers,
        };
        for t in [&s.anomalies, &s.audit, &s.approvals] {
            create_topic(&s.brokers, t, 1);
        }
        s
    }

    fn config(&self, policies: &str) -> String {
        format!(
            r#"[remediator]
brokers = "{}"
group_id = "{}"
anomaly_topic = "{}"
audit_topic = "{}"
approvals_topic = "{}"
listen = "127.0.0.1:0"

[remediator.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"fetch.wait.max.ms" = "10"

{policies}
"#,
            self.brokers, self.group, self.anomalies, self.audit, self.approvals
        )
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn send(&self, topic: &str, key: &str, v: &Value) {
        let p = producer(&self.brokers);
        let payload = v.to_string();
        send(
            &p,
            rdkafka::producer::BaseRecord::to(topic)
                .key(key)
                .payload(&payload),
        );
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(10)).expect("flush");
    }

    fn event(&self, id: &str, state: &str, model: &str) {
        self.send(
            &self.anomalies,
            id,
            &json!({"id": id, "state": state, "severity": "critical", "chain": "default",
                    "series": {"name": "llm_latency_p99_ms", "labels": {"model": model}},
                    "series_id": "0", "timestamp": "2026-01-05T00:57:15.000Z", "value": 736.5,
                    "expected": 694.2, "score": 1.0,
                    "detectors": [{"params": {"kind": "ewma"}, "score": 1.0}]}),
        );
    }

    /// The audit records of incident `id`, read until `done` holds for them.
    fn audit_of(&self, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let of = |m: &[Msg]| -> Vec<Value> {
            m.iter()
                .map(Msg::json)
                .filter(|v| v["incident"] == id)
                .collect()
        };
        of(&read_until(
            &self.brokers,
            &self.audit,
            Duration::from_secs(60),
            |m| done(&of(m)),
        ))
    }
}

/// `telltale remediate`, stopped when dropped.
struct Remediator(Child, PathBuf);

impl Remediator {
    fn start(s: &Setup, config: &str, dry_run: bool) -> Self {
        let cfg = s.dir.join(format!("{}.toml", unique("remediator")));
        std::fs::write(&cfg, config).expect("config");
        let log = s.dir.join(format!("{}.log", unique("remediator")));
        let mut args = vec!["remediate".as_ref(), "--config".as_ref(), cfg.as_os_str()];
        if dry_run {
            args.push("--dry-run".as_ref());
        }
        Self(spawn_telltale(&args, &log), log)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Remediator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn decisions(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r["step"].as_str() {
            Some(step) => format!("{} {step}", r["decision"].as_str().unwrap_or_default()),
            None => r["decision"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

fn wait_for_file(path: &Path, timeout: Duration, log: &str) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared; log:\n{log}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn touch_ladder(s: &Setup, first_wait: &str) -> String {
    s.config(&format!(
        r#"[[policy]]
name = "latency"
metric = "llm_latency*"
[[policy.step]]
name = "restart"
wait = "{first_wait}"
action = {{ kind = "command", argv = ["/usr/bin/touch", "{dir}/restart-{{{{id}}}}"] }}
[[policy.step]]
name = "rollback"
wait = "60s"
action = {{ kind = "command", argv = ["/usr/bin/touch", "{dir}/rollback-{{{{id}}}}"] }}
"#,
        dir = s.dir.display()
    ))
}

#[test]
fn ladder_escalates_until_the_anomaly_resolves() {
    let s = Setup::new("ladder");
    let r = Remediator::start(&s, &touch_ladder(&s, "2s"), false);
    s.event("inc-1", "open", "llama3-8b");
    wait_for_file(&s.file("restart-inc-1"), Duration::from_secs(60), &r.log());
    // The restart does not fix it: two seconds later the rollback runs, and that one does.
    wait_for_file(&s.file("rollback-inc-1"), Duration::from_secs(30), &r.log());
    s.event("inc-1", "resolved", "llama3-8b");
    let audit = s.audit_of("inc-1", |r| r.iter().any(|v| v["decision"] == "closed"));
    assert_eq!(
        decisions(&audit),
        [
            "event_received",
            "policy_matched",
            "step_chosen restart",
            "action_result restart",
            "verified",
            "step_chosen rollback",
            "action_result rollback",
            "event_received",
            "verified",
            "closed",
        ],
        "{}",
        r.log()
    );
    assert_eq!(audit[4]["outcome"], "not_resolved_in_time");
    assert_eq!(audit[8]["outcome"], "fixed");
    assert_eq!(audit[8]["fixed_by"], "rollback");
    assert_eq!(audit[9]["outcome"], "fixed");
    // Every record carries the detector scores that triggered it, and results their latency.
    assert!(audit.iter().all(|v| v["scores"][0]["score"] == 1.0));
    assert!(audit[3]["latency_ms"].is_number() && audit[3]["ok"] == true);
}

#[test]
fn dry_run_executes_nothing() {
    let s = Setup::new("dry-run");
    let r = Remediator::start(&s, &touch_ladder(&s, "1s"), true);
    s.event("inc-2", "open", "llama3-8b");
    let audit = s.audit_of("inc-2", |r| {
        r.iter()
            .filter(|v| v["decision"] == "action_result")
            .count()
            >= 2
    });
    let results: Vec<&Value> = audit
        .iter()
        .filter(|v| v["decision"] == "action_result")
        .collect();
    assert_eq!(results.len(), 2, "{}", r.log());
    for v in results {
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .starts_with("dry run: not executed"),
            "{v}"
        );
    }
    assert!(!s.file("restart-inc-2").exists() && !s.file("rollback-inc-2").exists());
}

#[test]
fn event_data_never_reaches_a_shell() {
    let s = Setup::new("no-shell");
    let pwned = s.file("pwned");
    let label = format!("x; touch {} #", pwned.display());
    let config = s.config(
        r#"[[policy]]
name = "echo"
[[policy.step]]
name = "say"
action = { kind = "command", argv = ["/usr/bin/printf", "%s", "{{label.model}}"] }
"#,
    );
    let r = Remediator::start(&s, &config, false);
    s.event("inc-3", "open", &label);
    let audit = s.audit_of("inc-3", |r| {
        r.iter().any(|v| v["decision"] == "action_result")
    });
    let result = audit
        .iter()
        .find(|v| v["decision"] == "action_result")
        .expect("result");
    // The label arrived as one argument, printed verbatim; no shell ran it.
    assert_eq!(result["detail"], label.as_str(), "{}", r.log());
    std::thread::sleep(Duration::from_millis(500));
    assert!(!pwned.exists());
}

#[test]
fn redelivered_event_runs_no_step_twice() {
    let s = Setup::new("redelivery");
    let r = Remediator::start(&s, &touch_ladder(&s, "60s"), false);
    s.event("inc-4", "open", "llama3-8b");
    s.event("inc-4", "open", "llama3-8b");
    s.event("inc-4", "open", "llama3-8b");
    wait_for_file(&s.file("restart-inc-4"), Duration::from_secs(60), &r.log());
    s.event("inc-4", "resolved", "llama3-8b");
    s.event("inc-4", "resolved", "llama3-8b");
    let audit = s.audit_of("inc-4", |r| r.iter().any(|v| v["decision"] == "closed"));
    std::thread::sleep(Duration::from_secs(1));
    let audit2 = s.audit_of("inc-4", |r| r.len() >= audit.len());
    let ran = audit2
        .iter()
        .filter(|v| v["decision"] == "step_chosen")
        .count();
    let closed = audit2.iter().filter(|v| v["decision"] == "closed").count();
    assert_eq!((ran, closed), (1, 1), "{:?}", decisions(&audit2));
}

fn approval_config(s: &Setup) -> String {
    s.config(&format!(
        r#"[[policy]]
name = "rollout"
approval_timeout = "60s"
[[policy.step]]
name = "rollback"
risk = "high"
action = {{ kind = "command", argv = ["/usr/bin/touch", "{dir}/rollback-{{{{id}}}}"] }}
"#,
        dir = s.dir.display()
    ))
}

#[test]
fn high_risk_step_waits_for_approval() {
    let s = Setup::new("approve");
    let r = Remediator::start(&s, &approval_config(&s), false);
    s.event("inc-5", "open", "llama3-8b");
    s.audit_of("inc-5", |r| {
        r.iter().any(|v| v["decision"] == "approval_requested")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !s.file("rollback-inc-5").exists(),
        "ran before its approval"
    );
    s.send(
        &s.approvals,
        "inc-5",
        &json!({"incident": "inc-5", "step": "rollback", "decision": "approve", "who": "ana", "why": "checked the dashboards"}),
    );
    wait_for_file(&s.file("rollback-inc-5"), Duration::from_secs(30), &r.log());
    let audit = s.audit_of("inc-5", |r| {
        r.iter().any(|v| v["decision"] == "action_result")
    });
    let granted = audit
        .iter()
        .find(|v| v["decision"] == "approval_granted")
        .expect("granted");
    assert_eq!(
        (granted["who"].as_str(), granted["reason"].as_str()),
        (Some("ana"), Some("checked the dashboards"))
    );
}

#[test]
fn denied_step_is_not_run() {
    let s = Setup::new("deny");
    let r = Remediator::start(&s, &approval_config(&s), false);
    s.event("inc-6", "open", "llama3-8b");
    s.audit_of("inc-6", |r| {
        r.iter().any(|v| v["decision"] == "approval_requested")
    });
    s.send(
        &s.approvals,
        "inc-6",
        &json!({"incident": "inc-6", "step": "rollback", "decision": "deny", "who": "bo", "why": "not now"}),
    );
    let audit = s.audit_of("inc-6", |r| r.iter().any(|v| v["decision"] == "closed"));
    assert!(
        decisions(&audit).contains(&"approval_denied rollback".to_owned()),
        "{:?}\n{}",
        decisions(&audit),
        r.log()
    );
    assert!(!audit.iter().any(|v| v["decision"] == "step_chosen"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!s.file("rollback-inc-6").exists());
}

#[test]
fn open_incidents_survive_a_restart() {
    let s = Setup::new("restart");
    let config = touch_ladder(&s, "60s");
    let first = Remediator::start(&s, &config, false);
    s.event("inc-7", "open", "llama3-8b");
    wait_for_file(
        &s.file("restart-inc-7"),
        Duration::from_secs(60),
        &first.log(),
    );
    s.audit_of("inc-7", |r| {
        r.iter().any(|v| v["decision"] == "action_result")
    });
    drop(first); // SIGKILL
    std::fs::remove_file(s.file("restart-inc-7")).expect("remove");
    // A new remediator in the same group: it rebuilds the incident from the audit topic; the
    // open event comes again (its offset may not have been committed) and runs nothing; the
    // resolution closes the incident as fixed by the step the first one ran.
    let second = Remediator::start(&s, &config, false);
    s.event("inc-7", "open", "llama3-8b");
    s.event("inc-7", "resolved", "llama3-8b");
    let audit = s.audit_of("inc-7", |r| r.iter().any(|v| v["decision"] == "closed"));
    assert_eq!(
        audit
            .iter()
            .filter(|v| v["decision"] == "step_chosen")
            .count(),
        1,
        "{:?}\n{}",
        decisions(&audit),
        second.log()
    );
    let verified = audit
        .iter()
        .rev()
        .find(|v| v["decision"] == "verified")
        .expect("verified");
    assert_eq!(verified["fixed_by"], "restart");
    assert!(!s.file("restart-inc-7").exists(), "the step ran again");
    assert!(
        second.log().contains("1 open incident(s) rebuilt"),
        "{}",
        second.log()
    );
}

#[test]
fn circuit_breaker_stops_calling_a_failing_target() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A target that always fails, counting its calls.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let calls = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom");
            }
        });
    }
    let s = Setup::new("breaker");
    let steps: String = (0..5)
        .map(|k| {
            format!(
                "[[policy.step]]\nname = \"hook-{k}\"\nwait = \"1s\"\naction = {{ kind = \"webhook\", url = \"http://{addr}/hook\", retries = 0 }}\n"
            )
        })
        .collect();
    let r = Remediator::start(
        &s,
        &s.config(&format!("[[policy]]\nname = \"hooks\"\n{steps}")),
        false,
    );
    s.event("inc-8", "open", "llama3-8b");
    let audit = s.audit_of("inc-8", |r| r.iter().any(|v| v["decision"] == "closed"));
    let results: Vec<&str> = audit
        .iter()
        .filter(|v| v["decision"] == "action_result")
        .map(|v| v["detail"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(results.len(), 5, "{:?}\n{}", decisions(&audit), r.log());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "three failures, then the breaker opens"
    );
    assert!(
        results[3].starts_with("circuit open") && results[4].starts_with("circuit open"),
        "{results:?}"
    );
    assert!(audit.iter().any(|v| v["decision"] == "escalated"));
}

/// A real Alertmanager on a free loopback port, stopped when dropped.
struct Alertmanager(Child, String);

impl Alertmanager {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(
            &cfg,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .expect("config");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).expect("log"))
            .spawn()
            .expect("prometheus-alertmanager (Debian package; scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err()
            || !http_request(&addr, "GET", "/-/ready").0.contains("200")
        {
            assert!(Instant::now() < deadline, "Alertmanager did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(child, addr)
    }

    /// Its alerts for `incident`: (state, endsAt).
    fn alerts_of(&self, incident: &str) -> Vec<(String, String)> {
        let (_, body) = http_request(&self.1, "GET", "/api/v2/alerts");
        let v: Value = serde_json::from_str(&body).expect("alerts JSON");
        v.as_array()
            .expect("a list")
            .iter()
            .filter(|a| a["labels"]["incident"] == incident)
            .map(|a| {
                (
                    a["status"]["state"].as_str().unwrap_or_default().to_owned(),
                    a["endsAt"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn alertmanager_receives_the_alert_and_its_resolution() {
    let s = Setup::new("alertmanager");
    let am = Alertmanager::start(&s.dir);
    let config = s.config(&format!(
        "[[policy]]\nname = \"page\"\n[[policy.step]]\nname = \"alert\"\nwait = \"60s\"\naction = {{ kind = \"alertmanager\", url = \"http://{}\", labels = {{ team = \"inference\" }} }}\n",
        am.1
    ));
    let r = Remediator::start(&s, &config, false);
    s.event("inc-9", "open", "llama3-8b");
    s.audit_of("inc-9", |r| {
        r.iter().any(|v| v["decision"] == "action_result")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while am.alerts_of("inc-9").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no alert in Alertmanager:\n{}",
            r.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(am.alerts_of("inc-9")[0].0, "active");
    // The anomaly resolves: the remediator ends the alert.
    s.event("inc-9", "resolved", "llama3-8b");
    let audit = s.audit_of("inc-9", |r| {
        r.iter()
            .any(|v| v["decision"] == "action_result" && v["step"] == "resolve_alert")
    });
    let resolved = audit
        .iter()
        .find(|v| v["step"] == "resolve_alert")
        .expect("resolve");
    assert_eq!(resolved["ok"], true, "{resolved}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = am.alerts_of("inc-9");
        if alerts.iter().all(|(state, _)| state != "active") {
            break;
        }
        assert!(Instant::now() < deadline, "still active: {alerts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn approval_timeout_escalates() {
    let s = Setup::new("approval-timeout");
    let pager = unique("approval-timeout-pager");
    create_topic(&s.brokers, &pager, 1);
    let config = s.config(&format!(
        r#"[[policy]]
name = "rollout"
approval_timeout = "2s"
escalate = {{ kind = "topic", topic = "{pager}", body = {{ incident = "{{{{id}}}}", series = "{{{{series}}}}" }} }}
[[policy.step]]
name = "rollback"
risk = "high"
action = {{ kind = "command", argv = ["/usr/bin/touch", "{dir}/rollback-{{{{id}}}}"] }}
"#,
        dir = s.dir.display()
    ));
    let r = Remediator::start(&s, &config, false);
    s.event("inc-10", "open", "llama3-8b");
    let audit = s.audit_of("inc-10", |r| {
        r.iter()
            .any(|v| v["decision"] == "action_result" && v["step"] == "escalate")
    });
    assert_eq!(
        decisions(&audit),
        [
            "event_received",
            "policy_matched",
            "approval_requested rollback",
            "approval_timed_out",
            "escalated",
            "closed",
            // The escalation's result comes after the incident closed as escalated.
            "action_result escalate",
        ],
        "{}",
        r.log()
    );
    assert!(
        !s.file("rollback-inc-10").exists(),
        "an unapproved step ran"
    );
    // The escalation reached the pager topic.
    let paged = read_until(&s.brokers, &pager, Duration::from_secs(30), |m| {
        !m.is_empty()
    });
    assert_eq!(
        paged[0].json(),
        json!({"incident": "inc-10", "series": "llm_latency_p99_ms"})
    );
}

/// GET over HTTP/1.1 reading `Content-Length` bytes (Chromium's DevTools endpoint answers
/// nothing to HTTP/1.0 and keeps the connection open).
fn get11(addr: &str, path: &str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("body");
    String::from_utf8_lossy(&body).into_owned()
}

/// A minimal Chrome DevTools Protocol client: one page's WebSocket, text frames only.
struct Devtools(std::net::TcpStream, u64);

impl Devtools {
    fn connect(ws_url: &str) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let rest = ws_url.strip_prefix("ws://").expect("ws url");
        let (host, path) = rest.split_once('/').expect("path");
        let mut s = std::net::TcpStream::connect(host).expect("devtools");
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("handshake");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut line = String::new();
        r.read_line(&mut line).expect("status");
        assert!(line.contains("101"), "{line}");
        loop {
            line.clear();
            r.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
        }
        Self(s, 0)
    }

    /// Evaluates `expr` in the page; returns the result's value.
    fn eval(&mut self, expr: &str) -> Value {
        use std::io::{Read, Write};
        self.1 += 1;
        let msg = json!({"id": self.1, "method": "Runtime.evaluate",
                         "params": {"expression": expr, "returnByValue": true}})
        .to_string();
        let payload = msg.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [1u8, 2, 3, 4];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&frame).expect("send");
        loop {
            let mut head = [0u8; 2];
            self.0.read_exact(&mut head).expect("frame");
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.0.read_exact(&mut b).expect("len");
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.0.read_exact(&mut b).expect("len");
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut data = vec![0u8; len];
            self.0.read_exact(&mut data).expect("payload");
            if head[0] & 0x0f != 1 {
                continue;
            }
            let v: Value = serde_json::from_slice(&data).expect("json");
            if v["id"] == self.1 {
                return v["result"]["result"]["value"].clone();
            }
        }
    }
}

#[test]
fn approve_from_the_status_page_in_headless_chromium() {
    let s = Setup::new("page");
    let r = Remediator::start(&s, &approval_config(&s), false);
    s.event("inc-11", "open", "llama3-8b");
    s.audit_of("inc-11", |r| {
        r.iter().any(|v| v["decision"] == "approval_requested")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Some(a) = r.log().lines().find_map(|l| {
            l.split("status page on http://")
                .nth(1)
                .map(|a| a.trim_end_matches('/').to_owned())
        }) {
            break a;
        }
        assert!(Instant::now() < deadline, "no status page:\n{}", r.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    // The page lists the pending approval (rendered on the server, no external assets).
    let (_, html) = http_request(&addr, "GET", "/");
    assert!(
        html.contains("id=\"pending-inc-11\"") && html.contains("value=\"approve\""),
        "{html}"
    );
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    let (_, pending) = http_request(&addr, "GET", "/api/pending");
    assert!(pending.contains("inc-11"), "{pending}");
    // Chromium loads it; a click on approve (with a name typed in) submits the form.
    let profile = s.dir.join("chromium-profile");
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{addr}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium (scripts/test.sh installs it)");
    let port = {
        use std::io::{BufRead, BufReader};
        let err = chromium.stderr.take().expect("stderr");
        let mut port = None;
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(url) = line.split("DevTools listening on ws://").nth(1) {
                port = url.split('/').next().map(str::to_owned);
                break;
            }
        }
        port.expect("DevTools port")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let ws = loop {
        let list = get11(&port, "/json/list");
        let targets: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
        if let Some(ws) = targets.as_array().and_then(|t| {
            t.iter()
                .find(|t| {
                    t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(&addr))
                })
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        }) {
            break ws;
        }
        assert!(Instant::now() < deadline, "no page target: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut dt = Devtools::connect(&ws);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dt.eval("!!document.querySelector('#pending-inc-11 button[value=approve]')") != true {
        assert!(Instant::now() < deadline, "the button never showed");
        std::thread::sleep(Duration::from_millis(100));
    }
    dt.eval(
        "document.querySelector('#pending-inc-11 input[name=who]').value = 'chromium'; \
         document.querySelector('#pending-inc-11 button[value=approve]').click(); true",
    );
    // The step runs, and the approval is recorded with who gave it.
    wait_for_file(
        &s.file("rollback-inc-11"),
        Duration::from_secs(30),
        &r.log(),
    );
    let audit = s.audit_of("inc-11", |r| {
        r.iter().any(|v| v["decision"] == "approval_granted")
    });
    let granted = audit
        .iter()
        .find(|v| v["decision"] == "approval_granted")
        .expect("granted");
    assert_eq!(granted["who"], "chromium");
    // The page (reloaded: it is rendered on the server) shows the decision and no pending
    // approval; its table of what each step did lists the rollback.
    let deadline = Instant::now() + Duration::from_secs(30);
    while dt.eval("document.body.innerText.includes('approval_granted') && !document.querySelector('#pending-inc-11') && [...document.querySelectorAll('tr.rate')].some(r => r.innerText.includes('rollback'))") != true {
        assert!(Instant::now() < deadline, "the page did not show the decision");
        dt.eval("location.reload(); true");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = chromium.kill();
    let _ = chromium.wait();
}

/// `telltale gen serve`, stopped when dropped.
struct Platform(Child, PathBuf);

impl Platform {
    fn start(s: &Setup, topic: &str) -> (Self, String) {
        let log = s.dir.join("platform.log");
        let args = [
            "gen",
            "serve",
            "--brokers",
            &s.brokers,
            "--topic",
            topic,
            "--interval",
            "100ms",
            "--listen",
            "127.0.0.1:0",
            "--models",
            "1",
        ];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let child = spawn_telltale(&args, &log);
        let p = Self(child, log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&p.1).unwrap_or_default();
            if let Some(a) = text
                .split("control on http://")
                .nth(1)
                .and_then(|r| r.split('/').next())
            {
                let a = a.to_owned();
                return (p, a);
            }
            assert!(Instant::now() < deadline, "no control endpoint: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn closed_loop_fault_is_detected_remediated_and_verified() {
    let s = Setup::new("loop");
    let telemetry = unique("loop-telemetry");
    let dlq = unique("loop-dlq");
    create_topic(&s.brokers, &telemetry, 1);
    // The engine: the built-in chain, holding its baseline while an anomaly is open, so the
    // anomaly stays open until the platform is back.
    let engine = Engine::start(
        "loop-engine",
        &format!(
            r#"[chain]
hold = true

[kafka]
brokers = "{}"
group_id = "{}"
topics = ["{telemetry}"]
anomaly_topic = "{}"
dead_letter_topic = "{dlq}"
drain_timeout = "4s"

[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"fetch.wait.max.ms" = "10"

[http]
listen = "127.0.0.1:0"
"#,
            s.brokers,
            unique("loop-engine-group"),
            s.anomalies
        ),
    );
    let (_platform, control) = Platform::start(&s, &telemetry);
    let hook = |action: &str| {
        format!("http://{control}/remediate?action={action}&model={{{{label.model}}}}")
    };
    let remediator = Remediator::start(
        &s,
        &s.config(&format!(
            r#"[[policy]]
name = "latency"
metric = "llm_latency_p50_ms"
[[policy.step]]
name = "restart"
wait = "3s"
action = {{ kind = "webhook", url = "{}" }}
[[policy.step]]
name = "rollback"
wait = "60s"
action = {{ kind = "webhook", url = "{}" }}
"#,
            hook("restart"),
            hook("rollback")
        )),
        false,
    );
    // Past the warm-up (30 points a series, 100 ms apart), a fault the restart does not fix.
    engine.wait_for("warm models", Duration::from_secs(60), |e| {
        e.metric("telltale_messages_done_total").unwrap_or(0.0) >= 3.0 * 60.0
    });
    let (status, _) = http_request(&control, "POST", "/fault?kind=level_shift&model=llama3-8b");
    assert!(status.contains("200"), "{status}");
    // The remediator's audit: the restart does not resolve it in 3 s, the rollback does.
    let audit: Vec<Value> = read_until(&s.brokers, &s.audit, Duration::from_secs(90), |m| {
        m.iter().any(|m| {
            let v = m.json();
            v["decision"] == "closed" && v["outcome"] == "fixed"
        })
    })
    .iter()
    .map(Msg::json)
    .collect();
    let closed = audit
        .iter()
        .find(|v| v["decision"] == "closed" && v["outcome"] == "fixed")
        .unwrap_or_else(|| {
            panic!(
                "no incident fixed:\n{}\n{}",
                remediator.log(),
                engine.log_text()
            )
        });
    let id = closed["incident"].as_str().expect("id").to_owned();
    let of: Vec<&Value> = audit
        .iter()
        .filter(|v| v["incident"] == id.as_str())
        .collect();
    let d = decisions(&of.iter().map(|v| (*v).clone()).collect::<Vec<_>>());
    assert_eq!(
        d,
        [
            "event_received",
            "policy_matched",
            "step_chosen restart",
            "action_result restart",
            "verified",
            "step_chosen rollback",
            "action_result rollback",
            "event_received",
            "verified",
            "closed",
        ],
        "{}",
        remediator.log()
    );
    let verified = of
        .iter()
        .rev()
        .find(|v| v["decision"] == "verified")
        .expect("verified");
    assert_eq!(verified["fixed_by"], "rollback");
    // The platform says the rollback cleared the fault.
    let (_, body) = http_request(&control, "GET", "/status");
    let faults: Value = serde_json::from_str(&body).expect("status");
    let fault = &faults[0];
    assert_eq!(fault["cleared_by"], "rollback");
    // Time to detect (fault → open), to act (open → first action done), to verify (the fix →
    // resolved), from the platform's clock, the events' times and the audit's.
    let events = read_until(&s.brokers, &s.anomalies, Duration::from_secs(10), |m| {
        m.iter().filter(|m| m.json()["id"] == id.as_str()).count() >= 2
    });
    let at = |state: &str| {
        events
            .iter()
            .map(Msg::json)
            .find(|v| v["id"] == id.as_str() && v["state"] == state)
            .and_then(|v| telltale_core::time::parse_rfc3339(v["timestamp"].as_str()?))
            .expect("event time")
    };
    let (opened, resolved) = (at("open"), at("resolved"));
    let injected = fault["injected"].as_i64().expect("injected");
    let cleared = fault["cleared"].as_i64().expect("cleared");
    let received = of[0]["at"].as_i64().expect("at");
    let acted = of[3]["at"].as_i64().expect("at");
    eprintln!(
        "closed loop: detected {} ms after the fault, first action {} ms after the open was received, \
         resolved {} ms after the fix",
        opened - injected,
        acted - received,
        resolved - cleared
    );
    assert!(opened >= injected && resolved >= cleared);
}
