//! Value novelty: how far is the newest (optionally smoothed) value from every value the series
//! ever took, as a share of the range it has covered?
//!
//! The detector remembers the values it has seen (sorted, to within `resolution` of the range,
//! so a series that stays inside its range adds nothing) and scores a point by the distance from
//! its value to the nearest remembered one, divided by `saturation` × the range (minimum to
//! maximum, this point included): a value the series has taken before scores 0, one a tenth of
//! the range away from anything seen (the default `saturation`) scores 1. A new extreme scores
//! the share of the new range it opened; a value in a gap of the series' history (between two
//! levels it alternates between, say) scores as high as an extreme.
//!
//! `smoothing` (the weight of the newest point in an exponentially weighted mean, 1 = the raw
//! value) compares the series' recent level instead of its points: a level the series has never
//! held stands out even when each point of it is within the range of past spikes.
//!
//! Unlike the other scores this one never forgets: a value is novel once. It is the idea behind
//! ARTime's categories (a shape that matches none learned so far), reduced to values. No score
//! before `warmup` points.
//!
//! State per series: the smoothed level, the range, the count and the remembered values (at most
//! about `2 / resolution`: when they grow past that they are thinned to `resolution` of the
//! current range). Cost per point: one binary search, and an insertion into a short sorted
//! vector when the value is new.

use serde::{Deserialize, Serialize};

use crate::earlier;
use crate::params::{Alpha, Count, Share};
use crate::recurrence::upper_median;
use crate::{Bank, Detector, ParamError, Scored};

/// Parameters of the novelty detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoveltyParams {
    /// Weight of the newest point in the smoothed level compared (default 1: the raw value).
    #[serde(default = "default_smoothing")]
    pub smoothing: Alpha,
    /// Distance from every earlier value, as a share of the range, that scores 1 (default 0.1).
    #[serde(default = "default_saturation")]
    pub saturation: Share,
    /// Values closer than this share of the range to a remembered one are not remembered
    /// (default 0.005; memory is about `2 / resolution` values).
    #[serde(default = "default_resolution")]
    pub resolution: Share,
    /// Points learned before the detector scores (default 100).
    #[serde(default = "default_warmup")]
    pub warmup: Count,
    /// When above 0 (at most 64), the value compared is the point's distance from the median
    /// of the `deviation` points before it (the height of a spike or dip over the recent level)
    /// instead of the point itself (default 0).
    #[serde(default)]
    pub deviation: u32,
}

fn default_smoothing() -> Alpha {
    Alpha::new(1.0).expect("valid")
}
fn default_saturation() -> Share {
    Share::new(0.1).expect("valid")
}
fn default_resolution() -> Share {
    Share::new(0.005).expect("valid")
}
fn default_warmup() -> Count {
    Count::new(100).expect("valid")
}

impl Default for NoveltyParams {
    fn default() -> Self {
        Self {
            smoothing: default_smoothing(),
            saturation: default_saturation(),
            resolution: default_resolution(),
            warmup: default_warmup(),
            deviation: 0,
        }
    }
}

impl NoveltyParams {
    /// Checks the bounds that serde cannot.
    pub fn validate(&self) -> Result<(), ParamError> {
        earlier::span("deviation", self.deviation, "an integer in [0, 64]")
    }

