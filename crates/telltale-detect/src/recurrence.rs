//! Recurrence filter: did the point's deviation already happen at the same time on the
//! previous days?
//!
//! A series with a daily habit (a backup spiking the CPU at 03:00, a burst of tweets every
//! evening) deviates from its recent level at the same time every day. Detectors that compare a
//! point with the last hours (a level, a short shape) flag it each time. The filter asks, for
//! each point, whether something as large happened one period (`period_hours`) ago, and one
//! before that, for `periods` periods: the deviation is `|x − median of the last window
//! points|`, and the point *recurs* when, for each of the last `periods` periods, a value within
//! `margin` points of the point nearest to that time lies closer to `x` than `ratio` times the
//! deviation. Requiring two periods (the default) keeps an anomaly from excusing the same
//! anomaly a day later. A chain then silences the scores it names for recurring points.
//!
//! The filter reads the series' recent points (the chain's ring), so the ring must hold
//! `periods` periods plus `margin` points (2 × 288 + 6 at 5-minute sampling: `ring = 1024`).
//! With a shorter history, a gap of more than 1/24 of the period at one of those times, or no
//! deviation, it says "does not recur" and silences nothing. Cost per point: a median of
//! `window` values, `periods` binary searches of the ring by time and `periods × (2 × margin +
//! 1)` comparisons; no state of its own.

use serde::{Deserialize, Serialize};

use crate::ParamError;
use crate::earlier::{self, MAX_SPAN};
use crate::params::{Count, Positive, Reach};

/// Most points the median window and the margin may span (stack buffer, no allocation).
pub const MAX_RECURRENCE_WINDOW: u32 = MAX_SPAN;

/// Parameters of the recurrence filter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrenceParams {
    /// Length of the period in hours (default 24: the same time yesterday).
    #[serde(default = "default_period")]
    pub period_hours: Positive,
    /// Consecutive past periods that must each show the deviation at the same time (default 2:
    /// yesterday and the day before, so that one anomaly does not excuse the same anomaly a day
    /// later; at most 7).
    #[serde(default = "default_periods")]
    pub periods: Count,
    /// Points either side of the point one period back that count as "the same time" (default
    /// 6; 0 to 64).
    #[serde(default = "default_margin")]
    pub margin: u32,
    /// Recent points whose median is the level a deviation is measured from (default 12; 1 to
    /// 64).
    #[serde(default = "default_window")]
    pub window: Count,
    /// A point recurs when its distance to the nearest of those values is below `ratio` times
    /// its deviation (default 0.5).
    #[serde(default = "default_ratio")]
    pub ratio: Positive,
    /// Positions in the chain's `detectors` whose scores are silenced when a point recurs
    /// (default: all). The filter itself does not read it; the chain does.
    #[serde(default)]
    pub silences: Silences,
}

fn default_period() -> Positive {
    Positive::new(24.0).expect("valid")
}
fn default_periods() -> Count {
    Count::new(2).expect("valid")
}
fn default_margin() -> u32 {
    6
}
fn default_window() -> Count {
    Count::new(12).expect("valid")
}
fn default_ratio() -> Positive {
    Positive::new(0.5).expect("valid")
}

impl Default for RecurrenceParams {
    fn default() -> Self {
        Self {
            period_hours: default_period(),
            periods: default_periods(),
            margin: default_margin(),
            window: default_window(),
            ratio: default_ratio(),
            silences: Silences::default(),
        }
    }
}

impl RecurrenceParams {
    /// Checks the bounds that serde cannot.
    pub fn validate(&self) -> Result<(), ParamError> {
        earlier::check(self.periods, self.window, self.margin)
    }
}

/// Which score positions a recurring point silences: a set of positions below 32, written as a
/// list (`[0, 2]`); all positions by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u32>", into = "Vec<u32>")]
pub struct Silences(u32);

impl Silences {
    /// Every position.
    pub const ALL: Silences = Silences(u32::MAX);

    /// Whether position `i` is silenced.
    #[inline]
    pub fn contains(self, i: usize) -> bool {
        i < 32 && self.0 & (1 << i) != 0
    }

    /// Every position this set does not name.
    pub fn complement(self) -> Silences {
        Silences(!self.0)
    }

