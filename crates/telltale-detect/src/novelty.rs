//! Value novelty: how far is the newest (optionally smoothed) value from every value the series
//! ever took, as a share of the range it has covered?
//!
//! The detector remembers which values it has seen as a bitmap of 512 cells over a frame a
//! little wider than the range (so a series that stays inside its range adds nothing, and the
//! memory is 64 bytes whatever the series does) and scores a point by the distance from its
//! value to the nearest remembered cell, divided by `saturation` × the range (minimum to
//! maximum, this point included): a value the series has taken before scores 0, one a tenth of
//! the range away from anything seen (the default `saturation`) scores 1. A new extreme scores
//! the share of the new range it opened; a value in a gap of the series' history (between two
//! levels it alternates between, say) scores as high as an extreme.
//!
//! `smoothing` (the weight of the newest point in an exponentially weighted mean, 1 = the raw
//! value, or a time constant such as `"15m"`) compares the series' recent level instead of its
//! points: a level the series has never
//! held stands out even when each point of it is within the range of past spikes.
//!
//! Unlike the other scores this one never forgets: a value is novel once. It is the idea behind
//! ARTime's categories (a shape that matches none learned so far), reduced to values. No score
//! before `warmup` points.
//!
//! When the range outgrows the frame, the frame is widened by a quarter beyond the new range and
//! every remembered cell moves to the cell of its centre in the new frame, so a value is
//! remembered to within a cell of the frame (under 0.3 % of the range) and a trending series
//! re-frames a logarithmic number of times, not once per point.
//!
//! State per series: the smoothed level, the range, the frame, the count and the 512-bit map
//! (and, in deviation mode, the last few points). Cost per point: a few word scans of the map.

use serde::{Deserialize, Serialize};

use crate::earlier;
use crate::params::{Alpha, Count, Reach, Share, Weight};
use crate::recurrence::upper_median;
use crate::{Bank, Detector, ParamError, Scored};

/// Parameters of the novelty detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoveltyParams {
    /// Weight of the newest point in the smoothed level compared: a share per point or a time
    /// constant such as `"15m"` (default 1: the raw value).
    #[serde(default = "default_smoothing")]
    pub smoothing: Weight,
    /// Distance from every earlier value, as a share of the range, that scores 1 (default 0.1).
    #[serde(default = "default_saturation")]
    pub saturation: Share,
    /// Points learned before the detector scores (default 100).
    #[serde(default = "default_warmup")]
    pub warmup: Count,
    /// When set, the value compared is the point's distance from the median of the recent
    /// points before it (the height of a spike or dip over the recent level) instead of the
    /// point itself: a number of points (1 to 64), or a span such as `"1h"` (the points of
    /// that last span, at most the last 16). Default 0: off.
    #[serde(default)]
    pub deviation: Reach,
}

/// Most recent points a span-wide deviation median reads.
pub const MAX_SPAN_POINTS: usize = 16;

/// Points the deviation mode keeps.
fn keep(r: Reach) -> usize {
    match r {
        Reach::Points(n) => n as usize,
        Reach::Span(_) => MAX_SPAN_POINTS,
    }
}

/// Cells in the map of values seen.
const CELLS: usize = 512;
const WORDS: usize = CELLS / 64;

fn default_smoothing() -> Weight {
    Alpha::new(1.0).expect("valid").into()
}
fn default_saturation() -> Share {
    Share::new(0.1).expect("valid")
}
fn default_warmup() -> Count {
    Count::new(100).expect("valid")
}

impl Default for NoveltyParams {
    fn default() -> Self {
        Self {
            smoothing: default_smoothing(),
            saturation: default_saturation(),
            warmup: default_warmup(),
            deviation: Reach::default(),
        }
    }
}

impl NoveltyParams {
    /// Checks the bounds that serde cannot.
    pub fn validate(&self) -> Result<(), ParamError> {
        match self.deviation {
            Reach::Points(n) => earlier::span("deviation", n, "an integer in [0, 64]"),
            Reach::Span(_) => Ok(()),
        }
    }
}

