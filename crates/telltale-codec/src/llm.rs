//! `llm_prediction` records: one classification request of an LLM (its class probabilities,
//! optionally those of mutated prompts, optionally the truth), turned into points of derived
//! series that the drift detectors watch:
//!
//! | series | value per request |
//! |---|---|
//! | `llm_confidence_margin{model, task, …}` | mean margin (top-1 − top-2) of the MuCS-smoothed probabilities |
//! | `llm_confidence_low_share{…}` | share of requests whose smoothed margin is below `llm.low_margin` |
//! | `llm_confidence_disagreement{…}` | mean share of mutants whose top class differs from the original's (only with mutants) |
//!
//! Each is a mean over a window of event time (`llm.window`, default one minute), emitted when
//! the window closes, timestamped at its end.
//!
//! A confidence collapse after a rollout is a drop of `llm_confidence_margin` (and a rise of the other two)
//! that the chain of those series opens an anomaly on.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use telltale_detect::confidence::{
    VectorError, disagreement, margin, normalize_probs, probs_from_logprobs, smooth,
};

use telltale_core::reject::RejectReason;
use telltale_core::time::parse_rfc3339;

/// Derived series names.
pub const MARGIN: &str = "llm_confidence_margin";
/// See the module table.
pub const LOW_CONFIDENCE: &str = "llm_confidence_low_share";
/// See the module table.
pub const DISAGREEMENT: &str = "llm_confidence_disagreement";

/// `[llm]`: how predictions become derived series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Extra record fields that become labels of the derived series (besides model and task),
    /// e.g. `["deployment", "region"]` (default none).
    #[serde(default)]
    pub labels: Vec<String>,
    /// A request whose smoothed margin is below this counts as low-confidence (default 0.2).
    #[serde(default = "default_low_margin")]
    pub low_margin: f64,
    /// Whether MuCS averages the original prompt's vector with its mutants' (default true).
    #[serde(default = "default_true")]
    pub include_original: bool,
    /// Derived series are per-window means of the per-request values over this much event
    /// time (default "1m").
    #[serde(default = "default_window")]
    pub window: String,
    /// Also emit every request's smoothed margin, unaggregated, as `llm_confidence_request_margin{…}`, so
    /// that a rule (say a `threshold` detector with `below = 0.2`) can raise an event per
    /// low-confidence request. Off by default: it can be loud.
    #[serde(default)]
    pub per_request: bool,
}

/// The per-request series (see [`LlmConfig::per_request`]).
pub const REQUEST_MARGIN: &str = "llm_confidence_request_margin";

fn default_window() -> String {
    "1m".into()
}

fn default_low_margin() -> f64 {
    0.2
}
fn default_true() -> bool {
    true
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            labels: Vec::new(),
            low_margin: default_low_margin(),
            include_original: true,
            window: default_window(),
            per_request: false,
        }
    }
}

/// One parsed, validated prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Model name.
    pub model: String,
    /// Task name.
    pub task: String,
    /// Request id, if given.
    pub request_id: Option<String>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Class names, if given.
    pub classes: Option<Vec<String>>,
    /// Class probabilities (validated, renormalised).
    pub probs: Vec<f64>,
    /// Mutants' probabilities, back to back (each validated, renormalised).
    pub mutants: Vec<f64>,
    /// Index of the true class, if known.
    pub truth: Option<usize>,
    /// Other string fields (candidate labels), in field order.
    pub extra: Vec<(String, String)>,
}

impl Prediction {
    /// Number of mutants.
    pub fn mutant_count(&self) -> usize {
        self.mutants.len() / self.probs.len().max(1)
    }

    /// Whether the model's top class is wrong (None without truth).
    pub fn mispredicted(&self) -> Option<bool> {
        self.truth
            .map(|t| telltale_detect::confidence::argmax(&self.probs) != t)
    }
}

fn vector(v: &Value, logprobs: bool, k: Option<usize>) -> Result<Vec<f64>, RejectReason> {
    let arr = v.as_array().ok_or(RejectReason::Malformed(
        "probability vectors must be arrays of numbers",
    ))?;
    let mut out = Vec::with_capacity(arr.len());
    for x in arr {
        match x {
            Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN)),
            // JSON has no -inf: a null log-probability means "no mass".
            Value::Null if logprobs => out.push(f64::NEG_INFINITY),
            _ => {
                return Err(RejectReason::Malformed(
                    "probability vectors must be arrays of numbers",
                ));
            }
        }
    }
    if let Some(k) = k
        && out.len() != k
    {
        return Err(RejectReason::BadVector(VectorError::WrongLength {
            expected: k,
            got: out.len(),
        }));
    }
    let checked = if logprobs {
        probs_from_logprobs(&mut out)
    } else {
        normalize_probs(&mut out)
    };
    checked.map_err(RejectReason::BadVector)?;
    Ok(out)
}

