//! `$rcdn_cache_status`: what the cache did for the (main) request;
//! `$rcdn_body`: how a hit's body was sent (`memory` or `sendfile`).

use crate::base::guard;
use crate::cache::ReqCtx;
use core::ptr;
use nginx_sys::*;
use ngx::core::Status;
use ngx::ngx_string;

/// The values of `$rcdn_cache_status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheStatus {
    /// Not decided (the variable is then "not found").
    #[default]
    None,
    Hit,
    Miss,
    /// Was stale; a fresh full response replaced it.
    Expired,
    /// Stale copy served (origin failed, within stale-if-error).
    Stale,
    /// Stale copy served while a refresh runs (stale-while-revalidate).
    Updating,
    /// Was stale; the origin answered 304 and the copy was refreshed.
    Revalidated,
    /// Not cacheable by method or configuration.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::None => "",
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// Adds the variables; runs in preconfiguration, before they can be used.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn register_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut status = ngx_string!("rcdn_cache_status");
    let mut body = ngx_string!("rcdn_body");
    for (name, which) in [(&mut status, STATUS), (&mut body, BODY)] {
        // SAFETY: forwarded.
        if unsafe { add(cf, name, which) } != NGX_OK as ngx_int_t {
            return Status::NGX_ERROR.into();
        }
    }
    Status::NGX_OK.into()
}

const STATUS: usize = 0;
const BODY: usize = 1;

/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn add(cf: *mut ngx_conf_t, name: &mut ngx_str_t, which: usize) -> ngx_int_t {
    let flags = (NGX_HTTP_VAR_NOCACHEABLE | NGX_HTTP_VAR_NOHASH) as ngx_uint_t;
    // SAFETY: cf is the conf being parsed; name is copied by nginx.
    let v = unsafe { ngx_http_add_variable(cf, name, flags) };
    if v.is_null() {
        return Status::NGX_ERROR.into();
    }
    // SAFETY: v is the variable nginx just added.
    unsafe {
        (*v).get_handler = Some(get_status);
        (*v).data = which;
    }
    Status::NGX_OK.into()
}

unsafe extern "C" fn get_status(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    which: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request and a value slot.
    let log = unsafe { (*(*r).connection).log };
    guard::request(log, "$rcdn_cache_status", Status::NGX_ERROR.into(), || {
        // SAFETY: r is live; main is the request that owns our context.
        let main = unsafe { (*r).main };
        // SAFETY: as above.
        let s = unsafe { ReqCtx::get(main) }.map_or("", |c| match which {
            BODY => c.body,
            _ => c.status.as_str(),
        });
        // SAFETY: v is a valid value slot; s is 'static.
        unsafe {
            if s.is_empty() {
                (*v).set_not_found(1);
                (*v).data = ptr::null_mut();
                (*v).set_len(0);
            } else {
                (*v).data = s.as_ptr().cast_mut();
                (*v).set_len(s.len() as u32);
                (*v).set_valid(1);
                (*v).set_no_cacheable(1);
                (*v).set_not_found(0);
            }
        }
        Status::NGX_OK.into()
    })
}