/// State of the novelty detector for one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoveltyState {
    /// Points learned.
    pub n: u64,
    /// The smoothed level (the last value when `smoothing` is 1).
    pub level: f64,
    /// Smallest level seen.
    pub lo: f64,
    /// Largest level seen.
    pub hi: f64,
    /// Low end of the frame the map covers.
    pub frame_lo: f64,
    /// High end of the frame.
    pub frame_hi: f64,
    /// Cells of the frame (512, equal widths, lowest first) holding a level seen.
    pub seen: [u64; WORDS],
    /// The last points (deviation mode), oldest first: (timestamp, value).
    pub recent: Vec<(i64, f64)>,
    /// Timestamp of the last point (for a time-constant smoothing).
    pub last_ts: i64,
}

/// The cell of `v` in the frame `[lo, hi]` (cell 0 when the frame is a single value).
fn cell(lo: f64, hi: f64, v: f64) -> usize {
    let w = hi - lo;
    if w > 0.0 {
        (((v - lo) / w * CELLS as f64) as usize).min(CELLS - 1)
    } else {
        0
    }
}

/// The centre of cell `c` of the frame `[lo, hi]`.
fn centre(lo: f64, hi: f64, c: usize) -> f64 {
    lo + (c as f64 + 0.5) * (hi - lo) / CELLS as f64
}

/// The highest set cell at or below `c`.
fn set_at_or_below(seen: &[u64; WORDS], c: usize) -> Option<usize> {
    let (mut w, b) = (c / 64, c % 64);
    let mut word = seen[w] & (u64::MAX >> (63 - b));
    loop {
        if word != 0 {
            return Some(w * 64 + 63 - word.leading_zeros() as usize);
        }
        w = w.checked_sub(1)?;
        word = seen[w];
    }
}

/// The lowest set cell at or above `c`.
fn set_at_or_above(seen: &[u64; WORDS], c: usize) -> Option<usize> {
    let (mut w, b) = (c / 64, c % 64);
    let mut word = seen[w] & (u64::MAX << b);
    loop {
        if word != 0 {
            return Some(w * 64 + word.trailing_zeros() as usize);
        }
        w += 1;
        word = *seen.get(w)?;
    }
}

/// Distance from `v` to the centre of the nearest remembered cell (infinite when none).
fn nearest(s: &NoveltyState, v: f64) -> f64 {
    let (lo, hi) = (s.frame_lo, s.frame_hi);
    if s.n == 0 {
        return f64::INFINITY;
    }
    if v < lo || v > hi {
        // Outside the frame: the nearest is the outermost remembered cell on that side.
        let c = if v < lo {
            set_at_or_above(&s.seen, 0)
        } else {
            set_at_or_below(&s.seen, CELLS - 1)
        };
        return c.map_or(f64::INFINITY, |c| (v - centre(lo, hi, c)).abs());
    }
    let c = cell(lo, hi, v);
    let below =
        set_at_or_below(&s.seen, c).map_or(f64::INFINITY, |b| (v - centre(lo, hi, b)).abs());
    let above =
        set_at_or_above(&s.seen, c).map_or(f64::INFINITY, |a| (centre(lo, hi, a) - v).abs());
    below.min(above)
}

/// Widens the frame to hold `[lo, hi]` (plus a quarter of the range on the side that grew) and
/// moves every remembered cell to the cell of its centre in the new frame.
fn reframe(s: &mut NoveltyState, lo: f64, hi: f64) {
    let margin = 0.25 * (hi - lo);
    let new_lo = if lo < s.frame_lo {
        lo - margin
    } else {
        s.frame_lo
    };
    let new_hi = if hi > s.frame_hi {
        hi + margin
    } else {
        s.frame_hi
    };
    let mut moved = [0u64; WORDS];
    for (w, word) in s.seen.iter().enumerate() {
        let mut bits = *word;
        while bits != 0 {
            let c = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let n = cell(new_lo, new_hi, centre(s.frame_lo, s.frame_hi, c));
            moved[n / 64] |= 1 << (n % 64);
        }
    }
    (s.frame_lo, s.frame_hi, s.seen) = (new_lo, new_hi, moved);
}

