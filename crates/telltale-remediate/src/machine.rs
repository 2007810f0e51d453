//! Incidents and their ladders: a pure state machine. It is driven by anomaly events, approvals,
//! action results and the clock (`now`, ms), and answers with what to audit and what to run;
//! the runner ([`crate::run`]) executes and feeds results back. No I/O here, so every rule is
//! unit-tested.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde_json::{Value, json};

use crate::policy::{Action, OnTimeout, Policy, Risk};
use crate::template::expand;

/// An action with its templates filled in from the incident's event.
#[derive(Debug, Clone, PartialEq)]
pub enum Ready {
    /// Program and arguments (one argv element each), longest run.
    Command {
        /// argv.
        argv: Vec<String>,
        /// Timeout, ms.
        timeout_ms: i64,
    },
    /// A JSON body for a URL.
    Webhook {
        /// URL.
        url: String,
        /// Body.
        body: Value,
        /// Timeout, ms.
        timeout_ms: i64,
        /// Retries.
        retries: u32,
    },
    /// An alert for Alertmanager: firing, or resolved when `ends`.
    Alert {
        /// Base URL.
        url: String,
        /// Its labels (what identifies it).
        labels: BTreeMap<String, String>,
        /// Resolved (`endsAt` now) rather than firing.
        ends: bool,
    },
    /// A JSON message for a topic.
    Topic {
        /// The topic.
        topic: String,
        /// The message.
        body: Value,
    },
}

/// What the machine asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A decision for the audit topic (keyed by `incident`).
    Audit {
        /// Incident id (the anomaly id).
        incident: String,
        /// The record.
        record: Value,
    },
    /// Run an action, then report with [`Machine::result`].
    Run {
        /// Incident id.
        incident: String,
        /// Step name (`escalate` for the escalation).
        step: String,
        /// The action.
        action: Ready,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// The step's action is out; its result not yet in.
    Acting,
    /// The step ran; waiting for `resolved` until then.
    Waiting { until: i64 },
    /// A high step waits for its approval until then.
    Pending { until: i64 },
    /// The anomaly must stay open until then before the ladder starts (`open_for`).
    Delayed { until: i64 },
}

#[derive(Debug, Clone)]
struct Incident {
    policy: usize,
    event: Value,
    step: usize,
    phase: Phase,
    /// Steps whose action ran.
    ran: usize,
    /// Alerts fired for this incident (resolved when it is fixed).
    alerts: Vec<Ready>,
    /// The ladder for this incident: indexes into the policy's steps (learned order).
    order: Vec<usize>,
    /// The anomaly's kind for learning.
    sig: String,
}

/// An open incident as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IncidentView {
    /// Anomaly id.
    pub id: String,
    /// Policy name.
    pub policy: String,
    /// Metric name.
    pub series: String,
    /// Labels, as JSON.
    pub labels: String,
    /// Current step.
    pub step: String,
    /// What it waits for.
    pub phase: &'static str,
    /// Whether the step waits for an approval.
    pub pending: bool,
}

/// How many closed incident ids are remembered (a redelivered event of one is ignored).
const REMEMBERED: usize = 100_000;

/// Every open incident and what has been seen.
#[derive(Debug)]
pub struct Machine {
    policies: Vec<Policy>,
    incidents: BTreeMap<String, Incident>,
    /// (anomaly id, state) of every event handled while its incident is open or remembered.
    seen: HashSet<(String, String)>,
    closed: VecDeque<String>,
    /// When each (policy, step, target) last ran (cooldowns).
    last_run: BTreeMap<(usize, usize, String), i64>,
    /// Recent run times of each (policy, step) (rate limits), oldest first.
    runs: BTreeMap<(usize, usize), VecDeque<i64>>,
    /// Per (policy, anomaly kind, step): (times run, times it fixed the anomaly).
    stats: BTreeMap<(usize, String, String), (u32, u32)>,
}

fn ms_text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

impl Machine {
    /// A machine with these policies and no incident.
    pub fn new(policies: Vec<Policy>) -> Self {
        Self {
            policies,
            incidents: BTreeMap::new(),
            seen: HashSet::new(),
            closed: VecDeque::new(),
            last_run: BTreeMap::new(),
            runs: BTreeMap::new(),
            stats: BTreeMap::new(),
        }
    }

    /// Open incidents.
    pub fn open(&self) -> usize {
        self.incidents.len()
    }

    /// The step at position `k` of an incident's ladder.
    fn step_at(&self, inc: &Incident, k: usize) -> Option<&crate::policy::Step> {
        self.policies[inc.policy].steps.get(*inc.order.get(k)?)
    }

