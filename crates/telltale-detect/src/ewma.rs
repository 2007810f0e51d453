//! EWMA forecast with an exponentially weighted variance, scored by the two-sided Gaussian tail
//! probability of the z-score. The smoothing factor starts at `1/(n+1)` and decays to `alpha`,
//! so that the warm-up yields the plain running mean and variance instead of estimates biased
//! towards the first point.

use serde::{Deserialize, Serialize};

use crate::params::{Alpha, Count};
use crate::score::{score_from_z, scores_from_z_in_place};
use crate::{Bank, Detector, Scored};

/// Parameters of the EWMA detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EwmaParams {
    /// Weight of the newest point in the mean and variance (default 0.05).
    #[serde(default = "default_alpha")]
    pub alpha: Alpha,
    /// Points learned before the detector scores (default 30).
    #[serde(default = "default_warmup")]
    pub warmup: Count,
}

fn default_alpha() -> Alpha {
    Alpha::new(0.05).expect("valid")
}
fn default_warmup() -> Count {
    Count::new(30).expect("valid")
}

impl Default for EwmaParams {
    fn default() -> Self {
        Self {
            alpha: default_alpha(),
            warmup: default_warmup(),
        }
    }
}

/// State of the EWMA detector for one series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EwmaState {
    /// Exponentially weighted mean.
    pub mean: f64,
    /// Exponentially weighted variance.
    pub var: f64,
    /// Points learned so far (as f64 so that the batch kernel is all-f64 and vectorises).
    pub n: f64,
}

/// The one-step kernel shared by the single-series detector and the bank: learns `x` and
/// returns its z-score against the state before it (0 while warming up) and the forecast.
/// Branch-free, so that loops over it vectorise.
#[inline(always)]
fn step_z(
    alpha: f64,
    warmup: f64,
    mean: &mut f64,
    var: &mut f64,
    n: &mut f64,
    x: f64,
) -> (f64, f64) {
    let first = *n == 0.0;
    let d = x - *mean;
    // A floor on sigma keeps a perfectly constant series from dividing by zero while still
    // flagging any departure from it.
    let floor = 1e-9 * mean.abs() + 1e-12;
    let z = d / var.sqrt().max(floor);
    let z = if *n >= warmup { z } else { 0.0 };
    let expected = if first { f64::NAN } else { *mean };
    // Early on, weight points equally (a = 1/(n+1): the running mean and population variance)
    // so the first estimates are not biased towards the first point; later a = alpha.
    let a = alpha.max(1.0 / (*n + 1.0));
    let new_mean = *mean + a * d;
    let new_var = (1.0 - a) * (*var + a * d * d);
    *mean = if first { x } else { new_mean };
    *var = if first { 0.0 } else { new_var };
    *n += 1.0;
    (z, expected)
}

#[inline(always)]
fn step(alpha: f64, warmup: f64, mean: &mut f64, var: &mut f64, n: &mut f64, x: f64) -> Scored {
    let (z, expected) = step_z(alpha, warmup, mean, var, n, x);
    Scored {
        score: score_from_z(z),
        expected,
    }
}

/// EWMA z-score detector for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    /// Parameters.
    pub params: EwmaParams,
    /// Current state.
    pub state: EwmaState,
}

impl Ewma {
    /// A detector in its initial state.
    pub fn new(params: EwmaParams) -> Self {
        Self {
            params,
            state: EwmaState::default(),
        }
    }

    /// Learns one point and returns only its z-score against the state before it (0 while
    /// warming up): the fast path for callers that threshold |z| themselves, skipping the
    /// Gaussian tail probability that [`Ewma::step`] turns it into (`score_from_z(z)` is that
    /// score).
    pub fn step_z(&mut self, x: f64) -> f64 {
        let s = &mut self.state;
        step_z(
            self.params.alpha.get(),
            f64::from(self.params.warmup.get()),
            &mut s.mean,
            &mut s.var,
            &mut s.n,
            x,
        )
        .0
    }

    /// Scores then learns one point, returning the score and the forecast.
    pub fn step(&mut self, x: f64) -> Scored {
        let s = &mut self.state;
        step(
            self.params.alpha.get(),
            f64::from(self.params.warmup.get()),
            &mut s.mean,
            &mut s.var,
            &mut s.n,
            x,
        )
    }
}

impl Detector for Ewma {
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]) {
        assert_eq!(xs.len(), out.len(), "xs and out differ in length");
        let (alpha, warmup) = (self.params.alpha.get(), f64::from(self.params.warmup.get()));
        let s = &mut self.state;
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = step_z(alpha, warmup, &mut s.mean, &mut s.var, &mut s.n, *x).0;
        }
        // Second pass: independent per element, so it vectorises (the first pass, a
        // recurrence along time, cannot).
        scores_from_z_in_place(out);
    }
}

/// EWMA state for many series, struct-of-arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct EwmaBank {
    params: EwmaParams,
    mean: Vec<f64>,
    var: Vec<f64>,
    n: Vec<f64>,
}

