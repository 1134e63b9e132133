//! The peer protocol for C: the metadata header (`X-Rcdn-Meta`, see
//! `fill::wire`) and keys as base64url path segments (`fill::peer`).

use super::args::{bytes, text, MAX_TEXT};
use super::object::{cdn_object, object_ref};
use super::policy_out::copy_out;
use super::status::{cdn_status, cdn_status::*, guard, FfiError};
use super::writer::{cdn_writer, writer_mut};
use crate::fill::{peer, wire};

/// Encodes an object's metadata (status, headers, expiry, validators, tags,
/// surrogate keys, group, mask, stale windows) as the `X-Rcdn-Meta` header
/// value an owner sends with a peer response, stamped with the sender's
/// clock `now_ms`. NUL-terminated into `buf`, length to `*out_len`;
/// `CDN_BUFFER_TOO_SMALL` writes the needed size.
/// Thread safety: any thread.
///
/// # Safety
/// `obj` live; `buf` writable for `buf_len` (NULL when 0); `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_meta_header(
    obj: *const cdn_object,
    now_ms: u64,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let o = unsafe { object_ref(obj)? };
        let v = wire::encode(o.obj.meta(), now_ms);
        // SAFETY: caller contract.
        unsafe { copy_out(v.as_bytes(), buf, buf_len, out_len) }
    })
}

/// Replaces a writer's metadata with the decoded `X-Rcdn-Meta` value of a
/// peer response received at `now_ms` (times are moved by the difference of
/// the two clocks, so the TTL is kept). For a peer fetch callback.
/// Errors: `CDN_INVALID_ARGUMENT` with the reason (bad version, not
/// base64url, truncated, checksum mismatch, malformed metadata); the writer
/// is unchanged then.
/// Thread safety: as every writer call (one thread at a time).
///
/// # Safety
/// `writer` live; `value` readable for `value_len`.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_set_meta_header(
    writer: *mut cdn_writer,
    value: *const u8,
    value_len: usize,
    now_ms: u64,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let w = unsafe { writer_mut(writer)? };
        // SAFETY: caller contract (length bounded before the read).
        let v = unsafe {
            bytes(
                value,
                value_len,
                wire::MAX_VALUE,
                "value",
                CDN_INVALID_ARGUMENT,
            )?
        };
        let meta = wire::decode(v, now_ms).map_err(|e| FfiError::arg(e.to_string()))?;
        *w.w.meta_mut() = meta;
        Ok(())
    })
}

/// Encodes a key as the base64url path segment peers use (any bytes,
/// including a leading '/', survive). NUL-terminated into `buf`, length to
/// `*out_len`; `CDN_BUFFER_TOO_SMALL` writes the needed size.
///
/// # Safety
/// `key` readable for `key_len`; `buf` writable for `buf_len` (NULL when
/// 0); `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_peer_key_encode(
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, MAX_TEXT, "key", CDN_INVALID_KEY)? };
        let seg = peer::encode_key(key);
        // SAFETY: caller contract.
        unsafe { copy_out(seg.as_bytes(), buf, buf_len, out_len) }
    })
}

/// Decodes a path segment from `cdn_peer_key_encode` back into the key
/// (not NUL-terminated: keys are bytes; a NUL is still appended after it).
/// `CDN_INVALID_KEY` when it is empty or not base64url.
///
/// # Safety
/// As `cdn_peer_key_encode`.
#[no_mangle]
pub unsafe extern "C" fn cdn_peer_key_decode(
    segment: *const u8,
    segment_len: usize,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let seg = unsafe { text(segment, segment_len, "segment")? };
        let key = peer::decode_key(seg)
            .ok_or_else(|| FfiError::new(CDN_INVALID_KEY, "segment is empty or not base64url"))?;
        // SAFETY: caller contract.
        unsafe { copy_out(&key, buf, buf_len, out_len) }
    })
}
