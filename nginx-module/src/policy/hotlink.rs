//! Hotlink protection (`rcdn_hotlink <policy.json>`, `rcdn_hotlink_unknown`):
//! an access-phase check of Host, Referer and the `token` / `expires`
//! arguments against the engine's `cdncore::policy::hotlink` policies.
//!
//! The policy file is read and compiled while the configuration is parsed,
//! so a bad file fails `nginx -t` and a reload (HUP) re-reads it.

use crate::base::guard;
use crate::conf::{args, bad, lossy, LocConf};
use cdncore::policy::hotlink::{Decision, Hotlink, Request, Unknown};
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::{Status, NGX_CONF_OK};
use ngx::http::HttpModuleLocationConf;
use ngx::ngx_log_error;
use std::sync::Arc;

/// Reads and compiles a policy file; the error names the file and problem.
pub fn load(path: &str) -> Result<Hotlink, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    // Unknown domains are handled by `rcdn_hotlink_unknown` at check time.
    Hotlink::from_json(&text, Unknown::Allow)
        .map_err(|e| format!("bad policy file \"{path}\": {}: {}", e.what, e.reason))
}

/// `rcdn_hotlink <file>;` (relative paths are under nginx's conf prefix).
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_hotlink(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_hotlink", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if lc.hotlink.policy.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let mut name = unsafe { args(cf) }[0];
        // SAFETY: cf->cycle is the cycle being configured; name is a copy
        // that nginx may repoint at a cycle-pool string.
        if unsafe { ngx_conf_full_name((*cf).cycle, &mut name, 1) } != NGX_OK as ngx_int_t {
            return bad(cf, "rcdn_hotlink", &lossy(&name), "cannot resolve the path");
        }
        let path = lossy(&name);
        match load(&path) {
            Ok(h) => {
                lc.hotlink.policy = Some(Arc::new(h));
                NGX_CONF_OK
            }
            Err(e) => bad(cf, "rcdn_hotlink", &path, &e),
        }
    })
}

/// `rcdn_hotlink_unknown allow | refuse;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_unknown(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_hotlink_unknown", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        lc.hotlink.unknown = match v.as_bytes() {
            b"allow" => Some(Unknown::Allow),
            b"refuse" => Some(Unknown::Refuse),
            _ => {
                return bad(
                    cf,
                    "rcdn_hotlink_unknown",
                    &lossy(&v),
                    "expected \"allow\" or \"refuse\"",
                )
            }
        };
        NGX_CONF_OK
    })
}

/// The value of query argument `name` (raw, as sent).
fn arg<'a>(args: &'a [u8], name: &[u8]) -> Option<&'a str> {
    args.split(|&b| b == b'&').find_map(|kv| {
        let (k, v) = match kv.iter().position(|&b| b == b'=') {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (kv, &b""[..]),
        };
        (k == name).then(|| core::str::from_utf8(v).ok()).flatten()
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The request's Host (nginx's parsed server name, else the header).
///
/// # Safety
/// `r` must be live.
unsafe fn host<'a>(r: *mut ngx_http_request_t) -> &'a [u8] {
    // SAFETY: r is live; headers_in.server is set while reading headers.
    let server = unsafe { &(*r).headers_in.server };
    if server.len > 0 {
        return server.as_bytes();
    }
    // SAFETY: r is live.
    unsafe { crate::base::request::header_in(r, b"host") }.unwrap_or(b"")
}

/// Access phase: judges main requests in locations with `rcdn_hotlink`.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn access(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "hotlink",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        // SAFETY: r is live for the call.
        || unsafe { check(r) },
    )
}