impl EwmaBank {
    /// Updates every series at once with one new point each (`xs[slot]`), writing scores to
    /// `out`. This is the form that vectorises: the loop runs across series, not along time.
    pub fn update_dense(&mut self, xs: &[f64], out: &mut [f64]) {
        let len = self.mean.len();
        assert!(xs.len() == len && out.len() == len, "one point per series");
        let (alpha, warmup) = (self.params.alpha.get(), f64::from(self.params.warmup.get()));
        dense_scores(
            alpha,
            warmup,
            &mut self.mean,
            &mut self.var,
            &mut self.n,
            xs,
            out,
        );
    }
}

simd_dispatch! {
    /// The dense kernel in one pass: every series learns its point and writes its score (the z
    /// step and the Gaussian tail fused, so the z-scores never go through memory).
    fn dense_scores(
        alpha: f64,
        warmup: f64,
        mean: &mut [f64],
        var: &mut [f64],
        n: &mut [f64],
        xs: &[f64],
        out: &mut [f64],
    ) {
        let it = mean
            .iter_mut()
            .zip(var.iter_mut())
            .zip(n.iter_mut())
            .zip(xs.iter().zip(out.iter_mut()));
        for (((m, v), n), (x, o)) in it {
            *o = score_from_z(step_z(alpha, warmup, m, v, n, *x).0);
        }
    }
}

impl Bank for EwmaBank {
    type Params = EwmaParams;
    type State = EwmaState;

    crate::bank::soa_bank!(EwmaState { mean, var, n });

    #[inline]
    fn update(&mut self, slot: usize, _ts: i64, x: f64, _evicted: Option<f64>) -> Scored {
        step(
            self.params.alpha.get(),
            f64::from(self.params.warmup.get()),
            &mut self.mean[slot],
            &mut self.var[slot],
            &mut self.n[slot],
            x,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(alpha: f64, warmup: u32) -> EwmaParams {
        EwmaParams {
            alpha: Alpha::new(alpha).unwrap(),
            warmup: Count::new(warmup).unwrap(),
        }
    }

    #[test]
    fn z_only_path_learns_the_same_and_gives_the_z_behind_the_score() {
        let mut full = Ewma::new(params(0.05, 5));
        let mut z_only = Ewma::new(params(0.05, 5));
        for i in 0..500 {
            let x = 10.0 + ((i * 7919) % 31) as f64 / 7.0 + if i == 300 { 40.0 } else { 0.0 };
            let z = z_only.step_z(x);
            assert_eq!(
                full.step(x).score,
                crate::score::score_from_z(z),
                "point {i}"
            );
            assert_eq!(full.state, z_only.state);
        }
    }

    #[test]
    fn hand_computed_mean_variance_and_score() {
        // alpha = 0.5: x = 1, 3, 5
        // after 1: mean 1, var 0
        // after 3: d = 2, mean 2, var = 0.5 * (0 + 0.5 * 4) = 1
        // at 5: d = 3, z = 3 / 1 = 3 → score = 1 - P(|Z| >= 3) = 0.997300204
        let mut d = Ewma::new(params(0.5, 2));
        assert_eq!(d.step(1.0).score, 0.0);
        assert_eq!(d.step(3.0).score, 0.0, "still warming up at n = 1");
        assert_eq!(d.state.mean, 2.0);
        assert_eq!(d.state.var, 1.0);
        let s = d.step(5.0);
        assert_eq!(s.expected, 2.0);
        assert!((s.score - 0.997_300_204).abs() < 1e-8, "{}", s.score);
        // after 5: mean 3.5, var = 0.5 * (1 + 0.5 * 9) = 2.75
        assert_eq!(d.state.mean, 3.5);
        assert_eq!(d.state.var, 2.75);
    }

    #[test]
    fn warm_up_gives_the_plain_running_mean_and_variance() {
        // alpha = 0.01: the first three points get weights 1, 1/2, 1/3.
        let mut d = Ewma::new(params(0.01, 10));
        for x in [2.0, 4.0, 9.0] {
            d.step(x);
        }
        assert!((d.state.mean - 5.0).abs() < 1e-12);
        // population variance of 2, 4, 9 = (9 + 1 + 16) / 3
        assert!((d.state.var - 26.0 / 3.0).abs() < 1e-12, "{}", d.state.var);
    }

    #[test]
    fn constant_series_scores_zero_then_flags_a_departure() {
        let mut d = Ewma::new(params(0.1, 5));
        for _ in 0..50 {
            assert!(d.step(7.0).score < 1e-6);
        }
        assert_eq!(d.step(7.5).score, 1.0);
    }

    #[test]
    fn dense_batch_equals_per_series_updates() {
        let p = params(0.2, 3);
        let mut bank = EwmaBank::new(p);
        let mut singles: Vec<Ewma> = (0..13).map(|_| Ewma::new(p)).collect();
        for _ in 0..13 {
            bank.add_series();
        }
        let mut out = vec![0.0; 13];
        for t in 0..40 {
            let xs: Vec<f64> = (0..13).map(|i| ((t * 7 + i * 3) % 11) as f64).collect();
            bank.update_dense(&xs, &mut out);
            for (i, d) in singles.iter_mut().enumerate() {
                assert_eq!(d.step(xs[i]).score, out[i]);
                assert_eq!(bank.snapshot(i), d.state);
            }
        }
    }
}