    /// An anomaly's kind: the metric, the policy's signature labels and the first detector that
    /// scored at least 0.99999.
    fn signature(policy: &Policy, ev: &Value) -> String {
        let mut sig = ev["series"]["name"].as_str().unwrap_or_default().to_owned();
        for l in &policy.signature {
            sig.push_str(&format!(
                " {l}={}",
                ev["series"]["labels"][l.as_str()]
                    .as_str()
                    .unwrap_or_default()
            ));
        }
        let fired = ev["detectors"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find(|d| d["score"].as_f64().is_some_and(|s| s >= 0.99999))
            })
            .and_then(|d| d["params"]["kind"].as_str().map(str::to_owned));
        if let Some(k) = fired {
            sig.push_str(&format!(" by {k}"));
        }
        sig
    }

    /// The ladder for a new incident: the configured order, or with `learn` each run of steps of
    /// one risk level sorted by how often each fixed this kind of anomaly (a step never moves
    /// past a step of another risk); a share `explore` of incidents keeps the configured order.
    fn order(&self, p: usize, sig: &str, id: &str) -> Vec<usize> {
        let policy = &self.policies[p];
        let mut order: Vec<usize> = (0..policy.steps.len()).collect();
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let explore = (h % 1000) as f64 / 1000.0 < policy.explore;
        if !policy.learn || explore {
            return order;
        }
        let rate = |k: usize| {
            let (tried, fixed) = self
                .stats
                .get(&(p, sig.to_owned(), policy.steps[k].name.clone()))
                .copied()
                .unwrap_or((0, 0));
            (f64::from(fixed) + 1.0) / (f64::from(tried) + 2.0)
        };
        let mut start = 0;
        while start < order.len() {
            let risk = policy.steps[order[start]].risk;
            let mut end = start;
            while end < order.len() && policy.steps[order[end]].risk == risk {
                end += 1;
            }
            order[start..end].sort_by(|a, b| rate(*b).total_cmp(&rate(*a)));
            start = end;
        }
        order
    }

    /// What each step did for each kind of anomaly: for the status page.
    pub fn rates(&self) -> Vec<Value> {
        self.stats
            .iter()
            .map(|((p, sig, step), (tried, fixed))| {
                json!({"policy": self.policies[*p].name, "kind": sig, "step": step,
                       "runs": tried, "fixed": fixed})
            })
            .collect()
    }

    /// The open incidents, for the status page: (id, policy, series name, step, phase, pending
    /// approval).
    pub fn view(&self) -> Vec<IncidentView> {
        self.incidents
            .iter()
            .map(|(id, i)| {
                let policy = &self.policies[i.policy];
                let step = self
                    .step_at(i, i.step)
                    .map_or_else(|| "-".to_owned(), |s| s.name.clone());
                IncidentView {
                    id: id.clone(),
                    policy: policy.name.clone(),
                    series: i.event["series"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    labels: i.event["series"]["labels"].to_string(),
                    step,
                    phase: match i.phase {
                        Phase::Acting => "acting",
                        Phase::Waiting { .. } => "waiting for resolved",
                        Phase::Pending { .. } => "waiting for approval",
                        Phase::Delayed { .. } => "waiting to see if it lasts",
                    },
                    pending: matches!(i.phase, Phase::Pending { .. }),
                }
            })
            .collect()
    }

    fn audit(&self, id: &str, decision: &str, extra: Value, now: i64) -> Out {
        let inc = self.incidents.get(id);
        let mut record = json!({
            "incident": id,
            "decision": decision,
            "at": now,
        });
        if let Some(i) = inc {
            record["policy"] = json!(self.policies[i.policy].name);
            record["series"] = i.event["series"].clone();
            record["scores"] = i.event["detectors"].clone();
        }
        if let (Value::Object(r), Value::Object(e)) = (&mut record, extra) {
            r.extend(e);
        }
        Out::Audit {
            incident: id.to_owned(),
            record,
        }
    }

    /// An anomaly event (`open`, `update` or `resolved`).
    pub fn event(&mut self, ev: &Value, now: i64) -> Vec<Out> {
        let (id, state) = (ms_text(&ev["id"]), ms_text(&ev["state"]));
        if id.is_empty() {
            return Vec::new();
        }
        if !self.seen.insert((id.clone(), state.clone())) {
            // Redelivered (at-least-once): already handled, nothing runs twice.
            return Vec::new();
        }
        let mut out = Vec::new();
        match state.as_str() {
            "open" => {
                if self.incidents.contains_key(&id) || self.closed.contains(&id) {
                    return out;
                }
                let Some(policy) = self.policies.iter().position(|p| p.matches(ev)) else {
                    out.push(self.audit(&id, "no_policy", json!({"series": ev["series"]}), now));
                    return out;
                };
                let sig = Self::signature(&self.policies[policy], ev);
                let order = self.order(policy, &sig, &id);
                let names: Vec<&str> = order
                    .iter()
                    .map(|k| self.policies[policy].steps[*k].name.as_str())
                    .collect();
                let matched = json!({"event": ev, "signature": sig, "order": names});
                self.incidents.insert(
                    id.clone(),
                    Incident {
                        policy,
                        event: ev.clone(),
                        step: 0,
                        phase: Phase::Acting,
                        ran: 0,
                        alerts: Vec::new(),
                        order,
                        sig,
                    },
                );
                out.push(self.audit(&id, "event_received", json!({"state": "open"}), now));
                // The whole event, its kind and its ladder, so a restarted remediator can
                // rebuild the incident.
                out.push(self.audit(&id, "policy_matched", matched, now));
                let open_for = self.policies[policy].open_for_ms;
                if open_for > 0 {
                    if let Some(i) = self.incidents.get_mut(&id) {
                        i.phase = Phase::Delayed {
                            until: now + open_for,
                        };
                    }
                    out.push(self.audit(&id, "delayed", json!({"why": "the policy acts on anomalies open longer", "open_for_ms": open_for}), now));
                } else {
                    self.start_step(&id, "the first step of the ladder", now, &mut out);
                }
            }
            "update" => {
                if let Some(i) = self.incidents.get_mut(&id) {
                    i.event["severity"] = ev["severity"].clone();
                    out.push(self.audit(
                        &id,
                        "event_received",
                        json!({"state": "update", "severity": ev["severity"]}),
                        now,
                    ));
                }
            }
            "resolved" => {
                let Some(inc) = self.incidents.get(&id) else {
                    return out;
                };
                let (outcome, mut verified) = if inc.ran == 0 {
                    ("resolved_before_any_step", json!({}))
                } else {
                    let last = inc.step.min(inc.order.len() - 1);
                    let name = self
                        .step_at(inc, last)
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    let key = (inc.policy, inc.sig.clone(), name.clone());
                    self.stats.entry(key).or_default().1 += 1;
                    ("fixed", json!({"fixed_by": name, "steps_run": inc.ran}))
                };
                out.push(self.audit(&id, "event_received", json!({"state": "resolved"}), now));
                verified["outcome"] = json!(outcome);
                out.push(self.audit(&id, "verified", verified, now));
                self.close(&id, outcome, now, &mut out);
            }
            _ => {}
        }
        out
    }

    fn start_step(&mut self, id: &str, why: &str, now: i64, out: &mut Vec<Out>) {
        let Some(inc) = self.incidents.get(id) else {
            return;
        };
        let policy = &self.policies[inc.policy];
        let Some(step) = self.step_at(inc, inc.step).cloned() else {
            self.escalate(id, now, out);
            return;
        };
        let approval_ms = policy.approval_timeout_ms;
        if step.risk == Risk::High {
            out.push(self.audit(
                id,
                "approval_requested",
                json!({"step": step.name, "risk": "high", "why": why, "timeout_ms": approval_ms}),
                now,
            ));
            if let Some(i) = self.incidents.get_mut(id) {
                i.phase = Phase::Pending {
                    until: now + approval_ms,
                };
            }
            return;
        }
        self.run_step(id, why, now, out);
    }

    fn run_step(&mut self, id: &str, why: &str, now: i64, out: &mut Vec<Out>) {
        let Some(inc) = self.incidents.get(id) else {
            return;
        };
        let Some(step) = self.step_at(inc, inc.step).cloned() else {
            return;
        };
        let policy_name = self.policies[inc.policy].name.clone();
        let (p, k) = (inc.policy, inc.order[inc.step]);
        match ready(&step.action, &inc.event, id, &policy_name) {
            Ok(action) => {
                let target = format!("{action:?}");
                let cooled = self
                    .last_run
                    .get(&(p, k, target.clone()))
                    .is_some_and(|t| now < t + step.cooldown_ms);
                let runs = self.runs.entry((p, k)).or_default();
                if let Some((_, window)) = step.rate {
                    while runs.front().is_some_and(|t| *t <= now - window) {
                        runs.pop_front();
                    }
                }
                let limited = step.rate.is_some_and(|(n, _)| runs.len() >= n);
                if cooled || limited {
                    let why = if cooled {
                        "its cooldown on this target has not passed"
                    } else {
                        "it reached its rate limit"
                    };
                    out.push(self.audit(
                        id,
                        "step_skipped",
                        json!({"step": step.name, "why": why}),
                        now,
                    ));
                    self.next_step(id, "the step before was skipped", now, out);
                    return;
                }
                runs.push_back(now);
                self.last_run.insert((p, k, target), now);
                out.push(self.audit(
                    id,
                    "step_chosen",
                    json!({"step": step.name, "risk": step.risk, "why": why}),
                    now,
                ));
                if let Some(i) = self.incidents.get_mut(id) {
                    i.phase = Phase::Acting;
                    if matches!(action, Ready::Alert { .. }) {
                        i.alerts.push(action.clone());
                    }
                }
                out.push(Out::Run {
                    incident: id.to_owned(),
                    step: step.name,
                    action,
                });
            }
            Err(e) => {
                out.push(self.audit(
                    id,
                    "step_skipped",
                    json!({"step": step.name, "why": format!("its arguments cannot be filled: {e}")}),
                    now,
                ));
                self.next_step(id, "the step before could not run", now, out);
            }
        }
    }

    fn next_step(&mut self, id: &str, why: &str, now: i64, out: &mut Vec<Out>) {
        if let Some(i) = self.incidents.get_mut(id) {
            i.step += 1;
        }
        self.start_step(id, why, now, out);
    }

    fn escalate(&mut self, id: &str, now: i64, out: &mut Vec<Out>) {
        let Some(inc) = self.incidents.get(id) else {
            return;
        };
        let policy = &self.policies[inc.policy];
        out.push(self.audit(
            id,
            "escalated",
            json!({"why": "the ladder is exhausted", "steps_run": inc.ran}),
            now,
        ));
        if let Some(action) = policy
            .escalate
            .as_ref()
            .and_then(|a| ready(a, &inc.event, id, &policy.name).ok())
        {
            out.push(Out::Run {
                incident: id.to_owned(),
                step: "escalate".into(),
                action,
            });
        }
        self.close(id, "escalated", now, out);
    }

    fn close(&mut self, id: &str, outcome: &str, now: i64, out: &mut Vec<Out>) {
        // The anomaly is gone: the alerts fired for it are resolved.
        if matches!(outcome, "fixed" | "resolved_before_any_step")
            && let Some(inc) = self.incidents.get(id)
        {
            for a in &inc.alerts {
                if let Ready::Alert { url, labels, .. } = a {
                    out.push(Out::Run {
                        incident: id.to_owned(),
                        step: "resolve_alert".into(),
                        action: Ready::Alert {
                            url: url.clone(),
                            labels: labels.clone(),
                            ends: true,
                        },
                    });
                }
            }
        }
        out.push(self.audit(id, "closed", json!({"outcome": outcome}), now));
        self.incidents.remove(id);
        self.closed.push_back(id.to_owned());
        if self.closed.len() > REMEMBERED
            && let Some(old) = self.closed.pop_front()
        {
            self.seen.retain(|(i, _)| *i != old);
        }
    }

    /// Rebuilds the incidents from the audit trail (records in the order they were written),
    /// so that a restarted remediator carries on without re-running a step: an open incident
    /// resumes where its last record left it (a step chosen but without a result is taken as
    /// run, and its wait starts when it was chosen), a closed one stays closed, and every event
    /// already received counts as seen. Returns the open incidents rebuilt.
    pub fn rebuild(&mut self, records: &[Value]) -> usize {
        let mut by_incident: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for r in records {
            if let Some(id) = r["incident"].as_str() {
                by_incident.entry(id.to_owned()).or_default().push(r);
            }
        }
        for (id, rs) in by_incident {
            for r in &rs {
                if r["decision"] == "event_received"
                    && let Some(state) = r["state"].as_str()
                {
                    self.seen.insert((id.clone(), state.to_owned()));
                }
            }
            // What each step did, for learning: closed incidents count too.
            let matched = rs.iter().find(|r| r["decision"] == "policy_matched");
            let policy = matched.and_then(|m| {
                self.policies
                    .iter()
                    .position(|p| m["policy"].as_str() == Some(p.name.as_str()))
            });
            if let (Some(m), Some(p)) = (matched, policy) {
                let sig = m["signature"].as_str().unwrap_or_default().to_owned();
                for r in &rs {
                    let step = r["step"].as_str().unwrap_or_default().to_owned();
                    if r["decision"] == "action_result" && r["ok"] == true && !step.is_empty() {
                        self.stats.entry((p, sig.clone(), step)).or_default().0 += 1;
                    } else if r["decision"] == "verified"
                        && let Some(by) = r["fixed_by"].as_str()
                    {
                        self.stats
                            .entry((p, sig.clone(), by.to_owned()))
                            .or_default()
                            .1 += 1;
                    }
                }
            }
            if rs.iter().any(|r| r["decision"] == "closed") {
                self.seen.insert((id.clone(), "open".into()));
                self.closed.push_back(id);
                continue;
            }
            let (Some(matched), Some(policy)) = (matched, policy) else {
                continue;
            };
            let steps = &self.policies[policy].steps;
            // The incident's ladder as it was decided (learned order), by step name.
            let order: Vec<usize> = matched["order"]
                .as_array()
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|n| {
                            steps
                                .iter()
                                .position(|s| Some(s.name.as_str()) == n.as_str())
                        })
                        .collect()
                })
                .filter(|o: &Vec<usize>| o.len() == steps.len())
                .unwrap_or_else(|| (0..steps.len()).collect());
            let step_of = |r: &Value| {
                r["step"]
                    .as_str()
                    .and_then(|n| order.iter().position(|k| steps[*k].name == n))
            };
            let ran = rs
                .iter()
                .filter(|r| r["decision"] == "action_result")
                .count();
            let last = rs.iter().rev().find(|r| {
                matches!(
                    r["decision"].as_str(),
                    Some("step_chosen" | "approval_requested" | "action_result" | "step_skipped")
                )
            });
            let at = |r: &Value| r["at"].as_i64().unwrap_or(0);
            // No step yet: the ladder starts when the policy's open_for has passed (at once
            // without one).
            let delayed_until = rs
                .iter()
                .find(|r| r["decision"] == "delayed")
                .map_or(0, |r| at(r) + self.policies[policy].open_for_ms);
            let (step, phase) = match last {
                None => (
                    0,
                    Phase::Delayed {
                        until: delayed_until,
                    },
                ),
                Some(r) => {
                    let step = step_of(r).unwrap_or(0);
                    match r["decision"].as_str() {
                        Some("approval_requested") => (
                            step,
                            Phase::Pending {
                                until: at(r) + self.policies[policy].approval_timeout_ms,
                            },
                        ),
                        // Failed or skipped: the next step is due now.
                        Some("action_result") if r["ok"] != true => {
                            (step, Phase::Waiting { until: 0 })
                        }
                        Some("step_skipped") => (step, Phase::Waiting { until: 0 }),
                        _ => (
                            step,
                            Phase::Waiting {
                                until: at(r) + steps[order[step]].wait_ms,
                            },
                        ),
                    }
                }
            };
            self.seen.insert((id.clone(), "open".into()));
            self.incidents.insert(
                id,
                Incident {
                    policy,
                    event: matched["event"].clone(),
                    step,
                    phase,
                    ran: ran.max(usize::from(
                        last.is_some_and(|r| r["decision"] == "step_chosen"),
                    )),
                    alerts: Vec::new(),
                    order,
                    sig: matched["signature"].as_str().unwrap_or_default().to_owned(),
                },
            );
        }
        self.incidents.len()
    }

    /// The result of an action [`Out::Run`] asked for.
    pub fn result(
        &mut self,
        id: &str,
        step: &str,
        ok: bool,
        detail: &str,
        latency_ms: i64,
        now: i64,
    ) -> Vec<Out> {
        let mut out = vec![self.audit(
            id,
            "action_result",
            json!({"step": step, "ok": ok, "detail": detail, "latency_ms": latency_ms}),
            now,
        )];
        let Some(inc) = self.incidents.get_mut(id) else {
            return out;
        };
        if inc.phase != Phase::Acting {
            return out;
        }
        inc.ran += 1;
        if ok {
            let k = inc.order[inc.step];
            let (p, sig) = (inc.policy, inc.sig.clone());
            let step = &self.policies[p].steps[k];
            let wait = step.wait_ms;
            let key = (p, sig, step.name.clone());
            inc.phase = Phase::Waiting { until: now + wait };
            self.stats.entry(key).or_default().0 += 1;
        } else {
            self.next_step(id, "the step before failed", now, &mut out);
        }
        out
    }

    /// An approval message: `{"incident", "step", "decision": "approve"|"deny", "who", "why"}`.
    pub fn approval(&mut self, msg: &Value, now: i64) -> Vec<Out> {
        let (id, step) = (ms_text(&msg["incident"]), ms_text(&msg["step"]));
        let mut out = Vec::new();
        let Some(inc) = self.incidents.get(&id) else {
            return out;
        };
        let pending = self.step_at(inc, inc.step).map(|s| s.name.clone());
        if !matches!(inc.phase, Phase::Pending { .. }) || pending.as_deref() != Some(step.as_str())
        {
            return out;
        }
        let who = json!({"step": step, "who": msg["who"], "reason": msg["why"]});
        match msg["decision"].as_str() {
            Some("approve") => {
                out.push(self.audit(&id, "approval_granted", who, now));
                self.run_step(&id, "approved", now, &mut out);
            }
            Some("deny") => {
                out.push(self.audit(&id, "approval_denied", who, now));
                self.next_step(&id, "the step before was denied", now, &mut out);
            }
            _ => {}
        }
        out
    }

    /// What the clock brings: waits without `resolved` move to the next step; approvals that
    /// timed out escalate or abort.
    pub fn tick(&mut self, now: i64) -> Vec<Out> {
        let due: Vec<(String, Phase)> = self
            .incidents
            .iter()
            .filter(|(_, i)| match i.phase {
                Phase::Waiting { until } | Phase::Pending { until } | Phase::Delayed { until } => {
                    until <= now
                }
                Phase::Acting => false,
            })
            .map(|(id, i)| (id.clone(), i.phase))
            .collect();
        let mut out = Vec::new();
        for (id, phase) in due {
            match phase {
                Phase::Waiting { .. } => {
                    out.push(self.audit(
                        &id,
                        "verified",
                        json!({"outcome": "not_resolved_in_time"}),
                        now,
                    ));
                    self.next_step(
                        &id,
                        "the step before did not resolve the anomaly in time",
                        now,
                        &mut out,
                    );
                }
                Phase::Pending { .. } => {
                    out.push(self.audit(&id, "approval_timed_out", json!({}), now));
                    let policy = self.incidents.get(&id).map(|i| i.policy).unwrap_or(0);
                    match self.policies[policy].on_approval_timeout {
                        OnTimeout::Escalate => self.escalate(&id, now, &mut out),
                        OnTimeout::Abort => self.close(&id, "aborted", now, &mut out),
                    }
                }
                Phase::Delayed { .. } => {
                    self.start_step(&id, "the anomaly lasted past open_for", now, &mut out);
                }
                Phase::Acting => {}
            }
        }
        out
    }
}

