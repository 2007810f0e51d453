//! Conformal k-nearest-neighbour score over the recent history of a series (after the idea of
//! conformalised k-NN anomaly detection: Burnaev & Ishimtsev, 2016).
//!
//! Each point closes a *window*: the last `window` values. Its nonconformity is the mean
//! squared distance from that window to its `k` nearest among the `reference` windows that
//! ended just before it. The score is the share of the last `calibration` nonconformities that
//! are strictly below the new one — a conformal rank, so the score needs no scale and no
//! distribution: a shape the series has not shown lately ranks near 1, a familiar one low.
//! A point's nonconformity joins the calibration set after it is scored.
//!
//! With `step > 1` the detector sees the series of block means (`step` points each) instead of
//! the points: the same windows then span `step` times as long and the reference reaches
//! `step` times as far back, at a `step`-th of the cost — shapes at the scale of hours rather
//! than minutes. The point that closes a block gets the block's score, the others 0.
//!
//! Cost: `reference × window` multiply-adds per point (per block with `step`), and
//! `reference + window` values plus `calibration` nonconformities of state per series (about
//! 3.3 KB with the defaults): a detector for benchmarking and for the few series where shape
//! matters, not for a million.

use serde::{Deserialize, Serialize};

use crate::params::Count;
use crate::{Bank, Detector, ParamError, Scored};

/// Parameters of the k-NN detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnnParams {
    /// Values per window (default 10).
    #[serde(default = "default_window")]
    pub window: Count,
    /// Past windows to compare with (default 200).
    #[serde(default = "default_reference")]
    pub reference: Count,
    /// Nearest neighbours averaged (default 5; at most `reference`).
    #[serde(default = "default_k")]
    pub k: Count,
    /// Past nonconformities the new one is ranked among (default 200).
    #[serde(default = "default_calibration")]
    pub calibration: Count,
    /// Points per block (default 1): with `step > 1` the detector works on the series of block
    /// means — a window then spans `window × step` points and the reference reaches
    /// `reference × step` points back — and scores the point that closes each block (the
    /// others score 0).
    #[serde(default = "default_step")]
    pub step: Count,
}

fn default_step() -> Count {
    Count::new(1).expect("valid")
}

fn default_window() -> Count {
    Count::new(10).expect("valid")
}
fn default_reference() -> Count {
    Count::new(200).expect("valid")
}
fn default_k() -> Count {
    Count::new(5).expect("valid")
}
fn default_calibration() -> Count {
    Count::new(200).expect("valid")
}

impl Default for KnnParams {
    fn default() -> Self {
        Self {
            window: default_window(),
            reference: default_reference(),
            k: default_k(),
            calibration: default_calibration(),
            step: default_step(),
        }
    }
}

/// Most values per window, neighbours, reference windows and calibration points.
const MAX_WINDOW: u32 = 1024;
const MAX_K: u32 = 64;
pub(crate) const MAX_SET: u32 = 100_000;

impl KnnParams {
    /// Checks each field's range and `k <= reference`.
    pub fn validate(&self) -> Result<(), ParamError> {
        let check = |name: &'static str, v: Count, max: u32| {
            if v.get() > max {
                Err(ParamError::new(
                    name,
                    v.get(),
                    "a smaller integer (see the limits)",
                ))
            } else {
                Ok(())
            }
        };
        check("window", self.window, MAX_WINDOW)?;
        check("k", self.k, MAX_K)?;
        check("reference", self.reference, MAX_SET)?;
        check("calibration", self.calibration, MAX_SET)?;
        check("step", self.step, MAX_WINDOW)?;
        if self.k > self.reference {
            return Err(ParamError::new(
                "k",
                self.k.get(),
                "an integer <= reference",
            ));
        }
        Ok(())
    }

    fn history_cap(&self) -> usize {
        (self.reference.get() + self.window.get()) as usize
    }
}

/// State of the k-NN detector for one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KnnState {
    /// Recent values, oldest first; the newest `reference + window` are used (the vector is
    /// trimmed when it reaches twice that, so every window is a contiguous slice).
    pub history: Vec<f64>,
    /// Recent nonconformities, a ring of `calibration` values.
    pub alphas: Vec<f64>,
    /// Next position in `alphas` once it is full.
    pub next: u32,
    /// Sum of the current block's points (`step > 1`).
    #[serde(default)]
    pub block_sum: f64,
    /// Points in the current block.
    #[serde(default)]
    pub block_len: u32,
}

