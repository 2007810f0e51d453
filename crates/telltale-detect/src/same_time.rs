//! Same-time shape novelty: is the newest short shape unlike every shape the series showed at
//! the same time of day on the previous days?
//!
//! The newest `window` values form a shape. For each of the last `periods` periods
//! (`period_hours`, a day by default) the detector finds the point nearest to the same time and
//! compares the shape with the windows ending within `margin` points of it; the nonconformity is
//! the smallest squared distance. The score is its conformal rank among the last `calibration`
//! nonconformities (the share strictly below it), so it needs no scale: a shape the series has
//! shown at this time on a previous day ranks low, a shape it never showed then ranks near 1.
//! A point scores only once the history reaches back `periods` periods; a day whose nearest
//! point is more than 1/24 of the period away (a gap) is skipped.
//!
//! Where a seasonal profile compares a level with the average of the same hour, this compares a
//! shape with each earlier day's own shape at that time, so a series with a habit that varies
//! from day to day is judged against what it really did. On NAB it replaces the seasonal
//! profile in the committed configuration (README, "Benchmarking").
//!
//! State per series: the points of the last `periods` periods plus a few (timestamps and values;
//! trimmed when more than half of the vector is older than that) and `calibration`
//! nonconformities. Cost per point: `periods` binary searches by time and `periods × (2 ×
//! margin + 1)` window distances.

use serde::{Deserialize, Serialize};

use crate::earlier;
use crate::knn::{MAX_SET, conformal_rank, remember};
use crate::params::{Count, Positive};
use crate::{ParamError, Scored};

/// Parameters of the same-time shape detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SameTimeParams {
    /// Length of the period in hours (default 24).
    #[serde(default = "default_period")]
    pub period_hours: Positive,
    /// Past periods compared with (default 2; at most 7).
    #[serde(default = "default_periods")]
    pub periods: Count,
    /// Values per shape (default 4; at most 64).
    #[serde(default = "default_window")]
    pub window: Count,
    /// Points either side of the same time whose windows are compared (default 3; 0 to 64).
    #[serde(default = "default_margin")]
    pub margin: u32,
    /// Past nonconformities the new one is ranked among (default 1,500).
    #[serde(default = "default_calibration")]
    pub calibration: Count,
}

fn default_period() -> Positive {
    Positive::new(24.0).expect("valid")
}
fn default_periods() -> Count {
    Count::new(2).expect("valid")
}
fn default_window() -> Count {
    Count::new(4).expect("valid")
}
fn default_margin() -> u32 {
    3
}
fn default_calibration() -> Count {
    Count::new(1500).expect("valid")
}

impl Default for SameTimeParams {
    fn default() -> Self {
        Self {
            period_hours: default_period(),
            periods: default_periods(),
            window: default_window(),
            margin: default_margin(),
            calibration: default_calibration(),
        }
    }
}

impl SameTimeParams {
    /// Checks the bounds that serde cannot.
    pub fn validate(&self) -> Result<(), ParamError> {
        earlier::check(self.periods, self.window, self.margin)?;
        if self.calibration.get() > MAX_SET {
            return Err(ParamError::new(
                "calibration",
                self.calibration.get(),
                "an integer in [1, 100000]",
            ));
        }
        Ok(())
    }
}

/// State of the same-time detector for one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SameTimeState {
    /// Timestamps (ms) of the recent points, oldest first.
    pub ts: Vec<i64>,
    /// Their values.
    pub val: Vec<f64>,
    /// Recent nonconformities, a ring of `calibration` values.
    pub alphas: Vec<f64>,
    /// Next position in `alphas` once it is full.
    pub next: u32,
}

/// The nonconformity of the newest point (the last of `ts`/`val`): the smallest squared
/// distance from its window to the windows ending within `margin` points of the same time on
/// each of the last `periods` periods; `None` before the history reaches back that far or when
/// no earlier window qualifies.
fn nonconformity(p: &SameTimeParams, ts: &[i64], val: &[f64]) -> Option<f64> {
    let n = ts.len();
    let w = p.window.get() as usize;
    if n < w + 1 {
        return None;
    }
    let i = n - 1;
    let now = ts[i];
    let cur = &val[n - w..];
    let period = earlier::period_ms(p.period_hours);
    let (m, before) = (p.margin as usize, &ts[..i]);
    let mut best = f64::INFINITY;
    let mut found = false;
    for k in 1..=i64::from(p.periods.get()) {
        let target = now.saturating_sub(k * period);
        if ts[0] > target {
            return None;
        }
        let lo = before.partition_point(|&t| t < target);
        let Some(nearest) = earlier::nearest(i, lo, target, period, |k| ts[k]) else {
            continue;
        };
        for end in nearest.saturating_sub(m).max(w - 1)..=(nearest + m).min(i - 1) {
            found = true;
            let other = &val[end + 1 - w..=end];
            let mut d = 0.0;
            for (a, b) in cur.iter().zip(other) {
                let e = a - b;
                d += e * e;
            }
            best = best.min(d);
        }
    }
    found.then_some(best)
}

