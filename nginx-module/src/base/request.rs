//! Reading a request's headers, and comparing a header with a secret.

use nginx_sys::*;

/// The request's live fields (hash 0 marks a deleted one), every part of
/// nginx's list in order.
///
/// # Safety
/// `r` must be live for `'a`.
unsafe fn fields<'a>(r: *mut ngx_http_request_t) -> impl Iterator<Item = &'a ngx_table_elt_t> {
    // SAFETY: r is live; headers_in.headers is a list of ngx_table_elt_t.
    let first: *const ngx_list_part_t = unsafe { &(*r).headers_in.headers.part };
    let parts = core::iter::successors(Some(first), |&p| {
        // SAFETY: p is a part of the live list; the last one's next is null.
        let next = unsafe { (*p).next } as *const ngx_list_part_t;
        (!next.is_null()).then_some(next)
    });
    parts
        // SAFETY: each part holds nelts elements.
        .flat_map(|p| unsafe {
            core::slice::from_raw_parts((*p).elts as *const ngx_table_elt_t, (*p).nelts)
        })
        .filter(|h| h.hash != 0)
}

/// Header value of the request, by lower-case name.
///
/// # Safety
/// `r` must be live.
pub unsafe fn header_in<'a>(r: *mut ngx_http_request_t, lower: &[u8]) -> Option<&'a [u8]> {
    // SAFETY: forwarded.
    unsafe { fields(r) }
        .find(|h| h.key.as_bytes().eq_ignore_ascii_case(lower))
        .map(|h| h.value.as_bytes())
}

/// Every line of a request field, joined with `, ` (`None`: absent).
///
/// # Safety
/// `r` must be live.
pub unsafe fn header_lines(r: *mut ngx_http_request_t, lower: &[u8]) -> Option<Vec<u8>> {
    // SAFETY: forwarded.
    let lines = unsafe { fields(r) }
        .filter(|h| h.key.as_bytes().eq_ignore_ascii_case(lower))
        .map(|h| h.value.as_bytes());
    join(lines)
}

/// A copy of every request field, names in lower case, in order.
///
/// # Safety
/// `r` must be live.
pub unsafe fn all_fields(r: *mut ngx_http_request_t) -> Vec<(Vec<u8>, Vec<u8>)> {
    // SAFETY: forwarded.
    unsafe { fields(r) }
        .map(|h| {
            (
                h.key.as_bytes().to_ascii_lowercase(),
                h.value.as_bytes().to_vec(),
            )
        })
        .collect()
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
