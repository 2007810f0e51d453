//! A seeded synthetic stream of LLM classifier predictions: several models and tasks, the
//! over-confident calibration LLMs are known for, mutated prompts whose disagreement rises on
//! hard inputs, the truth of every request, and one degradation episode after a "rollout" of
//! one model, labelled.

use std::collections::BTreeMap;

use telltale_bench::labels::{Fault, LabelsFile, SeriesRef};
use telltale_core::time::format_rfc3339;

use crate::Rng;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmGenConfig {
    /// Seed.
    pub seed: u64,
    /// Requests per model.
    pub requests: usize,
    /// Interval between two requests of one model, ms.
    pub interval_ms: i64,
    /// Timestamp of the first request.
    pub start_ms: i64,
    /// Mutated prompts per request.
    pub mutants: usize,
    /// Include the degradation episode.
    pub episode: bool,
}

impl Default for LlmGenConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            requests: 1800,
            interval_ms: 2000,
            start_ms: 1_767_571_200_000,
            mutants: 4,
            episode: true,
        }
    }
}

const INTENTS: [&str; 8] = [
    "billing",
    "cancel",
    "upgrade",
    "bug_report",
    "how_to",
    "refund",
    "account",
    "other",
];
const TOXICITY: [&str; 2] = ["ok", "toxic"];

/// (model, task, classes, healthy strength)
const MODELS: [(&str, &str, &[&str], f64); 3] = [
    ("intent-clf-a", "intent", &INTENTS, 4.0),
    ("intent-clf-b", "intent", &INTENTS, 4.0),
    ("moderation-v2", "toxicity", &TOXICITY, 4.5),
];

/// The model that degrades, and when (fractions of the timeline).
const EPISODE: (usize, f64, f64) = (1, 0.5, 0.7);

fn softmax(z: &[f64], sharpen: f64) -> Vec<f64> {
    let max = z.iter().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    let e: Vec<f64> = z.iter().map(|x| ((x - max) * sharpen).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn round4(v: Vec<f64>) -> Vec<f64> {
    v.into_iter()
        .map(|x| (x * 10_000.0).round() / 10_000.0 + 0.0)
        .collect()
}

/// One generated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Model.
    pub model: &'static str,
    /// Task.
    pub task: &'static str,
    /// Request id.
    pub request_id: String,
    /// Timestamp, ms.
    pub timestamp: i64,
    /// Class names.
    pub classes: &'static [&'static str],
    /// Probabilities (rounded to 4 decimals, so they may sum slightly off 1).
    pub probs: Vec<f64>,
    /// Mutants' probabilities.
    pub mutants: Vec<Vec<f64>>,
    /// Index of the true class.
    pub truth: usize,
}

/// Generates requests in time order and returns the episode's labels.
pub fn generate_llm(cfg: &LlmGenConfig, mut emit: impl FnMut(&Request)) -> LabelsFile {
    let mut rng = Rng::new(cfg.seed);
    let n = cfg.requests;
    let (bad_model, from, to) = EPISODE;
    let (ep_start, ep_end) = ((n as f64 * from) as usize, (n as f64 * to) as usize);
    for t in 0..n {
        for (mi, (model, task, classes, strength)) in MODELS.iter().enumerate() {
            let k = classes.len();
            let truth = (rng.next_u64() % k as u64) as usize;
            // Most inputs are easy; a few are hard.
            let difficulty = rng.uniform().powi(3);
            let degraded = cfg.episode && mi == bad_model && (ep_start..ep_end).contains(&t);
            let (strength, noise, mutant_noise) = if degraded {
                (strength * 0.35, 1.2, 1.6)
            } else {
                (*strength, 0.6, 0.4)
            };
            let mut z: Vec<f64> = (0..k).map(|_| noise * rng.normal()).collect();
            z[truth] += strength * (1.0 - difficulty);
            // Over-confident calibration: logits sharpened before the softmax.
            let probs = softmax(&z, 2.5);
            let mutants = (0..cfg.mutants)
                .map(|_| {
                    let zm: Vec<f64> = z
                        .iter()
                        .map(|x| x + (mutant_noise + 2.0 * difficulty) * rng.normal())
                        .collect();
                    round4(softmax(&zm, 2.5))
                })
                .collect();
            emit(&Request {
                model,
                task,
                request_id: format!("{}-{t:06}", &model[..model.len().min(12)]),
                timestamp: cfg.start_ms + t as i64 * cfg.interval_ms + mi as i64 * 7,
                classes,
                probs: round4(probs),
                mutants,
                truth,
            });
        }
    }
    let (model, task, _, _) = MODELS[bad_model];
    let series = |name: &str| SeriesRef {
        name: name.into(),
        labels: BTreeMap::from([("model".into(), model.into()), ("task".into(), task.into())]),
    };
    LabelsFile {
        generator: format!(
            "telltale gen llm --seed {} --requests {} --interval-ms {} --mutants {}",
            cfg.seed, cfg.requests, cfg.interval_ms, cfg.mutants
        ),
        faults: if cfg.episode {
            vec![Fault {
                id: "rollout-intent-clf-b".into(),
                kind: "confidence_collapse".into(),
                series: vec![
                    series("llm_confidence_margin"),
                    series("llm_confidence_low_share"),
                    series("llm_confidence_disagreement"),
                ],
                start: format_rfc3339(cfg.start_ms + ep_start as i64 * cfg.interval_ms),
                end: format_rfc3339(cfg.start_ms + ep_end as i64 * cfg.interval_ms),
                description: "a rollout makes intent-clf-b less sure of itself and less accurate; rolled back at the end".into(),
            }]
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episode_lowers_confidence_and_accuracy_of_one_model_only() {
        let cfg = LlmGenConfig {
            requests: 1000,
            ..LlmGenConfig::default()
        };
        let (mut ok, mut bad) = ([0usize; 3], [0usize; 3]);
        let mut margins = [[0.0f64; 2]; 3];
        let mut counts = [[0usize; 2]; 3];
        let models: Vec<&str> = MODELS.iter().map(|m| m.0).collect();
        generate_llm(&cfg, |r| {
            let mi = models.iter().position(|m| *m == r.model).unwrap();
            let t = ((r.timestamp - cfg.start_ms) / cfg.interval_ms) as usize;
            let in_ep = (500..700).contains(&t);
            let top = telltale_detect_argmax(&r.probs);
            if in_ep {
                bad[mi] += usize::from(top != r.truth)
            } else {
                ok[mi] += usize::from(top != r.truth)
            }
            let mut s = r.probs.clone();
            s.sort_by(|a, b| b.total_cmp(a));
            margins[mi][usize::from(in_ep)] += s[0] - s[1];
            counts[mi][usize::from(in_ep)] += 1;
        });
        let mean = |m: usize, e: usize| margins[m][e] / counts[m][e] as f64;
        assert!(
            mean(1, 1) < mean(1, 0) - 0.2,
            "episode margin {} vs {}",
            mean(1, 1),
            mean(1, 0)
        );
        assert!((mean(0, 1) - mean(0, 0)).abs() < 0.05);
        assert!(
            bad[1] as f64 / 200.0 > 2.0 * ok[1] as f64 / 800.0,
            "accuracy drops"
        );
    }

    fn telltale_detect_argmax(p: &[f64]) -> usize {
        (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b })
    }
}
