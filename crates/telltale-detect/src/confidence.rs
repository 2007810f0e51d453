//! Confidence scores of a classifier's output, for watching LLM classifiers in production.
//!
//! Given the class-probability vector of one request: **margin** (top-1 minus top-2
//! probability; low = unsure; the simple score that research on LLM classifiers found to beat
//! more complex uncertainty methods), **least confidence** (1 − top-1), **entropy** (normalised
//! to [0, 1] by ln K), **Gini impurity** (1 − Σp²). **MuCS** (prompt-mutation confidence
//! smoothing) averages the vectors of the original prompt and its mutants before scoring;
//! **disagreement** is the share of mutants whose top class differs from the original's.
//!
//! Every function is a plain loop over the class dimension, written without branches that
//! depend on the data where possible, so that it vectorises for large label sets.

use std::fmt;

/// Why a probability vector was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VectorError {
    /// No classes.
    Empty,
    /// Not as many entries as the label set has classes.
    WrongLength {
        /// Entries expected.
        expected: usize,
        /// Entries given.
        got: usize,
    },
    /// An entry is NaN or infinite.
    NotFinite,
    /// A probability is negative.
    Negative,
    /// Probabilities sum too far from 1 to be a distribution.
    BadSum(f64),
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::Empty => f.write_str("empty probability vector"),
            VectorError::WrongLength { expected, got } => {
                write!(f, "vector has {got} entries, the label set {expected}")
            }
            VectorError::NotFinite => f.write_str("vector holds NaN or an infinity"),
            VectorError::Negative => f.write_str("vector holds a negative probability"),
            VectorError::BadSum(s) => write!(f, "probabilities sum to {s}, far from 1"),
        }
    }
}

impl std::error::Error for VectorError {}

/// Sums within this distance of 1 are renormalised silently; beyond it they are refused.
pub const SUM_TOLERANCE: f64 = 0.01;

/// Checks a probability vector and renormalises it in place when its sum is slightly off.
pub fn normalize_probs(p: &mut [f64]) -> Result<(), VectorError> {
    if p.is_empty() {
        return Err(VectorError::Empty);
    }
    if !p.iter().all(|x| x.is_finite()) {
        return Err(VectorError::NotFinite);
    }
    if p.iter().any(|x| *x < 0.0) {
        return Err(VectorError::Negative);
    }
    let sum: f64 = p.iter().sum();
    if (sum - 1.0).abs() > SUM_TOLERANCE {
        return Err(VectorError::BadSum(sum));
    }
    let inv = 1.0 / sum;
    p.iter_mut().for_each(|x| *x *= inv);
    Ok(())
}

/// Turns per-class log-probabilities into probabilities renormalised over the label set
/// (a softmax of the log-probabilities), in place.
pub fn probs_from_logprobs(lp: &mut [f64]) -> Result<(), VectorError> {
    if lp.is_empty() {
        return Err(VectorError::Empty);
    }
    // -inf (a class the model gave no mass) is fine; NaN and +inf are not.
    if lp.iter().any(|x| x.is_nan() || *x == f64::INFINITY) {
        return Err(VectorError::NotFinite);
    }
    let max = lp.iter().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    if max == f64::NEG_INFINITY {
        return Err(VectorError::NotFinite);
    }
    lp.iter_mut().for_each(|x| *x = (*x - max).exp());
    let inv = 1.0 / lp.iter().sum::<f64>();
    lp.iter_mut().for_each(|x| *x *= inv);
    Ok(())
}

/// The two largest entries (top-1, top-2); top-2 is 0 for a single class.
#[inline]
pub fn top2(p: &[f64]) -> (f64, f64) {
    let (mut a, mut b) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &x in p {
        let nb = if x > a { a } else { b.max(x) };
        a = a.max(x);
        b = nb;
    }
    (a, if p.len() < 2 { 0.0 } else { b })
}

/// Index of the largest entry (the first, on ties).
#[inline]
pub fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in p.iter().enumerate() {
        if x > p[best] {
            best = i;
        }
    }
    best
}

/// Top-1 minus top-2 probability, in [0, 1]: low means the model is unsure.
#[inline]
pub fn margin(p: &[f64]) -> f64 {
    let (a, b) = top2(p);
    a - b
}

/// 1 − top-1 probability: high means unsure.
#[inline]
pub fn least_confidence(p: &[f64]) -> f64 {
    1.0 - top2(p).0
}

