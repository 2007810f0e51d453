//! `telltale gen serve`: a live synthetic LLM serving platform for the closed-loop demo. Every
//! interval it produces, for each model, its p50 latency, error rate and token rate to a topic
//! (telltale's JSON lines, keyed by series id, event time = now), and an HTTP control endpoint
//! injects faults and applies remediations:
//!
//! - `POST /fault?kind=level_shift|error_burst|token_rate_drop&model=M` — the fault holds until
//!   remediated: p50 latency × 1.35, error rate + 5 points, token rate × 0.6;
//! - `POST /remediate?action=restart|reroute|rollback&model=M` — `rollback` clears a level shift,
//!   `restart` an error burst, `reroute` a token-rate drop; anything else changes nothing;
//! - `GET /status` — the faults with when each was injected and cleared (ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};
use telltale_core::key::SeriesKey;

use crate::Error;
use crate::config::Connection;

/// Models the demo serves.
const MODELS: [&str; 3] = ["llama3-8b", "mixtral-8x7b", "qwen2-72b"];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One injected fault.
#[derive(Debug, Clone)]
struct Fault {
    kind: String,
    model: String,
    injected_ms: i64,
    cleared_ms: Option<i64>,
    cleared_by: Option<String>,
}

fn query(url: &str) -> Vec<(String, String)> {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%2D", "-")))
        .collect()
}

/// What fixes each fault.
fn fixes(action: &str, kind: &str) -> bool {
    matches!(
        (action, kind),
        ("rollback", "level_shift") | ("restart", "error_burst") | ("reroute", "token_rate_drop")
    )
}

/// Runs until `stop`; returns the control endpoint's address once it listens (through `ready`).
#[allow(clippy::too_many_arguments)]
pub fn serve(
    conn: &Connection,
    topic: &str,
    interval: Duration,
    listen: &str,
    models: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&str),
) -> Result<(), Error> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        conn.client_config(&[("linger.ms", "5")], &[])?.create()?;
    let faults: Arc<Mutex<Vec<Fault>>> = Arc::default();
    let server =
        tiny_http::Server::http(listen).map_err(|e| Error::Io(std::io::Error::other(e)))?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| listen.to_owned(), |a| a.to_string());
    ready(&addr);
    {
        let faults = faults.clone();
        std::thread::Builder::new()
            .name("telltale-demo-control".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    let url = req.url().to_owned();
                    let q = query(&url);
                    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    let path = url.split('?').next().unwrap_or_default().to_owned();
                    let body: Value =
                        match (req.method().as_str(), path.as_str()) {
                            ("POST", "/fault") => {
                                let (Some(kind), Some(model)) = (get("kind"), get("model")) else {
                                    let _ = req.respond(
                                        tiny_http::Response::from_string("kind and model\n")
                                            .with_status_code(400),
                                    );
                                    continue;
                                };
                                let f = Fault {
                                    kind,
                                    model,
                                    injected_ms: now_ms(),
                                    cleared_ms: None,
                                    cleared_by: None,
                                };
                                faults
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(f.clone());
                                json!({"injected": f.kind, "model": f.model, "at": f.injected_ms})
                            }
                            ("POST", "/remediate") => {
                                let action = get("action").unwrap_or_default();
                                let model = get("model").unwrap_or_default();
                                let mut cleared = Vec::new();
                                for f in faults.lock().unwrap_or_else(|e| e.into_inner()).iter_mut()
                                {
                                    if f.cleared_ms.is_none()
                                        && f.model == model
                                        && fixes(&action, &f.kind)
                                    {
                                        f.cleared_ms = Some(now_ms());
                                        f.cleared_by = Some(action.clone());
                                        cleared.push(f.kind.clone());
                                    }
                                }
                                json!({"action": action, "model": model, "cleared": cleared})
                            }
                            ("GET", "/status") => {
                                let f = faults.lock().unwrap_or_else(|e| e.into_inner());
                                json!(f.iter().map(|f| json!({
                                "kind": f.kind, "model": f.model, "injected": f.injected_ms,
                                "cleared": f.cleared_ms, "cleared_by": f.cleared_by,
                            })).collect::<Vec<_>>())
                            }
                            _ => {
                                let _ = req.respond(
                                    tiny_http::Response::from_string("not found\n")
                                        .with_status_code(404),
                                );
                                continue;
                            }
                        };
                    let _ = req.respond(tiny_http::Response::from_string(body.to_string()));
                }
            })?;
    }
    let mut rng = telltale_gen::Rng::new(seed);
    let models = &MODELS[..models.clamp(1, MODELS.len())];
    while !stop.load(Ordering::Relaxed) {
        let ts = now_ms();
        let active: Vec<Fault> = faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|f| f.cleared_ms.is_none())
            .cloned()
            .collect();
        for (m, model) in models.iter().enumerate() {
            let has = |k: &str| active.iter().any(|f| f.kind == k && f.model == *model);
            let p50 = (180.0 + 120.0 * m as f64)
                * (1.0 + 0.04 * rng.normal())
                * if has("level_shift") { 1.35 } else { 1.0 };
            let errors = (0.002 * (1.0 + 0.2 * rng.normal())).max(0.0)
                + if has("error_burst") { 0.05 } else { 0.0 };
            let tokens = (95.0 - 25.0 * m as f64)
                * (1.0 + 0.03 * rng.normal())
                * if has("token_rate_drop") { 0.6 } else { 1.0 };
            for (metric, value) in [
                ("llm_latency_p50_ms", p50),
                ("llm_error_rate", errors),
                ("llm_tokens_per_s", tokens),
            ] {
                let key = SeriesKey::new(metric, &[("model", model)]);
                let line = json!({"metric": metric, "labels": {"model": model}, "timestamp": ts, "value": value}).to_string();
                let id = format!("{:016x}", key.id());
                let mut record = BaseRecord::to(topic).key(&id).payload(&line);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            }
        }
        std::thread::sleep(interval);
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}
