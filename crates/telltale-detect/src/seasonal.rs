//! Seasonal forecast: a daily (or any period's) profile of the series, learned per time-of-period
//! bucket, plus an exponentially weighted level offset; scored by the z-score of the residual.
//!
//! The profile holds one value per bucket (`buckets` buckets over `period_hours`). Points of a
//! bucket's current visit are averaged, and when the visit ends the average is blended into the
//! profile with weight `profile_alpha` (so each day counts about equally, however many points a
//! bucket gets). The forecast of a point is its bucket's profile value plus the level offset (an
//! EWMA, weight `alpha`, of recent residuals), so a shift of the whole curve is followed quickly
//! while the shape is remembered for days. Until a bucket has a profile value, the detector
//! forecasts with the offset alone against the first visits' mean and does not score.
//! Timestamps drive the buckets, so one configuration serves any sampling rate.

use serde::{Deserialize, Serialize};

use crate::ParamError;
use crate::Scored;
use crate::params::{Alpha, Count, Positive};
use crate::score::score_from_z;

/// Parameters of the seasonal detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalParams {
    /// Length of the season in hours (default 24).
    #[serde(default = "default_period")]
    pub period_hours: Positive,
    /// Buckets per season (default 24; at most 1,440).
    #[serde(default = "default_buckets")]
    pub buckets: Count,
    /// Weight of a visit's mean in its bucket's profile value (default 0.3).
    #[serde(default = "default_profile_alpha")]
    pub profile_alpha: Alpha,
    /// Weight of the newest residual in the level offset and the residual variance (default 0.05).
    #[serde(default = "default_alpha")]
    pub alpha: Alpha,
    /// Scored points needed before the first score (default 30).
    #[serde(default = "default_warmup")]
    pub warmup: Count,
}

fn default_period() -> Positive {
    Positive::new(24.0).expect("valid")
}
fn default_buckets() -> Count {
    Count::new(24).expect("valid")
}
fn default_profile_alpha() -> Alpha {
    Alpha::new(0.3).expect("valid")
}
fn default_alpha() -> Alpha {
    Alpha::new(0.05).expect("valid")
}
fn default_warmup() -> Count {
    Count::new(30).expect("valid")
}

impl Default for SeasonalParams {
    fn default() -> Self {
        Self {
            period_hours: default_period(),
            buckets: default_buckets(),
            profile_alpha: default_profile_alpha(),
            alpha: default_alpha(),
            warmup: default_warmup(),
        }
    }
}

impl SeasonalParams {
    /// Checks the bounds that serde cannot.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.buckets.get() > 1440 {
            return Err(ParamError::new(
                "buckets",
                self.buckets.get(),
                "an integer in [1, 1440]",
            ));
        }
        Ok(())
    }

    fn bucket_of(&self, ts: i64) -> (i64, usize) {
        let period = (self.period_hours.get() * 3_600_000.0).max(1.0) as i64;
        let within = ts.rem_euclid(period);
        let b = (within as i128 * i128::from(self.buckets.get()) / i128::from(period)) as usize;
        // A visit is identified by (season index, bucket).
        (
            ts.div_euclid(period) * i64::from(self.buckets.get()) + b as i64,
            b,
        )
    }
}

/// State of the seasonal detector for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalState {
    /// Profile value per bucket (NaN until the bucket's first visit ended).
    pub profile: Vec<f64>,
    /// Visit being accumulated (season index × buckets + bucket), or `i64::MIN`.
    pub visit: i64,
    /// Sum and count of the current visit's points.
    pub visit_sum: f64,
    /// See `visit_sum`.
    pub visit_n: f64,
    /// Level offset: EWMA of residuals against the profile.
    pub offset: f64,
    /// EW variance of the residuals.
    pub var: f64,
    /// Residuals learned.
    pub n: f64,
}

impl SeasonalState {
    fn new(buckets: usize) -> Self {
        Self {
            profile: vec![f64::NAN; buckets],
            visit: i64::MIN,
            visit_sum: 0.0,
            visit_n: 0.0,
            offset: 0.0,
            var: 0.0,
            n: 0.0,
        }
    }
}

/// The seasonal detector for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seasonal {
    /// Parameters.
    pub params: SeasonalParams,
    /// State.
    pub state: SeasonalState,
}

impl Seasonal {
    /// A detector with an empty profile.
    pub fn new(params: SeasonalParams) -> Result<Self, ParamError> {
        params.validate()?;
        Ok(Self {
            state: SeasonalState::new(params.buckets.get() as usize),
            params,
        })
    }

    /// Scores then learns the point `x` observed at `ts` (ms since the epoch).
    pub fn step(&mut self, ts: i64, x: f64) -> Scored {
        step(&self.params, &mut self.state, ts, x)
    }
}

