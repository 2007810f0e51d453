//! Quiet filter: is the point's move too small, against the range the series has covered, to
//! be an anomaly at all?
//!
//! Detectors that rank a point among the series' own recent scores (k-NN and same-time shape
//! ranks, the likelihood of a surprise) have no sense of scale: on a series that sat still for
//! hours the smallest wiggle is the largest in a while. The filter measures the point's
//! deviation, `|x − median of the last window points|`, and calls the point *quiet* when that
//! is less than `share` of the range (maximum minus minimum) the series has covered since it
//! started, this point included. A chain silences the scores it names (`silences`, positions in
//! its `detectors`) for quiet points. It is the idea behind ARTime's "chomp" of values close to
//! the median, kept streaming: the range is the one seen so far, never the file's.
//!
//! The deviation is read from the chain's ring (as the recurrence filter's); the range is two
//! numbers per series the chain keeps. `window` is a number of points or a span (`"1h"`: the
//! points of the last hour the ring holds). With fewer than `window` points before it (none in
//! the span), or a series that never moved, a point is not quiet. Cost per point: a median of
//! the window's values.

use serde::{Deserialize, Serialize};

use crate::earlier;
use crate::params::{Reach, Share};
use crate::recurrence::deviation_within;
use crate::{History, ParamError, Silences};

/// Parameters of the quiet filter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietParams {
    /// A point is quiet when its deviation is below this share of the range seen so far
    /// (default 0.01).
    #[serde(default = "default_share")]
    pub share: Share,
    /// Recent points whose median is the level a deviation is measured from: a number (1 to
    /// 64) or a span such as `"1h"` (default 12).
    #[serde(default = "default_window")]
    pub window: Reach,
    /// Positions in the chain's `detectors` whose scores are silenced for quiet points
    /// (default: all). The filter itself does not read it; the chain does.
    #[serde(default)]
    pub silences: Silences,
}

fn default_share() -> Share {
    Share::new(0.01).expect("valid")
}
fn default_window() -> Reach {
    Reach::Points(12)
}

impl Default for QuietParams {
    fn default() -> Self {
        Self {
            share: default_share(),
            window: default_window(),
            silences: Silences::default(),
        }
    }
}

impl QuietParams {
    /// Checks the bounds that serde cannot.
    pub fn validate(&self) -> Result<(), ParamError> {
        match self.window {
            Reach::Points(n) if n == 0 => Err(ParamError::new(
                "window",
                n,
                "an integer in [1, 64] or a span such as \"1h\"",
            )),
            Reach::Points(n) => earlier::span("window", n, "an integer in [1, 64]"),
            Reach::Span(_) => Ok(()),
        }
    }
}

/// Whether the point `x` is quiet: its deviation from the median of the last `window` points
/// of `history` (the points before it) is below `share` × (`hi` − `lo`), the range the series
/// has covered with this point included.
pub fn is_quiet(p: &QuietParams, history: &History<'_>, ts: i64, x: f64, lo: f64, hi: f64) -> bool {
    let range = hi - lo;
    range > 0.0
        && deviation_within(history, p.window, ts, x).is_some_and(|d| d < p.share.get() * range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history<'a>(ts: &'a [i64], val: &'a [f64]) -> History<'a> {
        History {
            ts: [ts, &[]],
            val: [val, &[]],
        }
    }

    #[test]
    fn a_wiggle_is_quiet_against_a_wide_range_and_not_against_a_narrow_one() {
        let ts: Vec<i64> = (0..12).collect();
        let val: Vec<f64> = (0..12).map(|i| 10.0 + (i % 3) as f64 * 0.01).collect();
        let h = history(&ts, &val);
        let p = QuietParams::default();
        // 0.05 above the median (10.01): 0.5 % of a range of 10, 50 % of a range of 0.1.
        assert!(is_quiet(&p, &h, 12, 10.06, 5.0, 15.0));
        assert!(!is_quiet(&p, &h, 12, 10.06, 10.0, 10.1));
        // A move of 2 in a range of 10 is not quiet.
        assert!(!is_quiet(&p, &h, 12, 12.0, 5.0, 15.0));
        // Too short a history, or no range: never quiet.
        assert!(!is_quiet(
            &p,
            &history(&ts[..5], &val[..5]),
            12,
            10.0,
            5.0,
            15.0
        ));
        assert!(!is_quiet(&p, &h, 12, 10.0, 10.0, 10.0));
    }

    #[test]
    fn a_wrapped_ring_is_read_like_one_run() {
        let ts: Vec<i64> = (0..20).collect();
        let val: Vec<f64> = (0..20).map(|i| f64::from(i * 7 % 11)).collect();
        let whole = history(&ts, &val);
        let split = History {
            ts: [&ts[..9], &ts[9..]],
            val: [&val[..9], &val[9..]],
        };
        let p = QuietParams {
            share: Share::new(0.2).unwrap(),
            ..QuietParams::default()
        };
        for x in [3.0, 4.5, 5.0, 6.0, 9.0] {
            assert_eq!(
                is_quiet(&p, &whole, 12, x, 0.0, 10.0),
                is_quiet(&p, &split, 12, x, 0.0, 10.0),
                "{x}"
            );
        }
    }

    #[test]
    fn a_span_window_takes_the_median_of_the_points_within_it() {
        // Points every 5 minutes: 10 for an hour and more, then 20 for the last 20 minutes.
        let ts: Vec<i64> = (0..30).map(|i| i * 300_000).collect();
        let val: Vec<f64> = (0..30).map(|i| if i >= 26 { 20.0 } else { 10.0 }).collect();
        let h = history(&ts, &val);
        let now = 30 * 300_000;
        let p = |w: &str| QuietParams {
            window: serde_json::from_str(&format!("\"{w}\"")).unwrap(),
            ..QuietParams::default()
        };
        // Over the last 20 minutes the median is 20: a point at 20 is quiet; over 2 hours it
        // is 10, and 20 is a move of the whole range.
        assert!(is_quiet(&p("20m"), &h, now, 20.0, 10.0, 20.0));
        assert!(!is_quiet(&p("2h"), &h, now, 20.0, 10.0, 20.0));
        // A span with no point in it: not quiet.
        assert!(!is_quiet(&p("1m"), &h, now + 3_600_000, 20.0, 10.0, 20.0));
    }

    #[test]
    fn parameters_parse_check_and_default() {
        let p: QuietParams =
            serde_json::from_str(r#"{"share": 0.02, "silences": [0, 1]}"#).unwrap();
        assert_eq!(p.share.get(), 0.02);
        assert_eq!(p.window, Reach::Points(12));
        assert!(p.silences.contains(1) && !p.silences.contains(2));
        assert!(serde_json::from_str::<QuietParams>(r#"{"share": 0}"#).is_err());
        assert!(serde_json::from_str::<QuietParams>(r#"{"shares": 0.1}"#).is_err());
        let bad = QuietParams {
            window: Reach::Points(65),
            ..QuietParams::default()
        };
        assert_eq!(bad.validate().unwrap_err().name, "window");
    }
}
