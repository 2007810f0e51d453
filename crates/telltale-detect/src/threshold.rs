//! A static threshold: score 1 when a point is above `above` or below `below`, else 0.
//! Stateless; useful for hard limits (an error rate above 5 %) and for per-request
//! low-confidence events (a margin below 0.2).

use serde::{Deserialize, Serialize};

use crate::{Bank, Detector, ParamError, Scored};

/// Parameters of the threshold detector (at least one bound).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdParams {
    /// Points strictly above this score 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Points strictly below this score 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

impl ThresholdParams {
    /// Checks that at least one finite bound is set.
    pub fn validate(&self) -> Result<(), ParamError> {
        match (self.above, self.below) {
            (None, None) => Err(ParamError::new(
                "above",
                "none",
                "`above` or `below` (or both)",
            )),
            (Some(a), _) if !a.is_finite() => Err(ParamError::new("above", a, "a finite number")),
            (_, Some(b)) if !b.is_finite() => Err(ParamError::new("below", b, "a finite number")),
            _ => Ok(()),
        }
    }

    #[inline]
    fn score(&self, x: f64) -> f64 {
        let hi = self.above.is_some_and(|a| x > a);
        let lo = self.below.is_some_and(|b| x < b);
        f64::from(u8::from(hi || lo))
    }
}

/// The threshold detector for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Parameters.
    pub params: ThresholdParams,
}

impl Threshold {
    /// A detector; fails without a bound.
    pub fn new(params: ThresholdParams) -> Result<Self, ParamError> {
        params.validate()?;
        Ok(Self { params })
    }
}

impl Detector for Threshold {
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]) {
        assert_eq!(xs.len(), out.len(), "xs and out differ in length");
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = self.params.score(*x);
        }
    }
}

/// Thresholds hold no per-series state: the bank only counts series.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdBank {
    params: ThresholdParams,
    len: usize,
}

impl Bank for ThresholdBank {
    type Params = ThresholdParams;
    type State = ();

    fn new(params: ThresholdParams) -> Self {
        Self { params, len: 0 }
    }
    fn add_series(&mut self) -> usize {
        self.len += 1;
        self.len - 1
    }
    fn len(&self) -> usize {
        self.len
    }
    fn update(&mut self, _slot: usize, _ts: i64, x: f64, _evicted: Option<f64>) -> Scored {
        Scored {
            score: self.params.score(x),
            expected: f64::NAN,
        }
    }
    fn snapshot(&self, _slot: usize) {}
    fn restore(&mut self, _slot: usize, _state: &()) {}
    fn bytes_per_series(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_outside_the_bounds_only() {
        let mut t = Threshold::new(ThresholdParams {
            above: Some(0.05),
            below: None,
        })
        .unwrap();
        assert_eq!(t.update(0.05), 0.0);
        assert_eq!(t.update(0.051), 1.0);
        let mut t = Threshold::new(ThresholdParams {
            above: Some(10.0),
            below: Some(2.0),
        })
        .unwrap();
        assert_eq!(t.update(1.0), 1.0);
        assert_eq!(t.update(5.0), 0.0);
        assert_eq!(t.update(11.0), 1.0);
        assert!(Threshold::new(ThresholdParams::default()).is_err());
    }
}
