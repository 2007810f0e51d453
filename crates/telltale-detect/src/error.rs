//! Errors raised when a detector parameter is out of its domain.

/// A parameter value outside the range the detector accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} = {value} is out of range: expected {expected}")]
pub struct ParamError {
    /// Name of the parameter (as written in a configuration file).
    pub name: &'static str,
    /// The rejected value, rendered as text.
    pub value: String,
    /// Human description of the accepted range.
    pub expected: &'static str,
}

impl ParamError {
    pub(crate) fn new(name: &'static str, value: impl ToString, expected: &'static str) -> Self {
        Self {
            name,
            value: value.to_string(),
            expected,
        }
    }
}