    /// How many remembered values trigger a thinning.
    fn cap(&self) -> usize {
        (2.0 / self.resolution.get()).ceil() as usize + 2
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
    /// Remembered levels, ascending.
    pub seen: Vec<f64>,
    /// The last `deviation` points, oldest first (empty when `deviation` is 0).
    pub recent: Vec<f64>,
}

/// Distance from `v` to the nearest of `seen` (ascending; infinite when empty).
fn nearest(seen: &[f64], v: f64) -> f64 {
    let i = seen.partition_point(|s| *s < v);
    let above = seen.get(i).map_or(f64::INFINITY, |s| s - v);
    let below = i.checked_sub(1).map_or(f64::INFINITY, |j| v - seen[j]);
    above.min(below)
}

/// What one point does: the new level, its distance to the remembered levels, the new range
/// and the score.
struct Look {
    level: f64,
    distance: f64,
    lo: f64,
    hi: f64,
    score: f64,
}

fn look(p: &NoveltyParams, s: &NoveltyState, x: f64) -> Look {
    if s.n == 0 {
        return Look {
            level: x,
            distance: f64::INFINITY,
            lo: x,
            hi: x,
            score: 0.0,
        };
    }
    let level = s.level + p.smoothing.get() * (x - s.level);
    let distance = nearest(&s.seen, level);
    let (lo, hi) = (s.lo.min(level), s.hi.max(level));
    let range = hi - lo;
    let score = if s.n >= u64::from(p.warmup.get()) && range > 0.0 {
        (distance / (p.saturation.get() * range)).min(1.0)
    } else {
        0.0
    };
    Look {
        level,
        distance,
        lo,
        hi,
        score,
    }
}

/// Keeps the first of `seen` and every later value more than `gap` above the last kept one.
fn thin(seen: &mut Vec<f64>, gap: f64) {
    let mut last = f64::NEG_INFINITY;
    seen.retain(|v| {
        let keep = *v - last > gap;
        if keep {
            last = *v;
        }
        keep
    });
}

/// The quantity compared for the point `x`: `x` itself, or its distance from the median of the
/// `deviation` points before it (`None` until there are that many).
fn measure(p: &NoveltyParams, s: &NoveltyState, x: f64) -> Option<f64> {
    let w = p.deviation as usize;
    if w == 0 {
        Some(x)
    } else {
        (s.recent.len() == w).then(|| (x - upper_median(&s.recent)).abs())
    }
}

/// The level the detector expected (the smoothed value before this point); none in deviation
/// mode, whose level is not in the series' units.
fn expected(p: &NoveltyParams, s: &NoveltyState) -> f64 {
    if s.n == 0 || p.deviation > 0 {
        f64::NAN
    } else {
        s.level
    }
}

fn step(p: &NoveltyParams, s: &mut NoveltyState, x: f64) -> Scored {
    let measured = measure(p, s, x);
    if p.deviation > 0 {
        if s.recent.len() == p.deviation as usize {
            s.recent.remove(0);
        }
        s.recent.push(x);
    }
    let Some(v) = measured else {
        return Scored {
            score: 0.0,
            expected: f64::NAN,
        };
    };
    let l = look(p, s, v);
    let gap = p.resolution.get() * (l.hi - l.lo);
    if s.n == 0 || l.distance > gap {
        let at = s.seen.partition_point(|v| *v < l.level);
        s.seen.insert(at, l.level);
        if s.seen.len() > p.cap() {
            thin(&mut s.seen, gap);
        }
    }
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

    /// Scores then learns one point.
    pub fn step(&mut self, x: f64) -> Scored {
        step(&self.params, &mut self.state, x)
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
    pub fn score_only(&self, slot: usize, x: f64) -> Scored {
        let (p, s) = (&self.params, &self.states[slot]);
        match measure(p, s, x) {
            Some(v) => Scored {
                score: look(p, s, v).score,
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
    fn update(&mut self, slot: usize, x: f64, _evicted: Option<f64>) -> Scored {
        step(&self.params, &mut self.states[slot], x)
    }
    /// Bytes per series with the remembered values at their bound (a series that stays in its
    /// range holds far fewer).
    fn bytes_per_series(&self) -> usize {
        size_of::<NoveltyState>() + self.params.cap() * size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(smoothing: f64, warmup: u32) -> NoveltyParams {
        NoveltyParams {
            smoothing: Alpha::new(smoothing).unwrap(),
            warmup: Count::new(warmup).unwrap(),
            ..NoveltyParams::default()
        }
    }

    /// The plain definition: every value kept, the distance to the nearest of them.
    fn reference(p: &NoveltyParams, xs: &[f64]) -> Vec<f64> {
        let mut levels: Vec<f64> = Vec::new();
        let mut level = 0.0;
        xs.iter()
            .enumerate()
            .map(|(i, x)| {
                level = if i == 0 {
                    *x
                } else {
                    level + p.smoothing.get() * (x - level)
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
            let want = reference(&p, &xs);
            // Each kept value stands for the values within resolution (twice after a thinning)
            // of the range; in score units that is resolution / saturation.
            let slack = 2.0 * p.resolution.get() / p.saturation.get() + 1e-12;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= slack, "{i}: {g} vs {w}");
            }
            assert!(want.iter().filter(|s| **s > 0.5).count() > 3);
            assert!(d.state.seen.len() <= p.cap(), "{}", d.state.seen.len());
        }
    }

    #[test]
    fn thinning_keeps_memory_bounded_and_every_value_seen_covered() {
        let p = NoveltyParams {
            resolution: Share::new(0.05).unwrap(),
            ..params(1.0, 10)
        };
        let mut d = Novelty::new(p).unwrap();
        // The range widens tenfold four times, each time filled densely.
        let xs: Vec<f64> = (0..4000)
            .map(|i| 10f64.powi(i / 1000) * ((i * 7919) % 1009) as f64 / 1009.0)
            .collect();
        let mut shrank = false;
        for x in &xs {
            let before = d.state.seen.len();
            d.step(*x);
            assert!(d.state.seen.len() <= p.cap());
            shrank |= d.state.seen.len() < before;
        }
        assert!(shrank, "the memory was thinned");
        let gap = 2.0 * p.resolution.get() * (d.state.hi - d.state.lo);
        for x in &xs {
            assert!(nearest(&d.state.seen, *x) <= gap, "{x}");
        }
    }

    #[test]
    fn a_value_never_taken_scores_by_its_distance_and_a_familiar_one_scores_zero() {
        let mut d = Novelty::new(params(1.0, 10)).unwrap();
        // Two levels, 0 and 10, alternating.
        for i in 0..200 {
            d.step(if i % 2 == 0 { 0.0 } else { 10.0 });
        }
        let probe = |d: &Novelty, x: f64| d.clone().step(x).score;
        assert_eq!(probe(&d, 10.0), 0.0);
        assert_eq!(probe(&d, 0.0), 0.0);
        // Halfway between: 5 from both, half the range; saturated at a tenth of it.
        assert_eq!(probe(&d, 5.0), 1.0);
        // 0.5 from the nearest: a twentieth of the range, half of the saturation.
        assert!((probe(&d, 9.5) - 0.5).abs() < 1e-12, "{}", probe(&d, 9.5));
        // A new maximum of 11: 1 from 10 in a range of 11.
        assert!(
            (probe(&d, 11.0) - 1.0 / 1.1).abs() < 1e-12,
            "{}",
            probe(&d, 11.0)
        );
        // Once seen, it is familiar.
        d.step(5.0);
        assert_eq!(probe(&d, 5.0), 0.0);
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
            deviation: 12,
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
        assert_eq!(flat.state.seen, vec![3.0]);
    }

    #[test]
    fn score_only_gives_the_update_score_and_leaves_the_state_as_it_was() {
        for deviation in [0, 12] {
            let mut b = NoveltyBank::new(NoveltyParams {
                deviation,
                ..params(0.3, 10)
            });
            let s = b.add_series();
            for (k, x) in noisy(3000).iter().enumerate() {
                let probe = x + (k % 7) as f64;
                let before = b.snapshot(s);
                let only = b.score_only(s, probe);
                assert_eq!(b.snapshot(s), before);
                let mut copy = b.clone();
                let learned = copy.update(s, probe, None);
                assert_eq!(only.score, learned.score);
                assert_eq!(only.expected.is_nan(), learned.expected.is_nan());
                b.update(s, *x, None);
            }
        }
    }

    #[test]
    fn parameters_out_of_range_are_rejected_by_name() {
        for (json, name) in [
            (r#"{"smoothing": 0}"#, "alpha"),
            (r#"{"saturation": 1.5}"#, "share"),
            (r#"{"resolution": 0}"#, "share"),
        ] {
            let e = serde_json::from_str::<NoveltyParams>(json).unwrap_err();
            assert!(e.to_string().contains(name), "{json}: {e}");
        }
        assert!(serde_json::from_str::<NoveltyParams>(r#"{"saturate": 0.1}"#).is_err());
        let p = NoveltyParams {
            deviation: 65,
            ..NoveltyParams::default()
        };
        assert_eq!(Novelty::new(p).unwrap_err().name, "deviation");
    }
}
