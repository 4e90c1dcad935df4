//! A request field and what is wrong with it: how every check on input names its problem
//! (the API turns it into the error body's `field`, `message` and `details`).

/// A field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// JSON path of the field (`security.tar`).
    pub field: String,
    /// The problem.
    pub problem: String,
    /// Values that explain it (the error body's `details`, besides the field).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
            details: serde_json::Map::new(),
        }
    }

    /// With a value that explains the problem.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}