/// Drops the points no later nonconformity can reach, once they are more than half the history.
fn trim(p: &SameTimeParams, s: &mut SameTimeState) {
    let Some(&now) = s.ts.last() else {
        return;
    };
    let period = earlier::period_ms(p.period_hours);
    let horizon = now
        .saturating_sub(i64::from(p.periods.get()) * period)
        .saturating_sub(earlier::tolerance(period));
    let keep = (p.margin + p.window.get()) as usize;
    let first = s.ts.partition_point(|&t| t < horizon);
    if first > keep && first - keep > s.ts.len() / 2 {
        s.ts.drain(..first - keep);
        s.val.drain(..first - keep);
    }
}

fn step(p: &SameTimeParams, s: &mut SameTimeState, ts: i64, x: f64) -> Scored {
    s.ts.push(ts);
    s.val.push(x);
    let out = match nonconformity(p, &s.ts, &s.val) {
        Some(alpha) => {
            let cal = p.calibration.get() as usize;
            let score = conformal_rank(&s.alphas, cal, alpha);
            remember(&mut s.alphas, &mut s.next, cal, alpha);
            score
        }
        None => 0.0,
    };
    trim(p, s);
    Scored {
        score: out,
        expected: f64::NAN,
    }
}

/// What [`step`] would score, leaving the state as it was (the point is appended for the
/// distances and taken off again).
fn score_only(p: &SameTimeParams, s: &mut SameTimeState, ts: i64, x: f64) -> Scored {
    s.ts.push(ts);
    s.val.push(x);
    let alpha = nonconformity(p, &s.ts, &s.val);
    s.ts.pop();
    s.val.pop();
    Scored {
        score: alpha.map_or(0.0, |a| {
            conformal_rank(&s.alphas, p.calibration.get() as usize, a)
        }),
        expected: f64::NAN,
    }
}

/// The same-time detector for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SameTime {
    /// Parameters.
    pub params: SameTimeParams,
    /// State.
    pub state: SameTimeState,
}

impl SameTime {
    /// A detector with no history.
    pub fn new(params: SameTimeParams) -> Result<Self, ParamError> {
        params.validate()?;
        Ok(Self {
            params,
            state: SameTimeState::default(),
        })
    }

    /// Scores then learns the point `x` observed at `ts` (ms since the epoch).
    pub fn step(&mut self, ts: i64, x: f64) -> Scored {
        step(&self.params, &mut self.state, ts, x)
    }
}

/// Same-time state for many series.
#[derive(Debug, Clone, PartialEq)]
pub struct SameTimeBank {
    params: SameTimeParams,
    states: Vec<SameTimeState>,
}

