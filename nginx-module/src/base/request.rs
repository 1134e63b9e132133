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

/// Every line of a request field, joined with `, ` (`None`: absent).
///
/// # Safety
/// `r` must be live.
pub unsafe fn header_lines(r: *mut ngx_http_request_t, lower: &[u8]) -> Option<Vec<u8>> {
    let mut lines = Vec::new();
    // SAFETY: r is live; headers_in.headers is a list of ngx_table_elt_t.
    unsafe {
        let mut part: *const ngx_list_part_t = &(*r).headers_in.headers.part;
        while !part.is_null() {
            let elts =
                core::slice::from_raw_parts((*part).elts as *const ngx_table_elt_t, (*part).nelts);
            let named =
                |h: &&ngx_table_elt_t| h.hash != 0 && h.key.as_bytes().eq_ignore_ascii_case(lower);
            lines.extend(elts.iter().filter(named).map(|h| h.value.as_bytes()));
            part = (*part).next;
        }
    }
    join(lines.into_iter())
}

/// A copy of every request field, names in lower case, in order.
///
/// # Safety
/// `r` must be live.
pub unsafe fn all_fields(r: *mut ngx_http_request_t) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    // SAFETY: r is live; headers_in.headers is a list of ngx_table_elt_t.
    unsafe {
        let mut part: *const ngx_list_part_t = &(*r).headers_in.headers.part;
        while !part.is_null() {
            let elts =
                core::slice::from_raw_parts((*part).elts as *const ngx_table_elt_t, (*part).nelts);
            for h in elts.iter().filter(|h| h.hash != 0) {
                out.push((
                    h.key.as_bytes().to_ascii_lowercase(),
                    h.value.as_bytes().to_vec(),
                ));
            }
            part = (*part).next;
        }
    }
    out
}

/// [`header_lines`] over a copy made by [`all_fields`].
pub fn joined(fields: &[(Vec<u8>, Vec<u8>)], lower: &[u8]) -> Option<Vec<u8>> {
    join(
        fields
            .iter()
            .filter(|(n, _)| n == lower)
            .map(|(_, v)| v.as_slice()),
    )
}

fn join<'a>(mut lines: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out = lines.next()?.to_vec();
    for l in lines {
        out.extend_from_slice(b", ");
        out.extend_from_slice(l);
    }
    Some(out)
}

/// Constant-time comparison, so the secret cannot be guessed byte by byte.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
