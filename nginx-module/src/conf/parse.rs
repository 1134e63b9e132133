//! Parsing helpers for directive setters: arguments, times, complex
//! values, and the error that names the directive and the bad value.

use core::ffi::c_char;
use nginx_sys::*;
use ngx::core::NGX_CONF_ERROR;
use ngx::ngx_conf_log_error;

/// The directive's arguments after its name.
///
/// # Safety
/// `cf` is the conf being parsed, so `cf->args` is an array of `ngx_str_t`.
pub(crate) unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: nginx fills cf->args with the directive name and its arguments.
    let all = unsafe { (*(*cf).args).as_slice::<ngx_str_t>() };
    &all[1..]
}

pub(crate) fn lossy(s: &ngx_str_t) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// Logs `invalid value "v" in "name" directive: why` and fails the config.
pub(crate) fn bad(cf: *mut ngx_conf_t, name: &str, value: &str, why: &str) -> *mut c_char {
    ngx_conf_log_error!(
        NGX_LOG_EMERG,
        cf,
        "invalid value \"{value}\" in \"{name}\" directive: {why}"
    );
    NGX_CONF_ERROR
}

/// Compiles a complex value (`$host$request_uri`) into conf memory.
///
/// # Safety
/// `cf` must be the conf being parsed.
pub unsafe fn compile(
    cf: *mut ngx_conf_t,
    value: &mut ngx_str_t,
) -> Option<*mut ngx_http_complex_value_t> {
    // SAFETY: cf->pool lives as long as the configuration.
    unsafe {
        let cv = ngx_pcalloc((*cf).pool, core::mem::size_of::<ngx_http_complex_value_t>())
            .cast::<ngx_http_complex_value_t>();
        if cv.is_null() {
            return None;
        }
        let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
        ccv.cf = cf;
        ccv.value = value;
        ccv.complex_value = cv;
        (ngx_http_compile_complex_value(&mut ccv) == NGX_OK as ngx_int_t).then_some(cv)
    }
}

/// Parses an nginx time ("10m", "30s", "500ms"; bare numbers are seconds).
pub(crate) fn parse_time(s: &[u8]) -> Option<u64> {
    let mut v = ngx_str_t {
        len: s.len(),
        data: s.as_ptr().cast_mut(),
    };
    // SAFETY: ngx_parse_time only reads `len` bytes from `data`.
    let ms = unsafe { ngx_parse_time(&mut v, 0) };
    (ms >= 0).then_some(ms as u64)
}
