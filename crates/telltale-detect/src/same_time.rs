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
//!
//! **Buckets of time** (`bucket = "15m"`): the history is kept as the means of the points in
//! each bucket of event time over the last `periods` periods (a ring of `f32`, a bucket with no
//! point marked empty), and `window` and `margin` count buckets: the newest shape is the last
//! `window` buckets, the current one still filling, compared with the shapes ending within
//! `margin` buckets of the same time on each earlier period (empty buckets left out of a
//! distance; a shape with fewer than half its buckets present is not compared). The memory is
//! then fixed by the period and the bucket, whatever the sampling rate: two days of 15-minute
//! buckets are 192 values, 768 bytes; with `calibration` given as a span as well (a record,
//! see [`crate::record`]) the whole state is under a kilobyte.

use serde::{Deserialize, Serialize};

use crate::earlier;
use crate::knn::Calibration;
use crate::params::{Count, Positive, Ratio, Span};
use crate::record::Record;
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
    /// What the new nonconformity is ranked against (default 1,500): a number of past
    /// nonconformities, or a span such as `"17d"` (its record; see [`Calibration`]).
    #[serde(default = "default_calibration")]
    pub calibration: Calibration,
    /// Buckets of event time (a span such as `"15m"`; default none: raw points). With it the
    /// history is kept as bucket means and `window` and `margin` count buckets.
    #[serde(default)]
    pub bucket: Option<Span>,
    /// With `calibration` given as a span: how many times over a nonconformity must beat the
    /// span's record to score 1 (default 1.25).
    #[serde(default = "crate::knn::default_exceed")]
    pub exceed: Ratio,
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
fn default_calibration() -> Calibration {
    Calibration::Set(Count::new(1500).expect("valid"))
}

impl Default for SameTimeParams {
    fn default() -> Self {
        Self {
            period_hours: default_period(),
            periods: default_periods(),
            window: default_window(),
            margin: default_margin(),
            calibration: default_calibration(),
            bucket: None,
            exceed: crate::knn::default_exceed(),
        }
    }
}

impl SameTimeParams {
    /// Checks the bounds that serde cannot.
    pub fn validate(&self) -> Result<(), ParamError> {
        earlier::check(self.periods, self.window, self.margin)?;
        if let Some(b) = self.bucket {
            let per = self.buckets_per_period(b);
            if !(2..=4096).contains(&per) || per < i64::from(self.window.get() + self.margin) {
                return Err(ParamError::new(
                    "bucket",
                    String::from(b),
                    "a span that divides the period into 2 to 4096 buckets, at least window + margin",
                ));
            }
        }
        Ok(())
    }

    /// Buckets in a period.
    fn buckets_per_period(&self, bucket: Span) -> i64 {
        (earlier::period_ms(self.period_hours) as f64 / bucket.ms() as f64).round() as i64
    }

    /// Buckets the ring holds: every bucket a comparison can reach.
    fn ring_len(&self, bucket: Span) -> usize {
        (i64::from(self.periods.get()) * self.buckets_per_period(bucket)
            + i64::from(self.margin + self.window.get())) as usize
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
    pub alphas: Vec<f32>,
    /// Next position in `alphas` once it is full.
    pub next: u32,
    /// The record of the calibration span (`calibration` given as a span).
    #[serde(default)]
    pub record: Record,
    /// Bucket means as offsets from `anchor`, at `bucket number mod len` (`bucket`; NaN: no
    /// point in that bucket).
    #[serde(default)]
    pub ring: Vec<f32>,
    /// The first value (`bucket`).
    #[serde(default)]
    pub anchor: f64,
    /// The bucket being filled (`bucket`).
    #[serde(default)]
    pub current: i64,
    /// Sum and count of its points.
    #[serde(default)]
    pub sum: f64,
    /// Points in the current bucket.
    #[serde(default)]
    pub count: u32,
    /// The series' first bucket.
    #[serde(default)]
    pub first: i64,
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
    if let Some(bucket) = p.bucket {
        return bucket_step(p, bucket, s, ts, x);
    }
    s.ts.push(ts);
    s.val.push(x);
    let out = match nonconformity(p, &s.ts, &s.val) {
        Some(alpha) => {
            let alpha = alpha as f32;
            let score = p
                .calibration
                .score(&s.alphas, &s.record, ts, alpha, p.exceed);
            p.calibration
                .remember(&mut s.alphas, &mut s.next, &mut s.record, ts, alpha);
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
    if let Some(bucket) = p.bucket {
        let score = bucket_alpha(p, bucket, s, ts, x).map_or(0.0, |a| {
            p.calibration.score(&s.alphas, &s.record, ts, a, p.exceed)
        });
        return Scored {
            score,
            expected: f64::NAN,
        };
    }
    s.ts.push(ts);
    s.val.push(x);
    let alpha = nonconformity(p, &s.ts, &s.val);
    s.ts.pop();
    s.val.pop();
    Scored {
        score: alpha.map_or(0.0, |a| {
            p.calibration
                .score(&s.alphas, &s.record, ts, a as f32, p.exceed)
        }),
        expected: f64::NAN,
    }
}

/// The buckets as they would be with the point `x` in bucket `b` added: the ring, the bucket
/// being closed (if `b` is past it) and the buckets skipped since (empty), and the newest mean.
struct Buckets<'a> {
    ring: &'a [f32],
    closed: Option<(i64, f32)>,
    /// Buckets strictly between these two are empty (skipped over).
    skipped: (i64, i64),
    newest: (i64, f32),
}

impl Buckets<'_> {
    fn at(&self, q: i64) -> f32 {
        if q == self.newest.0 {
            self.newest.1
        } else if self.closed.is_some_and(|(c, _)| c == q) {
            self.closed.map_or(f32::NAN, |(_, v)| v)
        } else if q > self.skipped.0 && q < self.skipped.1 {
            f32::NAN
        } else {
            self.ring[q.rem_euclid(self.ring.len() as i64) as usize]
        }
    }
}

/// The buckets with `x` at `ts` added, and its bucket number (`None` for the first point).
fn buckets<'a>(bucket: Span, s: &'a SameTimeState, ts: i64, x: f64) -> Option<(Buckets<'a>, i64)> {
    if s.ring.is_empty() {
        return None;
    }
    let b = ts.div_euclid(bucket.ms()).max(s.current);
    let mean = |sum: f64, n: u32| (sum / f64::from(n) - s.anchor) as f32;
    let view = if b > s.current {
        Buckets {
            ring: &s.ring,
            closed: (s.count > 0).then(|| (s.current, mean(s.sum, s.count))),
            skipped: (s.current, b),
            newest: (b, mean(x, 1)),
        }
    } else {
        Buckets {
            ring: &s.ring,
            closed: None,
            skipped: (0, 0),
            newest: (b, mean(s.sum + x, s.count + 1)),
        }
    };
    Some((view, b))
}