simd_dispatch! {
    /// `d[s]` = squared distance from the newest window (the last `w` values of `hist`) to the
    /// window starting at `hist[first + s]`: one pass per window position, each over every
    /// candidate window at once (contiguous, so it vectorises), adding the terms in the same
    /// order as a window-by-window sum.
    fn distances(hist: &[f64], w: usize, first: usize, d: &mut [f64]) {
        let cur = hist.len() - w;
        d.fill(0.0);
        for i in 0..w {
            let c = hist[cur + i];
            let other = &hist[first + i..first + i + d.len()];
            for (dj, o) in d.iter_mut().zip(other) {
                let e = c - o;
                *dj += e * e;
            }
        }
    }
}

simd_dispatch! {
    /// How many of `xs` are strictly below `x`.
    fn count_below(xs: &[f64], x: f64) -> usize {
        xs.iter().map(|v| usize::from(*v < x)).sum()
    }
}

/// Mean of the `k` smallest squared distances from `cur` to the windows of `hist` that end
/// before its last value (`hist` ends with `cur`), at most `reference` of them. `scratch`
/// holds the distances (grown once, reused).
fn nonconformity(
    hist: &[f64],
    w: usize,
    k: usize,
    reference: usize,
    scratch: &mut Vec<f64>,
) -> Option<f64> {
    let n = hist.len();
    let available = n.checked_sub(w)?.min(reference);
    if available < k {
        return None;
    }
    scratch.resize(available, 0.0);
    // Windows end at n - 1 (newest candidate) down to n - available; by start position.
    distances(hist, w, n - w - available, scratch);
    // The k smallest so far, ascending; candidates newest first, as ties were always broken.
    let mut best = [f64::INFINITY; MAX_K as usize];
    let best = &mut best[..k];
    for &d in scratch.iter().rev() {
        if d < best[k - 1] {
            let mut i = k - 1;
            while i > 0 && best[i - 1] > d {
                best[i] = best[i - 1];
                i -= 1;
            }
            best[i] = d;
        }
    }
    Some(best.iter().sum::<f64>() / k as f64)
}

const NO_SCORE: Scored = Scored {
    score: 0.0,
    expected: f64::NAN,
};

/// The value the k-NN sees for the point `x`: `x` itself, or with `step > 1` the mean of the
/// block `x` closes (`None` inside a block).
fn block_value(p: &KnnParams, s: &KnnState, x: f64) -> Option<f64> {
    let block = p.step.get();
    if block <= 1 {
        Some(x)
    } else if s.block_len + 1 < block {
        None
    } else {
        Some((s.block_sum + x) / f64::from(block))
    }
}

/// The nonconformity of the window `history` ends with.
fn alpha_of(p: &KnnParams, history: &[f64], scratch: &mut Vec<f64>) -> Option<f64> {
    nonconformity(
        history,
        p.window.get() as usize,
        p.k.get() as usize,
        p.reference.get() as usize,
        scratch,
    )
}

/// The conformal rank of `alpha` among `alphas`, a calibration set of (at most) `cal`
/// nonconformities: the share strictly below it, 0 until the set holds a tenth of `cal` (at
/// least 10).
pub(crate) fn conformal_rank(alphas: &[f64], cal: usize, alpha: f64) -> f64 {
    if alphas.len() >= (cal / 10).max(10).min(cal) {
        count_below(alphas, alpha) as f64 / alphas.len() as f64
    } else {
        0.0
    }
}

/// Adds `alpha` to the calibration ring `alphas` of `cal` values (`next`: the oldest once full).
pub(crate) fn remember(alphas: &mut Vec<f64>, next: &mut u32, cal: usize, alpha: f64) {
    if alphas.len() < cal {
        alphas.push(alpha);
    } else {
        alphas[*next as usize] = alpha;
        *next = ((*next as usize + 1) % cal) as u32;
    }
}

/// The conformal rank of `alpha` among the calibration set.
fn rank(p: &KnnParams, s: &KnnState, alpha: f64) -> Scored {
    Scored {
        score: conformal_rank(&s.alphas, p.calibration.get() as usize, alpha),
        expected: f64::NAN,
    }
}

fn step(p: &KnnParams, s: &mut KnnState, scratch: &mut Vec<f64>, x: f64) -> Scored {
    let value = block_value(p, s, x);
    if p.step.get() > 1 {
        (s.block_sum, s.block_len) = match value {
            Some(_) => (0.0, 0),
            None => (s.block_sum + x, s.block_len + 1),
        };
    }
    let Some(x) = value else {
        return NO_SCORE;
    };
    let cap = p.history_cap();
    s.history.push(x);
    if s.history.len() >= 2 * cap {
        s.history.drain(..s.history.len() - cap);
    }
    let Some(alpha) = alpha_of(p, &s.history, scratch) else {
        return NO_SCORE;
    };
    let out = rank(p, s, alpha);
    remember(
        &mut s.alphas,
        &mut s.next,
        p.calibration.get() as usize,
        alpha,
    );
    out
}

