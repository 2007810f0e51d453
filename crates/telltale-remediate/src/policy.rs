//! The remediator's configuration: where to read and write, and the policies.
//!
//! ```toml
//! [remediator]
//! brokers = "127.0.0.1:9092"
//! anomaly_topic = "telltale-anomalies"   # events in
//! audit_topic = "telltale-audit"         # every decision out, keyed by incident
//! approvals_topic = "telltale-approvals" # {"incident", "step", "decision": "approve"|"deny", "who", "why"}
//!
//! [[policy]]
//! name = "latency"
//! metric = "llm_latency*"            # glob on the metric
//! labels = { model = "*" }           # globs on labels (each must exist)
//! severity = "warning"               # at least: warning | critical
//! escalate = { kind = "topic", topic = "pager", body = { incident = "{{id}}" } }
//!
//! [[policy.step]]
//! name = "restart"
//! risk = "low"                       # low | high (high waits for an approval)
//! wait = "2m"                        # for `resolved` before the next step
//! action = { kind = "command", argv = ["/usr/local/bin/restart", "{{label.model}}"] }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use telltale_core::time::parse_duration_ms;
use telltale_engine::config::Glob;

use crate::Error;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to read and write.
    pub remediator: Settings,
    /// The policies, tried in order (the first match takes the anomaly).
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyConfig>,
}

/// `[remediator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group (default `telltale-remediator`).
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where anomaly events are read (default `telltale-anomalies`).
    #[serde(default = "default_anomalies")]
    pub anomaly_topic: String,
    /// Where every decision is written (default `telltale-audit`).
    #[serde(default = "default_audit")]
    pub audit_topic: String,
    /// Where approvals are read (default `telltale-approvals`).
    #[serde(default = "default_approvals")]
    pub approvals_topic: String,
    /// Decide and audit everything, execute nothing (default false).
    #[serde(default)]
    pub dry_run: bool,
    /// Raw librdkafka properties for the consumer, e.g. `"session.timeout.ms" = "6000"`.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// The approvals API and status page (default `127.0.0.1:9465`; `""` disables). Bound to
    /// anything but loopback it needs a token.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The token requests must carry (`Authorization: Bearer …`), or the environment variable
    /// holding it (`token_env`); never logged.
    #[serde(default)]
    pub token: Option<String>,
    /// The environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:9465".into()
}

impl Settings {
    /// The token, from the configuration or its environment variable.
    pub fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| self.token_env.as_ref().and_then(|v| std::env::var(v).ok()))
            .filter(|t| !t.is_empty())
    }
}

fn default_group() -> String {
    "telltale-remediator".into()
}
fn default_anomalies() -> String {
    "telltale-anomalies".into()
}
fn default_audit() -> String {
    "telltale-audit".into()
}
fn default_approvals() -> String {
    "telltale-approvals".into()
}

/// Least severity a policy acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Every anomaly.
    Warning,
    /// Critical ones only.
    Critical,
}

/// A step's risk: `high` steps wait for an approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Runs at once.
    #[default]
    Low,
    /// Waits for a human's approval.
    High,
}

/// What an approval timeout does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Skip to escalation.
    #[default]
    Escalate,
    /// Close the incident unremediated.
    Abort,
}

