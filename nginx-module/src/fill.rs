//! Starting a fill: a background subrequest to the same URI, which runs the
//! location's `proxy_pass`. Background subrequests outlive their parent's
//! client, so a fill completes and is stored even when the client that
//! triggered it disconnects (a plain proxied response would be cancelled).

use crate::collapse::Outcome;
use crate::conf::LocConf;
use crate::ctx::FillCtx;
use crate::{guard, variant};
use cdncore::Object;
use nginx_sys::*;
use ngx::core::Pool;
use ngx::ngx_log_error;
use std::sync::Arc;

/// Client headers a fill must not forward: it fetches the whole object,
/// unconditionally (or conditionally on the cached copy's validators).
const DROP: &[&[u8]] = &[
    b"range",
    b"if-range",
    b"if-none-match",
    b"if-modified-since",
    b"if-match",
    b"if-unmodified-since",
    b"accept-encoding",
    b"cache-control",
    b"pragma",
];

/// Starts the fill of `base`; false if nginx refused the subrequest.
///
/// # Safety
/// `r` must be a live main request.
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    _lc: &LocConf,
    base: &[u8],
    coding: &'static str,
    stale: Option<Arc<Object>>,
    shared: Option<u64>,
) -> bool {
    // SAFETY: r is live; its pool outlives the subrequest.
    unsafe {
        let log = (*(*r).connection).log;
        let pool = Pool::from_ngx_pool((*r).pool);
        let ps = pool.calloc_type::<ngx_http_post_subrequest_t>();
        if ps.is_null() {
            return false;
        }
        (*ps).handler = Some(done);
        let mut uri = (*r).uri;
        let mut args = (*r).args;
        let mut sr: *mut ngx_http_request_t = core::ptr::null_mut();
        let rc = ngx_http_subrequest(
            r,
            &mut uri,
            &mut args,
            &mut sr,
            ps,
            NGX_HTTP_SUBREQUEST_BACKGROUND as ngx_uint_t,
        );
        if rc != NGX_OK as ngx_int_t || sr.is_null() {
            ngx_log_error!(NGX_LOG_ERR, log, "rcdn: cannot start a fill subrequest");
            return false;
        }
        let validators = stale.as_ref().map(|o| validators(o)).unwrap_or_default();
        if !rebuild_headers(sr, coding, &validators) {
            return false;
        }
        let fill = FillCtx {
            base: base.to_vec(),
            coding,
            stale,
            writer: None,
            marker: None,
            outcome: None,
            finished: false,
            log,
            shared,
        };
        FillCtx::attach(sr, fill).is_some()
    }
}

/// Conditional headers that revalidate a stale copy.
fn validators(o: &Object) -> Vec<(&'static [u8], Vec<u8>)> {
    let mut v = Vec::new();
    if let Some(etag) = &o.meta().etag {
        v.push((&b"If-None-Match"[..], etag.to_vec()));
    }
    if let Some(lm) = o.meta().last_modified {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(lm);
        v.push((
            &b"If-Modified-Since"[..],
            httpdate::fmt_http_date(t).into_bytes(),
        ));
    }
    v
}

/// Gives the subrequest its own header list: the client's headers minus
/// [`DROP`], plus the normalised `Accept-Encoding` and `extra`.
///
/// # Safety
/// `sr` must be a fresh subrequest (it shares the parent's list parts).
unsafe fn rebuild_headers(
    sr: *mut ngx_http_request_t,
    coding: &str,
    extra: &[(&'static [u8], Vec<u8>)],
) -> bool {
    // SAFETY: sr is live; the old list is the parent's and stays intact.
    unsafe {
        let hin = &mut (*sr).headers_in;
        let old = hin.headers;
        let mut list: ngx_list_t = core::mem::zeroed();
        let size = core::mem::size_of::<ngx_table_elt_t>();
        if ngx_list_init(&mut list, (*sr).pool, 20, size) != NGX_OK as ngx_int_t {
            return false;
        }
        let mut part: *const ngx_list_part_t = &old.part;
        while !part.is_null() {
            let elts =
                core::slice::from_raw_parts((*part).elts as *const ngx_table_elt_t, (*part).nelts);
            for h in elts {
                let lower = h.key.as_bytes().to_ascii_lowercase();
                if h.hash == 0 || DROP.contains(&lower.as_slice()) {
                    continue;
                }
                let n = ngx_list_push(&mut list).cast::<ngx_table_elt_t>();
                if n.is_null() {
                    return false;
                }
                *n = *h;
                (*n).next = core::ptr::null_mut();
            }
            part = (*part).next;
        }
        // The list struct moves into the request: if its last part is the
        // embedded one, `last` must follow it.
        let last_is_embedded = core::ptr::eq(list.last, &list.part);
        hin.headers = list;
        if last_is_embedded {
            hin.headers.last = &mut hin.headers.part;
        }
        hin.range = core::ptr::null_mut();
        hin.if_range = core::ptr::null_mut();
        hin.if_none_match = core::ptr::null_mut();
        hin.if_modified_since = core::ptr::null_mut();
        hin.if_match = core::ptr::null_mut();
        hin.if_unmodified_since = core::ptr::null_mut();
        let mut add: Vec<(&[u8], &[u8])> = extra.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        if coding != "identity" {
            add.push((b"Accept-Encoding", coding.as_bytes()));
        }
        for (name, value) in add {
            let n = ngx_list_push(&mut hin.headers).cast::<ngx_table_elt_t>();
            if n.is_null() || add_to_ngx_table(n, (*sr).pool, name, value).is_none() {
                return false;
            }
            (*n).next = core::ptr::null_mut();
        }
        true
    }
}

/// Post-subrequest handler: the fill ended (nginx may call it twice).
unsafe extern "C" fn done(
    sr: *mut ngx_http_request_t,
    _data: *mut core::ffi::c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: nginx passes the live subrequest.
    let log = unsafe { (*(*sr).connection).log };
    guard::event(log, "fill done", || {
        // SAFETY: sr is live; its upstream is finalized by now.
        unsafe { crate::stats::fill_done(sr) };
        // SAFETY: sr is one of our fills.
        if let Some(f) = unsafe { FillCtx::get(sr) } {
            if f.outcome.is_none() || f.writer.is_some() {
                // No header, or a body that never completed.
                f.outcome = Some(Outcome::Error);
            }
            f.finish();
        }
    });
    rc
}

/// Keys a URL purge must name (used by the purge handler).
pub fn url_keys(base: &[u8]) -> Vec<Vec<u8>> {
    variant::all_keys(base)
}
