//! Robust z-score over a sliding window: `0.6745 · (x − median) / MAD`, with the window kept
//! sorted incrementally (one binary search and one short memmove per point) so that the median
//! is a lookup and the MAD a merge walk over the two halves, never a sort.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::params::Count;
use crate::score::score_from_z;
use crate::{Bank, Detector, ParamError, Scored};

/// 0.6745 = Φ⁻¹(0.75): makes the MAD a consistent estimator of sigma for Gaussian data.
const MAD_TO_SIGMA: f64 = 0.674_489_750_196_081_7;

/// Parameters of the robust z-score detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustZParams {
    /// Points in the window (default 32). In the engine this is the series' ring capacity.
    #[serde(default = "default_window")]
    pub window: Count,
    /// Points the window must hold before the detector scores (default 8, at least 3).
    #[serde(default = "default_min_points")]
    pub min_points: Count,
}

fn default_window() -> Count {
    Count::new(32).expect("valid")
}
fn default_min_points() -> Count {
    Count::new(8).expect("valid")
}

impl Default for RobustZParams {
    fn default() -> Self {
        Self {
            window: default_window(),
            min_points: default_min_points(),
        }
    }
}

impl RobustZParams {
    /// Checks the constraints that involve several fields.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.min_points.get() < 3 {
            return Err(ParamError::new(
                "min_points",
                self.min_points.get(),
                "an integer >= 3",
            ));
        }
        if self.min_points > self.window {
            return Err(ParamError::new(
                "min_points",
                self.min_points.get(),
                "an integer <= window",
            ));
        }
        Ok(())
    }
}

/// Operations on a sorted window held in a caller's slice.
#[derive(Debug)]
pub struct SortedWindow;

impl SortedWindow {
    /// Replaces `old` (which must be present; `None` while the window is filling) by `new` in the
    /// sorted prefix `w[..*len]`, keeping it sorted. `w.len()` is the capacity.
    #[inline]
    pub fn replace(w: &mut [f64], len: &mut usize, old: Option<f64>, new: f64) {
        let n = *len;
        match old {
            Some(old) => {
                let i = w[..n].partition_point(|v| *v < old);
                debug_assert!(i < n && w[i] == old, "evicted value not in window");
                let j = w[..n].partition_point(|v| *v < new);
                // Shift the elements between the hole and the insertion point by one.
                if j > i {
                    w.copy_within(i + 1..j, i);
                    w[j - 1] = new;
                } else {
                    w.copy_within(j..i, j + 1);
                    w[j] = new;
                }
            }
            None => {
                debug_assert!(n < w.len(), "window full but nothing evicted");
                let j = w[..n].partition_point(|v| *v < new);
                w.copy_within(j..n, j + 1);
                w[j] = new;
                *len = n + 1;
            }
        }
    }

    /// Median of a sorted, non-empty slice.
    #[inline]
    pub fn median(s: &[f64]) -> f64 {
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        }
    }

    /// Median absolute deviation from `med` of a sorted, non-empty slice: the deviations on each
    /// side of the median are already sorted, so their merge is walked to its middle.
    #[inline]
    pub fn mad(s: &[f64], med: f64) -> f64 {
        let n = s.len();
        let split = s.partition_point(|v| *v < med);
        // left deviations: med - s[split-1], med - s[split-2], ... (ascending)
        // right deviations: s[split] - med, s[split+1] - med, ... (ascending)
        let (mut l, mut r) = (split, split);
        let mut next = || {
            let dl = if l > 0 { med - s[l - 1] } else { f64::INFINITY };
            let dr = if r < n { s[r] - med } else { f64::INFINITY };
            if dl <= dr {
                l -= 1;
                dl
            } else {
                r += 1;
                dr
            }
        };
        let k = (n - 1) / 2;
        let mut v = 0.0;
        for _ in 0..=k {
            v = next();
        }
        if n % 2 == 1 { v } else { 0.5 * (v + next()) }
    }

    /// Robust z-score of `x` against the sorted window `s` (non-empty).
    #[inline]
    pub fn robust_z(s: &[f64], x: f64) -> (f64, f64) {
        let med = Self::median(s);
        let mad = Self::mad(s, med);
        // A window of identical values has MAD 0: fall back to a tiny scale so that any
        // departure scores high and equality scores zero.
        let floor = 1e-9 * med.abs() + 1e-12;
        (MAD_TO_SIGMA * (x - med) / mad.max(floor), med)
    }
}

#[inline(always)]
fn score_window(min_points: usize, sorted: &[f64], x: f64) -> Scored {
    if sorted.len() < min_points {
        return Scored {
            score: 0.0,
            expected: f64::NAN,
        };
    }
    let (z, med) = SortedWindow::robust_z(sorted, x);
    Scored {
        score: score_from_z(z),
        expected: med,
    }
}

