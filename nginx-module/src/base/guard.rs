//! Panic walls: every `extern "C"` entry point runs its body through one of
//! these, so a bug answers 500 (or fails the config) instead of aborting the
//! worker ("panic in a function that cannot unwind").

use core::ffi::c_char;
use nginx_sys::*;
use ngx::core::NGX_CONF_ERROR;
use ngx::{ngx_conf_log_error, ngx_log_error};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic")
}

/// For directive setters: a panic fails the configuration.
pub fn conf(cf: *mut ngx_conf_t, name: &str, f: impl FnOnce() -> *mut c_char) -> *mut c_char {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(p) => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "rcdn: internal error in \"{name}\": {}",
                message(&*p)
            );
            NGX_CONF_ERROR
        }
    }
}

/// For request handlers and filters: a panic is logged and `on_panic`
/// returned (500 for handlers, NGX_ERROR for filters).
pub fn request(
    log: *mut ngx_log_t,
    what: &str,
    on_panic: ngx_int_t,
    f: impl FnOnce() -> ngx_int_t,
) -> ngx_int_t {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(p) => {
            if !log.is_null() {
                ngx_log_error!(NGX_LOG_ERR, log, "rcdn: panic in {what}: {}", message(&*p));
            }
            on_panic
        }
    }
}

/// For callbacks that return nothing (events, cleanups).
pub fn event(log: *mut ngx_log_t, what: &str, f: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        if !log.is_null() {
            ngx_log_error!(NGX_LOG_ERR, log, "rcdn: panic in {what}: {}", message(&*p));
        }
    }
}

/// Panics if the request asks for a fault at `point` (fault-injection
/// builds only; a no-op otherwise).
///
/// # Safety
/// `r` must be live.
#[allow(unused_variables)]
pub unsafe fn fault(r: *mut ngx_http_request_t, point: &str) {
    #[cfg(feature = "fault-injection")]
    {
        // SAFETY: r is live; faults are asked for by the main request.
        let main = unsafe { (*r).main };
        // SAFETY: as above.
        let asked = unsafe { crate::base::request::header_in(main, b"x-rcdn-fault") };
        if asked == Some(point.as_bytes()) {
            panic!("injected fault at {point}");
        }
    }
}

/// Whether the request asks for the fault `point` (fault-injection builds
/// only; always false otherwise), for faults that delay rather than panic.
///
/// # Safety
/// `r` must be live.
#[allow(unused_variables)]
pub unsafe fn fault_asked(r: *mut ngx_http_request_t, point: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        // SAFETY: r is live; faults are asked for by the main request.
        let main = unsafe { (*r).main };
        // SAFETY: as above.
        return unsafe { crate::base::request::header_in(main, b"x-rcdn-fault") }
            == Some(point.as_bytes());
    }
    #[allow(unreachable_code)]
    false
}

/// The delay of a slow-I/O fault ([`fault_asked`]): 1 s, on whatever thread
/// does the I/O, to show whether it holds up the event loop.
pub fn injected_delay(slow: bool) {
    if slow {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
