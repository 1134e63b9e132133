//! Turning C arguments into Rust values: every pointer is checked for NULL
//! and every length against a bound before a slice is formed over it.

use super::status::{cdn_status, cdn_status::*, FfiError, FfiResult};

/// Upper bound for text arguments (config, purge names, header fields).
pub(crate) const MAX_TEXT: usize = 1 << 20;

/// A byte slice from `ptr`/`len`. `len` above `max` fails with `over`.
///
/// # Safety
/// If `ptr` is non-NULL and `len <= max`, `ptr` must point to `len` readable
/// bytes that outlive `'a`.
pub(crate) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    max: usize,
    what: &str,
    over: cdn_status,
) -> FfiResult<&'a [u8]> {
    if ptr.is_null() {
        return Err(FfiError::arg(format!("{what} is NULL")));
    }
    if len > max {
        return Err(FfiError::new(
            over,
            format!("{what} is {len} bytes, over the limit of {max}"),
        ));
    }
    // SAFETY: non-NULL, len bounded (<= max <= isize::MAX), and the caller
    // promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// UTF-8 text from `ptr`/`len` (at most `MAX_TEXT` bytes).
///
/// # Safety
/// As `bytes`.
pub(crate) unsafe fn text<'a>(ptr: *const u8, len: usize, what: &str) -> FfiResult<&'a str> {
    // SAFETY: forwarded caller contract.
    let b = unsafe { bytes(ptr, len, MAX_TEXT, what, CDN_INVALID_ARGUMENT)? };
    std::str::from_utf8(b).map_err(|e| FfiError::arg(format!("{what} is not UTF-8: {e}")))
}

/// Checks an output pointer.
pub(crate) fn out<T>(ptr: *mut T, what: &str) -> FfiResult<*mut T> {
    if ptr.is_null() {
        Err(FfiError::arg(format!("{what} (output) is NULL")))
    } else {
        Ok(ptr)
    }
}

/// Writes an output value.
///
/// # Safety
/// `ptr` came from `out` and points to writable memory for a `T`.
pub(crate) unsafe fn put<T>(ptr: *mut T, v: T) {
    // SAFETY: non-NULL (checked by `out`), writable (caller contract); the
    // old value is not dropped (it may be uninitialised C memory).
    unsafe { ptr.write(v) }
}