/// Fills an action's templates from `event` (incident `id`, policy `policy`).
fn ready(action: &Action, event: &Value, id: &str, policy: &str) -> Result<Ready, String> {
    match action {
        Action::Webhook {
            url,
            body,
            timeout,
            retries,
        } => Ok(Ready::Webhook {
            // The URL is a template too (its query may name the target).
            url: expand(url, event)?,
            body: match body {
                None => event.clone(),
                Some(b) => fill(b, event)?,
            },
            timeout_ms: telltale_core::time::parse_duration_ms(timeout).unwrap_or(30_000),
            retries: *retries,
        }),
        Action::Alertmanager { url, labels } => {
            let mut all: BTreeMap<String, String> = BTreeMap::new();
            if let Some(l) = event["series"]["labels"].as_object() {
                for (k, v) in l {
                    all.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
                }
            }
            all.insert("alertname".into(), "TelltaleAnomaly".into());
            all.insert("incident".into(), id.to_owned());
            all.insert("policy".into(), policy.to_owned());
            all.insert("series".into(), expand("{{series}}", event)?);
            for (k, v) in labels {
                all.insert(k.clone(), expand(v, event)?);
            }
            Ok(Ready::Alert {
                url: url.clone(),
                labels: all,
                ends: false,
            })
        }
        Action::Command { argv, timeout } => Ok(Ready::Command {
            argv: argv
                .iter()
                .map(|a| expand(a, event))
                .collect::<Result<_, _>>()?,
            timeout_ms: telltale_core::time::parse_duration_ms(timeout).unwrap_or(30_000),
        }),
        Action::Topic { topic, body } => Ok(Ready::Topic {
            topic: topic.clone(),
            body: match body {
                None => event.clone(),
                Some(b) => fill(b, event)?,
            },
        }),
    }
}

