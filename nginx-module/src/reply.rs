//! Small generated responses (purge results, statistics): the body is copied
//! into the request pool and sent as one memory buffer.

use nginx_sys::*;
use ngx::core::{Pool, Status};

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