/// Robust z-score detector for one series, with its own window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustZ {
    /// Parameters.
    pub params: RobustZParams,
    ring: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl RobustZ {
    /// A detector with an empty window; fails if the parameters are inconsistent.
    pub fn new(params: RobustZParams) -> Result<Self, ParamError> {
        params.validate()?;
        let w = params.window.get() as usize;
        Ok(Self {
            params,
            ring: VecDeque::with_capacity(w),
            sorted: vec![0.0; w],
        })
    }

    /// Scores then learns one point.
    pub fn step(&mut self, x: f64) -> Scored {
        let n = self.ring.len();
        let out = score_window(self.params.min_points.get() as usize, &self.sorted[..n], x);
        let evicted = if n == self.sorted.len() {
            self.ring.pop_front()
        } else {
            None
        };
        let mut len = n;
        SortedWindow::replace(&mut self.sorted, &mut len, evicted, x);
        self.ring.push_back(x);
        out
    }
}

impl Detector for RobustZ {
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]) {
        assert_eq!(xs.len(), out.len(), "xs and out differ in length");
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = self.step(*x).score;
        }
    }
}

/// Robust z-score state for many series: one contiguous slab of sorted windows.
/// The caller (the engine's ring buffer) supplies the value each point evicts.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustZBank {
    params: RobustZParams,
    window: usize,
    sorted: Vec<f64>,
    len: Vec<u32>,
}

impl Bank for RobustZBank {
    type Params = RobustZParams;
    /// The sorted window of the series.
    type State = Vec<f64>;

    fn new(params: RobustZParams) -> Self {
        Self {
            window: params.window.get() as usize,
            params,
            sorted: Vec::new(),
            len: Vec::new(),
        }
    }

    fn add_series(&mut self) -> usize {
        self.sorted.resize(self.sorted.len() + self.window, 0.0);
        self.len.push(0);
        self.len.len() - 1
    }

    fn len(&self) -> usize {
        self.len.len()
    }

    #[inline]
    fn update(&mut self, slot: usize, _ts: i64, x: f64, evicted: Option<f64>) -> Scored {
        let w = &mut self.sorted[slot * self.window..(slot + 1) * self.window];
        let mut len = self.len[slot] as usize;
        let out = score_window(self.params.min_points.get() as usize, &w[..len], x);
        SortedWindow::replace(w, &mut len, evicted, x);
        self.len[slot] = len as u32;
        out
    }

    fn snapshot(&self, slot: usize) -> Vec<f64> {
        let start = slot * self.window;
        self.sorted[start..start + self.len[slot] as usize].to_vec()
    }

    fn restore(&mut self, slot: usize, state: &Vec<f64>) {
        let n = state.len().min(self.window);
        let start = slot * self.window;
        self.sorted[start..start + n].copy_from_slice(&state[..n]);
        self.len[slot] = n as u32;
    }

    fn bytes_per_series(&self) -> usize {
        self.window * size_of::<f64>() + size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_median(v: &[f64]) -> f64 {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        SortedWindow::median(&s)
    }

    #[test]
    fn median_and_mad_known_answers() {
        // 1 2 3 4 100: median 3, deviations 2 1 0 1 97 → MAD 1
        let s = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(SortedWindow::median(&s), 3.0);
        assert_eq!(SortedWindow::mad(&s, 3.0), 1.0);
        // 1 2 4 8: median 3, deviations 2 1 1 5 → MAD (1 + 2) / 2 = 1.5
        let s = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(SortedWindow::median(&s), 3.0);
        assert_eq!(SortedWindow::mad(&s, 3.0), 1.5);
    }

    #[test]
    fn mad_matches_naive_computation() {
        let mut seed = 12345u64;
        for n in 1..40 {
            let mut v: Vec<f64> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) % 17) as f64
                })
                .collect();
            v.sort_by(f64::total_cmp);
            let med = SortedWindow::median(&v);
            let dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
            assert_eq!(SortedWindow::mad(&v, med), naive_median(&dev), "{v:?}");
        }
    }

    #[test]
    fn sliding_window_stays_sorted_and_matches_naive() {
        let mut d = RobustZ::new(RobustZParams {
            window: Count::new(7).unwrap(),
            min_points: Count::new(3).unwrap(),
        })
        .unwrap();
        let xs: Vec<f64> = (0..60).map(|i| ((i * 37) % 23) as f64).collect();
        for (t, &x) in xs.iter().enumerate() {
            let start = t.saturating_sub(7);
            let win = &xs[start..t];
            let s = d.step(x);
            if win.len() >= 3 {
                assert_eq!(s.expected, naive_median(win));
            }
            let mut sorted = xs[t.saturating_sub(6)..=t].to_vec();
            sorted.sort_by(f64::total_cmp);
            assert_eq!(&d.sorted[..sorted.len()], &sorted[..]);
        }
    }

    #[test]
    fn outlier_scores_high_and_typical_point_low() {
        let mut d = RobustZ::new(RobustZParams::default()).unwrap();
        for i in 0..32 {
            d.step(10.0 + (i % 5) as f64 * 0.1);
        }
        assert!(d.step(10.2).score < 0.5);
        assert!(d.step(50.0).score > 0.999_999);
    }

    #[test]
    fn min_points_must_fit_in_window() {
        let p = RobustZParams {
            window: Count::new(4).unwrap(),
            min_points: Count::new(5).unwrap(),
        };
        assert_eq!(RobustZ::new(p).unwrap_err().name, "min_points");
    }
}
