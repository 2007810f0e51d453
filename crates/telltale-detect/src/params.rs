//! Validated parameter types.
//!
//! Each type rejects nonsense at construction (`TryFrom`), and serde goes through the same check,
//! so a configuration file cannot smuggle in a negative smoothing factor or a NaN threshold.

use serde::{Deserialize, Serialize};

use crate::ParamError;

macro_rules! float_param {
    ($(#[$doc:meta])* $name:ident, $label:literal, $expected:literal, |$v:ident| $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f64);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: f64) -> Result<Self, ParamError> {
                let $v = value;
                if $ok {
                    Ok(Self(value))
                } else {
                    Err(ParamError::new($label, value, $expected))
                }
            }

            /// The wrapped value.
            #[inline(always)]
            pub const fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = ParamError;
            fn try_from(value: f64) -> Result<Self, ParamError> {
                Self::new(value)
            }
        }

        impl From<$name> for f64 {
            fn from(value: $name) -> f64 {
                value.0
            }
        }
    };
}

float_param!(
    /// Smoothing factor of an exponentially weighted statistic: the weight of the newest point,
    /// in (0, 1].
    Alpha, "alpha", "a number in (0, 1]", |v| v > 0.0 && v <= 1.0
);
float_param!(
    /// A strictly positive, finite number (thresholds, allowances measured in sigmas).
    Positive, "value", "a finite number > 0", |v| v.is_finite() && v > 0.0
);
float_param!(
    /// A finite number ≥ 0.
    NonNegative, "value", "a finite number >= 0", |v| v.is_finite() && v >= 0.0
);
float_param!(
    /// A score threshold in (0, 1).
    ScoreLevel, "score", "a number in (0, 1)", |v| v > 0.0 && v < 1.0
);
float_param!(
    /// A share of something (of a range, of a set), in (0, 1].
    Share, "share", "a number in (0, 1]", |v| v > 0.0 && v <= 1.0
);
float_param!(
    /// A fading factor applied to a running sum each step, in (0, 1].
    Fading, "alpha", "a number in (0, 1]", |v| v > 0.0 && v <= 1.0
);

/// A count of points ≥ 1 (warm-up lengths, window sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Count(u32);

impl Count {
    /// Validates `value` (must be ≥ 1) and wraps it.
    pub fn new(value: u32) -> Result<Self, ParamError> {
        if value >= 1 {
            Ok(Self(value))
        } else {
            Err(ParamError::new("count", value, "an integer >= 1"))
        }
    }

    /// The wrapped value.
    #[inline(always)]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Count {
    type Error = ParamError;
    fn try_from(value: u32) -> Result<Self, ParamError> {
        Self::new(value)
    }
}

impl From<Count> for u32 {
    fn from(value: Count) -> u32 {
        value.0
    }
}

/// Serde helper for state fields that may legitimately be infinite (JSON has no infinity):
/// finite values are numbers, others the strings `"inf"`, `"-inf"`, `"NaN"`.
pub mod float_or_text {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises `v`.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    /// Deserialises a number or one of the three strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Text(t) if t == "inf" => Ok(f64::INFINITY),
            Repr::Text(t) if t == "-inf" => Ok(f64::NEG_INFINITY),
            Repr::Text(t) if t == "NaN" => Ok(f64::NAN),
            Repr::Text(t) => Err(serde::de::Error::custom(format!("`{t}` is not a number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_rejects_values_outside_unit_interval() {
        assert!(Alpha::new(0.0).is_err());
        assert!(Alpha::new(-0.1).is_err());
        assert!(Alpha::new(1.5).is_err());
        assert!(Alpha::new(f64::NAN).is_err());
        assert_eq!(Alpha::new(1.0).unwrap().get(), 1.0);
    }

    #[test]
    fn positive_rejects_zero_nan_and_infinity() {
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = Positive::new(v).unwrap_err();
            assert!(err.to_string().contains("> 0"), "{err}");
        }
    }

    #[test]
    fn serde_goes_through_validation() {
        let err = serde_json::from_str::<Alpha>("2.0").unwrap_err();
        assert!(err.to_string().contains("(0, 1]"), "{err}");
        let err = serde_json::from_str::<Count>("0").unwrap_err();
        assert!(err.to_string().contains(">= 1"), "{err}");
    }
}