/// Parses a JSON line as an `llm_prediction` record. Returns `None` when the line has neither
/// `probs` nor `logprobs` (it is not a prediction), `Some(Err(..))` when it is one but invalid.
pub fn parse_prediction(line: &str) -> Option<Result<Prediction, RejectReason>> {
    let v: Value = serde_json::from_str(line).ok()?;
    let obj = v.as_object()?;
    if !obj.contains_key("probs") && !obj.contains_key("logprobs") {
        return None;
    }
    Some(prediction_from(obj))
}

fn prediction_from(obj: &serde_json::Map<String, Value>) -> Result<Prediction, RejectReason> {
    let string = |k: &'static str| -> Result<String, RejectReason> {
        match obj.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(RejectReason::Malformed(
                "`model` and `task` must be non-empty strings",
            )),
            None => Err(RejectReason::MissingField(k)),
        }
    };
    let model = string("model")?;
    let task = string("task")?;
    let timestamp = match obj.get("timestamp") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.round() as i64)
            })
            .ok_or(RejectReason::BadTimestamp)?,
        Some(Value::String(s)) => parse_rfc3339(s).ok_or(RejectReason::BadTimestamp)?,
        Some(_) => return Err(RejectReason::BadTimestamp),
        None => return Err(RejectReason::MissingField("timestamp")),
    };
    let classes = match obj.get("labels") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(RejectReason::Malformed(
                    "`labels` must be an array of class names",
                ))?,
        ),
        Some(_) => {
            return Err(RejectReason::Malformed(
                "`labels` must be an array of class names",
            ));
        }
    };
    let k = classes.as_ref().map(Vec::len);
    let (probs, logprobs) = match (obj.get("probs"), obj.get("logprobs")) {
        (Some(p), None) => (vector(p, false, k)?, false),
        (None, Some(l)) => (vector(l, true, k)?, true),
        _ => {
            return Err(RejectReason::Malformed(
                "give `probs` or `logprobs`, not both",
            ));
        }
    };
    let k = probs.len();
    let mut mutants = Vec::new();
    match obj.get("mutants") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ms)) => {
            for m in ms {
                mutants.extend(vector(m, logprobs, Some(k))?);
            }
        }
        Some(_) => {
            return Err(RejectReason::Malformed(
                "`mutants` must be an array of vectors",
            ));
        }
    }
    let truth = match obj.get("truth") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .map(|t| t as usize)
                .filter(|t| *t < k)
                .ok_or(RejectReason::Malformed("`truth` index out of range"))?,
        ),
        Some(Value::String(s)) => Some(
            classes
                .as_ref()
                .and_then(|c| c.iter().position(|x| x == s))
                .ok_or(RejectReason::Malformed("`truth` is not one of `labels`"))?,
        ),
        Some(_) => {
            return Err(RejectReason::Malformed(
                "`truth` must be a class name or index",
            ));
        }
    };
    let request_id = match obj.get("request_id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let known = [
        "model",
        "task",
        "request_id",
        "timestamp",
        "labels",
        "probs",
        "logprobs",
        "mutants",
        "truth",
        "type",
    ];
    let mut extra = Vec::new();
    for (key, val) in obj {
        if known.contains(&key.as_str()) {
            continue;
        }
        match val {
            Value::String(s) => extra.push((key.clone(), s.clone())),
            _ => {
                return Err(RejectReason::Malformed(
                    "extra fields of a prediction must be strings",
                ));
            }
        }
    }
    Ok(Prediction {
        model,
        task,
        request_id,
        timestamp,
        classes,
        probs,
        mutants,
        truth,
        extra,
    })
}

