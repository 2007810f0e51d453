//! The remediator's Kafka loop: anomaly events and approvals in (one consumer group), actions
//! executed, audit records out. An input offset is stored only after the audit records and
//! action messages it led to are acknowledged, so delivery is at-least-once; the machine
//! deduplicates on (event id, state), so a redelivered event runs no step twice.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;

use crate::Error;
use crate::machine::{Machine, Out, Ready};
use crate::policy::{Config, Policy};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs until SIGINT/SIGTERM.
pub fn run(config: &Config, policies: Vec<Policy>, dry_run: bool) -> Result<(), Error> {
    let s = &config.remediator;
    let dry_run = dry_run || s.dry_run;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &s.consumer {
        cc.set(k, v);
    }
    let consumer: BaseConsumer = cc.create()?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    telltale_kafka::admin::ensure_topics(
        &telltale_kafka::config::Connection::plain(&s.brokers),
        &[
            (&s.anomaly_topic, 1),
            (&s.audit_topic, 1),
            (&s.approvals_topic, 1),
        ],
        None,
    )
    .map_err(|e| Error::Config {
        path: "remediator.brokers".into(),
        message: e.to_string(),
    })?;
    consumer.subscribe(&[&s.anomaly_topic, &s.approvals_topic])?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    tracing::info!(
        target: "telltale::remediate",
        "remediating {} with {} polic{}{}; audit to {}, approvals from {}",
        s.anomaly_topic,
        policies.len(),
        if policies.len() == 1 { "y" } else { "ies" },
        if dry_run { " (dry run: nothing is executed)" } else { "" },
        s.audit_topic,
        s.approvals_topic
    );
    let mut machine = Machine::new(policies);
    let trail = read_audit(&s.brokers, &s.audit_topic)?;
    let rebuilt = machine.rebuild(&trail);
    if !trail.is_empty() {
        tracing::info!(
            target: "telltale::remediate",
            "{rebuilt} open incident(s) rebuilt from {} audit record(s)",
            trail.len()
        );
    }
    let status = Arc::new(std::sync::Mutex::new(crate::http::Status::default()));
    let (approvals_tx, approvals_rx) = std::sync::mpsc::channel::<Value>();
    if !s.listen.is_empty() {
        let addr = crate::http::serve(&s.listen, s.token(), status.clone(), approvals_tx)?;
        tracing::info!(
            target: "telltale::remediate",
            "approvals API and status page on http://{addr}/"
        );
    }
    let mut outs: Vec<Out> = Vec::new();
    let mut breakers = Breakers::default();
    while !stop.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(100));
        let now = now_ms();
        let mut stored = None;
        match polled {
            None => {}
            Some(Err(e)) => tracing::warn!(target: "telltale::remediate", "consumer: {e}"),
            Some(Ok(m)) => {
                let v: Option<Value> = m.payload().and_then(|p| serde_json::from_slice(p).ok());
                match v {
                    Some(v) if m.topic() == s.anomaly_topic => outs.extend(machine.event(&v, now)),
                    Some(v) => outs.extend(machine.approval(&v, now)),
                    None => tracing::warn!(
                        target: "telltale::remediate",
                        "{}/{} offset {}: not JSON, skipped",
                        m.topic(),
                        m.partition(),
                        m.offset()
                    ),
                }
                stored = Some((m.topic().to_owned(), m.partition(), m.offset()));
            }
        }
        outs.extend(machine.tick(now));
        while let Ok(a) = approvals_rx.try_recv() {
            outs.extend(machine.approval(&a, now));
        }
        let mut recent = Vec::new();
        while !outs.is_empty() {
            for out in std::mem::take(&mut outs) {
                match out {
                    Out::Audit { incident, record } => {
                        let payload = record.to_string();
                        recent.push(record);
                        send(&producer, &s.audit_topic, &incident, payload.as_bytes());
                    }
                    Out::Run {
                        incident,
                        step,
                        action,
                    } => {
                        let started = Instant::now();
                        let t = target(&action);
                        let (ok, detail) = if dry_run {
                            (
                                true,
                                format!("dry run: not executed ({})", describe(&action)),
                            )
                        } else if !breakers.allows(&t, now_ms()) {
                            (
                                false,
                                format!(
                                    "circuit open: {t} failed {BREAKER_FAILURES} times in a row, not called"
                                ),
                            )
                        } else {
                            let (ok, detail) = execute(&producer, &action, &incident);
                            breakers.record(&t, ok, now_ms());
                            (ok, detail)
                        };
                        let latency = started.elapsed().as_millis() as i64;
                        outs.extend(machine.result(
                            &incident,
                            &step,
                            ok,
                            &detail,
                            latency,
                            now_ms(),
                        ));
                    }
                }
            }
        }
        {
            let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
            st.incidents = machine.view();
            st.rates = machine.rates();
            for r in recent {
                if st.recent.len() == crate::http::RECENT {
                    st.recent.pop_front();
                }
                st.recent.push_back(r);
            }
        }
        if let Some((topic, partition, offset)) = stored {
            // At-least-once: the audit and action messages first, then the offset.
            if let Err(e) = producer.flush(Duration::from_secs(30)) {
                return Err(e.into());
            }
            consumer.store_offset(&topic, partition, offset)?;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .ok();
    tracing::info!(target: "telltale::remediate", "stopped; {} incident(s) open", machine.open());
    Ok(())
}