/// An action. Strings in it are templates ([`crate::template`]).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    /// Runs a program with arguments (an argv array: no shell), up to `timeout`.
    Command {
        /// Program and arguments, each a template.
        argv: Vec<String>,
        /// Longest run (default `30s`); the program is killed after it.
        #[serde(default = "default_timeout")]
        timeout: String,
    },
    /// POSTs a JSON body (its string values templates; default: the event) to a URL, retrying
    /// with backoff.
    Webhook {
        /// `http://` URL.
        url: String,
        /// The body (default: the event).
        #[serde(default)]
        body: Option<serde_json::Value>,
        /// Longest call (default `30s`).
        #[serde(default = "default_timeout")]
        timeout: String,
        /// Retries after a failure, 200 ms doubling (default 2).
        #[serde(default = "default_retries")]
        retries: u32,
    },
    /// Fires an alert in Alertmanager (`POST <url>/api/v2/alerts`), resolved (`endsAt`) when
    /// the incident is verified fixed or resolves by itself.
    Alertmanager {
        /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`.
        url: String,
        /// Extra labels (templates) beside `alertname`, `incident`, `series`, `policy` and the
        /// series' labels.
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Writes a JSON message (its string values templates) to a topic.
    Topic {
        /// The topic.
        topic: String,
        /// The message (default: the event).
        #[serde(default)]
        body: Option<serde_json::Value>,
    },
}

fn default_timeout() -> String {
    "30s".into()
}
fn default_retries() -> u32 {
    2
}

/// `[[policy.step]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Name (in the audit).
    pub name: String,
    /// Risk (default low).
    #[serde(default)]
    pub risk: Risk,
    /// How long to wait for `resolved` after the step before the next (default `5m`).
    #[serde(default = "default_wait")]
    pub wait: String,
    /// After the step ran on a target (its action with its arguments filled in), how long it
    /// cannot run on that target again (default `0s`); a step in its cooldown is skipped.
    #[serde(default = "default_cooldown")]
    pub cooldown: String,
    /// At most this many runs of the step in a window, across incidents: `"5/1h"` (default
    /// none); a step over its rate is skipped.
    #[serde(default)]
    pub rate: Option<String>,
    /// What it does.
    pub action: Action,
}

fn default_cooldown() -> String {
    "0s".into()
}

fn default_wait() -> String {
    "5m".into()
}

/// `[[policy]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name (in the audit).
    pub name: String,
    /// Glob on the metric (default `*`).
    #[serde(default = "default_glob")]
    pub metric: String,
    /// Globs on labels; each must exist and match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only anomalies of this chain (default any).
    #[serde(default)]
    pub chain: Option<String>,
    /// Least severity (default warning: all).
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Act only on an anomaly still open after this long (default `0s`: at once); one that
    /// resolves sooner is recorded as resolved before any step.
    #[serde(default = "default_cooldown")]
    pub open_for: String,
    /// How long a high step waits for its approval (default `15m`).
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout: String,
    /// What an approval timeout does (default escalate).
    #[serde(default)]
    pub on_approval_timeout: OnTimeout,
    /// What runs when the ladder is exhausted (default: the audit record only).
    #[serde(default)]
    pub escalate: Option<Action>,
    /// Order steps of the same risk level by how often each fixed this kind of anomaly
    /// (default false: the configured order).
    #[serde(default)]
    pub learn: bool,
    /// Labels that, with the metric and the detector that fired, make an anomaly's kind for
    /// learning (default none).
    #[serde(default)]
    pub signature: Vec<String>,
    /// Share of incidents that keep the configured order while learning, so every step keeps
    /// being tried (default 0.1).
    #[serde(default = "default_explore")]
    pub explore: f64,
    /// The ladder.
    #[serde(rename = "step")]
    pub steps: Vec<StepConfig>,
}

fn default_explore() -> f64 {
    0.1
}

fn default_glob() -> String {
    "*".into()
}
fn default_severity() -> Severity {
    Severity::Warning
}
fn default_approval_timeout() -> String {
    "15m".into()
}

/// A checked step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name.
    pub name: String,
    /// Risk.
    pub risk: Risk,
    /// Wait for `resolved`, ms.
    pub wait_ms: i64,
    /// Cooldown per target, ms.
    pub cooldown_ms: i64,
    /// Rate limit: (runs, window ms).
    pub rate: Option<(usize, i64)>,
    /// Action.
    pub action: Action,
}

/// A checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name.
    pub name: String,
    metric: Glob,
    labels: Vec<(String, Glob)>,
    chain: Option<String>,
    severity: Severity,
    /// Approval timeout, ms.
    pub approval_timeout_ms: i64,
    /// How long an anomaly must stay open before the ladder starts, ms.
    pub open_for_ms: i64,
    /// On approval timeout.
    pub on_approval_timeout: OnTimeout,
    /// Escalation action.
    pub escalate: Option<Action>,
    /// Learn the order of same-risk steps.
    pub learn: bool,
    /// Labels in an anomaly's kind.
    pub signature: Vec<String>,
    /// Exploration share.
    pub explore: f64,
    /// The ladder.
    pub steps: Vec<Step>,
}

