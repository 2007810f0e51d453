//! Two-sided tabular CUSUM, self-starting: the reference mean and sigma are estimated from a
//! warm-up, and after an alarm the sums are reset and a new warm-up learns the new regime.
//!
//! With `baseline_alpha > 0` the reference keeps following the series slowly after the warm-up
//! (an exponentially weighted mean and variance with that weight), so that slow cycles such as
//! daily load do not accumulate into false alarms while changes faster than the baseline still
//! do. `baseline_alpha = 0` is the textbook fixed reference.

use serde::{Deserialize, Serialize};

use crate::params::{Count, NonNegative, Positive};
use crate::{Bank, Detector, ParamError, Scored};

/// Parameters of the CUSUM detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CusumParams {
    /// Allowance (slack) per point, in reference sigmas (default 0.5: tuned to a one-sigma shift).
    #[serde(default = "default_k")]
    pub k: NonNegative,
    /// Decision threshold on either sum, in reference sigmas (default 12).
    #[serde(default = "default_h")]
    pub h: Positive,
    /// Points used to estimate the reference mean and sigma, at start and after each alarm
    /// (default 30, at least 2).
    #[serde(default = "default_warmup")]
    pub warmup: Count,
    /// Weight of each new point in the reference after the warm-up, in [0, 1) (default 0.02;
    /// 0 keeps the warm-up's reference fixed).
    #[serde(default = "default_baseline_alpha")]
    pub baseline_alpha: NonNegative,
}

fn default_baseline_alpha() -> NonNegative {
    NonNegative::new(0.02).expect("valid")
}

fn default_k() -> NonNegative {
    NonNegative::new(0.5).expect("valid")
}
fn default_h() -> Positive {
    Positive::new(12.0).expect("valid")
}
fn default_warmup() -> Count {
    Count::new(30).expect("valid")
}

impl Default for CusumParams {
    fn default() -> Self {
        Self {
            k: default_k(),
            h: default_h(),
            warmup: default_warmup(),
            baseline_alpha: default_baseline_alpha(),
        }
    }
}

impl CusumParams {
    /// Checks the constraints that involve several fields.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.baseline_alpha.get() >= 1.0 {
            return Err(ParamError::new(
                "baseline_alpha",
                self.baseline_alpha.get(),
                "a number in [0, 1)",
            ));
        }
        if self.warmup.get() < 2 {
            return Err(ParamError::new(
                "warmup",
                self.warmup.get(),
                "an integer >= 2",
            ));
        }
        Ok(())
    }
}

/// State of the CUSUM detector for one series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CusumState {
    /// Points in the current warm-up (stops growing once it reaches `warmup`).
    pub n: f64,
    /// Running mean of the warm-up (Welford).
    pub mean: f64,
    /// Running sum of squared deviations during the warm-up (Welford); after it, the
    /// reference variance.
    pub m2: f64,
    /// Upper cumulative sum, in sigmas.
    pub hi: f64,
    /// Lower cumulative sum, in sigmas.
    pub lo: f64,
}

/// One step on one series' fields, branch-free (both the warm-up and the live update are
/// computed and one is selected): the body of the dense kernel over many series, which then
/// vectorises.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_fields(
    k: f64,
    h: f64,
    warmup: f64,
    beta: f64,
    n: &mut f64,
    mean: &mut f64,
    m2: &mut f64,
    hi: &mut f64,
    lo: &mut f64,
    x: f64,
) -> Scored {
    let (n0, mean0, m20, hi0, lo0) = (*n, *mean, *m2, *hi, *lo);
    let warming = n0 < warmup;
    let d = x - mean0;
    // Warm-up: Welford's running mean and sum of squares; at its last point, the sample variance.
    let wn = n0 + 1.0;
    let wmean = mean0 + d / wn;
    let wm2 = m20 + d * (x - wmean);
    let wm2 = if wn == warmup {
        wm2 / (warmup - 1.0)
    } else {
        wm2
    };
    // Live: standardise against the reference, accumulate, and let the reference follow slowly.
    let floor = 1e-9 * mean0.abs() + 1e-12;
    let u = d / m20.sqrt().max(floor);
    let nhi = (hi0 + u - k).max(0.0);
    let nlo = (lo0 - u - k).max(0.0);
    let stat = nhi.max(nlo);
    let alarm = !warming && stat > h;
    let lmean = mean0 + beta * d;
    let lm2 = (1.0 - beta) * (m20 + beta * d * d);
    // Select: warm-up, alarm (reset; this point opens the new warm-up), or live.
    *n = if warming {
        wn
    } else if alarm {
        1.0
    } else {
        n0
    };
    *mean = if warming {
        wmean
    } else if alarm {
        x
    } else {
        lmean
    };
    *m2 = if warming {
        wm2
    } else if alarm {
        0.0
    } else {
        lm2
    };
    *hi = if warming || alarm { 0.0 } else { nhi };
    *lo = if warming || alarm { 0.0 } else { nlo };
    let score = if warming {
        0.0
    } else if alarm {
        1.0
    } else {
        // A multiplication by the reciprocal (hoisted out of loops), not a division per point.
        stat * (1.0 / h)
    };
    let expected = if n0 == 0.0 { f64::NAN } else { mean0 };
    Scored { score, expected }
}