impl SameTimeBank {
    /// An empty bank.
    pub fn new(params: SameTimeParams) -> Self {
        Self {
            params,
            states: Vec::new(),
        }
    }
    /// Adds a series; returns its slot.
    pub fn add_series(&mut self) -> usize {
        self.states.push(SameTimeState::default());
        self.states.len() - 1
    }
    /// Scores then learns `x` at `ts` for the series in `slot`.
    pub fn update(&mut self, slot: usize, ts: i64, x: f64) -> Scored {
        step(&self.params, &mut self.states[slot], ts, x)
    }
    /// Scores `x` at `ts` without learning it (no copy of the state).
    pub fn score_only(&mut self, slot: usize, ts: i64, x: f64) -> Scored {
        score_only(&self.params, &mut self.states[slot], ts, x)
    }
    /// Bytes of state per series (vectors at their typical size: two periods of 5-minute
    /// points, up to twice that before a trim, and the calibration set).
    pub fn bytes_per_series(&self) -> usize {
        let points = 2 * (self.params.periods.get() as usize * 288 + 16);
        size_of::<SameTimeState>()
            + points * (size_of::<i64>() + size_of::<f64>())
            + self.params.calibration.get() as usize * size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MIN;

    /// The plain definition: every point ever seen kept, the same search and ranking.
    fn reference(p: &SameTimeParams, ts: &[i64], val: &[f64]) -> Vec<f64> {
        let (mut alphas, mut next) = (Vec::new(), 0u32);
        (0..ts.len())
            .map(|i| match nonconformity(p, &ts[..=i], &val[..=i]) {
                Some(a) => {
                    let cal = p.calibration.get() as usize;
                    let r = conformal_rank(&alphas, cal, a);
                    remember(&mut alphas, &mut next, cal, a);
                    r
                }
                None => 0.0,
            })
            .collect()
    }

    /// A daily curve at 5-minute sampling with small noise, and gaps.
    fn daily(days: i64) -> (Vec<i64>, Vec<f64>) {
        (0..days * 288)
            .filter(|i| i % 997 > 20)
            .map(|i| {
                let t = i * 5 * MIN + (i * 7919 % 60) * 1000;
                let phase = (t % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
                (t, 10.0 + 5.0 * phase.sin() + ((i * 31) % 7) as f64 * 0.05)
            })
            .unzip()
    }

    #[test]
    fn trimming_the_history_gives_the_scores_of_the_whole_history() {
        let (ts, val) = daily(9);
        let p = SameTimeParams {
            calibration: Count::new(300).unwrap(),
            ..SameTimeParams::default()
        };
        let mut d = SameTime::new(p).unwrap();
        let got: Vec<f64> = ts
            .iter()
            .zip(&val)
            .map(|(t, x)| d.step(*t, *x).score)
            .collect();
        assert_eq!(got, reference(&p, &ts, &val));
        assert!(
            d.state.ts.len() < 2 * 2 * 300,
            "trimmed: {}",
            d.state.ts.len()
        );
        assert!(got.iter().any(|s| *s > 0.0));
    }

    #[test]
    fn a_shape_never_seen_at_that_time_ranks_at_the_top_and_the_usual_one_below() {
        let (ts, val) = daily(6);
        let p = SameTimeParams::default();
        let mut d = SameTime::new(p).unwrap();
        let last = ts.len() - 1;
        for (t, x) in ts[..last].iter().zip(&val) {
            d.step(*t, *x);
        }
        let (t, x) = (ts[last], val[last]);
        let mut probe = d.clone();
        assert_eq!(
            probe.step(t, x + 8.0).score,
            1.0,
            "a jump never seen at this time"
        );
        // A usual shape ranks like any other (conformal ranks of usual points are uniform),
        // never above the whole calibration set.
        let mut probe = d.clone();
        assert!(probe.step(t, x).score < 1.0, "the usual value");
        // Before two days of history there is no score.
        let mut young = SameTime::new(p).unwrap();
        let day1: Vec<f64> = ts
            .iter()
            .zip(&val)
            .take_while(|(t, _)| **t < 2 * DAY - 5 * MIN)
            .map(|(t, x)| young.step(*t, *x).score)
            .collect();
        assert!(day1.iter().all(|s| *s == 0.0));
    }

    #[test]
    fn score_only_gives_the_update_score_and_leaves_the_state_as_it_was() {
        let (ts, val) = daily(4);
        let mut b = SameTimeBank::new(SameTimeParams::default());
        let s = b.add_series();
        for (k, (t, x)) in ts.iter().zip(&val).enumerate() {
            let before = b.states[s].clone();
            let probe = b.score_only(s, *t, x + (k % 5) as f64);
            assert_eq!(b.states[s], before);
            let mut copy = b.clone();
            assert_eq!(probe.score, copy.update(s, *t, x + (k % 5) as f64).score);
            b.update(s, *t, *x);
        }
    }

    #[test]
    fn parameters_out_of_range_are_named() {
        for (p, name) in [
            (
                SameTimeParams {
                    periods: Count::new(8).unwrap(),
                    ..SameTimeParams::default()
                },
                "periods",
            ),
            (
                SameTimeParams {
                    window: Count::new(65).unwrap(),
                    ..SameTimeParams::default()
                },
                "window",
            ),
            (
                SameTimeParams {
                    margin: 65,
                    ..SameTimeParams::default()
                },
                "margin",
            ),
        ] {
            assert_eq!(SameTime::new(p).unwrap_err().name, name);
        }
        assert!(serde_json::from_str::<SameTimeParams>(r#"{"windows": 3}"#).is_err());
    }
}