/// Remembers the level `v` (inside the frame).
fn remember(s: &mut NoveltyState, v: f64) {
    let c = cell(s.frame_lo, s.frame_hi, v);
    s.seen[c / 64] |= 1 << (c % 64);
}

/// What one point does: the new level, its distance to the remembered levels, the new range
/// and the score.
struct Look {
    level: f64,
    lo: f64,
    hi: f64,
    score: f64,
}

fn look(p: &NoveltyParams, s: &NoveltyState, dt: i64, x: f64) -> Look {
    if s.n == 0 {
        return Look {
            level: x,
            lo: x,
            hi: x,
            score: 0.0,
        };
    }
    let level = s.level + p.smoothing.at(dt) * (x - s.level);
    let distance = nearest(s, level);
    let (lo, hi) = (s.lo.min(level), s.hi.max(level));
    let range = hi - lo;
    let score = if s.n >= u64::from(p.warmup.get()) && range > 0.0 {
        (distance / (p.saturation.get() * range)).min(1.0)
    } else {
        0.0
    };
    Look {
        level,
        lo,
        hi,
        score,
    }
}

/// The quantity compared for the point `x` at `ts`: `x` itself, or its distance from the median
/// of the recent points before it (`None` until there are any: `deviation` of them, or one
/// within the span).
fn measure(p: &NoveltyParams, s: &NoveltyState, ts: i64, x: f64) -> Option<f64> {
    let mut buf = [0.0; 64];
    let n = match p.deviation {
        Reach::Points(0) => return Some(x),
        Reach::Points(w) => {
            if s.recent.len() < w as usize {
                return None;
            }
            for (b, (_, v)) in buf.iter_mut().zip(&s.recent) {
                *b = *v;
            }
            s.recent.len()
        }
        Reach::Span(span) => {
            let from = ts.saturating_sub(span.ms());
            let mut n = 0;
            for (t, v) in &s.recent {
                if *t >= from {
                    buf[n] = *v;
                    n += 1;
                }
            }
            n
        }
    };
    (n > 0).then(|| (x - upper_median(&buf[..n])).abs())
}

/// The level the detector expected (the smoothed value before this point); none in deviation
/// mode, whose level is not in the series' units.
fn expected(p: &NoveltyParams, s: &NoveltyState) -> f64 {
    if s.n == 0 || p.deviation.is_on() {
        f64::NAN
    } else {
        s.level
    }
}

fn step(p: &NoveltyParams, s: &mut NoveltyState, ts: i64, x: f64) -> Scored {
    let measured = measure(p, s, ts, x);
    if p.deviation.is_on() {
        if s.recent.len() == keep(p.deviation) {
            s.recent.remove(0);
        }
        s.recent.push((ts, x));
    }
    let dt = ts - s.last_ts;
    s.last_ts = ts;
    let Some(v) = measured else {
        return Scored {
            score: 0.0,
            expected: f64::NAN,
        };
    };
    let l = look(p, s, dt, v);
    if s.n == 0 {
        (s.frame_lo, s.frame_hi) = (l.level, l.level);
    } else if l.level < s.frame_lo || l.level > s.frame_hi {
        reframe(s, l.lo, l.hi);
    }
    remember(s, l.level);
    let expected = expected(p, s);
    (s.level, s.lo, s.hi) = (l.level, l.lo, l.hi);
    s.n += 1;
    Scored {
        score: l.score,
        expected,
    }
}

/// The novelty detector for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Novelty {
    /// Parameters.
    pub params: NoveltyParams,
    /// State.
    pub state: NoveltyState,
}

