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
//! With `block = "1h"` the detector sees the series of block means — the mean of the points in
//! each hour of event time — instead of the points: a window of 8 then spans 8 hours and a
//! reference of 200 reaches 200 hours back, whether the series is sampled every 10 seconds or
//! every hour, at a block's cost per block rather than per point: shapes at the scale of hours.
//! The point that closes a block gets the block's score, the others 0. A block closes at the
//! point after which the next point is expected (one sampling interval later: the shorter of
//! the last two gaps, so one long gap misleads nothing) in a later block, so the last
//! point of each hour is scored without waiting for the next; a block left open by an
//! irregular gap closes at the next point. `step = n` does the same by counting `n` points per
//! block (a span that depends on the sampling rate).
//!
//! Values and nonconformities are kept as `f32` (values as offsets from the series' first, so
//! a large level keeps its detail). Cost: `reference × window` multiply-adds per point (per
//! block with `block` or `step`), and `1.25 × (reference + window)` values plus `calibration`
//! nonconformities of 4 bytes each per series (about 2 KB with the defaults).

use serde::{Deserialize, Serialize};

use crate::params::{Count, NumberOrText, Ratio, Reach, Span};
use crate::record::Record;
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
    /// What the new nonconformity is ranked against (default 200): a number of past
    /// nonconformities (its conformal rank among them), or a span such as `"8d"` (1 above the
    /// largest of that span, else 0.99 × its share of it; 76 bytes whatever the span).
    #[serde(default = "default_calibration")]
    pub calibration: Calibration,
    /// Points per block (default 1): with `step > 1` the detector works on the series of block
    /// means — a window then spans `window × step` points and the reference reaches
    /// `reference × step` points back — and scores the point that closes each block (the
    /// others score 0).
    #[serde(default = "default_step")]
    pub step: Count,
    /// Blocks of event time (a span such as `"1h"`; default none): the detector works on the
    /// series of the means of the points in each block, and scores the point that closes each
    /// block (the others score 0). Not with `step`.
    #[serde(default)]
    pub block: Option<Span>,
    /// With `calibration` given as a span: how many times over a nonconformity must beat the
    /// span's record to score 1 (default 1.25).
    #[serde(default = "default_exceed")]
    pub exceed: Ratio,
}