/// The nonconformity of the newest shape with `x` at `ts` added: the smallest mean squared
/// distance to the shapes ending within `margin` buckets of the same time on each of the last
/// `periods` periods; `None` until the series is that old or when no shape qualifies.
fn bucket_alpha(
    p: &SameTimeParams,
    bucket: Span,
    s: &SameTimeState,
    ts: i64,
    x: f64,
) -> Option<f32> {
    let (view, b) = buckets(bucket, s, ts, x)?;
    let per = p.buckets_per_period(bucket);
    let (w, m) = (i64::from(p.window.get()), i64::from(p.margin));
    if b - s.first < i64::from(p.periods.get()) * per + m {
        return None;
    }
    let mut best = f32::INFINITY;
    for k in 1..=i64::from(p.periods.get()) {
        for j in -m..=m {
            let end = b - k * per + j;
            let (mut d, mut pairs) = (0.0f32, 0);
            for i in 0..w {
                let (a, o) = (view.at(b - w + 1 + i), view.at(end - w + 1 + i));
                if a.is_finite() && o.is_finite() {
                    d += (a - o) * (a - o);
                    pairs += 1;
                }
            }
            if 2 * pairs >= w {
                best = best.min(d / pairs as f32);
            }
        }
    }
    best.is_finite().then_some(best)
}

