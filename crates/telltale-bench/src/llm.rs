//! `telltale bench llm`: how well each confidence scorer ranks the requests a model got wrong.
//!
//! For the records with a known `truth`, every scorer gives each request an uncertainty (higher
//! = more likely a misprediction); requests are ranked by it, most uncertain first, and compared
//! with the actual mispredictions:
//! - **TRC(b)**, test relative coverage at budget `b`: `|faults in the top b| / min(b, |faults|)`;
//! - **APFD**, average percentage of faults detected: `1 − Σ rank(fault)/(n·m) + 1/(2n)`;
//! - **ROC-AUC** of the uncertainty as a misprediction detector (ties count half).

use std::fmt::Write;

use telltale_codec::llm::Prediction;
use telltale_detect::confidence::{disagreement, entropy, gini, least_confidence, margin, smooth};

/// A named uncertainty function of a request (original vector, MuCS-smoothed vector).
pub type Scorer = (&'static str, fn(&Prediction, &[f64]) -> f64);

/// The scorers compared: the four classic ones on the original vector, the same on the
/// MuCS-smoothed vector, and the mutants' disagreement.
pub const SCORERS: [Scorer; 9] = [
    ("margin", |p, _| 1.0 - margin(&p.probs)),
    ("least_confidence", |p, _| least_confidence(&p.probs)),
    ("entropy", |p, _| entropy(&p.probs)),
    ("gini", |p, _| gini(&p.probs)),
    ("mucs_margin", |_, s| 1.0 - margin(s)),
    ("mucs_least_confidence", |_, s| least_confidence(s)),
    ("mucs_entropy", |_, s| entropy(s)),
    ("mucs_gini", |_, s| gini(s)),
    ("disagreement", |p, _| disagreement(&p.probs, &p.mutants)),
];

/// Budgets, as fractions of the requests.
pub const BUDGETS: [f64; 4] = [0.01, 0.05, 0.10, 0.20];

/// One scorer's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerResult {
    /// Scorer name.
    pub name: &'static str,
    /// TRC at each of [`BUDGETS`].
    pub trc: Vec<f64>,
    /// APFD.
    pub apfd: f64,
    /// ROC-AUC.
    pub auc: f64,
}

/// Test relative coverage of a ranking (`faults[i]` for the i-th ranked request) at budget `b`.
pub fn trc(ranked_faults: &[bool], b: usize) -> f64 {
    let m = ranked_faults.iter().filter(|f| **f).count();
    if m == 0 || b == 0 {
        return 0.0;
    }
    let found = ranked_faults[..b.min(ranked_faults.len())]
        .iter()
        .filter(|f| **f)
        .count();
    found as f64 / b.min(m) as f64
}

/// APFD of a ranking.
pub fn apfd(ranked_faults: &[bool]) -> f64 {
    let n = ranked_faults.len() as f64;
    let positions: Vec<f64> = ranked_faults
        .iter()
        .enumerate()
        .filter(|(_, f)| **f)
        .map(|(i, _)| (i + 1) as f64)
        .collect();
    let m = positions.len() as f64;
    if m == 0.0 {
        return 0.0;
    }
    1.0 - positions.iter().sum::<f64>() / (n * m) + 1.0 / (2.0 * n)
}

/// ROC-AUC of `scores` (higher = positive) against `labels`, with average ranks for ties.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = avg;
        }
        i = j + 1;
    }
    let m = labels.iter().filter(|l| **l).count() as f64;
    let n = labels.len() as f64 - m;
    if m == 0.0 || n == 0.0 {
        return f64::NAN;
    }
    let sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l)
        .map(|(r, _)| r)
        .sum();
    (sum - m * (m + 1.0) / 2.0) / (m * n)
}

/// Scores every scorer on the predictions that carry a truth.
pub fn evaluate(
    predictions: &[Prediction],
    include_original: bool,
) -> (usize, usize, Vec<ScorerResult>) {
    let labelled: Vec<&Prediction> = predictions.iter().filter(|p| p.truth.is_some()).collect();
    let faults: Vec<bool> = labelled
        .iter()
        .map(|p| p.mispredicted() == Some(true))
        .collect();
    let mut smoothed = Vec::new();
    let results = SCORERS
        .iter()
        .map(|(name, f)| {
            let u: Vec<f64> = labelled
                .iter()
                .map(|p| {
                    smoothed.resize(p.probs.len(), 0.0);
                    smooth(&p.probs, &p.mutants, include_original, &mut smoothed);
                    f(p, &smoothed)
                })
                .collect();
            // Most uncertain first; a stable sort keeps input order among ties.
            let mut order: Vec<usize> = (0..u.len()).collect();
            order.sort_by(|a, b| u[*b].total_cmp(&u[*a]));
            let ranked: Vec<bool> = order.iter().map(|i| faults[*i]).collect();
            let n = ranked.len();
            ScorerResult {
                name,
                trc: BUDGETS
                    .iter()
                    .map(|b| trc(&ranked, ((b * n as f64).round() as usize).max(1)))
                    .collect(),
                apfd: apfd(&ranked),
                auc: roc_auc(&u, &faults),
            }
        })
        .collect();
    (
        labelled.len(),
        faults.iter().filter(|f| **f).count(),
        results,
    )
}

/// The side-by-side table.
pub fn table(requests: usize, faults: usize, results: &[ScorerResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{requests} requests with truth, {faults} mispredicted");
    let _ = write!(s, "{:<24}", "scorer");
    for b in BUDGETS {
        let _ = write!(s, " {:>9}", format!("TRC@{}%", (b * 100.0) as u32));
    }
    let _ = writeln!(s, " {:>7} {:>7}", "APFD", "ROC-AUC");
    for r in results {
        let _ = write!(s, "{:<24}", r.name);
        for t in &r.trc {
            let _ = write!(s, " {t:>9.3}");
        }
        let _ = writeln!(s, " {:>7.3} {:>7.3}", r.apfd, r.auc);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_known_answers() {
        // ranking: F . F . . (n = 5, m = 2) → positions 1 and 3
        let r = [true, false, true, false, false];
        assert_eq!(trc(&r, 1), 1.0);
        assert_eq!(trc(&r, 2), 0.5);
        assert_eq!(trc(&r, 3), 1.0);
        assert!((apfd(&r) - (1.0 - 4.0 / 10.0 + 0.1)).abs() < 1e-15);
        // AUC: perfect, inverted, ties
        assert_eq!(roc_auc(&[0.9, 0.8, 0.1], &[true, true, false]), 1.0);
        assert_eq!(roc_auc(&[0.1, 0.8, 0.9], &[true, false, false]), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), 0.5);
    }
}