impl Novelty {
    /// A detector that has seen nothing.
    pub fn new(params: NoveltyParams) -> Result<Self, ParamError> {
        params.validate()?;
        Ok(Self {
            params,
            state: NoveltyState::default(),
        })
    }

    /// Scores then learns one point (a time-constant smoothing or a span-wide deviation
    /// needs [`Novelty::step_at`]).
    pub fn step(&mut self, x: f64) -> Scored {
        let ts = self.state.last_ts;
        step(&self.params, &mut self.state, ts, x)
    }

    /// Scores then learns one point observed at `ts` (milliseconds).
    pub fn step_at(&mut self, ts: i64, x: f64) -> Scored {
        step(&self.params, &mut self.state, ts, x)
    }
}

impl Detector for Novelty {
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]) {
        assert_eq!(xs.len(), out.len(), "xs and out differ in length");
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = self.step(*x).score;
        }
    }
}

/// Novelty state for many series.
#[derive(Debug, Clone, PartialEq)]
pub struct NoveltyBank {
    params: NoveltyParams,
    states: Vec<NoveltyState>,
}

impl NoveltyBank {
    /// What [`Bank::update`] would score, leaving the state as it is (nothing to copy).
    pub fn score_only(&self, slot: usize, ts: i64, x: f64) -> Scored {
        let (p, s) = (&self.params, &self.states[slot]);
        match measure(p, s, ts, x) {
            Some(v) => Scored {
                score: look(p, s, ts - s.last_ts, v).score,
                expected: expected(p, s),
            },
            None => Scored {
                score: 0.0,
                expected: f64::NAN,
            },
        }
    }
}

impl Bank for NoveltyBank {
    type Params = NoveltyParams;
    type State = NoveltyState;

