//! Text results copied into a caller's buffer, with the needed-size
//! semantics of `cdn_last_error_copy`.

use super::status::{cdn_status::*, FfiError, FfiResult};

/// Copies `data` and a NUL into `buf` (`buf_len` bytes) and writes the
/// length without the NUL to `*out_len`. When it does not fit, writes the
/// needed size (NUL included) to `*out_len` and fails with
/// `CDN_BUFFER_TOO_SMALL`, leaving `buf` alone. `buf` may be NULL only when
/// `buf_len` is 0 (a size query).
///
/// # Safety
/// `buf` is NULL or writable for `buf_len` bytes; `out_len` is NULL or
/// writable.
pub(crate) unsafe fn copy_out(
    data: &[u8],
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> FfiResult<()> {
    if out_len.is_null() || (buf.is_null() && buf_len != 0) {
        return Err(FfiError::arg(
            "out_len is NULL, or buf is NULL with a non-zero buf_len",
        ));
    }
    let need = data.len() + 1;
    if need > buf_len {
        // SAFETY: out_len checked non-NULL, writable by contract.
        unsafe { out_len.write(need) };
        return Err(FfiError::new(
            CDN_BUFFER_TOO_SMALL,
            format!("buffer of {buf_len} bytes is too small: {need} needed"),
        ));
    }
    // SAFETY: buf is non-NULL (buf_len >= need >= 1) and holds buf_len >=
    // need writable bytes; data is a separate Rust allocation.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        buf.add(data.len()).write(0);
        out_len.write(data.len());
    }
    Ok(())
}

/// Text that may be NULL when its length is 0 (then `None`).
///
/// # Safety
/// As `args::text`.
pub(crate) unsafe fn opt_text<'a>(
    p: *const u8,
    len: usize,
    what: &str,
) -> FfiResult<Option<&'a str>> {
    if p.is_null() && len == 0 {
        return Ok(None);
    }
    // SAFETY: forwarded caller contract.
    unsafe { super::args::text(p, len, what) }.map(Some)
}

/// Bytes that may be NULL when the length is 0 (then `None`).
///
/// # Safety
/// As `args::bytes`.
pub(crate) unsafe fn opt_bytes<'a>(
    p: *const u8,
    len: usize,
    what: &str,
) -> FfiResult<Option<&'a [u8]>> {
    if p.is_null() && len == 0 {
        return Ok(None);
    }
    // SAFETY: forwarded caller contract.
    unsafe { super::args::bytes(p, len, super::args::MAX_TEXT, what, CDN_INVALID_ARGUMENT) }
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_with_a_nul_or_reports_the_needed_size() {
        let mut buf = [0xAAu8; 6];
        let mut len = 0usize;
        // SAFETY: NULL with length 0 is the documented size query.
        let e = unsafe { copy_out(b"hello", std::ptr::null_mut(), 0, &mut len) }.unwrap_err();
        assert_eq!((e.status, len), (CDN_BUFFER_TOO_SMALL, 6));
        // SAFETY: buf has 5 writable bytes of the 6 claimed.
        let e = unsafe { copy_out(b"hello", buf.as_mut_ptr(), 5, &mut len) }.unwrap_err();
        assert_eq!((e.status, len), (CDN_BUFFER_TOO_SMALL, 6));
        assert_eq!(buf, [0xAA; 6], "buffer untouched on failure");
        // SAFETY: buf has 6 writable bytes.
        unsafe { copy_out(b"hello", buf.as_mut_ptr(), 6, &mut len) }.unwrap();
        assert_eq!((&buf, len), (b"hello\0", 5));
        // SAFETY: NULL out_len and NULL buf with a length are refused before use.
        let e = unsafe { copy_out(b"x", buf.as_mut_ptr(), 6, std::ptr::null_mut()) }.unwrap_err();
        assert_eq!(e.status, CDN_INVALID_ARGUMENT);
        // SAFETY: as above.
        let e = unsafe { copy_out(b"x", std::ptr::null_mut(), 6, &mut len) }.unwrap_err();
        assert_eq!(e.status, CDN_INVALID_ARGUMENT);
    }
}
