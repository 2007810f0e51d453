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
        score: stat / h,
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

    fn new(params: CusumParams) -> Self {
        Self {
            params,
            n: Vec::new(),
            mean: Vec::new(),
            m2: Vec::new(),
            hi: Vec::new(),
            lo: Vec::new(),
        }
    }

    fn add_series(&mut self) -> usize {
        self.restore_push(&CusumState::default());
        self.n.len() - 1
    }

    fn len(&self) -> usize {
        self.n.len()
    }

    #[inline]
    fn update(&mut self, slot: usize, x: f64, _evicted: Option<f64>) -> Scored {
        let mut s = self.snapshot(slot);
        let out = step(&self.params, &mut s, x);
        self.restore(slot, &s);
        out
    }

    fn snapshot(&self, slot: usize) -> CusumState {
        CusumState {
            n: self.n[slot],
            mean: self.mean[slot],
            m2: self.m2[slot],
            hi: self.hi[slot],
            lo: self.lo[slot],
        }
    }

    fn restore(&mut self, slot: usize, s: &CusumState) {
        self.n[slot] = s.n;
        self.mean[slot] = s.mean;
        self.m2[slot] = s.m2;
        self.hi[slot] = s.hi;
        self.lo[slot] = s.lo;
    }

    fn bytes_per_series(&self) -> usize {
        5 * size_of::<f64>()
    }
}

impl CusumBank {
    fn restore_push(&mut self, s: &CusumState) {
        self.n.push(s.n);
        self.mean.push(s.mean);
        self.m2.push(s.m2);
        self.hi.push(s.hi);
        self.lo.push(s.lo);
    }

    /// Updates every series at once with one new point each (`xs[slot]`), writing scores to `out`.
    pub fn update_dense(&mut self, xs: &[f64], out: &mut [f64]) {
        assert!(
            xs.len() == self.len() && out.len() == self.len(),
            "one point per series"
        );
        for (slot, (x, o)) in xs.iter().zip(out.iter_mut()).enumerate() {
            *o = self.update(slot, *x, None).score;
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
    fn warmup_below_two_is_rejected() {
        let err = Cusum::new(params(0.5, 5.0, 1)).unwrap_err();
        assert_eq!(err.name, "warmup");
    }
}
