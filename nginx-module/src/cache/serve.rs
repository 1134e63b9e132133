//! Serving an object from the cache: the headers here, the body without a
//! copy in `body` (file bufs for sendfile from the region files at 16 KiB
//! and up, memory bufs below). HEAD, `If-None-Match` /
//! `If-Modified-Since` (304) and single or multiple `Range`s (206/416) are
//! done by nginx's own filters below ours.

use crate::cache::{body, ReqCtx};
use crate::http::reply::push_header;
use crate::{base::guard, cache::variant};
use cdncore::block::Extent;
use cdncore::{now_ms, Object};
use nginx_sys::*;
use ngx::core::Status;
use std::sync::Arc;

/// Headers we set through `headers_out` fields or never replay.
const SKIP: &[&str] = &[
    "content-type",
    "content-length",
    "last-modified",
    "accept-ranges",
    "age",
    "content-range",
    variant::MARKER,
    crate::cache::slice::MARKER,
];

/// The content handler that replaces `proxy_pass` on a hit.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "serve",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is live.
            unsafe { guard::fault(r, "serve") };
            // SAFETY: r is the live main request whose lookup chose this handler.
            let Some(obj) = (unsafe { ReqCtx::get(r) }).and_then(|c| c.hit.clone()) else {
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            };
            // SAFETY: r is live.
            unsafe { send(r, obj) }
        },
    )
}

/// Sends `obj` as the response of `r`.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn send(r: *mut ngx_http_request_t, obj: Arc<Object>) -> ngx_int_t {
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    let meta = obj.meta();
    let size = obj.size();
    // SAFETY: r is live, its header not sent.
    if let Some(rc) = unsafe { crate::cache::rfc::conditional(r, meta) } {
        return rc; // 304 or 412
    }
    // SAFETY: r is live.
    if !unsafe { put_headers(r, meta) } {
        return Status::NGX_ERROR.into();
    }
    // SAFETY: r is live.
    unsafe {
        (*r).headers_out.content_length_n = size as off_t;
        if meta.status == 200 {
            (*r).set_allow_ranges(1);
            body::prepare(r, &obj);
        }
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        if size == 0 {
            return ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t);
        }
        send_body(r, obj)
    }
}

/// Whether `Last-Modified` goes out through `last_modified_time` (which the
/// not-modified and range filters use): nginx's header filter drops it on
/// every other status than 200, 206 and 304, so those replay the stored
/// field as it is (RFC 9111 §3.1: a cache keeps the fields it stored).
pub fn lm_by_time(status: u16) -> bool {
    matches!(status, 200 | 206 | 304)
}

/// Sets status, validators, the stored headers and `Age` (not the length).
///
/// # Safety
/// `r` must be a live main request whose header was not sent.
pub unsafe fn put_headers(r: *mut ngx_http_request_t, meta: &cdncore::Meta) -> bool {
    // SAFETY: r is live; every string set below is copied into its pool.
    unsafe {
        let out = &mut (*r).headers_out;
        out.status = ngx_uint_t::from(meta.status);
        let lm_time = lm_by_time(meta.status);
        out.last_modified_time = match meta.last_modified {
            Some(t) if lm_time => t as time_t,
            _ => -1,
        };
        for (name, value) in &meta.headers {
            let lower = name.to_ascii_lowercase();
            if lower == "content-type" {
                let Some(ct) = ngx_str_t::from_bytes((*r).pool, value) else {
                    return false;
                };
                out.content_type = ct;
                out.content_type_len = ct.len;
                continue;
            }
            // A stored Content-Range is replayed (a 416, or any field the
            // origin sent), except where the range filter writes its own: a
            // 200 asked for with Range.
            let replayed_range =
                lower == "content-range" && (meta.status != 200 || (*r).headers_in.range.is_null());
            let replayed_lm = lower == "last-modified" && !lm_time;
            if SKIP.contains(&lower.as_str()) && !replayed_range && !replayed_lm {
                continue;
            }
            let Some(h) = push_header(r, name.as_bytes(), value) else {
                return false;
            };
            if lower == "etag" {
                (*r).headers_out.etag = h;
            }
        }
        let age = meta.age_secs(now_ms()).to_string();
        if push_header(r, b"Age", age.as_bytes()).is_none() {
            return false;
        }
        // The origin's Date, never this node's (RFC 9110 §6.6.1).
        let date = cdncore::http::date::fmt_http_date(meta.date_secs());
        match push_header(r, b"Date", date.as_bytes()) {
            Some(h) => (*r).headers_out.date = h,
            None => return false,
        }
        // To a peer (a hit, or a fill streaming to it): the asking node
        // stores the body with the owner's metadata.
        if crate::cluster::peer::from_peer(r) {
            let wire = cdncore::fill::wire::encode(meta, now_ms());
            return push_header(r, crate::cluster::peer::META.as_bytes(), wire.as_bytes())
                .is_some();
        }
        true
    }
}

/// The region-file extent of a block-tier hit large enough for `sendfile`
/// (the lookup found and verified it: no second lookup).
pub fn extent_of(obj: &Object) -> Option<Extent> {
    body::extent_of(obj)
}

/// # Safety
/// `r` must be a live main request whose header was sent.
pub(crate) unsafe fn send_body(r: *mut ngx_http_request_t, obj: Arc<Object>) -> ngx_int_t {
    // SAFETY: forwarded.
    unsafe { body::send(r, obj) }
}
