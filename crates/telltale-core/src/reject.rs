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
    /// A Kafka message with no payload (or only white space).
    EmptyMessage,
    /// A metric name, label name or label value longer than the engine accepts
    /// ([`MAX_NAME_BYTES`], [`MAX_LABEL_VALUE_BYTES`]): it would be copied into every event.
    LabelTooLong,
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
            RejectReason::EmptyMessage => "empty_message",
            RejectReason::LabelTooLong => "label_too_long",
        }
    }

    /// How many kinds of reject there are.
    pub const COUNT: usize = 10;

    /// This kind's position in [`RejectReason::codes`] (for counters kept in an array).
    pub fn index(&self) -> usize {
        match self {
            RejectReason::Malformed(_) => 0,
            RejectReason::MissingField(_) => 1,
            RejectReason::NonFiniteValue => 2,
            RejectReason::BadTimestamp => 3,
            RejectReason::OutOfOrder => 4,
            RejectReason::TooManyLabels => 5,
            RejectReason::NotUtf8 => 6,
            RejectReason::BadVector(_) => 7,
            RejectReason::EmptyMessage => 8,
            RejectReason::LabelTooLong => 9,
        }
    }

    /// Every code, by [`RejectReason::index`].
    pub fn codes() -> [&'static str; Self::COUNT] {
        use telltale_detect::confidence::VectorError;
        let kinds = [
            RejectReason::Malformed(""),
            RejectReason::MissingField(""),
            RejectReason::NonFiniteValue,
            RejectReason::BadTimestamp,
            RejectReason::OutOfOrder,
            RejectReason::TooManyLabels,
            RejectReason::NotUtf8,
            RejectReason::BadVector(VectorError::Empty),
            RejectReason::EmptyMessage,
            RejectReason::LabelTooLong,
        ];
        let mut codes = [""; Self::COUNT];
        for k in kinds {
            codes[k.index()] = k.code();
        }
        codes
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
            RejectReason::EmptyMessage => f.write_str("message has no payload"),
            RejectReason::LabelTooLong => write!(
                f,
                "a metric or label name over {MAX_NAME_BYTES} bytes, or a label value over \
                 {MAX_LABEL_VALUE_BYTES} bytes"
            ),
        }
    }
}

/// Most labels one series may carry.
pub const MAX_LABELS: usize = 32;

/// Longest metric name or label name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;

/// Checks a series' name and labels against the size limits.
#[inline]
pub fn check_key<'a>(
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), RejectReason> {
    if name.len() > MAX_NAME_BYTES {
        return Err(RejectReason::LabelTooLong);
    }
    for (k, v) in labels {
        if k.len() > MAX_NAME_BYTES || v.len() > MAX_LABEL_VALUE_BYTES {
            return Err(RejectReason::LabelTooLong);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code_and_index() {
        let codes = RejectReason::codes();
        assert!(codes.iter().all(|c| !c.is_empty()), "{codes:?}");
        let mut unique = codes.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), RejectReason::COUNT, "{codes:?}");
    }
}
