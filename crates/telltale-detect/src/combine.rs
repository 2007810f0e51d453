//! Combining per-detector scores into one score in [0, 1].

use serde::{Deserialize, Serialize};

use crate::score::clamp_score;

/// How a chain's detector scores become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The largest score: any one detector can raise an alert (default).
    #[default]
    Max,
    /// The arithmetic mean: detectors must agree.
    Mean,
    /// `1 − Π(1 − sᵢ)`: independent evidence accumulates.
    NoisyOr,
}

impl Combine {
    /// Combines `scores` (each in [0, 1]); an empty slice scores 0.
    #[inline]
    pub fn combine(self, scores: &[f64]) -> f64 {
        if scores.is_empty() {
            return 0.0;
        }
        let s = match self {
            Combine::Max => scores.iter().fold(0.0f64, |a, &b| a.max(b)),
            Combine::Mean => scores.iter().sum::<f64>() / scores.len() as f64,
            Combine::NoisyOr => 1.0 - scores.iter().fold(1.0, |a, &b| a * (1.0 - b)),
        };
        clamp_score(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let s = [0.2, 0.5, 0.9];
        assert_eq!(Combine::Max.combine(&s), 0.9);
        assert!((Combine::Mean.combine(&s) - 1.6 / 3.0).abs() < 1e-15);
        assert!((Combine::NoisyOr.combine(&s) - (1.0 - 0.8 * 0.5 * 0.1)).abs() < 1e-15);
        assert_eq!(Combine::Max.combine(&[]), 0.0);
    }
}
