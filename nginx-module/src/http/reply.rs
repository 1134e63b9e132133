//! Small generated responses (purge results, statistics): the body is copied
//! into the request pool and sent as one memory buffer. Also one more
//! response header for any reply.

use nginx_sys::*;
use ngx::core::{Pool, Status};
use serde_json::Value;

/// Sends `status` with `body` (copied into the request pool) as
/// `content_type`.
///
/// # Safety
/// `r` must be live.
pub unsafe fn send(
    r: *mut ngx_http_request_t,
    status: u32,
    body: &[u8],
    content_type: ngx_str_t,
) -> ngx_int_t {
    // SAFETY: r is live; the body is copied into its pool, which outlives
    // the send.
    unsafe {
        let pool = Pool::from_ngx_pool((*r).pool);
        let out = &mut (*r).headers_out;
        out.status = status as ngx_uint_t;
        out.content_length_n = body.len() as off_t;
        out.content_type = content_type;
        out.content_type_len = content_type.len;
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        let Some(data) = ngx_str_t::from_bytes(pool.as_ptr(), body) else {
            return Status::NGX_ERROR.into();
        };
        let b = pool.calloc_type::<ngx_buf_t>();
        if b.is_null() {
            return Status::NGX_ERROR.into();
        }
        (*b).start = data.data;
        (*b).pos = data.data;
        (*b).last = data.data.add(data.len);
        (*b).end = (*b).last;
        (*b).set_memory(1);
        (*b).set_last_buf(((*r).main == r) as u32);
        (*b).set_last_in_chain(1);
        let mut chain = ngx_chain_t {
            buf: b,
            next: core::ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut chain)
    }
}

/// Sends a JSON response.
///
/// # Safety
/// `r` must be live.
pub unsafe fn respond(r: *mut ngx_http_request_t, status: u32, body: &Value) -> ngx_int_t {
    let mut text = body.to_string();
    text.push('\n');
    // SAFETY: r is live.
    unsafe {
        send(
            r,
            status,
            text.as_bytes(),
            ngx::ngx_string!("application/json"),
        )
    }
}

/// Pushes one response header.
///
/// # Safety
/// `r` must be live.
pub unsafe fn push_header(
    r: *mut ngx_http_request_t,
    name: &[u8],
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: headers_out.headers is a list of ngx_table_elt_t in r's pool.
    unsafe {
        let h = ngx_list_push(&mut (*r).headers_out.headers).cast::<ngx_table_elt_t>();
        add_to_ngx_table(h, (*r).pool, name, value)?;
        (*h).next = core::ptr::null_mut();
        Some(h)
    }
}
