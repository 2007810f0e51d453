//! Page-Hinkley change detection with River's exact semantics (river.drift.PageHinkley, 0.26.1):
//! the same floating-point operations in the same order, the reset at the start of the update
//! after a drift, and the flag only (re)assigned once `min_instances` points were seen.

use serde::{Deserialize, Serialize};

use crate::params::{Count, Fading, NonNegative, Positive};
use crate::{Bank, Detector, Scored};

/// Which direction of change Page-Hinkley reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhMode {
    /// Increases and decreases of the mean.
    #[default]
    Both,
    /// Increases only.
    Up,
    /// Decreases only.
    Down,
}

/// Parameters of Page-Hinkley (River's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageHinkleyParams {
    /// Points seen before a drift may be flagged (default 30).
    #[serde(default = "default_min_instances")]
    pub min_instances: Count,
    /// Magnitude of change tolerated (default 0.005).
    #[serde(default = "default_delta")]
    pub delta: NonNegative,
    /// Detection threshold on the cumulative deviation (default 50).
    #[serde(default = "default_threshold")]
    pub threshold: Positive,
    /// Fading factor of the cumulative sums (default 0.9999).
    #[serde(default = "default_alpha")]
    pub alpha: Fading,
    /// Direction of change to detect (default both).
    #[serde(default)]
    pub mode: PhMode,
}

fn default_min_instances() -> Count {
    Count::new(30).expect("valid")
}
fn default_delta() -> NonNegative {
    NonNegative::new(0.005).expect("valid")
}
fn default_threshold() -> Positive {
    Positive::new(50.0).expect("valid")
}
fn default_alpha() -> Fading {
    Fading::new(1.0 - 0.0001).expect("valid")
}

impl Default for PageHinkleyParams {
    fn default() -> Self {
        Self {
            min_instances: default_min_instances(),
            delta: default_delta(),
            threshold: default_threshold(),
            alpha: default_alpha(),
            mode: PhMode::Both,
        }
    }
}

/// State of Page-Hinkley for one series (River's fields).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PageHinkleyState {
    /// Points seen since the last reset.
    pub n: f64,
    /// Running mean since the last reset.
    pub mean: f64,
    /// Cumulative deviation for increases.
    pub sum_increase: f64,
    /// Cumulative deviation for decreases.
    pub sum_decrease: f64,
    /// Minimum of `sum_increase` so far (+inf before the first point).
    #[serde(with = "crate::params::float_or_text")]
    pub min_increase: f64,
    /// Maximum of `sum_decrease` so far.
    pub max_decrease: f64,
    /// Whether the last update flagged a drift (the next update starts with a reset).
    pub drift: bool,
}

impl Default for PageHinkleyState {
    fn default() -> Self {
        Self {
            n: 0.0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            // River initialises this to -1, not -inf (harmless for delta > -1).
            max_decrease: -1.0,
            drift: false,
        }
    }
}

impl PageHinkleyState {
    /// `sum_increase - min_increase`: the statistic for increases.
    pub fn test_increase(&self) -> f64 {
        self.sum_increase - self.min_increase
    }
    /// `max_decrease - sum_decrease`: the statistic for decreases.
    pub fn test_decrease(&self) -> f64 {
        self.max_decrease - self.sum_decrease
    }
}

/// One step on one series' fields (`drift` as 0/1). Branch-free selects with River's exact
/// arithmetic, so that the dense kernel vectorises and stays bit-identical to River.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_fields<const MODE: u8>(
    p: &PageHinkleyParams,
    n: &mut f64,
    mean: &mut f64,
    sum_inc: &mut f64,
    sum_dec: &mut f64,
    min_inc: &mut f64,
    max_dec: &mut f64,
    drift: &mut f64,
    x: f64,
) -> Scored {
    // Reset at the start of the update after a drift (River's timing).
    let reset = *drift != 0.0;
    let n0 = if reset { 0.0 } else { *n };
    let mean0 = if reset { 0.0 } else { *mean };
    let si0 = if reset { 0.0 } else { *sum_inc };
    let sd0 = if reset { 0.0 } else { *sum_dec };
    let mi0 = if reset { f64::INFINITY } else { *min_inc };
    let md0 = if reset { -1.0 } else { *max_dec };
    let expected = if n0 == 0.0 { f64::NAN } else { mean0 };
    let n1 = n0 + 1.0;
    // river.stats.Mean: mean += (w / n) * (x - mean); written this way for bit-exactness.
    let mean1 = mean0 + (1.0 / n1) * (x - mean0);
    let dev = x - mean1;
    let (alpha, delta) = (p.alpha.get(), p.delta.get());
    let si = alpha * si0 + dev - delta;
    let sd = alpha * sd0 + dev + delta;
    let mi = if si < mi0 { si } else { mi0 };
    let md = if sd > md0 { sd } else { md0 };
    let (up, down) = (si - mi, md - sd);
    // The mode is a constant of the loop (see `dense`), so the loop body has no switch.
    let stat = match MODE {
        MODE_BOTH => up.max(down),
        MODE_UP => up,
        _ => down,
    };
    let threshold = p.threshold.get();
    let testing = n1 >= f64::from(p.min_instances.get());
    let fired = testing && stat > threshold;
    // The flag is only (re)assigned once enough points were seen (a reset cleared it).
    let drift1 = if testing {
        f64::from(u8::from(fired))
    } else if reset {
        0.0
    } else {
        *drift
    };
    let score = if fired {
        1.0
    } else if testing {
        // A multiplication by the reciprocal (hoisted out of loops), not a division per point.
        (stat * (1.0 / threshold)).max(0.0)
    } else {
        0.0
    };
    (*n, *mean, *sum_inc, *sum_dec, *min_inc, *max_dec, *drift) =
        (n1, mean1, si, sd, mi, md, drift1);
    Scored { score, expected }
}

