//! Reading a request's headers, and comparing a header with a secret.

use nginx_sys::*;

/// Header value of the request, by lower-case name.
///
/// # Safety
/// `r` must be live.
pub unsafe fn header_in<'a>(r: *mut ngx_http_request_t, lower: &[u8]) -> Option<&'a [u8]> {
    // SAFETY: headers_in.headers is a list of ngx_table_elt_t.
    let list = unsafe { &(*r).headers_in.headers };
    let mut part: *const ngx_list_part_t = &list.part;
    while !part.is_null() {
        // SAFETY: each part holds nelts elements.
        let elts = unsafe {
            core::slice::from_raw_parts((*part).elts as *const ngx_table_elt_t, (*part).nelts)
        };
        for h in elts {
            if h.hash != 0 && h.key.as_bytes().eq_ignore_ascii_case(lower) {
                return Some(h.value.as_bytes());
            }
        }
        // SAFETY: the last part's next is null.
        part = unsafe { (*part).next };
    }
    None
}

/// Constant-time comparison, so the secret cannot be guessed byte by byte.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
