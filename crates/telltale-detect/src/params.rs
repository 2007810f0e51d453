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
    /// A finite ratio ≥ 1 (how many times over a record must be beaten).
    Ratio, "ratio", "a finite number >= 1", |v| v.is_finite() && v >= 1.0
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

/// Parses a duration such as `250ms`, `30s`, `5m`, `2h`, `1d`, `1w` (or `0`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: i64 = s[..split].parse().ok()?;
    let unit = match &s[split..] {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// A span of event time > 0, written as a duration (`"90s"`, `"15m"`, `"1h"`, `"2d"`, `"1w"`):
/// what a detector parameter that means "how long" is given as, so that one configuration fits
/// 10-second and hourly series alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span(i64);

impl Span {
    /// Parses and validates a duration (must be > 0).
    pub fn parse(text: &str) -> Result<Self, ParamError> {
        match parse_duration_ms(text) {
            Some(ms) if ms > 0 => Ok(Self(ms)),
            _ => Err(ParamError::new(
                "span",
                format!("{text:?}"),
                "a duration > 0 such as \"90s\", \"15m\", \"1h\", \"2d\" or \"1w\"",
            )),
        }
    }

    /// A span of `ms` milliseconds (must be > 0).
    pub fn from_ms(ms: i64) -> Result<Self, ParamError> {
        if ms > 0 {
            Ok(Self(ms))
        } else {
            Err(ParamError::new("span", ms, "a duration > 0"))
        }
    }

    /// Milliseconds.
    #[inline(always)]
    pub const fn ms(self) -> i64 {
        self.0
    }
}

impl TryFrom<String> for Span {
    type Error = ParamError;
    fn try_from(value: String) -> Result<Self, ParamError> {
        Self::parse(&value)
    }
}

impl From<Span> for String {
    fn from(value: Span) -> String {
        let ms = value.0;
        for (unit, len) in [
            ("w", 7 * 86_400_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms % len == 0 {
                return format!("{}{unit}", ms / len);
            }
        }
        format!("{ms}ms")
    }
}

/// The weight of the newest point in an exponentially weighted statistic: either a fixed share
/// per point (`0.2`, the textbook form, which means a different span of time at every sampling
/// rate) or a time constant (`"20m"`): a point that arrives `dt` after the previous one gets
/// the weight `1 − exp(−dt / τ)`, so the statistic forgets at the same pace in event time
/// whether the series is sampled every 10 seconds or every hour, and a gap weighs the next
/// point more.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[serde(try_from = "NumberOrText")]
pub enum Weight {
    /// A fixed weight per point, in (0, 1].
    PerPoint(Alpha),
    /// A time constant.
    Span(Span),
}

impl Weight {
    /// The weight of a point `dt_ms` after the previous one.
    #[inline(always)]
    pub fn at(self, dt_ms: i64) -> f64 {
        match self {
            Weight::PerPoint(a) => a.get(),
            Weight::Span(tau) => {
                let r = dt_ms.max(0) as f64 / tau.ms() as f64;
                1.0 - (-r).exp()
            }
        }
    }
}

/// A parameter written either as a number or as text (a duration), before it is checked.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    /// A number.
    Number(f64),
    /// Text.
    Text(String),
}

impl TryFrom<NumberOrText> for Weight {
    type Error = ParamError;
    fn try_from(v: NumberOrText) -> Result<Self, ParamError> {
        match v {
            NumberOrText::Number(a) => Alpha::new(a).map(Weight::PerPoint).map_err(|_| {
                ParamError::new(
                    "weight",
                    a,
                    "a weight in (0, 1] or a time constant such as \"15m\"",
                )
            }),
            NumberOrText::Text(t) => Span::parse(&t).map(Weight::Span),
        }
    }
}

impl From<Alpha> for Weight {
    fn from(a: Alpha) -> Self {
        Weight::PerPoint(a)
    }
}

/// How far back a median of recent points looks: a number of points, or the points of a span
/// of event time (`"1h"`), as many of them as the holder keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[serde(try_from = "NumberOrText")]
pub enum Reach {
    /// The last n points (0 to 64; 0 where the holder allows it: off).
    Points(u32),
    /// The points of the last span.
    Span(Span),
}

impl TryFrom<NumberOrText> for Reach {
    type Error = ParamError;
    fn try_from(v: NumberOrText) -> Result<Self, ParamError> {
        Reach::within(
            v,
            0,
            64,
            "window",
            "an integer in [0, 64] or a span such as \"1h\"",
        )
    }
}

impl Default for Reach {
    fn default() -> Self {
        Reach::Points(0)
    }
}

impl Reach {
    /// An integer in `[lo, hi]` or a span; anything else is an error naming `name`.
    pub(crate) fn within(
        v: NumberOrText,
        lo: u32,
        hi: u32,
        name: &'static str,
        expected: &'static str,
    ) -> Result<Self, ParamError> {
        match v {
            NumberOrText::Number(n)
                if n.fract() == 0.0 && (f64::from(lo)..=f64::from(hi)).contains(&n) =>
            {
                Ok(Reach::Points(n as u32))
            }
            NumberOrText::Number(n) => Err(ParamError::new(name, n, expected)),
            NumberOrText::Text(t) => Span::parse(&t).map(Reach::Span),
        }
    }

    /// Whether it reaches anything (not `Points(0)`).
    pub fn is_on(self) -> bool {
        self != Reach::Points(0)
    }
}

/// Serde helper for state fields that may legitimately be infinite (JSON has no infinity):
/// finite values are numbers, others the strings `"inf"`, `"-inf"`, `"NaN"`.
pub mod float_or_text {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises `v` (a plain float in binary formats, which carry infinities and NaN).
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() || v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    /// Deserialises a number or one of the three strings (a plain float in binary formats).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        if !d.is_human_readable() {
            return f64::deserialize(d);
        }
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

    #[test]
    fn spans_read_and_write_durations() {
        assert_eq!(Span::parse("15m").unwrap().ms(), 900_000);
        assert_eq!(Span::parse("1w").unwrap().ms(), 604_800_000);
        assert_eq!(String::from(Span::parse("90m").unwrap()), "90m");
        assert_eq!(String::from(Span::parse("2d").unwrap()), "2d");
        for bad in ["0", "0s", "-1h", "1y", "h", "99999999999999999999d"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Span>("\"5 minutes\"").unwrap_err();
        assert!(err.to_string().contains("duration"), "{err}");
    }

    #[test]
    fn a_time_constant_weighs_a_point_by_its_gap() {
        let w: Weight = serde_json::from_str("\"1h\"").unwrap();
        // One time constant after the previous point: 1 - 1/e.
        assert!((w.at(3_600_000) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        // Twelve 5-minute steps forget as much as one hour-long step.
        let kept_5m = (1.0 - w.at(300_000)).powi(12);
        assert!((kept_5m - (1.0 - w.at(3_600_000))).abs() < 1e-12);
        let fixed: Weight = serde_json::from_str("0.25").unwrap();
        assert_eq!(fixed.at(1), 0.25);
        assert!(serde_json::from_str::<Weight>("1.5").is_err());
    }
}