fn bucket_step(p: &SameTimeParams, bucket: Span, s: &mut SameTimeState, ts: i64, x: f64) -> Scored {
    let alpha = bucket_alpha(p, bucket, s, ts, x);
    let score = alpha.map_or(0.0, |a| {
        p.calibration.score(&s.alphas, &s.record, ts, a, p.exceed)
    });
    if let Some(a) = alpha {
        p.calibration
            .remember(&mut s.alphas, &mut s.next, &mut s.record, ts, a);
    }
    // Learn the point.
    let b = ts.div_euclid(bucket.ms());
    if s.ring.is_empty() {
        s.ring = vec![f32::NAN; p.ring_len(bucket)];
        (s.anchor, s.current, s.first, s.sum, s.count) = (x, b, b, 0.0, 0);
    }
    if b > s.current {
        let n = s.ring.len() as i64;
        if s.count > 0 {
            let mean = (s.sum / f64::from(s.count) - s.anchor) as f32;
            s.ring[s.current.rem_euclid(n) as usize] = mean;
        }
        for q in (s.current + 1..b).take(s.ring.len()) {
            s.ring[q.rem_euclid(n) as usize] = f32::NAN;
        }
        (s.current, s.sum, s.count) = (b, 0.0, 0);
    }
    s.sum += x;
    s.count += 1;
    Scored {
        score,
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
    /// A copy of one series' state.
    pub fn snapshot(&self, slot: usize) -> SameTimeState {
        self.states[slot].clone()
    }
    /// Overwrites one series' state.
    pub fn restore(&mut self, slot: usize, state: &SameTimeState) {
        self.states[slot].clone_from(state);
    }
    /// Scores then learns `x` at `ts` for the series in `slot`.
    pub fn update(&mut self, slot: usize, ts: i64, x: f64) -> Scored {
        step(&self.params, &mut self.states[slot], ts, x)
    }
    /// Scores `x` at `ts` without learning it (no copy of the state).
    pub fn score_only(&mut self, slot: usize, ts: i64, x: f64) -> Scored {
        score_only(&self.params, &mut self.states[slot], ts, x)
    }
    /// Bytes of state per series (with raw points, the vectors at their typical size: two
    /// periods of 5-minute points, up to twice that before a trim; with buckets, the ring), and
    /// the calibration set.
    pub fn bytes_per_series(&self) -> usize {
        let history = match self.params.bucket {
            Some(b) => self.params.ring_len(b) * size_of::<f32>(),
            None => {
                2 * (self.params.periods.get() as usize * 288 + 16)
                    * (size_of::<i64>() + size_of::<f64>())
            }
        };
        size_of::<SameTimeState>() + history + self.params.calibration.kept() * size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MIN;

    /// The plain definition: every point ever seen kept, the same search and ranking.
    fn reference(p: &SameTimeParams, ts: &[i64], val: &[f64]) -> Vec<f64> {
        let (mut alphas, mut next, mut record) = (Vec::new(), 0u32, Record::default());
        (0..ts.len())
            .map(|i| match nonconformity(p, &ts[..=i], &val[..=i]) {
                Some(a) => {
                    let a = a as f32;
                    let r = p.calibration.score(&alphas, &record, ts[i], a, p.exceed);
                    p.calibration
                        .remember(&mut alphas, &mut next, &mut record, ts[i], a);
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
            calibration: Calibration::Set(Count::new(300).unwrap()),
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

    /// Bucket-mode parameters: 15-minute buckets, shapes of 4, margin 1, a 17-day record.
    fn buckets() -> SameTimeParams {
        SameTimeParams {
            window: Count::new(4).unwrap(),
            margin: 1,
            calibration: Calibration::Span(Span::parse("17d").unwrap()),
            bucket: Some(Span::parse("15m").unwrap()),
            ..SameTimeParams::default()
        }
    }

    /// A daily curve sampled every `step`, with an hour-long bump on day 5 at 10:00.
    fn bumped(step: i64) -> (Vec<i64>, Vec<f64>, std::ops::Range<i64>) {
        let bump = 5 * DAY + 10 * 60 * MIN..5 * DAY + 11 * 60 * MIN;
        let (ts, val) = (0..7 * DAY / step)
            .map(|i| {
                let t = i * step;
                let phase = (t % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
                let noise = ((i * 7919) % 13) as f64 * 0.02;
                let x =
                    10.0 + 5.0 * phase.sin() + noise + if bump.contains(&t) { 3.0 } else { 0.0 };
                (t, x)
            })
            .unzip();
        (ts, val, bump)
    }

    #[test]
    fn in_buckets_an_hour_unlike_the_same_hour_before_is_found_at_any_sampling_rate() {
        for step in [MIN, 5 * MIN, 15 * MIN] {
            let (ts, val, bump) = bumped(step);
            let mut d = SameTime::new(buckets()).unwrap();
            let mut top_in = 0.0f64;
            let mut top_out = 0.0f64;
            for (t, x) in ts.iter().zip(&val) {
                let s = d.step(*t, *x).score;
                if bump.start <= *t && *t < bump.end + 60 * MIN {
                    top_in = top_in.max(s);
                } else if *t >= 4 * DAY {
                    top_out = top_out.max(s);
                }
            }
            assert_eq!(top_in, 1.0, "step {step}: the bump beats the record");
            assert!(top_out < 1.0, "step {step}: {top_out} outside the bump");
            // The memory is the ring of two days of buckets, whatever the rate.
            assert_eq!(d.state.ring.len(), 2 * 96 + 1 + 4);
            assert!(d.state.ts.is_empty() && d.state.alphas.is_empty());
        }
    }

    #[test]
    fn in_buckets_score_only_gives_the_update_score_and_leaves_the_state_as_it_was() {
        let (mut ts, val, _) = bumped(5 * MIN);
        // A gap of five hours on day 3.
        for t in ts.iter_mut().skip(3 * 288 + 100) {
            *t += 5 * 60 * MIN;
        }
        let mut b = SameTimeBank::new(buckets());
        let s = b.add_series();
        let bits = |st: &SameTimeState| {
            (
                st.ring.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                st.current,
                st.sum.to_bits(),
                st.count,
                st.record,
            )
        };
        let mut scored = 0;
        for (k, (t, x)) in ts.iter().zip(&val).enumerate() {
            let probe_x = x + (k % 5) as f64;
            let before = bits(&b.states[s]);
            let probe = b.score_only(s, *t, probe_x);
            assert_eq!(bits(&b.states[s]), before);
            let mut copy = b.clone();
            assert_eq!(probe.score, copy.update(s, *t, probe_x).score, "point {k}");
            scored += usize::from(probe.score > 0.0);
            b.update(s, *t, *x);
        }
        assert!(scored > 500, "{scored}");
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
