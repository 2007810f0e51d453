//! "The same time" on earlier periods, shared by the recurrence filter and the same-time
//! detector: the period in milliseconds, the bounds of their parameters, and the point nearest
//! to a past time.

use crate::ParamError;
use crate::params::{Count, Positive};

/// Most points a shape, a median window or a margin around the same time may span.
pub(crate) const MAX_SPAN: u32 = 64;

/// The period in milliseconds (at least 1).
pub(crate) fn period_ms(hours: Positive) -> i64 {
    (hours.get() * 3_600_000.0).max(1.0) as i64
}

/// How far from a past time its nearest point may be and still stand for it: 1/24 of the
/// period (an hour of a day).
pub(crate) fn tolerance(period_ms: i64) -> i64 {
    period_ms / 24
}

/// Checks `periods` (at most 7), `window` (at most [`MAX_SPAN`]) and `margin` (at most
/// [`MAX_SPAN`]).
pub(crate) fn check(periods: Count, window: Count, margin: u32) -> Result<(), ParamError> {
    if periods.get() > 7 {
        return Err(ParamError::new(
            "periods",
            periods.get(),
            "an integer in [1, 7]",
        ));
    }
    span("window", window.get(), "an integer in [1, 64]")?;
    span("margin", margin, "an integer in [0, 64]")
}

/// A count of points (`name`) that must not exceed [`MAX_SPAN`].
pub(crate) fn span(
    name: &'static str,
    value: u32,
    expected: &'static str,
) -> Result<(), ParamError> {
    if value > MAX_SPAN {
        Err(ParamError::new(name, value, expected))
    } else {
        Ok(())
    }
}

/// The index of the point nearest to `target` among `n` points whose timestamps `ts_at(0..n)`
/// do not decrease, given `lo`, the first index at or after `target` (`n` if none); the earlier
/// one on a tie. `None` when it is more than [`tolerance`] of `period_ms` away (a gap).
pub(crate) fn nearest(
    n: usize,
    lo: usize,
    target: i64,
    period_ms: i64,
    ts_at: impl Fn(usize) -> i64,
) -> Option<usize> {
    let k = if lo == n || (lo > 0 && target - ts_at(lo - 1) <= ts_at(lo) - target) {
        lo.checked_sub(1)?
    } else {
        lo
    };
    ((ts_at(k) - target).abs() <= tolerance(period_ms)).then_some(k)
}
