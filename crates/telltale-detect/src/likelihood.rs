//! Anomaly likelihood (after Numenta's): how unusual the *recent* surprise of a series is,
//! compared with its own history of surprise.
//!
//! The raw surprise of a point is `|z|` against an EWMA forecast with an exponentially weighted
//! variance (as [`crate::Ewma`]). Its short-term mean (weight `short`) is compared with the
//! long-term mean and standard deviation of the same surprise (weight `long`); the score is the
//! one-sided Gaussian probability `Φ((short_mean − long_mean) / long_sd)`. A noisy series whose
//! z-scores are often large gets a high long-term mean and is not flagged for them; a calm one
//! is flagged by a modest jump; a lone outlier moves the short mean less than a run of them.

use serde::{Deserialize, Serialize};

use crate::params::{Alpha, Count, Weight};
use crate::score::{clamp_score, two_sided_tail};
use crate::{Bank, Detector, Scored};

/// Parameters of the likelihood detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LikelihoodParams {
    /// Weight of the newest point in the forecast and its variance: a share per point or a
    /// time constant such as `"20m"` (default 0.05).
    #[serde(default = "default_alpha")]
    pub alpha: Weight,
    /// Weight of the newest surprise in its short-term mean (default 0.2, about 10 points).
    #[serde(default = "default_short")]
    pub short: Weight,
    /// Weight of the newest surprise in its long-term mean and variance (default 0.002).
    #[serde(default = "default_long")]
    pub long: Weight,
    /// Points learned before the detector scores (default 100; the surprise statistics start
    /// after half of it, once the forecast has settled).
    #[serde(default = "default_warmup")]
    pub warmup: Count,
}

fn default_alpha() -> Weight {
    Alpha::new(0.05).expect("valid").into()
}
fn default_short() -> Weight {
    Alpha::new(0.2).expect("valid").into()
}
fn default_long() -> Weight {
    Alpha::new(0.002).expect("valid").into()
}
fn default_warmup() -> Count {
    Count::new(100).expect("valid")
}

impl Default for LikelihoodParams {
    fn default() -> Self {
        Self {
            alpha: default_alpha(),
            short: default_short(),
            long: default_long(),
            warmup: default_warmup(),
        }
    }
}

/// State of the likelihood detector for one series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LikelihoodState {
    /// Forecast (EW mean of the values).
    pub mean: f64,
    /// EW variance of the values.
    pub var: f64,
    /// Points learned.
    pub n: f64,
    /// Short-term mean of the surprise.
    pub short: f64,
    /// Long-term mean of the surprise.
    pub long_mean: f64,
    /// Long-term variance of the surprise.
    pub long_var: f64,
    /// Timestamp of the last point learned (milliseconds), for weights given as time constants.
    #[serde(default)]
    pub last_ts: f64,
}

/// `Φ(x)`, the standard normal distribution function.
#[inline(always)]
fn normal_cdf(x: f64) -> f64 {
    // erfc(|x|/√2) = P(|Z| ≥ |x|) = 2·Q(|x|)
    let upper = 0.5 * two_sided_tail(x);
    if x >= 0.0 { 1.0 - upper } else { upper }
}