const MODE_BOTH: u8 = 0;
const MODE_UP: u8 = 1;
const MODE_DOWN: u8 = 2;

/// The scalar step, with branches (River's code shape): faster than [`step_fields`] along one
/// series, and bit-identical to it (tested).
#[inline(always)]
fn step(p: &PageHinkleyParams, s: &mut PageHinkleyState, x: f64) -> Scored {
    if s.drift {
        *s = PageHinkleyState::default();
    }
    let expected = if s.n == 0.0 { f64::NAN } else { s.mean };
    s.n += 1.0;
    // river.stats.Mean: mean += (w / n) * (x - mean); written this way for bit-exactness.
    s.mean += (1.0 / s.n) * (x - s.mean);
    let dev = x - s.mean;
    let (alpha, delta) = (p.alpha.get(), p.delta.get());
    s.sum_increase = alpha * s.sum_increase + dev - delta;
    s.sum_decrease = alpha * s.sum_decrease + dev + delta;
    if s.sum_increase < s.min_increase {
        s.min_increase = s.sum_increase;
    }
    if s.sum_decrease > s.max_decrease {
        s.max_decrease = s.sum_decrease;
    }
    let mut score = 0.0;
    if s.n >= f64::from(p.min_instances.get()) {
        let threshold = p.threshold.get();
        let (up, down) = (s.test_increase(), s.test_decrease());
        let stat = match p.mode {
            PhMode::Both => up.max(down),
            PhMode::Up => up,
            PhMode::Down => down,
        };
        s.drift = stat > threshold;
        score = if s.drift {
            1.0
        } else {
            // A multiplication by the reciprocal (hoisted out of loops), not a division per point.
            (stat * (1.0 / threshold)).max(0.0)
        };
    }
    Scored { score, expected }
}

/// Page-Hinkley for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    /// Parameters.
    pub params: PageHinkleyParams,
    /// Current state.
    pub state: PageHinkleyState,
}

impl PageHinkley {
    /// A detector in its initial state.
    pub fn new(params: PageHinkleyParams) -> Self {
        Self {
            params,
            state: PageHinkleyState::default(),
        }
    }

    /// Scores then learns one point.
    pub fn step(&mut self, x: f64) -> Scored {
        step(&self.params, &mut self.state, x)
    }

    /// Whether the last update detected a drift (River's `drift_detected`).
    pub fn drift_detected(&self) -> bool {
        self.state.drift
    }
}

impl Detector for PageHinkley {
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]) {
        assert_eq!(xs.len(), out.len(), "xs and out differ in length");
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = self.step(*x).score;
        }
    }
}

/// Page-Hinkley state for many series, struct-of-arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct PageHinkleyBank {
    params: PageHinkleyParams,
    n: Vec<f64>,
    mean: Vec<f64>,
    sum_increase: Vec<f64>,
    sum_decrease: Vec<f64>,
    min_increase: Vec<f64>,
    max_decrease: Vec<f64>,
    /// 1.0 when the last update drifted, else 0.0 (f64 so that the dense kernel is all-f64).
    drift: Vec<f64>,
}

impl Bank for PageHinkleyBank {
    type Params = PageHinkleyParams;
    type State = PageHinkleyState;

    crate::bank::soa_bank!(
        PageHinkleyState {
            n,
            mean,
            sum_increase,
            sum_decrease,
            min_increase,
            max_decrease,
            drift,
        },
        step = step
    );
}

