//! The one error type of the engine: every fallible call returns it, and every
//! variant carries enough to tell the operator what to fix.

/// Errors returned by the engine.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("key is empty")]
    EmptyKey,

    #[error("key is {len} bytes, over the maximum of {max} (config `max_key`)")]
    KeyTooLong { len: usize, max: usize },

    #[error("object of {size} bytes is larger than the memory tier accepts ({max} bytes, config `max_object`)")]
    ObjectTooLarge { size: u64, max: u64 },

    #[error("body has {written} bytes but the declared size was {declared}")]
    SizeMismatch { declared: u64, written: u64 },

    #[error("invalid regex {pattern:?}: {reason}")]
    InvalidRegex { pattern: String, reason: String },

    #[error("invalid purge: {0}")]
    InvalidPurge(String),

    #[error("config: {field}: {reason}")]
    Config { field: String, reason: String },

    #[error("invalid metadata: {0}")]
    InvalidMeta(String),

    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

impl Error {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;