#[inline(always)]
fn step(p: &LikelihoodParams, s: &mut LikelihoodState, ts: i64, x: f64) -> Scored {
    let first = s.n == 0.0;
    let dt = ts - s.last_ts as i64;
    s.last_ts = ts as f64;
    let d = x - s.mean;
    let floor = 1e-9 * s.mean.abs() + 1e-12;
    let surprise = if first {
        0.0
    } else {
        (d / s.var.sqrt().max(floor)).abs().min(1e6)
    };
    let expected = if first { f64::NAN } else { s.mean };
    // Forecast update (equal weights early, as the EWMA detector).
    let a = p.alpha.at(dt).max(1.0 / (s.n + 1.0));
    s.mean = if first { x } else { s.mean + a * d };
    s.var = if first {
        0.0
    } else {
        (1.0 - a) * (s.var + a * d * d)
    };
    // Surprise statistics start once the forecast has settled (half the warm-up): the first
    // z-scores, against a variance from a handful of points, would poison the long-term mean.
    let settle = (f64::from(p.warmup.get()) / 2.0).floor();
    let mut score = 0.0;
    if s.n >= settle {
        let k = s.n - settle;
        let (ws, wl) = (
            p.short.at(dt).max(1.0 / (k + 1.0)),
            p.long.at(dt).max(1.0 / (k + 1.0)),
        );
        s.short += ws * (surprise - s.short);
        let dl = surprise - s.long_mean;
        if s.n >= f64::from(p.warmup.get()) {
            let sd = s.long_var.sqrt().max(1e-6);
            score = clamp_score(normal_cdf((s.short - s.long_mean) / sd));
        }
        s.long_mean += wl * dl;
        s.long_var = (1.0 - wl) * (s.long_var + wl * dl * dl);
    }
    s.n += 1.0;
    Scored { score, expected }
}

/// The likelihood detector for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Likelihood {
    /// Parameters.
    pub params: LikelihoodParams,
    /// State.
    pub state: LikelihoodState,
}

impl Likelihood {
    /// A detector in its initial state.
    pub fn new(params: LikelihoodParams) -> Self {
        Self {
            params,
            state: LikelihoodState::default(),
        }
    }

    /// Scores then learns one point (for per-point weights: the timestamp is not read).
    pub fn step(&mut self, x: f64) -> Scored {
        let ts = self.state.last_ts as i64;
        step(&self.params, &mut self.state, ts, x)
    }

    /// Scores then learns one point observed at `ts` (milliseconds).
    pub fn step_at(&mut self, ts: i64, x: f64) -> Scored {
        step(&self.params, &mut self.state, ts, x)
    }
}

impl Detector for Likelihood {
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]) {
        assert_eq!(xs.len(), out.len(), "xs and out differ in length");
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = self.step(*x).score;
        }
    }
}

/// Likelihood state for many series (struct-of-arrays).
#[derive(Debug, Clone, PartialEq)]
pub struct LikelihoodBank {
    params: LikelihoodParams,
    mean: Vec<f64>,
    var: Vec<f64>,
    n: Vec<f64>,
    short: Vec<f64>,
    long_mean: Vec<f64>,
    long_var: Vec<f64>,
    last_ts: Vec<f64>,
}

impl Bank for LikelihoodBank {
    type Params = LikelihoodParams;
    type State = LikelihoodState;

    crate::bank::soa_bank!(
        LikelihoodState {
            mean,
            var,
            n,
            short,
            long_mean,
            long_var,
            last_ts
        },
        step_at = step
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-7);
        assert!((normal_cdf(-1.959_964) - 0.025).abs() < 1e-8);
    }

    #[test]
    fn a_jump_is_likely_anomalous_on_a_calm_series_and_ordinary_on_a_wild_one() {
        let noise = |t: usize| ((t * 7919) % 13) as f64 / 13.0 - 0.5;
        let run = |amplitude: f64| {
            let mut d = Likelihood::new(LikelihoodParams::default());
            for t in 0..2000 {
                // a wild series: occasional jumps of 4 units are part of its normal life
                let burst = if amplitude > 0.0 && t % 50 == 0 {
                    amplitude
                } else {
                    0.0
                };
                d.step(10.0 + noise(t) + burst);
            }
            let calm = d.step(10.0 + noise(2000)).score;
            let jump = d.step(14.0).score;
            (calm, jump)
        };
        let (calm, jump) = run(0.0);
        assert!(calm < 0.9, "{calm}");
        assert!(jump > 0.999, "{jump}");
        let (_, wild_jump) = run(4.0);
        assert!(wild_jump < jump, "{wild_jump} vs {jump}");
    }
}
