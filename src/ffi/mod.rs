#![allow(non_camel_case_types)]
//! The C ABI of libcdncore (`include/cdncore.h`, generated from this module
//! by `build.rs` with cbindgen). Conventions, after rustls-ffi:
//!
//! - Everything is prefixed `cdn_`. Handles are opaque pointers created by
//!   `*_open`/`*_new` (or returned by a lookup) and released by
//!   `*_close`/`*_free`/`*_commit`/`*_abort`.
//! - Every fallible function returns a `cdn_status`; outputs are written only
//!   on `CDN_OK` (the one exception, `CDN_BUFFER_TOO_SMALL`, writes the needed
//!   size). The failure's message is in `cdn_last_error()` (per thread).
//! - Every pointer is checked: NULL is `CDN_INVALID_ARGUMENT`; lengths are
//!   checked against limits before any byte is read; handles carry a magic
//!   word checked before use.
//! - No panic crosses the boundary: each entry point catches it and returns
//!   `CDN_PANIC`.
//! - Callbacks take a `void *userdata` passed through untouched.

pub mod args;
pub mod cache;
pub mod fill;
pub mod handle;
pub mod object;
pub mod purge;
pub mod status;
pub mod writer;

pub use cache::cdn_cache;
pub use object::{cdn_object, cdn_object_info};
pub use purge::cdn_purge_report;
pub use status::cdn_status;
pub use writer::cdn_writer;

/// Version of the C ABI in this header. It changes whenever a function, type
/// or constant changes incompatibly; compare it with `cdn_abi_version()` at
/// startup to catch a header/library mismatch.
pub const CDN_ABI_VERSION: u32 = 1;

/// The ABI version of the loaded library (`CDN_ABI_VERSION` it was built with).
///
/// Thread safety: any thread. Never fails.
/// Ownership: nothing to free.
#[no_mangle]
pub extern "C" fn cdn_abi_version() -> u32 {
    status::guard_value(CDN_ABI_VERSION, || CDN_ABI_VERSION)
}

pub mod loader;
pub mod policy;
pub mod policy_out;
pub mod policy_sched;
#[cfg(test)]
mod tests;
pub mod wire;