/// Shannon entropy divided by ln K, in [0, 1] (0 for a single class): high means unsure.
#[inline]
pub fn entropy(p: &[f64]) -> f64 {
    if p.len() < 2 {
        return 0.0;
    }
    let h: f64 = p
        .iter()
        .map(|&x| if x > 0.0 { -x * x.ln() } else { 0.0 })
        .sum();
    h / (p.len() as f64).ln()
}

/// Gini impurity 1 − Σp², in [0, 1 − 1/K]: high means unsure.
#[inline]
pub fn gini(p: &[f64]) -> f64 {
    1.0 - p.iter().map(|x| x * x).sum::<f64>()
}

/// MuCS smoothing: the mean of the mutants' vectors, and of the original's too when
/// `include_original`, written to `out` (length K). `mutants` holds the vectors back to back.
pub fn smooth(original: &[f64], mutants: &[f64], include_original: bool, out: &mut [f64]) {
    let k = original.len();
    assert_eq!(out.len(), k, "out has one entry per class");
    assert_eq!(mutants.len() % k.max(1), 0, "mutants are whole vectors");
    let m = mutants.len() / k.max(1);
    if include_original {
        out.copy_from_slice(original);
    } else {
        out.fill(0.0);
    }
    for v in mutants.chunks_exact(k.max(1)) {
        out.iter_mut().zip(v).for_each(|(o, x)| *o += x);
    }
    let n = m + usize::from(include_original);
    if n == 0 {
        out.copy_from_slice(original);
        return;
    }
    let inv = 1.0 / n as f64;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Share of mutants whose top class differs from the original's (0 with no mutant).
pub fn disagreement(original: &[f64], mutants: &[f64]) -> f64 {
    let k = original.len().max(1);
    let top = argmax(original);
    let m = mutants.len() / k;
    if m == 0 {
        return 0.0;
    }
    let differ = mutants.chunks_exact(k).filter(|v| argmax(v) != top).count();
    differ as f64 / m as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let p = [0.7, 0.2, 0.1];
        assert!((margin(&p) - 0.5).abs() < 1e-15);
        assert!((least_confidence(&p) - 0.3).abs() < 1e-15);
        assert!((gini(&p) - (1.0 - 0.49 - 0.04 - 0.01)).abs() < 1e-15);
        let h = -(0.7f64 * 0.7f64.ln() + 0.2 * 0.2f64.ln() + 0.1 * 0.1f64.ln()) / 3f64.ln();
        assert!((entropy(&p) - h).abs() < 1e-15);
        assert_eq!(entropy(&[1.0, 0.0]), 0.0);
        assert!((entropy(&[0.5, 0.5]) - 1.0).abs() < 1e-15);
        assert_eq!(margin(&[1.0]), 1.0);
        assert_eq!(
            top2(&[0.2, 0.5, 0.5]),
            (0.5, 0.5),
            "ties: top-2 equals top-1"
        );
        assert_eq!(argmax(&[0.2, 0.5, 0.5]), 1);
    }

    #[test]
    fn mucs_smoothing_and_disagreement() {
        let orig = [0.9, 0.1];
        let mutants = [0.6, 0.4, 0.3, 0.7, 0.8, 0.2];
        let mut out = [0.0; 2];
        smooth(&orig, &mutants, true, &mut out);
        assert!((out[0] - 0.65).abs() < 1e-15 && (out[1] - 0.35).abs() < 1e-15);
        smooth(&orig, &mutants, false, &mut out);
        assert!((out[0] - 1.7 / 3.0).abs() < 1e-15);
        assert!((disagreement(&orig, &mutants) - 1.0 / 3.0).abs() < 1e-15);
        smooth(&orig, &[], false, &mut out);
        assert_eq!(out, orig, "no mutant: the original");
        assert_eq!(disagreement(&orig, &[]), 0.0);
    }

    #[test]
    fn validation_and_renormalisation() {
        let mut p = [0.5, 0.504];
        normalize_probs(&mut p).unwrap();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert_eq!(
            normalize_probs(&mut [0.5, 0.6]),
            Err(VectorError::BadSum(1.1))
        );
        assert_eq!(
            normalize_probs(&mut [1.2, -0.2]),
            Err(VectorError::Negative)
        );
        assert_eq!(
            normalize_probs(&mut [f64::NAN, 1.0]),
            Err(VectorError::NotFinite)
        );
        assert_eq!(normalize_probs(&mut []), Err(VectorError::Empty));
        let mut lp = [0.5f64.ln(), 0.25f64.ln(), f64::NEG_INFINITY];
        probs_from_logprobs(&mut lp).unwrap();
        assert!((lp[0] - 2.0 / 3.0).abs() < 1e-15 && lp[2] == 0.0);
    }
}
