//! Why an input record was rejected: one type for every format, live and in replay (the
//! `reason` of a rejects record and of a dead letter).

use std::fmt;

/// Why an input record was rejected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RejectReason {
    /// The record is not valid JSON of the expected shape (detail says where).
    Malformed(&'static str),
    /// A required field is absent.
    MissingField(&'static str),
    /// The value is NaN or infinite (or not a number at all).
    NonFiniteValue,
    /// The timestamp is neither integer milliseconds nor RFC 3339 text.
    BadTimestamp,
    /// The point is older than the newest point already seen for its series.
    OutOfOrder,
    /// More labels than the engine accepts on one series.
    TooManyLabels,
    /// The bytes are not UTF-8.
    NotUtf8,
    /// A probability vector of an `llm_prediction` record is unusable.
    BadVector(telltale_detect::confidence::VectorError),
}

impl RejectReason {
    /// A short stable code for counters and the `reason` field of a rejects record.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Malformed(_) => "malformed",
            RejectReason::MissingField(_) => "missing_field",
            RejectReason::NonFiniteValue => "non_finite_value",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::TooManyLabels => "too_many_labels",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::BadVector(_) => "bad_probabilities",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Malformed(d) => write!(f, "malformed record: {d}"),
            RejectReason::MissingField(n) => write!(f, "missing field `{n}`"),
            RejectReason::NonFiniteValue => f.write_str("value is not a finite number"),
            RejectReason::BadTimestamp => {
                f.write_str("timestamp is neither integer milliseconds nor RFC 3339 text")
            }
            RejectReason::OutOfOrder => f.write_str("timestamp older than the series' last point"),
            RejectReason::TooManyLabels => write!(f, "more than {MAX_LABELS} labels"),
            RejectReason::NotUtf8 => f.write_str("record is not valid UTF-8"),
            RejectReason::BadVector(e) => write!(f, "{e}"),
        }
    }
}

/// Most labels one series may carry.
pub const MAX_LABELS: usize = 32;