    fn new(params: NoveltyParams) -> Self {
        Self {
            params,
            states: Vec::new(),
        }
    }
    crate::bank::state_vec_bank!(NoveltyState);
    fn update(&mut self, slot: usize, ts: i64, x: f64, _evicted: Option<f64>) -> Scored {
        step(&self.params, &mut self.states[slot], ts, x)
    }
    /// Bytes per series, the recent points of deviation mode included.
    fn bytes_per_series(&self) -> usize {
        size_of::<NoveltyState>() + keep(self.params.deviation) * size_of::<(i64, f64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Span;

    fn params(smoothing: f64, warmup: u32) -> NoveltyParams {
        NoveltyParams {
            smoothing: Alpha::new(smoothing).unwrap().into(),
            warmup: Count::new(warmup).unwrap(),
            ..NoveltyParams::default()
        }
    }

    /// The plain definition: every value kept, the distance to the nearest of them.
    fn reference(p: &NoveltyParams, smoothing: f64, xs: &[f64]) -> Vec<f64> {
        let mut levels: Vec<f64> = Vec::new();
        let mut level = 0.0;
        xs.iter()
            .enumerate()
            .map(|(i, x)| {
                level = if i == 0 {
                    *x
                } else {
                    level + smoothing * (x - level)
                };
                let d = levels
                    .iter()
                    .map(|v| (v - level).abs())
                    .fold(f64::INFINITY, f64::min);
                levels.push(level);
                let (lo, hi) = levels
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                        (a.min(*v), b.max(*v))
                    });
                if i >= p.warmup.get() as usize && hi > lo {
                    (d / (p.saturation.get() * (hi - lo))).min(1.0)
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn noisy(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 10.0 + ((i * 7919) % 101) as f64 / 25.0 + (i / 500) as f64 * 0.7)
            .collect()
    }

    #[test]
    fn remembering_to_the_resolution_scores_within_the_resolution_of_the_whole_history() {
        for smoothing in [1.0, 0.3] {
            let p = params(smoothing, 10);
            let xs = noisy(6000);
            let mut d = Novelty::new(p).unwrap();
            let got: Vec<f64> = xs.iter().map(|x| d.step(*x).score).collect();
            let want = reference(&p, smoothing, &xs);
            // A remembered value stands for its cell: a 512th of a frame at most 1.5 times the
            // range, to within a cell more after the frame was widened. In score units, two
            // cells over the saturation.
            let slack = 2.0 * 1.5 / 512.0 / p.saturation.get() + 1e-12;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= slack, "{i}: {g} vs {w}");
            }
            assert!(want.iter().filter(|s| **s > 0.5).count() > 3);
        }
    }

    #[test]
    fn a_range_that_widens_tenfold_keeps_every_value_seen_within_two_cells() {
        let mut d = Novelty::new(params(1.0, 10)).unwrap();
        // The range widens tenfold four times, each time filled densely.
        let xs: Vec<f64> = (0..4000)
            .map(|i| 10f64.powi(i / 1000) * ((i * 7919) % 1009) as f64 / 1009.0)
            .collect();
        for x in &xs {
            d.step(*x);
        }
        let cell = (d.state.frame_hi - d.state.frame_lo) / CELLS as f64;
        assert!(d.state.frame_hi - d.state.frame_lo <= 1.5 * (d.state.hi - d.state.lo));
        for x in &xs {
            assert!(nearest(&d.state, *x) <= 2.0 * cell, "{x}");
        }
        // The map moved with the frame: no more cells set than values seen.
        let set: u32 = d.state.seen.iter().map(|w| w.count_ones()).sum();
        assert!(set as usize <= CELLS && set > 100, "{set}");
    }

    #[test]
    fn a_value_never_taken_scores_by_its_distance_and_a_familiar_one_scores_zero() {
        let mut d = Novelty::new(params(1.0, 10)).unwrap();
        // Two levels, 0 and 10, alternating.
        for i in 0..200 {
            d.step(if i % 2 == 0 { 0.0 } else { 10.0 });
        }
        let probe = |d: &Novelty, x: f64| d.clone().step(x).score;
        // Within half a cell (a 512th of a frame of 12.5) of a value seen: 0 to 0.013.
        assert!(probe(&d, 10.0) < 0.013, "{}", probe(&d, 10.0));
        assert!(probe(&d, 0.0) < 0.013, "{}", probe(&d, 0.0));
        // Halfway between: 5 from both, half the range; saturated at a tenth of it.
        assert_eq!(probe(&d, 5.0), 1.0);
        // 0.5 from the nearest: a twentieth of the range, half of the saturation.
        assert!((probe(&d, 9.5) - 0.5).abs() < 0.013, "{}", probe(&d, 9.5));
        // A new maximum of 11: 1 from 10 in a range of 11.
        assert!(
            (probe(&d, 11.0) - 1.0 / 1.1).abs() < 0.013,
            "{}",
            probe(&d, 11.0)
        );
        // Once seen, it is familiar.
        d.step(5.0);
        assert!(probe(&d, 5.0) < 0.013);
    }

    #[test]
    fn smoothing_finds_a_level_never_held_inside_the_range_of_past_spikes() {
        // A calm series at 0 with lone spikes to 10; then it settles at 5.
        let mut xs: Vec<f64> = (0..1000)
            .map(|i| if i % 97 == 50 { 10.0 } else { 0.0 })
            .collect();
        xs.extend(std::iter::repeat_n(5.0, 50));
        let run = |smoothing: f64| {
            let mut d = Novelty::new(params(smoothing, 10)).unwrap();
            xs.iter()
                .map(|x| d.step(*x).score)
                .skip(1000)
                .fold(0.0, f64::max)
        };
        // Raw: 5 is halfway between seen values (0 and 10), novel at once.
        assert_eq!(run(1.0), 1.0);
        // Smoothed, the spikes only lift the level a little: the shift is novel too.
        assert!(run(0.3) > 0.9, "{}", run(0.3));
        // And a smoothed level that only repeats the usual spikes is not.
        let mut d = Novelty::new(params(0.3, 10)).unwrap();
        let last = xs[..1000]
            .iter()
            .map(|x| d.step(*x).score)
            .skip(500)
            .fold(0.0, f64::max);
        assert!(last < 0.2, "{last}");
    }

    #[test]
    fn deviation_mode_finds_a_spike_taller_than_any_before_on_a_drifting_level() {
        let p = NoveltyParams {
            deviation: Reach::Points(12),
            ..params(1.0, 100)
        };
        let mut d = Novelty::new(p).unwrap();
        // A rising level with a spike of 2 every 50 points: every value is new, no spike is.
        let level = |i: usize| i as f64 * 0.002 + ((i * 7919) % 13) as f64 * 0.002;
        let usual: Vec<f64> = (0..3000)
            .map(|i| {
                let x = level(i) + if i % 50 == 25 { 2.0 } else { 0.0 };
                d.step(x).score
            })
            .collect();
        assert!(
            usual[500..].iter().all(|s| *s < 0.2),
            "{:?}",
            usual.iter().fold(0.0, |a: f64, b| a.max(*b))
        );
        // A spike of 5: three units above any spike before, in a range of about 5.
        assert_eq!(d.clone().step(level(3000) + 5.0).score, 1.0);
        // A dip as deep as the usual spikes are tall is nothing new either.
        let dip = d.clone().step(level(3000) - 2.0).score;
        assert!(dip < 0.2, "{dip}");
        assert!(d.step(level(3000)).expected.is_nan());
    }

    #[test]
    fn nothing_scores_during_the_warmup_or_on_a_constant_series() {
        let mut d = Novelty::new(params(1.0, 100)).unwrap();
        let early: Vec<f64> = (0..100).map(|i| d.step(i as f64).score).collect();
        assert!(early.iter().all(|s| *s == 0.0));
        let mut flat = Novelty::new(params(1.0, 10)).unwrap();
        assert!((0..500).all(|_| flat.step(3.0).score == 0.0));
        let set: u32 = flat.state.seen.iter().map(|w| w.count_ones()).sum();
        assert_eq!(
            (set, flat.state.frame_lo, flat.state.frame_hi),
            (1, 3.0, 3.0)
        );
    }

    #[test]
    fn score_only_gives_the_update_score_and_leaves_the_state_as_it_was() {
        for deviation in [
            Reach::Points(0),
            Reach::Points(12),
            Reach::Span(Span::parse("1h").unwrap()),
        ] {
            let mut b = NoveltyBank::new(NoveltyParams {
                deviation,
                ..params(0.3, 10)
            });
            let s = b.add_series();
            for (k, x) in noisy(3000).iter().enumerate() {
                let probe = x + (k % 7) as f64;
                let before = b.snapshot(s);
                let t = k as i64 * 300_000;
                let only = b.score_only(s, t, probe);
                assert_eq!(b.snapshot(s), before);
                let mut copy = b.clone();
                let learned = copy.update(s, t, probe, None);
                assert_eq!(only.score, learned.score);
                assert_eq!(only.expected.is_nan(), learned.expected.is_nan());
                b.update(s, t, *x, None);
            }
        }
    }

    #[test]
    fn parameters_out_of_range_are_rejected_by_name() {
        for (json, name) in [
            (r#"{"smoothing": 0}"#, "(0, 1]"),
            (r#"{"saturation": 1.5}"#, "share"),
            (r#"{"smoothing": "5 minutes"}"#, "duration"),
            (r#"{"deviation": 1.5}"#, "[0, 64]"),
        ] {
            let e = serde_json::from_str::<NoveltyParams>(json).unwrap_err();
            assert!(e.to_string().contains(name), "{json}: {e}");
        }
        assert!(serde_json::from_str::<NoveltyParams>(r#"{"saturate": 0.1}"#).is_err());
        let p = NoveltyParams {
            deviation: Reach::Points(65),
            ..NoveltyParams::default()
        };
        assert_eq!(Novelty::new(p).unwrap_err().name, "deviation");
    }
}