/// What [`step`] would score, leaving the state as it was: the block value is appended to the
/// history for the distance pass and taken off again (no copy of the state, and no allocation
/// once the history has grown: it is trimmed below its capacity).
fn score_only(p: &KnnParams, s: &mut KnnState, scratch: &mut Vec<f64>, x: f64) -> Scored {
    let Some(x) = block_value(p, s, x) else {
        return NO_SCORE;
    };
    s.history.push(x);
    let alpha = alpha_of(p, &s.history, scratch);
    s.history.pop();
    alpha.map_or(NO_SCORE, |a| rank(p, s, a))
}

/// The k-NN detector for one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    params: KnnParams,
    state: KnnState,
    /// Distances of the current point (working memory, not state).
    scratch: Vec<f64>,
}

impl Knn {
    /// A detector with no history.
    pub fn new(params: KnnParams) -> Result<Self, ParamError> {
        params.validate()?;
        Ok(Self {
            params,
            state: KnnState::default(),
            scratch: Vec::new(),
        })
    }

    /// Scores then learns one point.
    pub fn step(&mut self, x: f64) -> Scored {
        step(&self.params, &mut self.state, &mut self.scratch, x)
    }
}

impl Detector for Knn {
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]) {
        assert_eq!(xs.len(), out.len(), "xs and out differ in length");
        for (x, o) in xs.iter().zip(out) {
            *o = self.step(*x).score;
        }
    }
}

impl KnnBank {
    /// Scores `x` for the series in `slot` without learning it (what a holding chain does),
    /// without copying the series' state.
    pub fn score_only(&mut self, slot: usize, x: f64) -> Scored {
        score_only(&self.params, &mut self.states[slot], &mut self.scratch, x)
    }
}

/// k-NN state for many series.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnBank {
    params: KnnParams,
    states: Vec<KnnState>,
    /// Distances of the current point (working memory shared by the series, not state).
    scratch: Vec<f64>,
}

impl Bank for KnnBank {
    type Params = KnnParams;
    type State = KnnState;

    fn new(params: KnnParams) -> Self {
        Self {
            params,
            states: Vec::new(),
            scratch: Vec::new(),
        }
    }

    crate::bank::state_vec_bank!(KnnState);

    fn update(&mut self, slot: usize, x: f64, _evicted: Option<f64>) -> Scored {
        step(&self.params, &mut self.states[slot], &mut self.scratch, x)
    }