impl Policy {
    /// Whether the policy takes this anomaly event.
    pub fn matches(&self, event: &serde_json::Value) -> bool {
        let series = &event["series"];
        let name = series["name"].as_str().unwrap_or_default();
        let severity = match event["severity"].as_str() {
            Some("critical") => Severity::Critical,
            _ => Severity::Warning,
        };
        self.metric.matches(name)
            && severity >= self.severity
            && self
                .chain
                .as_deref()
                .is_none_or(|c| event["chain"].as_str() == Some(c))
            && self.labels.iter().all(|(k, g)| {
                series["labels"][k.as_str()]
                    .as_str()
                    .is_some_and(|v| g.matches(v))
            })
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Config {
        path: path.into(),
        message: message.into(),
    }
}

fn duration(path: &str, text: &str) -> Result<i64, Error> {
    parse_duration_ms(text)
        .ok_or_else(|| err(path, format!("`{text}` is not a duration such as \"2m\"")))
}

fn check_action(path: &str, a: &Action) -> Result<(), Error> {
    let strings: Vec<String> = match a {
        Action::Command { argv, timeout } => {
            duration(&format!("{path}.timeout"), timeout)?;
            if argv.is_empty() || argv[0].is_empty() {
                return Err(err(format!("{path}.argv"), "needs a program"));
            }
            if argv[0].contains("{{") {
                return Err(err(
                    format!("{path}.argv[0]"),
                    "the program cannot come from event data",
                ));
            }
            argv.clone()
        }
        Action::Webhook {
            url, body, timeout, ..
        } => {
            duration(&format!("{path}.timeout"), timeout)?;
            if !url.starts_with("http://") {
                return Err(err(format!("{path}.url"), "expected an http:// URL"));
            }
            let mut out = vec![url.clone()];
            collect_strings(body.as_ref().unwrap_or(&serde_json::Value::Null), &mut out);
            out
        }
        Action::Alertmanager { url, labels } => {
            if !url.starts_with("http://") {
                return Err(err(format!("{path}.url"), "expected an http:// URL"));
            }
            labels.values().cloned().collect()
        }
        Action::Topic { topic, body } => {
            if topic.is_empty() {
                return Err(err(format!("{path}.topic"), "must not be empty"));
            }
            let mut out = Vec::new();
            collect_strings(body.as_ref().unwrap_or(&serde_json::Value::Null), &mut out);
            out
        }
    };
    for s in strings {
        crate::template::check(&s).map_err(|e| err(path, e))?;
    }
    Ok(())
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

impl Config {
    /// Parses and checks TOML text; errors name the bad field.
    pub fn from_toml(text: &str) -> Result<(Self, Vec<Policy>), Error> {
        let de = toml::Deserializer::parse(text).map_err(|e| err("", e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            err(path, e.into_inner().message().to_owned())
        })?;
        let policies = config.check()?;
        Ok((config, policies))
    }

    /// Reads a file.
    pub fn from_file(path: &Path) -> Result<(Self, Vec<Policy>), Error> {
        Self::from_toml(&std::fs::read_to_string(path)?)
    }

    fn check(&self) -> Result<Vec<Policy>, Error> {
        if self.remediator.brokers.trim().is_empty() {
            return Err(err("remediator.brokers", "must not be empty"));
        }
        let listen = &self.remediator.listen;
        if !listen.is_empty() {
            let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
                err(
                    "remediator.listen",
                    format!("`{listen}` is not an address such as 127.0.0.1:9465"),
                )
            })?;
            if !addr.ip().is_loopback() && self.remediator.token().is_none() {
                return Err(err(
                    "remediator.listen",
                    format!(
                        "`{listen}` is not loopback: set token or token_env so approvals need it"
                    ),
                ));
            }
        }
        self.policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let path = format!("policy[{i}]");
                if p.steps.is_empty() {
                    return Err(err(
                        format!("{path}.step"),
                        "a policy needs at least one step",
                    ));
                }
                if let Some(a) = &p.escalate {
                    check_action(&format!("{path}.escalate"), a)?;
                }
                let steps = p
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let sp = format!("{path}.step[{j}]");
                        check_action(&format!("{sp}.action"), &s.action)?;
                        let rate = match &s.rate {
                            None => None,
                            Some(r) => {
                                let parsed = r.split_once('/').and_then(|(n, w)| {
                                    Some((
                                        n.trim().parse::<usize>().ok()?,
                                        parse_duration_ms(w.trim())?,
                                    ))
                                });
                                match parsed {
                                    Some((n, w)) if n > 0 && w > 0 => Some((n, w)),
                                    _ => {
                                        return Err(err(
                                            format!("{sp}.rate"),
                                            format!("`{r}` is not a rate such as \"5/1h\""),
                                        ));
                                    }
                                }
                            }
                        };
                        Ok(Step {
                            name: s.name.clone(),
                            risk: s.risk,
                            wait_ms: duration(&format!("{sp}.wait"), &s.wait)?,
                            cooldown_ms: duration(&format!("{sp}.cooldown"), &s.cooldown)?,
                            rate,
                            action: s.action.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                Ok(Policy {
                    name: p.name.clone(),
                    metric: Glob::new(&p.metric),
                    labels: p
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), Glob::new(v)))
                        .collect(),
                    chain: p.chain.clone(),
                    severity: p.severity,
                    approval_timeout_ms: duration(
                        &format!("{path}.approval_timeout"),
                        &p.approval_timeout,
                    )?,
                    on_approval_timeout: p.on_approval_timeout,
                    open_for_ms: duration(&format!("{path}.open_for"), &p.open_for)?,
                    escalate: p.escalate.clone(),
                    learn: p.learn,
                    signature: p.signature.clone(),
                    explore: if (0.0..=1.0).contains(&p.explore) {
                        p.explore
                    } else {
                        return Err(err(format!("{path}.explore"), "expected a share in [0, 1]"));
                    },
                    steps,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policies_shipped_for_docker_compose_are_valid() {
        let text = include_str!("../../../configs/remediate/docker.toml")
            .replace("token_env = \"REMEDIATOR_TOKEN\"", "token = \"t\"");
        let (config, policies) = Config::from_toml(&text).unwrap();
        assert_eq!(policies.len(), 3);
        assert_eq!(config.remediator.brokers, "kafka:9092");
    }

    const BASE: &str = "[remediator]\nbrokers = \"127.0.0.1:9092\"\n";

    #[test]
    fn a_bad_field_is_named() {
        for (toml, path) in [
            (
                "[[policy]]\nname = \"p\"\n[[policy.step]]\nname = \"s\"\nwait = \"soon\"\naction = { kind = \"command\", argv = [\"true\"] }",
                "policy[0].step[0].wait",
            ),
            (
                "[[policy]]\nname = \"p\"\n[[policy.step]]\nname = \"s\"\naction = { kind = \"command\", argv = [\"{{label.cmd}}\"] }",
                "policy[0].step[0].action.argv[0]",
            ),
            (
                "[[policy]]\nname = \"p\"\n[[policy.step]]\nname = \"s\"\naction = { kind = \"command\", argv = [\"x\", \"{{bogus}}\"] }",
                "policy[0].step[0].action",
            ),
            ("[[policy]]\nname = \"p\"\nstep = []", "policy[0].step"),
            (
                "[[policy]]\nname = \"p\"\nmetrc = \"x\"\n[[policy.step]]\nname = \"s\"\naction = { kind = \"topic\", topic = \"t\" }",
                "policy[0].metrc",
            ),
        ] {
            match Config::from_toml(&format!("{BASE}{toml}")) {
                Err(Error::Config { path: p, message }) => assert_eq!(p, path, "{message}"),
                other => panic!("{toml}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_listener_off_loopback_needs_a_token() {
        let cfg = |extra: &str| {
            Config::from_toml(&format!("[remediator]\nbrokers = \"b\"\n{extra}\n")).map(|_| ())
        };
        match cfg("listen = \"0.0.0.0:9465\"") {
            Err(Error::Config { path, .. }) => assert_eq!(path, "remediator.listen"),
            other => panic!("{other:?}"),
        }
        assert!(cfg("listen = \"0.0.0.0:9465\"\ntoken = \"s3cret\"").is_ok());
        assert!(cfg("listen = \"127.0.0.1:9465\"").is_ok());
        assert!(cfg("listen = \"\"").is_ok());
        assert!(cfg("listen = \"somewhere\"").is_err());
    }

    #[test]
    fn policies_match_by_metric_labels_chain_and_severity() {
        let (_, p) = Config::from_toml(&format!(
            "{BASE}[[policy]]\nname = \"p\"\nmetric = \"llm_*\"\nlabels = {{ model = \"llama*\" }}\nseverity = \"critical\"\n[[policy.step]]\nname = \"s\"\naction = {{ kind = \"topic\", topic = \"t\" }}"
        ))
        .unwrap();
        let ev = |name: &str, model: &str, sev: &str| serde_json::json!({"series": {"name": name, "labels": {"model": model}}, "severity": sev, "chain": "default"});
        assert!(p[0].matches(&ev("llm_latency", "llama3", "critical")));
        assert!(!p[0].matches(&ev("llm_latency", "llama3", "warning")));
        assert!(!p[0].matches(&ev("llm_latency", "qwen", "critical")));
        assert!(!p[0].matches(&ev("gpu_mem", "llama3", "critical")));
    }
}