    /// The highest position named, if the set is not [`Silences::ALL`].
    pub fn highest(self) -> Option<usize> {
        (self != Self::ALL && self.0 != 0).then(|| 31 - self.0.leading_zeros() as usize)
    }
}

impl Default for Silences {
    fn default() -> Self {
        Self::ALL
    }
}

impl TryFrom<Vec<u32>> for Silences {
    type Error = ParamError;
    fn try_from(positions: Vec<u32>) -> Result<Self, ParamError> {
        let mut bits = 0u32;
        for p in positions {
            if p >= 32 {
                return Err(ParamError::new("silences", p, "positions in [0, 31]"));
            }
            bits |= 1 << p;
        }
        Ok(Self(bits))
    }
}

impl From<Silences> for Vec<u32> {
    fn from(s: Silences) -> Vec<u32> {
        (0..32).filter(|&i| s.0 & (1 << i) != 0).collect()
    }
}

/// A series' recent points, oldest first, as (up to) two contiguous runs, the way a ring buffer
/// holds them: `ts[0] ++ ts[1]` are the timestamps (non-decreasing), `val[0] ++ val[1]` the
/// values.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// Timestamps (ms), oldest first, split where the ring wraps.
    pub ts: [&'a [i64]; 2],
    /// Values, split at the same place.
    pub val: [&'a [f64]; 2],
}

impl History<'_> {
    fn len(&self) -> usize {
        self.ts[0].len() + self.ts[1].len()
    }

    #[inline]
    fn ts_at(&self, k: usize) -> i64 {
        let n0 = self.ts[0].len();
        if k < n0 {
            self.ts[0][k]
        } else {
            self.ts[1][k - n0]
        }
    }

    #[inline]
    fn val_at(&self, k: usize) -> f64 {
        let n0 = self.val[0].len();
        if k < n0 {
            self.val[0][k]
        } else {
            self.val[1][k - n0]
        }
    }
}

/// The median of `v` (the upper of the two middle values for an even length): the value with at
/// most `len / 2` values below it and more than `len / 2` at or below it, found by counting
/// (branch-free inner loops over a short window; no sort, and `v` is left as it was).
pub(crate) fn upper_median(v: &[f64]) -> f64 {
    let m = v.len() / 2;
    for &candidate in v {
        let (mut below, mut at_or_below) = (0usize, 0usize);
        for &y in v {
            below += usize::from(y < candidate);
            at_or_below += usize::from(y <= candidate);
        }
        if below <= m && m < at_or_below {
            return candidate;
        }
    }
    f64::NAN
}

/// `|x − median of the last window points of history|` (`None` while the history is shorter;
/// `window` at most [`MAX_RECURRENCE_WINDOW`]).
pub(crate) fn deviation(history: &History<'_>, window: Count, x: f64) -> Option<f64> {
    let n = history.len();
    let w = window.get() as usize;
    if n < w {
        return None;
    }
    let mut recent = [0.0f64; MAX_RECURRENCE_WINDOW as usize];
    for (k, slot) in recent[..w].iter_mut().enumerate() {
        *slot = history.val_at(n - w + k);
    }
    Some((x - upper_median(&recent[..w])).abs())
}

/// The deviation of `x` (at `ts`) from the median of the recent points of `history` that
/// `reach` names: the last n, or those of the last span (at most the last
/// [`MAX_RECURRENCE_WINDOW`]); `None` when there are not n of them, or none in the span.
pub(crate) fn deviation_within(
    history: &History<'_>,
    reach: Reach,
    ts: i64,
    x: f64,
) -> Option<f64> {
    match reach {
        Reach::Points(n) => deviation(history, Count::new(n).ok()?, x),
        Reach::Span(span) => {
            let n = history.len();
            let from = ts.saturating_sub(span.ms());
            let mut recent = [0.0f64; MAX_RECURRENCE_WINDOW as usize];
            let mut w = 0;
            for k in (0..n).rev().take(recent.len()) {
                if history.ts_at(k) < from {
                    break;
                }
                recent[w] = history.val_at(k);
                w += 1;
            }
            (w > 0).then(|| (x - upper_median(&recent[..w])).abs())
        }
    }
}