/// The scalar step, with branches: faster than [`step_fields`] along one series (the branches
/// are predictable), and bit-identical to it (tested).
#[inline(always)]
fn step(p: &CusumParams, s: &mut CusumState, x: f64) -> Scored {
    let warmup = f64::from(p.warmup.get());
    if s.n < warmup {
        // Learning the reference: Welford's update.
        let expected = if s.n == 0.0 { f64::NAN } else { s.mean };
        s.n += 1.0;
        let d = x - s.mean;
        s.mean += d / s.n;
        s.m2 += d * (x - s.mean);
        if s.n == warmup {
            // Warm-up complete: from now on m2 holds the sample variance.
            s.m2 /= warmup - 1.0;
        }
        return Scored {
            score: 0.0,
            expected,
        };
    }
    let sigma = s.m2.sqrt();
    let floor = 1e-9 * s.mean.abs() + 1e-12;
    let u = (x - s.mean) / sigma.max(floor);
    let k = p.k.get();
    s.hi = (s.hi + u - k).max(0.0);
    s.lo = (s.lo - u - k).max(0.0);
    let stat = s.hi.max(s.lo);
    let h = p.h.get();
    let expected = s.mean;
    if stat > h {
        // Alarm: reset, and let this point open the warm-up of the new regime.
        *s = CusumState::default();
        s.n = 1.0;
        s.mean = x;
        return Scored {
            score: 1.0,
            expected,
        };
    }
    let beta = p.baseline_alpha.get();
    let d = x - s.mean;
    s.mean += beta * d;
    s.m2 = (1.0 - beta) * (s.m2 + beta * d * d);
    Scored {
        score: stat * (1.0 / h),
        expected,
    }
}

/// CUSUM detector for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cusum {
    /// Parameters.
    pub params: CusumParams,
    /// Current state.
    pub state: CusumState,
}

impl Cusum {
    /// A detector in its initial state; fails if the parameters are inconsistent.
    pub fn new(params: CusumParams) -> Result<Self, ParamError> {
        params.validate()?;
        Ok(Self {
            params,
            state: CusumState::default(),
        })
    }

    /// Scores then learns one point.
    pub fn step(&mut self, x: f64) -> Scored {
        step(&self.params, &mut self.state, x)
    }
}

impl Detector for Cusum {
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]) {
        assert_eq!(xs.len(), out.len(), "xs and out differ in length");
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = self.step(*x).score;
        }
    }
}

/// CUSUM state for many series, struct-of-arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct CusumBank {
    params: CusumParams,
    n: Vec<f64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    hi: Vec<f64>,
    lo: Vec<f64>,
}

impl Bank for CusumBank {
    type Params = CusumParams;
    type State = CusumState;

    crate::bank::soa_bank!(
        CusumState {
            n,
            mean,
            m2,
            hi,
            lo
        },
        step = step
    );
}

impl CusumBank {
    /// Updates every series at once with one new point each (`xs[slot]`), writing scores to
    /// `out`: a branch-free loop across series that vectorises.
    pub fn update_dense(&mut self, xs: &[f64], out: &mut [f64]) {
        assert!(
            xs.len() == self.len() && out.len() == self.len(),
            "one point per series"
        );
        let p = &self.params;
        dense(
            [
                p.k.get(),
                p.h.get(),
                f64::from(p.warmup.get()),
                p.baseline_alpha.get(),
            ],
            [
                &mut self.n,
                &mut self.mean,
                &mut self.m2,
                &mut self.hi,
                &mut self.lo,
            ],
            xs,
            out,
        );
    }
}

