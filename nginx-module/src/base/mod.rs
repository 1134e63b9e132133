//! Plumbing every layer may use, with no module state: the panic walls of
//! the `extern "C"` entry points (and fault points), request header reads.

pub mod guard;
pub mod request;
