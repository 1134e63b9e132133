//! Status codes, the thread-local last-error message, and the guard every
//! entry point runs in (no panic crosses the C boundary).

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Result of every fallible `cdn_` function. `CDN_OK` is 0; any other value
/// is a failure whose message `cdn_last_error()` returns. Values are stable
/// across versions; new ones may be added.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cdn_status {
    /// Success.
    CDN_OK = 0,
    /// A required pointer was NULL, a length was out of range, or text was
    /// not valid UTF-8.
    CDN_INVALID_ARGUMENT = 1,
    /// The handle is not a live handle of the expected kind (wrong type,
    /// already freed, closed or committed).
    CDN_INVALID_HANDLE = 2,
    /// The key is not cached (or only an index was out of range).
    CDN_NOT_FOUND = 3,
    /// The caller's buffer is too small; the needed size was written.
    CDN_BUFFER_TOO_SMALL = 4,
    /// The key is empty or longer than the configured `max_key`.
    CDN_INVALID_KEY = 5,
    /// The object is larger than the cache accepts (`max_object`).
    CDN_TOO_LARGE = 6,
    /// The body length differs from the size declared up front.
    CDN_SIZE_MISMATCH = 7,
    /// The configuration text is invalid.
    CDN_INVALID_CONFIG = 8,
    /// A purge regex does not compile.
    CDN_INVALID_REGEX = 9,
    /// A purge is malformed (e.g. an empty or too long pattern).
    CDN_INVALID_PURGE = 10,
    /// A purge covering the object arrived while it was being written, so
    /// the (possibly outdated) body was dropped. Not stored.
    CDN_PURGED_DURING_FILL = 11,
    /// The getter callback of `cdn_cache_fill` returned non-zero.
    CDN_GETTER_FAILED = 12,
    /// The call would wait on itself (a getter filling its own key).
    CDN_WOULD_DEADLOCK = 13,
    /// Another engine error; see `cdn_last_error()`.
    CDN_ERROR = 14,
    /// A bug: the library panicked. The call had no effect on the caller's
    /// outputs; the cache stays usable.
    CDN_PANIC = 15,
    /// A block tier's file could not be created, read or written (the
    /// message names the path); the cache keeps serving from other tiers.
    CDN_IO_ERROR = 16,
}

use cdn_status::*;

/// A failure on its way to the caller: a status and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub status: cdn_status,
    pub msg: String,
}

impl FfiError {
    pub fn new(status: cdn_status, msg: impl Into<String>) -> Self {
        FfiError {
            status,
            msg: msg.into(),
        }
    }
    pub fn arg(msg: impl Into<String>) -> Self {
        FfiError::new(CDN_INVALID_ARGUMENT, msg)
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::EmptyKey | Error::KeyTooLong { .. } => CDN_INVALID_KEY,
            Error::ObjectTooLarge { .. } => CDN_TOO_LARGE,
            Error::SizeMismatch { .. } => CDN_SIZE_MISMATCH,
            Error::InvalidRegex { .. } => CDN_INVALID_REGEX,
            Error::InvalidPurge(_) => CDN_INVALID_PURGE,
            Error::Config { .. } => CDN_INVALID_CONFIG,
            Error::InvalidMeta(_) => CDN_INVALID_ARGUMENT,
            Error::Io { .. } => CDN_IO_ERROR,
        };
        FfiError::new(status, e.to_string())
    }
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

thread_local! {
    /// The last failure's message, NUL-terminated; just the NUL when the
    /// last call succeeded.
    static LAST: RefCell<Vec<u8>> = RefCell::new(vec![0]);
}

fn set_last(msg: &str) {
    let _ = LAST.try_with(|l| {
        let mut l = l.borrow_mut();
        l.clear();
        l.extend(msg.bytes().filter(|&b| b != 0));
        l.push(0);
    });
}

fn clear_last() {
    let _ = LAST.try_with(|l| {
        let mut l = l.borrow_mut();
        l.clear();
        l.push(0);
    });
}

/// Runs an entry point: clears the last error, catches panics, and turns
/// the outcome into a status (setting the message on failure).
pub(crate) fn guard(f: impl FnOnce() -> FfiResult<()>) -> cdn_status {
    clear_last();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CDN_OK,
        Ok(Err(e)) => {
            set_last(&e.msg);
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last(&format!("internal error (panic): {what}"));
            CDN_PANIC
        }
    }
}

/// Runs an infallible entry point (a getter of a plain value); a panic
/// yields `fallback`.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The message of the last failed `cdn_` call on this thread, or "" if the
/// last call succeeded. Never NULL.
///
/// Ownership: the string belongs to the library; do not free it. It stays
/// valid until the next `cdn_` call on the same thread (other than
/// `cdn_last_error`/`cdn_last_error_copy`/`cdn_status_str`); copy it to keep it.
/// Thread safety: each thread has its own message.
#[no_mangle]
pub extern "C" fn cdn_last_error() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    guard_value(EMPTY.as_ptr().cast(), || {
        LAST.try_with(|l| l.borrow().as_ptr().cast())
            .unwrap_or(EMPTY.as_ptr().cast())
    })
}

