//! `$rcdn_log_json`: the request as one JSON line (the engine's
//! `cdncore::policy::reqlog::line`), for nginx's own log machinery:
//! `log_format rcdn_json escape=none '$rcdn_log_json';`. The node name is
//! `rcdn_node_name` (default: the host name nginx knows).

use crate::base::guard;
use crate::base::request::header_in;
use crate::cache::ReqCtx;
use crate::conf::Module;
use crate::conf::{args, bad, lossy, MainConf};
use cdncore::policy::reqlog::{line, Entry};
use core::ffi::{c_char, c_void};
use core::ptr;
use nginx_sys::*;
use ngx::core::{Status, NGX_CONF_OK};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_string;

/// `rcdn_node_name <name>;` (http).
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_node_name(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_node_name", || {
        // SAFETY: conf is our MainConf.
        let mc = unsafe { &mut *conf.cast::<MainConf>() };
        if mc.node_name.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        if v.len == 0 {
            return bad(cf, "rcdn_node_name", "", "the name must not be empty");
        }
        mc.node_name = Some(lossy(&v));
        NGX_CONF_OK
    })
}

/// Adds `$rcdn_log_json`; runs in preconfiguration.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut name = ngx_string!("rcdn_log_json");
    let flags = (NGX_HTTP_VAR_NOCACHEABLE | NGX_HTTP_VAR_NOHASH) as ngx_uint_t;
    // SAFETY: cf is the conf being parsed; name is copied by nginx.
    let v = unsafe { ngx_http_add_variable(cf, &mut name, flags) };
    if v.is_null() {
        return Status::NGX_ERROR.into();
    }
    // SAFETY: v is the variable nginx just added.
    unsafe { (*v).get_handler = Some(get) };
    Status::NGX_OK.into()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

unsafe extern "C" fn get(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(log, "$rcdn_log_json", Status::NGX_ERROR.into(), || {
        // SAFETY: r is live; the log line describes the main request.
        let text = unsafe { build((*r).main) };
        // SAFETY: r is live; the value is copied into its pool.
        unsafe {
            let data = ngx_pnalloc((*r).pool, text.len()).cast::<u8>();
            if data.is_null() {
                return Status::NGX_ERROR.into();
            }
            ptr::copy_nonoverlapping(text.as_ptr(), data, text.len());
            (*v).data = data;
            (*v).set_len(text.len() as u32);
            (*v).set_valid(1);
            (*v).set_no_cacheable(1);
            (*v).set_not_found(0);
        }
        Status::NGX_OK.into()
    })
}

/// # Safety
/// `r` must be a live main request.
unsafe fn build(r: *mut ngx_http_request_t) -> String {
    // SAFETY: r is live; the global cycle is the running one.
    let node = unsafe {
        match Module::main_conf(&*r).and_then(|m| m.node_name.as_deref()) {
            Some(n) => std::borrow::Cow::Borrowed(n),
            None => std::borrow::Cow::Owned(lossy(&(*ngx_cycle).hostname)),
        }
    };
    // SAFETY: r is live; all strings live as long as the request.
    unsafe {
        let ctx = ReqCtx::get(r);
        let host = (*r).headers_in.server.as_bytes();
        let fallback_key = [host, (*r).unparsed_uri.as_bytes()].concat();
        let key = match &ctx {
            Some(c) if !c.key.is_empty() => c.key.as_slice(),
            _ => fallback_key.as_slice(),
        };
        let ua = (*r).headers_in.user_agent;
        let ua = if ua.is_null() {
            &b""[..]
        } else {
            (*ua).value.as_bytes()
        };
        let client = String::from_utf8_lossy((*(*r).connection).addr_text.as_bytes());
        let start = (*r).start_sec as u64 * 1000 + (*r).start_msec as u64;
        let now = now_ms();
        line(&Entry {
            time_ms: now,
            key,
            client: &client,
            user_agent: ua,
            cache_status: ctx.as_ref().map_or("", |c| c.status.as_str()),
            status: u16::try_from((*r).headers_out.status).unwrap_or(0),
            bytes_sent: u64::try_from((*(*r).connection).sent).unwrap_or(0),
            duration_ms: now.saturating_sub(start),
            node: &node,
            data: header_in(r, b"x-minicdn-data"),
            data_type: header_in(r, b"x-minicdn-type"),
        })
    }
}
