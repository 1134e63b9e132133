//! Edge policies, plain Rust so they are tested without nginx and reachable
//! from C: hotlink protection, traffic statistics, the anti-attack guard, the
//! request scheduler and the request log. The nginx module only adapts them.

pub mod guard;
pub mod hotlink;
pub mod hotlink_url;
pub mod rates;
pub mod reqlog;
pub mod sched;
pub mod traffic;

/// A policy file or value that cannot be used, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct PolicyError {
    pub what: String,
    pub reason: String,
}

impl PolicyError {
    pub fn new(what: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