/// The derived points of one prediction: `(metric, value)`; labels from [`series_labels`].
pub fn derived_points(
    p: &Prediction,
    cfg: &LlmConfig,
    scratch: &mut Vec<f64>,
) -> [(&'static str, Option<f64>); 3] {
    scratch.resize(p.probs.len(), 0.0);
    smooth(&p.probs, &p.mutants, cfg.include_original, scratch);
    let m = margin(scratch);
    let low = if m < cfg.low_margin { 1.0 } else { 0.0 };
    let dis = (p.mutant_count() > 0).then(|| disagreement(&p.probs, &p.mutants));
    [
        (MARGIN, Some(m)),
        (LOW_CONFIDENCE, Some(low)),
        (DISAGREEMENT, dis),
    ]
}

/// Labels of a prediction's derived series: model, task, and the configured extra fields present.
pub fn series_labels<'a>(p: &'a Prediction, cfg: &LlmConfig) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![("model", p.model.as_str()), ("task", p.task.as_str())];
    for name in &cfg.labels {
        if let Some((k, v)) = p.extra.iter().find(|(k, _)| k == name) {
            l.push((k.as_str(), v.as_str()));
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Prediction, RejectReason> {
        parse_prediction(line).expect("is a prediction")
    }

    #[test]
    fn parses_probs_mutants_truth_and_extra_labels() {
        let p = parse(
            r#"{"model":"m1","task":"intent","request_id":"r1","timestamp":"2026-01-01T00:00:00Z",
               "labels":["a","b","c"],"probs":[0.7,0.2,0.1],"mutants":[[0.5,0.4,0.1],[0.2,0.7,0.1]],
               "truth":"b","deployment":"canary"}"#,
        )
        .unwrap();
        assert_eq!(p.mutant_count(), 2);
        assert_eq!(p.truth, Some(1));
        assert_eq!(p.mispredicted(), Some(true));
        assert_eq!(
            p.extra,
            vec![("deployment".to_owned(), "canary".to_owned())]
        );
        let cfg = LlmConfig {
            labels: vec!["deployment".into(), "region".into()],
            ..LlmConfig::default()
        };
        assert_eq!(
            series_labels(&p, &cfg),
            vec![
                ("model", "m1"),
                ("task", "intent"),
                ("deployment", "canary")
            ]
        );
        let d = derived_points(&p, &cfg, &mut Vec::new());
        // smoothed = (0.7+0.5+0.2, 0.2+0.4+0.7, 0.3)/3 = (1.4, 1.3, 0.3)/3 → margin 0.1/3
        assert!((d[0].1.unwrap() - 0.1 / 3.0).abs() < 1e-12);
        assert_eq!(d[1].1, Some(1.0));
        assert_eq!(d[2].1, Some(0.5));
    }

    #[test]
    fn logprobs_are_renormalised_over_the_label_set() {
        let p =
            parse(r#"{"model":"m","task":"t","timestamp":1,"logprobs":[-0.1,-2.5,null]}"#).unwrap();
        assert!((p.probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(p.probs[2], 0.0);
    }

    #[test]
    fn bad_vectors_are_rejected_with_a_reason_and_slightly_off_sums_renormalised() {
        let bad = |line: &str| parse(line).unwrap_err();
        assert!(matches!(
            bad(
                r#"{"model":"m","task":"t","timestamp":1,"labels":["a","b"],"probs":[0.5,0.3,0.2]}"#
            ),
            RejectReason::BadVector(VectorError::WrongLength {
                expected: 2,
                got: 3
            })
        ));
        assert_eq!(
            bad(r#"{"model":"m","task":"t","timestamp":1,"probs":[1.2,-0.2]}"#),
            RejectReason::BadVector(VectorError::Negative)
        );
        assert!(matches!(
            bad(r#"{"model":"m","task":"t","timestamp":1,"probs":[0.9,0.5]}"#),
            RejectReason::BadVector(VectorError::BadSum(_))
        ));
        assert!(matches!(
            bad(
                r#"{"model":"m","task":"t","timestamp":1,"probs":[0.5,0.5],"mutants":[[0.5,0.2,0.3]]}"#
            ),
            RejectReason::BadVector(VectorError::WrongLength { .. })
        ));
        assert_eq!(
            bad(r#"{"task":"t","timestamp":1,"probs":[0.5,0.5]}"#),
            RejectReason::MissingField("model")
        );
        let ok = parse(r#"{"model":"m","task":"t","timestamp":1,"probs":[0.5,0.503]}"#).unwrap();
        assert!((ok.probs.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!(parse_prediction(r#"{"metric":"x","timestamp":1,"value":1}"#).is_none());
    }
}