/// Copies the last error message (NUL-terminated) into `buf` of `buf_len`
/// bytes and writes its length without the NUL to `*out_len`.
///
/// Returns `CDN_BUFFER_TOO_SMALL` (writing the needed size including the NUL
/// to `*out_len`, and nothing to `buf`) when it does not fit. `buf` may be
/// NULL only when `buf_len` is 0 (a size query). Never changes the message,
/// even when it fails (its own failures have no message).
/// Ownership: the caller owns `buf`. Thread safety: per thread, as `cdn_last_error`.
///
/// # Safety
/// `buf` must point to `buf_len` writable bytes; `out_len` to a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn cdn_last_error_copy(
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    let msg: Vec<u8> = guard_value(vec![0], || {
        LAST.try_with(|l| l.borrow().clone()).unwrap_or(vec![0])
    });
    let copy = || -> FfiResult<()> {
        if out_len.is_null() || (buf.is_null() && buf_len != 0) {
            return Err(FfiError::arg(
                "out_len is NULL, or buf is NULL with a non-zero buf_len",
            ));
        }
        if msg.len() > buf_len {
            // SAFETY: out_len checked non-NULL; the caller promises it is writable.
            unsafe { out_len.write(msg.len()) };
            return Err(FfiError::new(
                CDN_BUFFER_TOO_SMALL,
                "buffer too small for the message",
            ));
        }
        // SAFETY: buf holds buf_len >= msg.len() writable bytes (caller
        // contract, buf non-NULL since msg.len() >= 1); out_len is non-NULL.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast(), msg.len());
            out_len.write(msg.len() - 1);
        }
        Ok(())
    };
    let status = guard(copy);
    // Copying never replaces the message it copies (even on failure).
    guard_value((), || {
        let _ = LAST.try_with(|l| *l.borrow_mut() = msg);
    });
    status
}

/// A static English name for a status value (e.g. "CDN_NOT_FOUND"), or
/// "CDN_UNKNOWN" for a value that is not a status.
///
/// Ownership: static string, never freed. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn cdn_status_str(status: i32) -> *const c_char {
    guard_value(c"CDN_UNKNOWN".as_ptr(), || {
        status_name(status).as_ptr().cast()
    })
}

fn status_name(status: i32) -> &'static [u8] {
    match status {
        0 => b"CDN_OK\0",
        1 => b"CDN_INVALID_ARGUMENT\0",
        2 => b"CDN_INVALID_HANDLE\0",
        3 => b"CDN_NOT_FOUND\0",
        4 => b"CDN_BUFFER_TOO_SMALL\0",
        5 => b"CDN_INVALID_KEY\0",
        6 => b"CDN_TOO_LARGE\0",
        7 => b"CDN_SIZE_MISMATCH\0",
        8 => b"CDN_INVALID_CONFIG\0",
        9 => b"CDN_INVALID_REGEX\0",
        10 => b"CDN_INVALID_PURGE\0",
        11 => b"CDN_PURGED_DURING_FILL\0",
        12 => b"CDN_GETTER_FAILED\0",
        13 => b"CDN_WOULD_DEADLOCK\0",
        14 => b"CDN_ERROR\0",
        15 => b"CDN_PANIC\0",
        16 => b"CDN_IO_ERROR\0",
        _ => b"CDN_UNKNOWN\0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: cdn_last_error never returns NULL and is NUL-terminated.
        unsafe { CStr::from_ptr(cdn_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let st = guard(|| panic!("boom {}", 7));
        assert_eq!(st, CDN_PANIC);
        assert!(last().contains("boom 7"), "{}", last());
        assert_eq!(guard(|| Ok(())), CDN_OK);
        assert_eq!(last(), "");
    }

    #[test]
    fn errors_map_to_statuses_and_messages() {
        let st = guard(|| Err(Error::EmptyKey.into()));
        assert_eq!(st, CDN_INVALID_KEY);
        assert_eq!(last(), "key is empty");
        let st = guard(|| Err(FfiError::arg("bad\0ptr")));
        assert_eq!(st, CDN_INVALID_ARGUMENT);
        assert_eq!(last(), "badptr");
    }

    #[test]
    fn copy_reports_needed_size_and_keeps_the_message() {
        guard(|| Err(FfiError::arg("twelve chars")));
        let mut need = 0usize;
        // SAFETY: NULL buffer with length 0 is the documented size query.
        let st = unsafe { cdn_last_error_copy(std::ptr::null_mut(), 0, &mut need) };
        assert_eq!((st, need), (CDN_BUFFER_TOO_SMALL, 13));
        assert_eq!(last(), "twelve chars");
        let mut buf = [0 as c_char; 13];
        let mut len = 0usize;
        // SAFETY: buf has 13 writable bytes.
        let st = unsafe { cdn_last_error_copy(buf.as_mut_ptr(), 13, &mut len) };
        assert_eq!((st, len), (CDN_OK, 12));
        assert_eq!(last(), "twelve chars");
        assert_eq!(buf[11] as u8, b's');
        assert_eq!(buf[12], 0);
    }

    #[test]
    fn status_names() {
        // SAFETY: static NUL-terminated strings.
        let name = |s| {
            unsafe { CStr::from_ptr(cdn_status_str(s)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(name(CDN_PANIC as i32), "CDN_PANIC");
        assert_eq!(name(CDN_OK as i32), "CDN_OK");
        assert_eq!(name(-3), "CDN_UNKNOWN");
    }
}