fn fill(v: &Value, event: &Value) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(expand(s, event)?),
        Value::Array(a) => {
            Value::Array(a.iter().map(|x| fill(x, event)).collect::<Result<_, _>>()?)
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), fill(x, event)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Config;

    fn machine(steps: &str) -> Machine {
        let (_, p) = Config::from_toml(&format!(
            "[remediator]\nbrokers = \"b\"\n[[policy]]\nname = \"p\"\nescalate = {{ kind = \"topic\", topic = \"pager\" }}\n{steps}"
        ))
        .unwrap();
        Machine::new(p)
    }

    const TWO: &str = "[[policy.step]]\nname = \"restart\"\nwait = \"1m\"\naction = { kind = \"command\", argv = [\"/bin/restart\", \"{{label.model}}\"] }\n[[policy.step]]\nname = \"rollback\"\nwait = \"1m\"\naction = { kind = \"topic\", topic = \"actions\", body = { do = \"rollback\", model = \"{{label.model}}\" } }";

    fn ev(state: &str) -> Value {
        json!({"id": "a1", "state": state, "severity": "warning", "chain": "default",
               "series": {"name": "m", "labels": {"model": "llama"}}, "detectors": []})
    }

    fn decisions(out: &[Out]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Out::Audit { record, .. } => record["decision"].as_str().unwrap().to_owned(),
                Out::Run { step, .. } => format!("run {step}"),
            })
            .collect()
    }

    #[test]
    fn the_ladder_climbs_until_the_anomaly_resolves() {
        let mut m = machine(TWO);
        let out = m.event(&ev("open"), 0);
        assert_eq!(
            decisions(&out),
            [
                "event_received",
                "policy_matched",
                "step_chosen",
                "run restart"
            ]
        );
        assert!(
            matches!(&out[3], Out::Run { action: Ready::Command { argv, .. }, .. } if argv == &["/bin/restart", "llama"])
        );
        m.result("a1", "restart", true, "", 5, 10);
        assert!(m.tick(59_000).is_empty(), "still waiting");
        let out = m.tick(60_010);
        assert_eq!(decisions(&out), ["verified", "step_chosen", "run rollback"]);
        assert!(
            matches!(&out[2], Out::Run { action: Ready::Topic { body, .. }, .. } if body["model"] == "llama")
        );
        m.result("a1", "rollback", true, "", 5, 60_020);
        let out = m.event(&ev("resolved"), 70_000);
        let verified = out.iter().find_map(|o| match o {
            Out::Audit { record, .. } if record["decision"] == "verified" => Some(record.clone()),
            _ => None,
        });
        assert_eq!(verified.unwrap()["fixed_by"], "rollback");
        assert_eq!(m.open(), 0);
    }

    #[test]
    fn redelivered_events_run_nothing_twice_and_a_closed_incident_stays_closed() {
        let mut m = machine(TWO);
        assert_eq!(decisions(&m.event(&ev("open"), 0)).len(), 4);
        assert!(m.event(&ev("open"), 1).is_empty());
        m.result("a1", "restart", true, "", 1, 2);
        m.event(&ev("resolved"), 3);
        assert!(m.event(&ev("resolved"), 4).is_empty());
        assert!(
            m.event(&ev("open"), 5).is_empty(),
            "a redelivered open of a closed incident"
        );
    }

    #[test]
    fn an_exhausted_ladder_escalates_and_a_failed_step_moves_on() {
        let mut m = machine(TWO);
        m.event(&ev("open"), 0);
        let out = m.result("a1", "restart", false, "exit 1", 5, 10);
        assert_eq!(
            decisions(&out),
            ["action_result", "step_chosen", "run rollback"]
        );
        m.result("a1", "rollback", true, "", 5, 20);
        let out = m.tick(60_020);
        assert_eq!(
            decisions(&out),
            ["verified", "escalated", "run escalate", "closed"]
        );
    }

    #[test]
    fn a_high_step_waits_for_its_approval_and_a_denied_one_never_runs() {
        let high = "[[policy.step]]\nname = \"rollback\"\nrisk = \"high\"\naction = { kind = \"command\", argv = [\"/bin/rollback\"] }";
        let mut m = machine(high);
        let out = m.event(&ev("open"), 0);
        assert_eq!(
            decisions(&out),
            ["event_received", "policy_matched", "approval_requested"]
        );
        // An approval of another step, or of another incident, does nothing.
        assert!(
            m.approval(
                &json!({"incident": "a1", "step": "other", "decision": "approve"}),
                1
            )
            .is_empty()
        );
        let out = m.approval(&json!({"incident": "a1", "step": "rollback", "decision": "approve", "who": "ana", "why": "ok"}), 2);
        assert_eq!(
            decisions(&out),
            ["approval_granted", "step_chosen", "run rollback"]
        );
        let mut m = machine(high);
        m.event(&ev("open"), 0);
        let out = m.approval(
            &json!({"incident": "a1", "step": "rollback", "decision": "deny", "who": "bo"}),
            2,
        );
        assert_eq!(
            decisions(&out),
            ["approval_denied", "escalated", "run escalate", "closed"]
        );
        // A timeout escalates.
        let mut m = machine(high);
        m.event(&ev("open"), 0);
        let out = m.tick(15 * 60_000);
        assert_eq!(
            decisions(&out),
            ["approval_timed_out", "escalated", "run escalate", "closed"]
        );
    }

    fn records(out: &[Out]) -> Vec<Value> {
        out.iter()
            .filter_map(|o| match o {
                Out::Audit { record, .. } => Some(record.clone()),
                Out::Run { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_machine_rebuilt_from_the_audit_runs_no_step_again() {
        let mut m = machine(TWO);
        let mut trail = records(&m.event(&ev("open"), 0));
        trail.extend(records(&m.result("a1", "restart", true, "", 5, 10)));
        // A restart: the trail is all that is left.
        let mut m = machine(TWO);
        assert_eq!(m.rebuild(&trail), 1);
        assert!(
            m.event(&ev("open"), 20).is_empty(),
            "the redelivered open runs nothing"
        );
        assert!(m.tick(59_000).is_empty(), "the restart's wait goes on");
        let out = m.event(&ev("resolved"), 30_000);
        let verified = records(&out)
            .into_iter()
            .find(|r| r["decision"] == "verified")
            .unwrap();
        assert_eq!(verified["fixed_by"], "restart");
        // A step chosen but without a result is taken as run; its wait runs from its choice.
        let mut m = machine(TWO);
        let trail = records(&m.event(&ev("open"), 0));
        let mut m = machine(TWO);
        m.rebuild(&trail);
        let out = m.tick(60_001);
        assert_eq!(decisions(&out), ["verified", "step_chosen", "run rollback"]);
        // A closed incident stays closed.
        let mut m = machine(TWO);
        let mut trail = records(&m.event(&ev("open"), 0));
        trail.extend(records(&m.result("a1", "restart", true, "", 5, 10)));
        trail.extend(records(&m.event(&ev("resolved"), 20)));
        let mut m = machine(TWO);
        assert_eq!(m.rebuild(&trail), 0);
        assert!(m.event(&ev("open"), 30).is_empty());
    }

    #[test]
    fn a_step_in_its_cooldown_or_over_its_rate_is_skipped() {
        let steps = "[[policy.step]]\nname = \"restart\"\nwait = \"1m\"\ncooldown = \"10m\"\nrate = \"2/1h\"\naction = { kind = \"command\", argv = [\"/bin/restart\", \"{{label.model}}\"] }";
        let mut m = machine(steps);
        let open = |id: &str, model: &str| {
            json!({"id": id, "state": "open", "severity": "warning", "chain": "default",
                   "series": {"name": "m", "labels": {"model": model}}, "detectors": []})
        };
        assert!(decisions(&m.event(&open("a", "llama"), 0)).contains(&"run restart".to_owned()));
        // Same target within the cooldown: skipped, the ladder escalates.
        let out = m.event(&open("b", "llama"), 60_000);
        assert!(
            decisions(&out).contains(&"step_skipped".to_owned()),
            "{:?}",
            decisions(&out)
        );
        assert!(!decisions(&out).contains(&"run restart".to_owned()));
        // Another target: runs (2 of 2 in the hour).
        assert!(
            decisions(&m.event(&open("c", "qwen"), 60_000)).contains(&"run restart".to_owned())
        );
        // A third target within the hour: over the rate.
        let out = m.event(&open("d", "mixtral"), 120_000);
        assert!(!decisions(&out).contains(&"run restart".to_owned()));
        // An hour later the rate allows it again.
        assert!(
            decisions(&m.event(&open("e", "mixtral"), 3_700_000))
                .contains(&"run restart".to_owned())
        );
    }

    #[test]
    fn a_learning_ladder_tries_first_what_fixed_this_kind_before_but_never_past_a_riskier_step() {
        let (_, p) = Config::from_toml(
            "[remediator]\nbrokers = \"b\"\n[[policy]]\nname = \"p\"\nlearn = true\nexplore = 0.0\nsignature = [\"model\"]\n\
             [[policy.step]]\nname = \"restart\"\nwait = \"1m\"\naction = { kind = \"topic\", topic = \"t\" }\n\
             [[policy.step]]\nname = \"clear-cache\"\nwait = \"1m\"\naction = { kind = \"topic\", topic = \"t\" }\n\
             [[policy.step]]\nname = \"rollback\"\nrisk = \"high\"\naction = { kind = \"topic\", topic = \"t\" }",
        )
        .unwrap();
        let mut m = Machine::new(p);
        let open = |id: &str| {
            json!({"id": id, "state": "open", "severity": "warning", "chain": "default",
                   "series": {"name": "m", "labels": {"model": "llama"}},
                   "detectors": [{"params": {"kind": "ewma"}, "score": 1.0}]})
        };
        let first_step = |out: &[Out]| {
            out.iter().find_map(|o| match o {
                Out::Run { step, .. } => Some(step.clone()),
                _ => None,
            })
        };
        // Three incidents: the restart never fixes them, clearing the cache does.
        let mut t = 0;
        for k in 0..3 {
            let id = format!("i{k}");
            let out = m.event(&open(&id), t);
            let step = first_step(&out).unwrap();
            m.result(&id, &step, true, "", 1, t + 1);
            if step == "restart" {
                m.tick(t + 60_002);
                m.result(&id, "clear-cache", true, "", 1, t + 60_003);
            }
            let mut resolved = open(&id);
            resolved["state"] = json!("resolved");
            m.event(&resolved, t + 60_010);
            t += 1_000_000;
        }
        // The next one of this kind starts with clearing the cache; the high step stays last.
        let out = m.event(&open("next"), t);
        assert_eq!(first_step(&out).as_deref(), Some("clear-cache"));
        let matched = records(&out)
            .into_iter()
            .find(|r| r["decision"] == "policy_matched")
            .unwrap();
        assert_eq!(
            matched["order"],
            json!(["clear-cache", "restart", "rollback"])
        );
        assert_eq!(matched["signature"], "m model=llama by ewma");
        let rates = m.rates();
        let cache = rates.iter().find(|r| r["step"] == "clear-cache").unwrap();
        assert_eq!(
            (cache["runs"].as_u64(), cache["fixed"].as_u64()),
            (Some(3), Some(3))
        );
        // Rebuilt from the audit trail, the statistics are the same.
        let mut trail = Vec::new();
        let mut m2 = Machine::new(m.policies.clone());
        let mut t = 0;
        for k in 0..3 {
            let id = format!("j{k}");
            trail.extend(records(&m2.event(&open(&id), t)));
            trail.extend(records(&m2.result(&id, "restart", true, "", 1, t + 1)));
            trail.extend(records(&m2.tick(t + 60_002)));
            trail.extend(records(&m2.result(
                &id,
                "clear-cache",
                true,
                "",
                1,
                t + 60_003,
            )));
            let mut resolved = open(&id);
            resolved["state"] = json!("resolved");
            trail.extend(records(&m2.event(&resolved, t + 60_010)));
            t += 1_000_000;
        }
        let mut m3 = Machine::new(m.policies.clone());
        m3.rebuild(&trail);
        assert_eq!(m3.rates(), m2.rates());
    }

    #[test]
    fn a_policy_with_open_for_acts_only_on_anomalies_that_last() {
        let steps = format!("open_for = \"2m\"\n{TWO}");
        let mut m = machine(&steps);
        let out = m.event(&ev("open"), 0);
        assert_eq!(
            decisions(&out),
            ["event_received", "policy_matched", "delayed"]
        );
        assert!(m.tick(119_000).is_empty());
        assert_eq!(decisions(&m.tick(120_000)), ["step_chosen", "run restart"]);
        // One that resolves sooner: nothing ran.
        let mut m = machine(&steps);
        m.event(&ev("open"), 0);
        let out = m.event(&ev("resolved"), 60_000);
        assert!(out.iter().any(|o| matches!(o, Out::Audit { record, .. } if record["outcome"] == "resolved_before_any_step")));
    }

    #[test]
    fn an_anomaly_resolved_before_any_step_ran_is_recorded_so() {
        let high = "[[policy.step]]\nname = \"rollback\"\nrisk = \"high\"\naction = { kind = \"command\", argv = [\"/bin/rollback\"] }";
        let mut m = machine(high);
        m.event(&ev("open"), 0);
        let out = m.event(&ev("resolved"), 10);
        assert!(out.iter().any(|o| matches!(o, Out::Audit { record, .. } if record["outcome"] == "resolved_before_any_step")));
    }
}