/// Every record of the audit topic, in the order written (per partition; an incident's records
/// share a key, so a partition).
fn read_audit(brokers: &str, topic: &str) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    telltale_kafka::client::read_to_end(
        &telltale_kafka::config::Connection::plain(brokers),
        topic,
        None,
        |m| {
            if let Some(v) = m.payload().and_then(|p| serde_json::from_slice(p).ok()) {
                out.push(v);
            }
        },
    )
    .map_err(|e| Error::Config {
        path: "remediator.audit_topic".into(),
        message: format!("cannot read it back: {e}"),
    })?;
    Ok(out)
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    payload: &[u8],
) {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((e, r)) => {
                tracing::debug!(target: "telltale::remediate", "produce: {e}, retrying");
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn describe(a: &Ready) -> String {
    match a {
        Ready::Command { argv, .. } => format!("command {argv:?}"),
        Ready::Topic { topic, .. } => format!("message to {topic}"),
        Ready::Webhook { url, .. } => format!("POST {url}"),
        Ready::Alert { url, ends, .. } => {
            format!("{} alert at {url}", if *ends { "resolve" } else { "fire" })
        }
    }
}

/// What an action calls: a breaker is kept per target.
fn target(a: &Ready) -> String {
    match a {
        Ready::Command { argv, .. } => argv[0].clone(),
        Ready::Topic { topic, .. } => format!("topic {topic}"),
        Ready::Webhook { url, .. } | Ready::Alert { url, .. } => url.clone(),
    }
}

/// Consecutive failures of a target after which it is not called for [`BREAKER_OPEN_MS`].
const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker keeps a target from being called.
const BREAKER_OPEN_MS: i64 = 60_000;

/// A circuit breaker per action target: a target that keeps failing is not called until its
/// breaker's time is up (then one call tries it again).
#[derive(Debug, Default)]
struct Breakers(std::collections::HashMap<String, (u32, i64)>);

impl Breakers {
    /// Whether `target` may be called at `now`.
    fn allows(&self, target: &str, now: i64) -> bool {
        self.0.get(target).is_none_or(|(_, until)| *until <= now)
    }
    fn record(&mut self, target: &str, ok: bool, now: i64) {
        let e = self.0.entry(target.to_owned()).or_default();
        if ok {
            *e = (0, 0);
        } else {
            e.0 += 1;
            if e.0 >= BREAKER_FAILURES {
                e.1 = now + BREAKER_OPEN_MS;
            }
        }
    }
}

/// POSTs `body` to `url` with up to `retries` retries (200 ms doubling).
fn post(url: &str, body: &Value, timeout_ms: i64, retries: u32) -> (bool, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(timeout_ms.max(1) as u64)))
        .build()
        .into();
    let payload = body.to_string();
    let mut backoff = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 0..=retries {
        if attempt > 0 {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
        match agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(payload.as_str())
        {
            Ok(r) => {
                return (
                    true,
                    format!("{} after {} attempt(s)", r.status(), attempt + 1),
                );
            }
            Err(e) => last = e.to_string(),
        }
    }
    (false, format!("{last} after {} attempt(s)", retries + 1))
}

/// Alertmanager's alert for `labels`, firing or ended now.
fn alert_body(labels: &std::collections::BTreeMap<String, String>, ends: bool) -> Value {
    let now = telltale_core::time::format_rfc3339(now_ms());
    let incident = labels.get("incident").map_or("", String::as_str);
    let mut alert = serde_json::json!({
        "labels": labels,
        "annotations": {"summary": format!("telltale anomaly {incident}")},
    });
    if ends {
        alert["endsAt"] = Value::String(now);
    } else {
        alert["startsAt"] = Value::String(now);
    }
    Value::Array(vec![alert])
}

/// Most bytes of a command's output kept in the audit.
const OUTPUT: usize = 4096;

/// Runs an action: a command as an argv array (no shell; stdin closed; killed after its
/// timeout), or a message to a topic. Returns whether it succeeded and what it said.
fn execute(
    producer: &ThreadedProducer<DefaultProducerContext>,
    action: &Ready,
    incident: &str,
) -> (bool, String) {
    match action {
        Ready::Webhook {
            url,
            body,
            timeout_ms,
            retries,
        } => post(url, body, *timeout_ms, *retries),
        Ready::Alert { url, labels, ends } => post(
            &format!("{}/api/v2/alerts", url.trim_end_matches('/')),
            &alert_body(labels, *ends),
            10_000,
            2,
        ),
        Ready::Topic { topic, body } => {
            send(producer, topic, incident, body.to_string().as_bytes());
            match producer.flush(Duration::from_secs(30)) {
                Ok(()) => (true, format!("sent to {topic}")),
                Err(e) => (false, format!("not sent to {topic}: {e}")),
            }
        }
        Ready::Command { argv, timeout_ms } => {
            let child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => return (false, format!("cannot start {}: {e}", argv[0])),
            };
            let deadline = Instant::now() + Duration::from_millis(*timeout_ms as u64);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            let mut text = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.by_ref().take(OUTPUT as u64).read_to_string(&mut text);
            }
            if let Some(mut e) = child.stderr.take() {
                let mut err = String::new();
                let _ = e.by_ref().take(OUTPUT as u64).read_to_string(&mut err);
                text.push_str(&err);
            }
            match status {
                Some(s) if s.success() => (true, text),
                Some(s) => (false, format!("{s}: {text}")),
                None => (false, format!("killed after {timeout_ms} ms: {text}")),
            }
        }
    }
}