simd_dispatch! {
    /// The dense CUSUM kernel: `params` = k, h, warm-up, baseline alpha; `state` = n, mean,
    /// m2, hi, lo.
    fn dense(params: [f64; 4], state: [&mut [f64]; 5], xs: &[f64], out: &mut [f64]) {
        let [k, h, warmup, beta] = params;
        let [n, mean, m2, hi, lo] = state;
        let len = xs.len();
        let (n, mean, m2, hi, lo, out) = (
            &mut n[..len], &mut mean[..len], &mut m2[..len], &mut hi[..len], &mut lo[..len], &mut out[..len],
        );
        for i in 0..len {
            out[i] = step_fields(
                k, h, warmup, beta, &mut n[i], &mut mean[i], &mut m2[i], &mut hi[i], &mut lo[i], xs[i],
            )
            .score;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(k: f64, h: f64, warmup: u32) -> CusumParams {
        CusumParams {
            k: NonNegative::new(k).unwrap(),
            h: Positive::new(h).unwrap(),
            warmup: Count::new(warmup).unwrap(),
            baseline_alpha: NonNegative::new(0.0).unwrap(),
        }
    }

    #[test]
    fn hand_computed_sums_alarm_and_reset() {
        // warm-up 0, 2, 0, 2 → mean 1, sample sd = sqrt(4/3) = 1.1547
        let mut c = Cusum::new(params(0.5, 4.0, 4)).unwrap();
        for x in [0.0, 2.0, 0.0, 2.0] {
            assert_eq!(c.step(x).score, 0.0);
        }
        let sd = (4.0f64 / 3.0).sqrt();
        // x = 3: u = 2/sd = 1.7321, hi = 1.2321, lo = 0
        let s = c.step(3.0);
        let hi = 2.0 / sd - 0.5;
        assert!((c.state.hi - hi).abs() < 1e-12);
        assert!((s.score - hi / 4.0).abs() < 1e-12);
        assert_eq!(s.expected, 1.0);
        // hi = 2.464, then 3.696 (< 4), then 4.928 > 4 → alarm
        assert!(c.step(3.0).score < 1.0);
        assert!(c.step(3.0).score < 1.0);
        let s = c.step(3.0);
        assert!(c.state.hi == 0.0 && c.state.n == 1.0 && c.state.mean == 3.0);
        assert_eq!(s.score, 1.0);
    }

    #[test]
    fn lower_side_detects_a_drop() {
        let mut c = Cusum::new(params(0.5, 5.0, 20)).unwrap();
        for i in 0..20 {
            c.step(10.0 + if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        let fired = (0..10).any(|_| c.step(7.0).score == 1.0);
        assert!(fired);
    }

    #[test]
    fn adaptive_baseline_follows_a_slow_drift_that_a_fixed_one_alarms_on() {
        let drift =
            |t: usize| 10.0 + 0.004 * t as f64 + if t.is_multiple_of(2) { 0.5 } else { -0.5 };
        let alarms = |beta: f64| {
            let mut p = params(0.5, 8.0, 30);
            p.baseline_alpha = NonNegative::new(beta).unwrap();
            let mut c = Cusum::new(p).unwrap();
            (0..3000).filter(|&t| c.step(drift(t)).score == 1.0).count()
        };
        assert!(
            alarms(0.0) >= 3,
            "fixed reference alarms as the level drifts"
        );
        assert_eq!(alarms(0.02), 0, "adaptive reference follows it");
    }

    #[test]
    fn baseline_alpha_of_one_is_rejected() {
        let mut p = params(0.5, 5.0, 10);
        p.baseline_alpha = NonNegative::new(1.0).unwrap();
        assert_eq!(Cusum::new(p).unwrap_err().name, "baseline_alpha");
    }

    #[test]
    fn dense_kernel_equals_per_series_updates() {
        let p = params(0.5, 3.0, 5);
        let mut bank = CusumBank::new(p);
        let mut singles: Vec<Cusum> = (0..11).map(|_| Cusum::new(p).unwrap()).collect();
        for _ in 0..11 {
            bank.add_series();
        }
        let mut out = vec![0.0; 11];
        let mut alarms = 0;
        for t in 0..200usize {
            let xs: Vec<f64> = (0..11)
                .map(|i| ((t * 7 + i * 3) % 11) as f64 + if t > 100 { i as f64 } else { 0.0 })
                .collect();
            bank.update_dense(&xs, &mut out);
            for (i, d) in singles.iter_mut().enumerate() {
                let s = d.step(xs[i]).score;
                assert_eq!(s.to_bits(), out[i].to_bits(), "t={t} i={i}");
                assert_eq!(bank.snapshot(i), d.state);
                alarms += usize::from(s == 1.0);
            }
        }
        assert!(alarms > 0, "the test must exercise alarms");
    }

    #[test]
    fn warmup_below_two_is_rejected() {
        let err = Cusum::new(params(0.5, 5.0, 1)).unwrap_err();
        assert_eq!(err.name, "warmup");
    }
}