/// Whether the point `x` at `ts` recurs: for each of the last `periods` periods, its distance to
/// the nearest value within `margin` points of that time is below `ratio` times its deviation
/// from the median of the last `window` points of `history` (the points before it). See the
/// module documentation.
pub fn recurs(p: &RecurrenceParams, history: &History<'_>, ts: i64, x: f64) -> bool {
    let Some(deviation) = deviation(history, p.window, x) else {
        return false;
    };
    if deviation.is_nan() || deviation <= 0.0 {
        return false;
    }
    let period = earlier::period_ms(p.period_hours);
    let limit = p.ratio.get() * deviation;
    (1..=i64::from(p.periods.get())).all(|k| {
        closest_near(history, ts.saturating_sub(k * period), period, p.margin, x)
            .is_some_and(|closest| closest < limit)
    })
}

/// The smallest distance from `x` to the values within `margin` points of the point nearest to
/// `target`; `None` when the history starts after `target` or its nearest point is more than
/// 1/24 of the period away from it.
fn closest_near(
    history: &History<'_>,
    target: i64,
    period: i64,
    margin: u32,
    x: f64,
) -> Option<f64> {
    let n = history.len();
    if history.ts_at(0) > target {
        return None;
    }
    // First point at or after the target: a binary search within the run that holds it.
    let [older, newer] = history.ts;
    let lo = if newer.first().is_some_and(|&t| t < target) {
        older.len() + newer.partition_point(|&t| t < target)
    } else {
        older.partition_point(|&t| t < target)
    };
    let nearest = earlier::nearest(n, lo, target, period, |k| history.ts_at(k))?;
    let m = margin as usize;
    let first = nearest.saturating_sub(m);
    let last = (nearest + m).min(n - 1);
    Some(
        (first..=last)
            .map(|k| (x - history.val_at(k)).abs())
            .fold(f64::INFINITY, f64::min),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MIN;

    /// Five-minute points for three days: flat at 1 with a spike to 10 at 03:00 every day.
    fn daily_spike() -> (Vec<i64>, Vec<f64>) {
        let ts: Vec<i64> = (0..864).map(|i| i * 5 * MIN).collect();
        let val = ts
            .iter()
            .map(|t| if t % DAY == 3 * 60 * MIN { 10.0 } else { 1.0 })
            .collect();
        (ts, val)
    }

    fn whole<'a>(ts: &'a [i64], val: &'a [f64]) -> History<'a> {
        History {
            ts: [ts, &[]],
            val: [val, &[]],
        }
    }

    #[test]
    fn a_spike_seen_at_the_same_time_yesterday_recurs_and_a_new_one_does_not() {
        let (ts, val) = daily_spike();
        let p = RecurrenceParams::default();
        let today = (2 * DAY + 3 * 60 * MIN) / (5 * MIN);
        let i = today as usize;
        let h = whole(&ts[..i], &val[..i]);
        assert!(recurs(&p, &h, ts[i], 10.0));
        // Twice as high: 10 away from the earlier 10s, deviation 19 → 10 > 0.5 × 19.
        assert!(!recurs(&p, &h, ts[i], 20.0));
        // Same spike at 15:00, where yesterday was flat.
        let j = (2 * DAY + 15 * 60 * MIN) / (5 * MIN);
        let h = whole(&ts[..j as usize], &val[..j as usize]);
        assert!(!recurs(&p, &h, ts[j as usize], 10.0));
    }

    #[test]
    fn an_anomaly_yesterday_alone_does_not_excuse_the_same_one_today() {
        let (ts, mut val) = daily_spike();
        // No spike on the first day: only yesterday had one.
        val[36] = 1.0;
        let i = ((2 * DAY + 3 * 60 * MIN) / (5 * MIN)) as usize;
        let h = whole(&ts[..i], &val[..i]);
        assert!(!recurs(&RecurrenceParams::default(), &h, ts[i], 10.0));
        let one = RecurrenceParams {
            periods: Count::new(1).unwrap(),
            ..RecurrenceParams::default()
        };
        assert!(recurs(&one, &h, ts[i], 10.0));
    }

    #[test]
    fn the_margin_finds_yesterdays_spike_a_few_points_off() {
        let (ts, mut val) = daily_spike();
        let i = ((2 * DAY + 3 * 60 * MIN) / (5 * MIN)) as usize;
        // Today's spike comes 20 minutes later than yesterday's.
        val[i] = 1.0;
        let late = i + 4;
        let h = whole(&ts[..late], &val[..late]);
        let mut p = RecurrenceParams::default();
        assert!(recurs(&p, &h, ts[late], 10.0));
        p.margin = 3;
        assert!(!recurs(&p, &h, ts[late], 10.0));
    }

    #[test]
    fn too_short_a_history_a_gap_or_no_deviation_never_recurs() {
        let (ts, val) = daily_spike();
        let p = RecurrenceParams::default();
        let i = ((2 * DAY + 3 * 60 * MIN) / (5 * MIN)) as usize;
        // The history starts after the point one period back.
        let h = whole(&ts[40..i], &val[40..i]);
        assert!(!recurs(&p, &h, ts[i], 10.0));
        // No deviation from the recent median.
        let h = whole(&ts[..i], &val[..i]);
        assert!(!recurs(&p, &h, ts[i], 1.0));
        // A gap: nothing recorded within an hour of one day back.
        let (gts, gval): (Vec<i64>, Vec<f64>) = ts[..i]
            .iter()
            .zip(&val[..i])
            .filter(|(t, _)| (**t - 3 * 60 * MIN).abs() > 90 * MIN)
            .map(|(t, v)| (*t, *v))
            .unzip();
        assert!(!recurs(&p, &whole(&gts, &gval), ts[i], 10.0));
        // Fewer points than the median window.
        assert!(!recurs(&p, &whole(&ts[..3], &val[..3]), ts[3], 10.0));
    }

    #[test]
    fn a_wrapped_ring_gives_the_same_answers_as_one_run() {
        let (ts, val) = daily_spike();
        let p = RecurrenceParams::default();
        let i = ((2 * DAY + 3 * 60 * MIN) / (5 * MIN)) as usize;
        for split in [1, 100, 290, 600, i - 1] {
            let h = History {
                ts: [&ts[..split], &ts[split..i]],
                val: [&val[..split], &val[split..i]],
            };
            for x in [1.0, 5.0, 10.0, 20.0] {
                assert_eq!(
                    recurs(&p, &h, ts[i], x),
                    recurs(&p, &whole(&ts[..i], &val[..i]), ts[i], x),
                    "split {split}, x {x}"
                );
            }
        }
    }

    #[test]
    fn upper_median_is_the_middle_of_the_sorted_values() {
        assert_eq!(upper_median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(upper_median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(upper_median(&[5.0]), 5.0);
        assert_eq!(upper_median(&[2.0, 2.0, 1.0, 2.0]), 2.0);
        assert_eq!(upper_median(&[1.0, 1.0, 3.0, 3.0]), 3.0);
        let v: Vec<f64> = (0..12).map(|i| f64::from((i * 7) % 12)).collect();
        assert_eq!(upper_median(&v), 6.0);
    }

    #[test]
    fn silences_parse_from_positions_and_default_to_all() {
        let p: RecurrenceParams = serde_json::from_str(r#"{"silences": [0, 2]}"#).unwrap();
        assert!(p.silences.contains(0) && !p.silences.contains(1) && p.silences.contains(2));
        assert_eq!(p.silences.highest(), Some(2));
        let p: RecurrenceParams = serde_json::from_str("{}").unwrap();
        assert!((0..32).all(|i| p.silences.contains(i)));
        assert_eq!(p.silences.highest(), None);
        assert!(serde_json::from_str::<RecurrenceParams>(r#"{"silences": [32]}"#).is_err());
        assert!(serde_json::from_str::<RecurrenceParams>(r#"{"ratios": 1}"#).is_err());
        let bad = RecurrenceParams {
            margin: 65,
            ..RecurrenceParams::default()
        };
        assert_eq!(bad.validate().unwrap_err().name, "margin");
        let bad = RecurrenceParams {
            periods: Count::new(8).unwrap(),
            ..RecurrenceParams::default()
        };
        assert_eq!(bad.validate().unwrap_err().name, "periods");
    }
}