pub(crate) fn default_exceed() -> Ratio {
    Ratio::new(1.25).expect("valid")
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
fn default_calibration() -> Calibration {
    Calibration::Set(Count::new(200).expect("valid"))
}

/// What a rank detector's nonconformity is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[serde(try_from = "NumberOrText")]
pub enum Calibration {
    /// The last n nonconformities (a conformal rank).
    Set(Count),
    /// The record of a span of event time ([`Record`]).
    Span(Span),
}

impl TryFrom<NumberOrText> for Calibration {
    type Error = ParamError;
    fn try_from(v: NumberOrText) -> Result<Self, ParamError> {
        match Reach::within(
            v,
            1,
            MAX_SET,
            "calibration",
            "an integer in [1, 100000] or a span such as \"8d\"",
        )? {
            Reach::Points(n) => Ok(Calibration::Set(Count::new(n)?)),
            Reach::Span(s) => Ok(Calibration::Span(s)),
        }
    }
}

impl Calibration {
    /// Nonconformities kept per series.
    pub(crate) fn kept(self) -> usize {
        match self {
            Calibration::Set(n) => n.get() as usize,
            Calibration::Span(_) => 0,
        }
    }

    /// The score of `alpha` at `ts` against the calibration set `alphas` or the record (which
    /// a new one must beat `exceed` times over).
    pub(crate) fn score(
        self,
        alphas: &[f32],
        record: &Record,
        ts: i64,
        alpha: f32,
        exceed: Ratio,
    ) -> f64 {
        match self {
            Calibration::Set(n) => conformal_rank(alphas, n.get() as usize, alpha),
            Calibration::Span(span) => record.score(span.ms(), ts, alpha, exceed.get()),
        }
    }

    /// Remembers `alpha` at `ts`.
    pub(crate) fn remember(
        self,
        alphas: &mut Vec<f32>,
        next: &mut u32,
        record: &mut Record,
        ts: i64,
        alpha: f32,
    ) {
        match self {
            Calibration::Set(n) => remember(alphas, next, n.get() as usize, alpha),
            Calibration::Span(span) => record.remember(span.ms(), ts, alpha),
        }
    }
}

impl Default for KnnParams {
    fn default() -> Self {
        Self {
            window: default_window(),
            reference: default_reference(),
            k: default_k(),
            calibration: default_calibration(),
            step: default_step(),
            block: None,
            exceed: default_exceed(),
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
        check("step", self.step, MAX_WINDOW)?;
        if self.block.is_some() && self.step.get() > 1 {
            return Err(ParamError::new(
                "block",
                "with step",
                "either block (a span) or step (points), not both",
            ));
        }
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

    /// Length the history grows to before it is trimmed back to `history_cap`.
    fn history_room(&self) -> usize {
        let cap = self.history_cap();
        cap + (cap / 4).max(1)
    }
}

/// State of the k-NN detector for one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KnnState {
    /// Recent values (block means), as offsets from `anchor`, oldest first; the newest
    /// `reference + window` are used (the vector is trimmed when it grows a quarter past that,
    /// so every window is a contiguous slice).
    pub history: Vec<f32>,
    /// Recent nonconformities, a ring of `calibration` values.
    pub alphas: Vec<f32>,
    /// Next position in `alphas` once it is full.
    pub next: u32,
    /// Sum of the current block's points (`step > 1`).
    #[serde(default)]
    pub block_sum: f64,
    /// Points in the current block.
    #[serde(default)]
    pub block_len: u32,
    /// The first value learned: history values are offsets from it.
    #[serde(default)]
    pub anchor: f64,
    /// The current block (`block`): its index in event time.
    #[serde(default)]
    pub block_at: i64,
    /// Timestamp of the last point (`block`).
    #[serde(default)]
    pub last_ts: i64,
    /// The gap between the last two points (`block`; 0 until known).
    #[serde(default)]
    pub gap: i64,
    /// Points learned (`block`; saturating).
    #[serde(default)]
    pub points: u32,
    /// The record of the calibration span (`calibration` given as a span).
    #[serde(default)]
    pub record: Record,
}

simd_dispatch! {
    /// `d[s]` = squared distance from the newest window (the last `w` values of `hist`) to the
    /// window starting at `hist[first + s]`: one pass per window position, each over every
    /// candidate window at once (contiguous, so it vectorises), adding the terms in the same
    /// order as a window-by-window sum.
    fn distances(hist: &[f32], w: usize, first: usize, d: &mut [f32]) {
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
    fn count_below(xs: &[f32], x: f32) -> usize {
        xs.iter().map(|v| usize::from(*v < x)).sum()
    }
}

/// Mean of the `k` smallest squared distances from `cur` to the windows of `hist` that end
/// before its last value (`hist` ends with `cur`), at most `reference` of them. `scratch`
/// holds the distances (grown once, reused).
fn nonconformity(
    hist: &[f32],
    w: usize,
    k: usize,
    reference: usize,
    scratch: &mut Vec<f32>,
) -> Option<f32> {
    let n = hist.len();
    let available = n.checked_sub(w)?.min(reference);
    if available < k {
        return None;
    }
    scratch.resize(available, 0.0);
    // Windows end at n - 1 (newest candidate) down to n - available; by start position.
    distances(hist, w, n - w - available, scratch);
    // The k smallest so far, ascending; candidates newest first, as ties were always broken.
    let mut best = [f32::INFINITY; MAX_K as usize];
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
    Some(best.iter().sum::<f32>() / k as f32)
}

const NO_SCORE: Scored = Scored {
    score: 0.0,
    expected: f64::NAN,
};

/// What the point `x` at `ts` closes: the means of at most two blocks, oldest first (a block a
/// gap left open, and the point's own block when it is expected to be its last), and the
/// accumulator afterwards (sum, points, block index). Without `block`: `x` itself, or with
/// `step > 1` the mean of the `step`-point block `x` completes.
struct Closes {
    means: [Option<f64>; 2],
    sum: f64,
    len: u32,
    at: i64,
}

fn closes(p: &KnnParams, s: &KnnState, ts: i64, x: f64) -> Closes {
    let Some(block) = p.block else {
        let n = p.step.get();
        return if n <= 1 {
            Closes {
                means: [Some(x), None],
                sum: 0.0,
                len: 0,
                at: 0,
            }
        } else if s.block_len + 1 < n {
            Closes {
                means: [None, None],
                sum: s.block_sum + x,
                len: s.block_len + 1,
                at: 0,
            }
        } else {
            let m = (s.block_sum + x) / f64::from(n);
            Closes {
                means: [Some(m), None],
                sum: 0.0,
                len: 0,
                at: 0,
            }
        };
    };
    let b = ts.div_euclid(block.ms());
    let (mut sum, mut len, mut at) = (s.block_sum, s.block_len, s.block_at);
    let mut means = [None, None];
    if s.points == 0 {
        at = b;
    } else if b > at {
        if len > 0 {
            // The block ended without its last point being recognised (a gap): close it now.
            means[0] = Some(sum / f64::from(len));
            (sum, len) = (0.0, 0);
        }
        at = b;
    }
    // A point of a block already closed (an irregular gap misled the guess) joins the block
    // being accumulated.
    sum += x;
    len += 1;
    // The sampling interval: the shorter of the last two gaps, so one long gap (before this
    // point or the one before it) does not make a point look like its block's last.
    let this_gap = ts - s.last_ts;
    let gap = if s.points == 0 {
        0
    } else if s.gap > 0 {
        s.gap.min(this_gap)
    } else {
        this_gap
    };
    if gap > 0 && (ts + gap).div_euclid(block.ms()) > at {
        means[1] = Some(sum / f64::from(len));
        (sum, len) = (0.0, 0);
        at += 1;
    }
    Closes {
        means,
        sum,
        len,
        at,
    }
}

/// The nonconformity of the window `history` ends with.
fn alpha_of(p: &KnnParams, history: &[f32], scratch: &mut Vec<f32>) -> Option<f32> {
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
pub(crate) fn conformal_rank<T: PartialOrd + Copy>(alphas: &[T], cal: usize, alpha: T) -> f64
where
    Counted: CountBelow<T>,
{
    if alphas.len() >= (cal / 10).max(10).min(cal) {
        Counted::count_below(alphas, alpha) as f64 / alphas.len() as f64
    } else {
        0.0
    }
}

/// The vectorised "how many strictly below" for each value type a calibration set holds.
pub(crate) struct Counted;

pub(crate) trait CountBelow<T> {
    fn count_below(xs: &[T], x: T) -> usize;
}

impl CountBelow<f32> for Counted {
    fn count_below(xs: &[f32], x: f32) -> usize {
        count_below(xs, x)
    }
}

impl CountBelow<f64> for Counted {
    fn count_below(xs: &[f64], x: f64) -> usize {
        count_below_f64(xs, x)
    }
}

simd_dispatch! {
    /// How many of `xs` are strictly below `x`.
    fn count_below_f64(xs: &[f64], x: f64) -> usize {
        xs.iter().map(|v| usize::from(*v < x)).sum()
    }
}

/// Adds `alpha` to the calibration ring `alphas` of `cal` values (`next`: the oldest once full).
pub(crate) fn remember<T>(alphas: &mut Vec<T>, next: &mut u32, cal: usize, alpha: T) {
    if alphas.len() < cal {
        alphas.push(alpha);
    } else {
        alphas[*next as usize] = alpha;
        *next = ((*next as usize + 1) % cal) as u32;
    }
}

/// The rank of `alpha` at `ts` against the calibration.
fn rank(p: &KnnParams, s: &KnnState, ts: i64, alpha: f32) -> Scored {
    Scored {
        score: p
            .calibration
            .score(&s.alphas, &s.record, ts, alpha, p.exceed),
        expected: f64::NAN,
    }
}

/// Appends a block value to the history (as an offset from the anchor), trimming it first when
/// it has grown a quarter past what the windows need.
fn push(p: &KnnParams, s: &mut KnnState, v: f64) {
    if s.history.is_empty() {
        s.anchor = v;
        s.history.reserve_exact(p.history_room());
    }
    if s.history.len() >= p.history_room() {
        s.history.drain(..s.history.len() - p.history_cap() + 1);
    }
    s.history.push((v - s.anchor) as f32);
}

fn step(p: &KnnParams, s: &mut KnnState, scratch: &mut Vec<f32>, ts: i64, x: f64) -> Scored {
    let c = closes(p, s, ts, x);
    (s.block_sum, s.block_len, s.block_at) = (c.sum, c.len, c.at);
    if s.points > 0 {
        s.gap = ts - s.last_ts;
    }
    s.points = s.points.saturating_add(1);
    s.last_ts = ts;
    let mut out = NO_SCORE;
    for m in c.means.into_iter().flatten() {
        push(p, s, m);
        let Some(alpha) = alpha_of(p, &s.history, scratch) else {
            continue;
        };
        let scored = rank(p, s, ts, alpha);
        if scored.score >= out.score {
            out = scored;
        }
        p.calibration
            .remember(&mut s.alphas, &mut s.next, &mut s.record, ts, alpha);
    }
    out
}

/// What [`step`] would score, leaving the state as it was: the block values are appended to
/// the history for the distance pass and taken off again (no copy of the state, and no
/// allocation once the history has grown: it is trimmed below its capacity). When one point
/// closes two blocks (a gap), the second is ranked without the first's nonconformity in the
/// calibration set, which [`step`] would have added.
fn score_only(p: &KnnParams, s: &mut KnnState, scratch: &mut Vec<f32>, ts: i64, x: f64) -> Scored {
    let c = closes(p, s, ts, x);
    let mut out = NO_SCORE;
    let mut pushed = 0;
    for m in c.means.into_iter().flatten() {
        if s.history.is_empty() && pushed == 0 {
            // The anchor would be this value: offsets from it start at 0.
            s.history.push(0.0);
        } else {
            s.history.push((m - s.anchor) as f32);
        }
        pushed += 1;
        if let Some(alpha) = alpha_of(p, &s.history, scratch) {
            let scored = rank(p, s, ts, alpha);
            if scored.score >= out.score {
                out = scored;
            }
        }
    }
    s.history.truncate(s.history.len() - pushed);
    out
}

/// The k-NN detector for one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    params: KnnParams,
    state: KnnState,
    /// Distances of the current point (working memory, not state).
    scratch: Vec<f32>,
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

    /// Scores then learns one point (`block` needs [`Knn::step_at`]).
    pub fn step(&mut self, x: f64) -> Scored {
        let ts = self.state.last_ts;
        step(&self.params, &mut self.state, &mut self.scratch, ts, x)
    }

    /// Scores then learns one point observed at `ts` (milliseconds).
    pub fn step_at(&mut self, ts: i64, x: f64) -> Scored {
        step(&self.params, &mut self.state, &mut self.scratch, ts, x)
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
    pub fn score_only(&mut self, slot: usize, ts: i64, x: f64) -> Scored {
        score_only(
            &self.params,
            &mut self.states[slot],
            &mut self.scratch,
            ts,
            x,
        )
    }
}

/// k-NN state for many series.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnBank {
    params: KnnParams,
    states: Vec<KnnState>,
    /// Distances of the current point (working memory shared by the series, not state).
    scratch: Vec<f32>,
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

    fn update(&mut self, slot: usize, ts: i64, x: f64, _evicted: Option<f64>) -> Scored {
        step(
            &self.params,
            &mut self.states[slot],
            &mut self.scratch,
            ts,
            x,
        )
    }

    fn bytes_per_series(&self) -> usize {
        size_of::<KnnState>()
            + (self.params.history_room() + self.params.calibration.kept()) * size_of::<f32>()
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
            calibration: Calibration::Set(Count::new(calibration).unwrap()),
            step: Count::new(1).unwrap(),
            block: None,
            exceed: default_exceed(),
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
            let (a, b) = (one.step(x), bank.update(slot, 0, x, None));
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
        fn plain(hist: &[f32], w: usize, k: usize, reference: usize) -> Option<f32> {
            let n = hist.len();
            let available = n.checked_sub(w)?.min(reference);
            if available < k {
                return None;
            }
            let cur = &hist[n - w..];
            let mut d: Vec<f32> = (1..=available)
                .map(|j| {
                    let other = &hist[n - j - w..n - j];
                    cur.iter().zip(other).map(|(a, b)| (a - b) * (a - b)).sum()
                })
                .collect();
            d.sort_by(f32::total_cmp);
            Some(d[..k].iter().sum::<f32>() / k as f32)
        }
        let mut scratch = Vec::new();
        let mut checked = 0;
        for n in 0..120usize {
            // Irregular values with repeats (ties) and a wide range.
            let hist: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 31) as f32 - 15.0) * if i % 5 == 0 { 1e3 } else { 0.37 })
                .collect();
            for (w, k, reference) in [(1, 1, 10), (3, 2, 50), (5, 5, 200), (8, 3, 17)] {
                let got = nonconformity(&hist, w, k, reference, &mut scratch);
                let want = plain(&hist, w, k, reference);
                assert_eq!(
                    got.map(f32::to_bits),
                    want.map(f32::to_bits),
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
                let only = bank.score_only(slot, 0, x);
                assert_eq!(bank.snapshot(slot), before, "step {step}, t {t}");
                let learned = bank.update(slot, 0, x, None);
                assert_eq!(only.score, learned.score, "step {step}, t {t}");
                scored += usize::from(learned.score > 0.0);
            }
            assert!(scored > 50, "step {step}: the comparison saw real scores");
        }
    }

    #[test]
    fn hour_blocks_of_5_minute_points_are_12_point_blocks() {
        let mut by_step = params(4, 30, 2, 40);
        by_step.step = Count::new(12).unwrap();
        let by_time = KnnParams {
            block: Some(Span::parse("1h").unwrap()),
            ..params(4, 30, 2, 40)
        };
        let (mut a, mut b) = (Knn::new(by_step).unwrap(), Knn::new(by_time).unwrap());
        let mut scored = 0;
        for i in 0..5000i64 {
            let x = ((i * 7919) % 37) as f64 + if i % 997 < 12 { 40.0 } else { 0.0 };
            let (sa, sb) = (a.step(x), b.step_at(i * 300_000, x));
            assert_eq!(sa.score.to_bits(), sb.score.to_bits(), "point {i}");
            scored += usize::from(sb.score > 0.0);
        }
        assert!(scored > 100, "{scored}");
    }

    #[test]
    fn a_block_left_open_by_a_gap_closes_at_the_next_point_and_each_hour_counts_once() {
        let p = KnnParams {
            block: Some(Span::parse("1h").unwrap()),
            ..params(2, 10, 1, 10)
        };
        let mut d = Knn::new(p).unwrap();
        // 5-minute points from 00:00 to 00:25, a gap, points from 03:10 to 03:55, and 05:00.
        let mut ts: Vec<i64> = (0..6).map(|i| i * 300_000).collect();
        ts.extend((0..10).map(|i| 3 * 3_600_000 + 600_000 + i * 300_000));
        ts.push(5 * 3_600_000);
        let mut closed = Vec::new();
        for t in &ts {
            let before = d.state.history.len();
            d.step_at(*t, (*t / 3_600_000) as f64);
            closed.push(d.state.history.len() - before);
        }
        // The first hour closes when 03:10 arrives (which, though three hours after the point
        // before it, is not taken for its hour's last: the interval is the shorter of the last
        // two gaps); the 03:00 hour at 03:55 (the next point is expected at 04:00); 05:00
        // opens its own.
        assert_eq!(closed.iter().sum::<usize>(), 2);
        assert_eq!(closed[6], 1, "00:xx closed by the point after the gap");
        assert_eq!(closed[15], 1, "03:xx closed at its last expected point");
        assert_eq!(d.state.history, vec![0.0, 3.0]);
    }

    #[test]
    fn k_above_reference_is_refused() {
        let e = Knn::new(params(4, 3, 5, 10)).unwrap_err();
        assert!(e.to_string().contains("k"), "{e}");
    }
}