/// # Safety
/// `r` must be live.
unsafe fn check(r: *mut ngx_http_request_t) -> ngx_int_t {
    let declined = Status::NGX_DECLINED.into();
    // SAFETY: r is live.
    if unsafe { (*r).main } != r {
        return declined;
    }
    // SAFETY: r is live; our loc conf exists for every location.
    let Some(lc) = (unsafe { crate::conf::Module::location_conf(&*r) }) else {
        return declined;
    };
    if lc.hotlink.policy.is_none() && lc.hotlink.url.is_none() {
        return declined;
    }
    // SAFETY: r is live; its strings live as long as the request.
    let (host, uri, args, referer) = unsafe {
        (
            host(r),
            (*r).uri.as_bytes(),
            (*r).args.as_bytes(),
            crate::base::request::header_in(r, b"referer"),
        )
    };
    let host = String::from_utf8_lossy(host);
    let uri = String::from_utf8_lossy(uri);
    let referer = referer.map(String::from_utf8_lossy);
    let req = Request {
        host: &host,
        path: &uri,
        referer: referer.as_deref(),
        token: arg(args, b"token"),
        expires: arg(args, b"expires"),
    };
    let refuse = lc.hotlink.unknown == Some(Unknown::Refuse);
    let unknown = || {
        if refuse {
            Decision::Forbidden("unknown domain")
        } else {
            Decision::Allow
        }
    };
    let file = lc.hotlink.policy.as_ref();
    let decision = match (file, &lc.hotlink.url) {
        (Some(p), _) if p.knows(&host) => p.check(&req, now_secs()),
        // SAFETY: r is a live main request in the access phase.
        (_, Some(u)) => match unsafe { crate::policy::hotlink_url::lookup(r, u, &host) } {
            crate::policy::hotlink_url::Answer::Policy(p) => p.check(&req, now_secs()),
            crate::policy::hotlink_url::Answer::Unknown => unknown(),
            crate::policy::hotlink_url::Answer::Wait => return Status::NGX_AGAIN.into(),
        },
        _ => unknown(),
    };
    // SAFETY: r is live.
    unsafe { act(r, log_of(r), decision) }
}

/// # Safety
/// `r` must be live.
unsafe fn log_of(r: *mut ngx_http_request_t) -> *mut ngx_log_t {
    // SAFETY: r is live.
    unsafe { (*(*r).connection).log }
}

/// Turns a decision into the phase handler's answer.
///
/// # Safety
/// `r` must be live.
unsafe fn act(r: *mut ngx_http_request_t, log: *mut ngx_log_t, d: Decision) -> ngx_int_t {
    match d {
        Decision::Allow => Status::NGX_DECLINED.into(),
        Decision::Forbidden(why) => {
            ngx_log_error!(NGX_LOG_INFO, log, "rcdn: hotlink refused: {why}");
            // SAFETY: r is live.
            unsafe { crate::policy::stats::mark(r, crate::policy::stats::Mark::Denied) };
            NGX_HTTP_FORBIDDEN as ngx_int_t
        }
        Decision::Expired => {
            ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "rcdn: hotlink refused: signed URL expired"
            );
            410
        }
        Decision::Redirect(url) => {
            // SAFETY: r is live.
            unsafe { crate::policy::stats::mark(r, crate::policy::stats::Mark::Denied) };
            // SAFETY: r is live.
            unsafe { redirect(r, &url) }
        }
    }
}

/// 302 to `url`: a `Location` header and the status.
///
/// # Safety
/// `r` must be live.
pub(crate) unsafe fn redirect(r: *mut ngx_http_request_t, url: &str) -> ngx_int_t {
    // SAFETY: r is live; the pool outlives the response.
    unsafe {
        let pool = (*r).pool;
        let data = ngx_pnalloc(pool, url.len()).cast::<u8>();
        let h = ngx_list_push(&mut (*r).headers_out.headers).cast::<ngx_table_elt_t>();
        if data.is_null() || h.is_null() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        core::ptr::copy_nonoverlapping(url.as_ptr(), data, url.len());
        (*h).hash = 1;
        (*h).next = core::ptr::null_mut();
        (*h).key = ngx::ngx_string!("Location");
        (*h).value = ngx_str_t {
            len: url.len(),
            data,
        };
        (*h).lowcase_key = core::ptr::null_mut();
        (*r).headers_out.location = h;
    }
    NGX_HTTP_MOVED_TEMPORARILY as ngx_int_t
}
