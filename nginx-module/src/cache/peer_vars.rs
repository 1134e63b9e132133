//! `$rcdn_upstream` (where a fill goes: the owner peer or `rcdn_origin`),
//! `$rcdn_owner` (the key's owner on the ring), `$rcdn_source` (where the
//! object came from): read from the cache's request and fill contexts.

use crate::base::guard;
use crate::cache::ctx::{FillCtx, ReqCtx};
use crate::cluster::{self, peer};
use core::ptr;
use nginx_sys::*;
use ngx::core::Status;
use ngx::ngx_string;

const UPSTREAM: usize = 0;
const OWNER: usize = 1;
const SOURCE: usize = 2;

/// `$rcdn_upstream`, `$rcdn_owner`, `$rcdn_source`.
///
/// # Safety
/// `cf` must be the configuration being parsed (preconfiguration).
pub unsafe fn register_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut names = [
        (ngx_string!("rcdn_upstream"), UPSTREAM),
        (ngx_string!("rcdn_owner"), OWNER),
        (ngx_string!("rcdn_source"), SOURCE),
    ];
    let flags = (NGX_HTTP_VAR_NOCACHEABLE | NGX_HTTP_VAR_NOHASH) as ngx_uint_t;
    for (name, which) in names.iter_mut() {
        // SAFETY: cf is the conf being parsed; nginx copies the name.
        let v = unsafe { ngx_http_add_variable(cf, name, flags) };
        if v.is_null() {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: v is the variable nginx just added.
        unsafe {
            (*v).get_handler = Some(get_variable);
            (*v).data = *which;
        }
    }
    Status::NGX_OK.into()
}

unsafe extern "C" fn get_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    which: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request and a value slot.
    let log = unsafe { (*(*r).connection).log };
    guard::request(log, "$rcdn_upstream", Status::NGX_ERROR.into(), || {
        // SAFETY: r is live for the call.
        let value = unsafe { value_of(r, which) };
        // SAFETY: v is a valid slot; the bytes live in conf, the request
        // pool or a FillCtx (pool-owned), all outliving the request's use.
        unsafe {
            match value {
                Some(s) if s.len > 0 => {
                    (*v).data = s.data;
                    (*v).set_len(s.len as u32);
                    (*v).set_valid(1);
                    (*v).set_no_cacheable(1);
                    (*v).set_not_found(0);
                }
                _ => {
                    (*v).set_not_found(1);
                    (*v).data = ptr::null_mut();
                    (*v).set_len(0);
                }
            }
        }
        Status::NGX_OK.into()
    })
}

fn borrowed(s: &str) -> ngx_str_t {
    ngx_str_t {
        len: s.len(),
        data: s.as_ptr().cast_mut(),
    }
}

/// # Safety
/// `r` must be live.
unsafe fn value_of(r: *mut ngx_http_request_t, which: usize) -> Option<ngx_str_t> {
    // SAFETY: r is live.
    let cc = unsafe { peer::conf(r) }?;
    // SAFETY: r is live.
    let main = unsafe { (*r).main };
    match which {
        UPSTREAM => {
            // A fill subrequest routed to a peer goes there; everything else
            // (local fills, passes, hits' revalidations) to the origin.
            // SAFETY: subrequest slots hold a FillCtx or null.
            let fill = (main != r).then(|| unsafe { FillCtx::get(r) }).flatten();
            match fill.and_then(|f| f.peer.as_ref()) {
                Some(t) => Some(borrowed(&t.via)),
                None => cc.origin.as_deref().map(borrowed),
            }
        }
        OWNER => {
            // SAFETY: main is live; its slot holds a ReqCtx or null.
            let key = unsafe { ReqCtx::get(main) }.map(|c| c.key.clone())?;
            let owner = cluster::owner(cc, &key)?;
            // SAFETY: r is live; the copy lives in its pool.
            unsafe { ngx_str_t::from_bytes((*r).pool, owner.as_bytes()) }
        }
        _ => {
            // SAFETY: main is live.
            let s = unsafe { ReqCtx::get(main) }.map_or("", |c| c.source);
            Some(borrowed(s))
        }
    }
}