fn step(p: &SeasonalParams, s: &mut SeasonalState, ts: i64, x: f64) -> Scored {
    let (visit, b) = p.bucket_of(ts);
    if visit != s.visit {
        // The previous visit ended: blend its mean into its bucket's profile value.
        if s.visit_n > 0.0 {
            let nb = s.visit.rem_euclid(i64::from(p.buckets.get())) as usize;
            let mean = s.visit_sum / s.visit_n;
            let old = s.profile[nb];
            s.profile[nb] = if old.is_nan() {
                mean
            } else {
                old + p.profile_alpha.get() * (mean - old)
            };
        }
        s.visit = visit;
        s.visit_sum = 0.0;
        s.visit_n = 0.0;
    }
    s.visit_sum += x;
    s.visit_n += 1.0;
    let base = s.profile[b];
    if base.is_nan() {
        return Scored {
            score: 0.0,
            expected: f64::NAN,
        };
    }
    let expected = base + s.offset;
    let r = x - expected;
    let floor = 1e-9 * expected.abs() + 1e-12;
    let z = r / s.var.sqrt().max(floor);
    let score = if s.n >= f64::from(p.warmup.get()) {
        score_from_z(z)
    } else {
        0.0
    };
    let a = p.alpha.get().max(1.0 / (s.n + 1.0));
    s.offset += a * r;
    s.var = (1.0 - a) * (s.var + a * r * r);
    s.n += 1.0;
    Scored { score, expected }
}

/// Seasonal state for many series: one contiguous slab of profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalBank {
    params: SeasonalParams,
    states: Vec<SeasonalState>,
}

impl SeasonalBank {
    /// An empty bank.
    pub fn new(params: SeasonalParams) -> Self {
        Self {
            params,
            states: Vec::new(),
        }
    }
    /// Adds a series; returns its slot.
    pub fn add_series(&mut self) -> usize {
        self.states
            .push(SeasonalState::new(self.params.buckets.get() as usize));
        self.states.len() - 1
    }
    /// A copy of one series' state.
    pub fn snapshot(&self, slot: usize) -> SeasonalState {
        self.states[slot].clone()
    }
    /// Overwrites one series' state.
    pub fn restore(&mut self, slot: usize, state: &SeasonalState) {
        self.states[slot].clone_from(state);
    }
    /// Scores then learns `x` at `ts` for the series in `slot`.
    pub fn update(&mut self, slot: usize, ts: i64, x: f64) -> Scored {
        step(&self.params, &mut self.states[slot], ts, x)
    }
    /// Scores `x` at `ts` without learning it (no allocation: the few fields a step can change
    /// are saved and put back).
    pub fn score_only(&mut self, slot: usize, ts: i64, x: f64) -> Scored {
        let s = &mut self.states[slot];
        let saved = (s.visit, s.visit_sum, s.visit_n, s.offset, s.var, s.n);
        let nb = s.visit.rem_euclid(i64::from(self.params.buckets.get())) as usize;
        let old_profile = s.profile[nb];
        let out = step(&self.params, s, ts, x);
        (s.visit, s.visit_sum, s.visit_n, s.offset, s.var, s.n) = saved;
        s.profile[nb] = old_profile;
        out
    }
    /// Bytes of state per series.
    pub fn bytes_per_series(&self) -> usize {
        size_of::<SeasonalState>() + self.params.buckets.get() as usize * size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn daily(t: i64) -> f64 {
        let h = (t / HOUR) % 24;
        100.0 + if (8..20).contains(&h) { 50.0 } else { 0.0 }
    }

    #[test]
    fn learns_a_daily_shape_and_flags_a_break_from_it() {
        let mut d = Seasonal::new(SeasonalParams::default()).unwrap();
        let step = 15 * 60_000;
        let noise = |i: i64| ((i * 7919) % 13) as f64 / 13.0 - 0.5;
        let mut max_normal: f64 = 0.0;
        for i in 0..(4 * 96) {
            let t = i * step;
            let s = d.step(t, daily(t) + noise(i)).score;
            if i >= 2 * 96 {
                max_normal = max_normal.max(s);
            }
        }
        assert!(
            max_normal < 0.9999,
            "the daily swing is expected: {max_normal}"
        );
        // day 5, 09:00: the day-time bump does not come
        let t = 4 * 24 * HOUR + 9 * HOUR;
        let s = d.step(t, 100.0);
        assert!((s.expected - 150.0).abs() < 3.0, "{}", s.expected);
        assert!(s.score > 0.99999, "{}", s.score);
    }

    #[test]
    fn score_only_leaves_the_state_as_it_was() {
        let mut bank = SeasonalBank::new(SeasonalParams::default());
        let slot = bank.add_series();
        for i in 0..200 {
            bank.update(slot, i * 20 * 60_000, daily(i * 20 * 60_000));
        }
        let before = bank.states[slot].clone();
        let a = bank.score_only(slot, 200 * 20 * 60_000, 500.0);
        assert_eq!(bank.states[slot], before);
        let b = bank.update(slot, 200 * 20 * 60_000, 500.0);
        assert_eq!(a, b);
    }

    #[test]
    fn buckets_follow_the_clock_not_the_point_count() {
        let p = SeasonalParams::default();
        assert_eq!(p.bucket_of(0).1, 0);
        assert_eq!(p.bucket_of(HOUR - 1).1, 0);
        assert_eq!(p.bucket_of(HOUR).1, 1);
        assert_eq!(p.bucket_of(25 * HOUR).1, 1);
        assert_ne!(
            p.bucket_of(HOUR).0,
            p.bucket_of(25 * HOUR).0,
            "another visit"
        );
        assert_eq!(p.bucket_of(-1).1, 23);
        let bad = SeasonalParams {
            buckets: Count::new(2000).unwrap(),
            ..p
        };
        assert!(Seasonal::new(bad).is_err());
    }
}