    fn bytes_per_series(&self) -> usize {
        size_of::<KnnState>()
            + (2 * self.params.history_cap() + self.params.calibration.get() as usize)
                * size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(window: u32, reference: u32, k: u32, calibration: u32) -> KnnParams {
        KnnParams {
            window: Count::new(window).unwrap(),
            reference: Count::new(reference).unwrap(),
            k: Count::new(k).unwrap(),
            calibration: Count::new(calibration).unwrap(),
            step: Count::new(1).unwrap(),
        }
    }

    #[test]
    fn nonconformity_is_the_mean_of_the_k_nearest_squared_distances() {
        // The current window is [1, 2]; the windows ending before the last value, newest
        // first: [5, 1] (d = 16 + 1 = 17), [2, 5] (1 + 9 = 10), [1, 2] (0), [0, 1] (1 + 1 = 2).
        let hist = [0.0, 1.0, 2.0, 5.0, 1.0, 2.0];
        assert_eq!(nonconformity(&hist, 2, 2, 10, &mut Vec::new()), Some(1.0));
        assert_eq!(nonconformity(&hist, 2, 3, 10, &mut Vec::new()), Some(4.0));
        // Only the 2 most recent windows as reference: [5,1] and [2,5].
        assert_eq!(nonconformity(&hist, 2, 1, 2, &mut Vec::new()), Some(10.0));
        assert_eq!(nonconformity(&hist, 2, 5, 10, &mut Vec::new()), None);
    }

    #[test]
    fn a_repeating_shape_ranks_low_and_a_new_one_ranks_at_the_top() {
        let mut d = Knn::new(params(8, 100, 3, 100)).unwrap();
        let wave = |t: usize| ((t % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
        let mut last = 0.0;
        for t in 0..600 {
            last = d.step(wave(t)).score;
        }
        assert!(last < 0.5, "a familiar shape: {last}");
        // A flat stretch where the sine should be: a shape never seen.
        let s = d.step(3.0).score;
        assert_eq!(s, 1.0);
    }

    #[test]
    fn history_stays_bounded_and_bank_matches_single_series() {
        let p = params(4, 16, 2, 20);
        let mut one = Knn::new(p).unwrap();
        let mut bank = KnnBank::new(p);
        let slot = bank.add_series();
        bank.add_series();
        for t in 0..1000 {
            let x = ((t * 7919) % 101) as f64;
            let (a, b) = (one.step(x), bank.update(slot, x, None));
            assert_eq!(a.score, b.score);
            assert!(one.state.history.len() < 2 * p.history_cap());
            assert!(one.state.alphas.len() <= 20);
        }
        assert_eq!(bank.snapshot(1), KnnState::default());
    }

    #[test]
    fn with_step_the_block_means_are_scored_at_each_blocks_last_point() {
        let mut blocks = params(4, 30, 2, 40);
        blocks.step = Count::new(3).unwrap();
        let mut stepped = Knn::new(blocks).unwrap();
        let mut means = Knn::new(params(4, 30, 2, 40)).unwrap();
        let mut scored_blocks = 0;
        for b in 0..300 {
            let xs: Vec<f64> = (0..3).map(|i| ((b * 31 + i * 7) % 23) as f64).collect();
            let expect = means.step(xs.iter().sum::<f64>() / 3.0).score;
            let got: Vec<f64> = xs.iter().map(|x| stepped.step(*x).score).collect();
            assert_eq!(got[..2], [0.0, 0.0], "points inside a block score 0");
            assert_eq!(got[2], expect, "block {b}");
            scored_blocks += usize::from(expect > 0.0);
        }
        assert!(scored_blocks > 100, "the comparison saw real scores");
        assert!(
            Knn::new(KnnParams {
                step: Count::new(2000).unwrap(),
                ..KnnParams::default()
            })
            .unwrap_err()
            .to_string()
            .contains("step")
        );
    }

    #[test]
    fn vectorised_nonconformity_equals_the_window_by_window_sum() {
        // The plain form: each window's terms summed in order, newest candidate first.
        fn plain(hist: &[f64], w: usize, k: usize, reference: usize) -> Option<f64> {
            let n = hist.len();
            let available = n.checked_sub(w)?.min(reference);
            if available < k {
                return None;
            }
            let cur = &hist[n - w..];
            let mut d: Vec<f64> = (1..=available)
                .map(|j| {
                    let other = &hist[n - j - w..n - j];
                    cur.iter().zip(other).map(|(a, b)| (a - b) * (a - b)).sum()
                })
                .collect();
            d.sort_by(f64::total_cmp);
            Some(d[..k].iter().sum::<f64>() / k as f64)
        }
        let mut scratch = Vec::new();
        let mut checked = 0;
        for n in 0..120usize {
            // Irregular values with repeats (ties) and a wide range.
            let hist: Vec<f64> = (0..n)
                .map(|i| ((i * 7919 % 31) as f64 - 15.0) * if i % 5 == 0 { 1e3 } else { 0.37 })
                .collect();
            for (w, k, reference) in [(1, 1, 10), (3, 2, 50), (5, 5, 200), (8, 3, 17)] {
                let got = nonconformity(&hist, w, k, reference, &mut scratch);
                let want = plain(&hist, w, k, reference);
                assert_eq!(
                    got.map(f64::to_bits),
                    want.map(f64::to_bits),
                    "n {n} w {w} k {k}"
                );
                checked += usize::from(got.is_some());
            }
        }
        assert!(checked > 300);
    }

    #[test]
    fn score_only_gives_the_update_score_and_leaves_the_state_as_it_was() {
        for step in [1, 3] {
            let mut p = params(4, 30, 2, 40);
            p.step = Count::new(step).unwrap();
            let mut bank = KnnBank::new(p);
            let slot = bank.add_series();
            let mut scored = 0;
            for t in 0..600u64 {
                let x = ((t * 7919) % 37) as f64 + if t % 97 == 0 { 50.0 } else { 0.0 };
                let before = bank.snapshot(slot);
                let only = bank.score_only(slot, x);
                assert_eq!(bank.snapshot(slot), before, "step {step}, t {t}");
                let learned = bank.update(slot, x, None);
                assert_eq!(only.score, learned.score, "step {step}, t {t}");
                scored += usize::from(learned.score > 0.0);
            }
            assert!(scored > 50, "step {step}: the comparison saw real scores");
        }
    }

    #[test]
    fn k_above_reference_is_refused() {
        let e = Knn::new(params(4, 3, 5, 10)).unwrap_err();
        assert!(e.to_string().contains("k"), "{e}");
    }
}
