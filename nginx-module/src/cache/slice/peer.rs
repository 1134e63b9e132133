//! The owner's answer to a peer's slice request: the cached slice as a
//! 206 of its range of the object, with `X-Rcdn-Meta` (from
//! [`serve::put_headers`]), so the asking node stores it under the slice
//! key with the owner's metadata.

use crate::cache::ReqCtx;
use crate::{base::guard, cache::serve};
use nginx_sys::*;
use ngx::core::Status;

/// The content handler of a peer's slice hit.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "peer slice",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is the live main request whose lookup chose us.
            unsafe { send(r) }
        },
    )
}

/// # Safety
/// `r` must be a live main request with a peer slice hit in its context.
unsafe fn send(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: r is a live main request.
    let Some(ctx) = (unsafe { ReqCtx::get(r) }) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let (Some(ps), Some(obj)) = (ctx.peer_slice.clone(), ctx.hit.clone()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let (s, e) = ps.m.bounds(ps.index);
    let range = format!("bytes {s}-{}/{}", e - 1, ps.m.total);
    // SAFETY: r is live and its header not sent; strings are copied into
    // its pool.
    unsafe {
        if !serve::put_headers(r, obj.meta())
            || crate::http::reply::push_header(r, b"Content-Range", range.as_bytes()).is_none()
        {
            return Status::NGX_ERROR.into();
        }
        (*r).headers_out.status = NGX_HTTP_PARTIAL_CONTENT as ngx_uint_t;
        (*r).headers_out.content_length_n = (e - s) as off_t;
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        serve::send_body(r, obj)
    }
}