impl PageHinkleyBank {
    /// Updates every series at once with one new point each (`xs[slot]`), writing scores to
    /// `out`: a branch-free loop across series that vectorises.
    pub fn update_dense(&mut self, xs: &[f64], out: &mut [f64]) {
        assert!(
            xs.len() == self.len() && out.len() == self.len(),
            "one point per series"
        );
        dense(
            &self.params,
            [
                &mut self.n,
                &mut self.mean,
                &mut self.sum_increase,
                &mut self.sum_decrease,
                &mut self.min_increase,
                &mut self.max_decrease,
                &mut self.drift,
            ],
            xs,
            out,
        );
    }
}

simd_dispatch! {
    /// The dense Page-Hinkley kernel over the bank's seven state vectors.
    fn dense(p: &PageHinkleyParams, state: [&mut [f64]; 7], xs: &[f64], out: &mut [f64]) {
        let len = xs.len();
        let [n, mean, si, sd, mi, md, drift] = state;
        let (n, mean, si, sd, mi, md, drift, out) = (
            &mut n[..len],
            &mut mean[..len],
            &mut si[..len],
            &mut sd[..len],
            &mut mi[..len],
            &mut md[..len],
            &mut drift[..len],
            &mut out[..len],
        );
        macro_rules! run {
            ($mode:expr) => {
                for i in 0..len {
                    out[i] = step_fields::<{ $mode }>(
                        p, &mut n[i], &mut mean[i], &mut si[i], &mut sd[i], &mut mi[i],
                        &mut md[i], &mut drift[i], xs[i],
                    )
                    .score;
                }
            };
        }
        match p.mode {
            PhMode::Both => run!(MODE_BOTH),
            PhMode::Up => run!(MODE_UP),
            PhMode::Down => run!(MODE_DOWN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_kernel_equals_per_series_updates() {
        let p = PageHinkleyParams {
            threshold: Positive::new(3.0).unwrap(),
            min_instances: Count::new(5).unwrap(),
            ..PageHinkleyParams::default()
        };
        let mut bank = PageHinkleyBank::new(p);
        let mut singles: Vec<PageHinkley> = (0..9).map(|_| PageHinkley::new(p)).collect();
        for _ in 0..9 {
            bank.add_series();
        }
        let mut out = vec![0.0; 9];
        let mut drifts = 0;
        for t in 0..300usize {
            let xs: Vec<f64> = (0..9)
                .map(|i| ((t * 5 + i) % 7) as f64 + if t > 150 { 3.0 } else { 0.0 })
                .collect();
            bank.update_dense(&xs, &mut out);
            for (i, d) in singles.iter_mut().enumerate() {
                let s = d.step(xs[i]).score;
                assert_eq!(s.to_bits(), out[i].to_bits(), "t={t} i={i}");
                assert_eq!(bank.snapshot(i), d.state);
                drifts += usize::from(d.drift_detected());
            }
        }
        assert!(drifts > 0, "the test must exercise drifts and resets");
    }

    #[test]
    fn hand_computed_first_steps() {
        // delta 0.5, alpha 1: x = 1, 3
        // n=1: mean 1, dev 0, S_inc = -0.5, S_dec = 0.5, min_inc -0.5, max_dec 0.5
        // n=2: mean 2, dev 1, S_inc = -0.5 + 1 - 0.5 = 0, S_dec = 0.5 + 1 + 0.5 = 2
        let p = PageHinkleyParams {
            min_instances: Count::new(2).unwrap(),
            delta: NonNegative::new(0.5).unwrap(),
            threshold: Positive::new(1.0).unwrap(),
            alpha: Fading::new(1.0).unwrap(),
            mode: PhMode::Both,
        };
        let mut ph = PageHinkley::new(p);
        assert_eq!(ph.step(1.0).score, 0.0);
        assert_eq!(ph.state.sum_increase, -0.5);
        let s = ph.step(3.0);
        assert_eq!(ph.state.sum_increase, 0.0);
        assert_eq!(ph.state.test_increase(), 0.5);
        assert_eq!(ph.state.test_decrease(), 0.0);
        assert_eq!(s.score, 0.5);
        assert!(!ph.drift_detected());
        // n=3, x = 10: mean 14/3, dev 16/3, S_inc = 16/3 - 0.5 → test_inc > 1 → drift
        assert_eq!(ph.step(10.0).score, 1.0);
        assert!(ph.drift_detected());
        // the next update starts from a fresh detector
        ph.step(0.0);
        assert_eq!(ph.state.n, 1.0);
    }
}
