//! Streaming insert: a writer takes body chunks and metadata, then is
//! committed (made visible) or aborted.

use super::args::{bytes, out, put, text};
use super::cache::{cache_ref, cdn_cache, key_arg, purged};
use super::handle::{self, bad_handle, null, DEAD_MAGIC, WRITER_MAGIC};
use super::status::{cdn_status, cdn_status::*, guard, FfiError, FfiResult};
use crate::{Commit, Meta, Writer};
use bytes::Bytes;

/// An insert in progress. Opaque.
pub struct cdn_writer {
    _private: [u8; 0],
}

#[repr(C)]
pub(crate) struct WriterHandle {
    magic: u64,
    /// Lent to a `cdn_cache_fill` getter: the fill, not the getter, commits.
    lent: bool,
    /// Largest body accepted (checked before a chunk is read).
    max_body: u64,
    /// `max_body` is a size declared up front, not the cache's limit.
    declared: bool,
    /// Sticky failure: once a write fails, commit fails too.
    failed: Option<FfiError>,
    pub(crate) w: Writer,
}

impl WriterHandle {
    pub(crate) fn into_raw(self) -> *mut cdn_writer {
        let p = Box::into_raw(Box::new(self));
        handle::register(p as usize, WRITER_MAGIC);
        p.cast()
    }

    /// Takes a lent writer back after its getter returned.
    ///
    /// # Safety
    /// `p` came from `lend` and the getter has returned.
    pub(crate) unsafe fn reclaim(p: *mut cdn_writer) -> FfiResult<(Writer, Option<FfiError>)> {
        if !handle::unregister(p as usize, WRITER_MAGIC) {
            return Err(FfiError::new(
                CDN_INVALID_HANDLE,
                "the getter released its writer",
            ));
        }
        // SAFETY: registered, so a live Box<WriterHandle>; we are its only owner now.
        let b = unsafe { Box::from_raw(p.cast::<WriterHandle>()) };
        let WriterHandle { w, failed, .. } = *b;
        Ok((w, failed))
    }

    pub(crate) fn lend(w: Writer, max_body: u64) -> *mut cdn_writer {
        WriterHandle {
            magic: WRITER_MAGIC,
            lent: true,
            max_body,
            declared: false,
            failed: None,
            w,
        }
        .into_raw()
    }
}

/// Checks (against the registry, so a committed writer is refused) and
/// borrows a writer.
///
/// # Safety
/// `p` is NULL, a released writer, or a live writer not used concurrently.
pub(crate) unsafe fn writer_mut<'a>(p: *mut cdn_writer) -> FfiResult<&'a mut WriterHandle> {
    if p.is_null() {
        return Err(null("writer"));
    }
    if !handle::is_live(p as usize, WRITER_MAGIC) {
        return Err(bad_handle("writer"));
    }
    // SAFETY: registered, so a live WriterHandle; the caller does not use it
    // from two threads at once.
    Ok(unsafe { &mut *p.cast::<WriterHandle>() })
}

/// Unregisters and takes ownership of a writer the caller releases.
///
/// # Safety
/// As `writer_mut`.
unsafe fn writer_take(p: *mut cdn_writer) -> FfiResult<Box<WriterHandle>> {
    // SAFETY: caller contract.
    if unsafe { writer_mut(p)? }.lent {
        return Err(FfiError::arg(
            "this writer belongs to cdn_cache_fill: return 0 from the getter to commit it",
        ));
    }
    if !handle::unregister(p as usize, WRITER_MAGIC) {
        return Err(bad_handle("writer"));
    }
    // SAFETY: was registered: a live Box<WriterHandle>, now ours alone.
    let mut b = unsafe { Box::from_raw(p.cast::<WriterHandle>()) };
    b.magic = DEAD_MAGIC;
    Ok(b)
}

/// # Safety
/// `cache`, `key`/`key_len` and `out` as for `cdn_writer_new`.
unsafe fn begin(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    ttl_ms: u64,
    size: Option<u64>,
    out_w: *mut *mut cdn_writer,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        // SAFETY: caller contract.
        let key = unsafe { key_arg(h, key, key_len)? };
        let out_w = out(out_w, "out")?;
        let meta = Meta::with_ttl(crate::now_ms(), ttl_ms);
        let w = h.cache.writer_sized(key, meta, size)?;
        let p = WriterHandle {
            magic: WRITER_MAGIC,
            lent: false,
            max_body: size.unwrap_or(h.cache.max_object()),
            declared: size.is_some(),
            failed: None,
            w,
        }
        .into_raw();
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_w, p) };
        Ok(())
    })
}

/// Starts a streaming insert of `key`: a 200 response fresh for `ttl_ms`
/// milliseconds from now (change it with the `cdn_writer_set_*` calls).
/// Nothing is visible until `cdn_writer_commit`. Purges that arrive while
/// the writer is open and cover the key make its commit drop the body
/// (`CDN_PURGED_DURING_FILL`), so an outdated body is never stored.
///
/// Ownership: the caller owns the writer and must end it with exactly one
/// `cdn_writer_commit` or `cdn_writer_abort`, which free it.
/// Thread safety: any thread; a writer is used by one thread at a time.
///
/// # Safety
/// `cache` is a live cache handle; `key` points to `key_len` readable bytes;
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_new(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    ttl_ms: u64,
    out: *mut *mut cdn_writer,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe { begin(cache, key, key_len, ttl_ms, None, out) }
}

/// As `cdn_writer_new`, with the body size known up front (e.g. from
/// Content-Length): too large a size fails here with `CDN_TOO_LARGE`, and a
/// body of another length fails at write/commit with `CDN_SIZE_MISMATCH`.
/// Ownership and thread safety as `cdn_writer_new`.
///
/// # Safety
/// As `cdn_writer_new`.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_new_sized(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    ttl_ms: u64,
    size: u64,
    out: *mut *mut cdn_writer,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe { begin(cache, key, key_len, ttl_ms, Some(size), out) }
}

/// Appends `len` bytes of body (copied). Past the size limit
/// (`CDN_TOO_LARGE`) or the declared size (`CDN_SIZE_MISMATCH`) the writer
/// fails for good: later writes and the commit return the same error.
/// `len` 0 is allowed (with a non-NULL `data`).
/// Ownership: `data` stays the caller's. Thread safety: one thread at a time
/// per writer.
///
/// # Safety
/// `writer` is a live writer; `data` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_write(
    writer: *mut cdn_writer,
    data: *const u8,
    len: usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { writer_mut(writer)? };
        if let Some(e) = &h.failed {
            return Err(e.clone());
        }
        if data.is_null() {
            return Err(null("data"));
        }
        let result = match overflow(h, len) {
            Some(e) => Err(e),
            // SAFETY: non-NULL; len is within the body limit; the caller
            // promises len readable bytes.
            None => h.w.write(unsafe { std::slice::from_raw_parts(data, len) }),
        };
        result.map_err(|e| {
            let e = FfiError::from(e);
            h.failed = Some(e.clone());
            e
        })
    })
}

/// The error a chunk of `len` more bytes would cause, checked before the
/// chunk is read.
fn overflow(h: &WriterHandle, len: usize) -> Option<crate::Error> {
    let size = h.w.written().saturating_add(len as u64);
    if size <= h.max_body {
        return None;
    }
    Some(if h.declared {
        crate::Error::SizeMismatch {
            declared: h.max_body,
            written: size,
        }
    } else {
        crate::Error::ObjectTooLarge {
            size,
            max: h.max_body,
        }
    })
}

/// Runs `f` on the metadata of a live writer.
///
/// # Safety
/// As `writer_mut`.
unsafe fn with_meta(
    writer: *mut cdn_writer,
    f: impl FnOnce(&mut Meta) -> FfiResult<()>,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { writer_mut(writer)? };
        f(h.w.meta_mut())
    })
}

/// Sets the HTTP status to replay (100..=999). Thread safety: one thread at
/// a time per writer (this holds for every `cdn_writer_set_*`/`add_*`).
/// Ownership: the writer stays the caller's; arguments are copied.
///
/// # Safety
/// `writer` is a live writer.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_set_status(writer: *mut cdn_writer, status: u16) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            if !(100..=999).contains(&status) {
                return Err(FfiError::arg(format!("status {status} is not 100..=999")));
            }
            m.status = status;
            Ok(())
        })
    }
}

/// Sets the freshness lifetime: fresh for `ttl_ms` milliseconds after the
/// writer was created.
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_set_ttl(writer: *mut cdn_writer, ttl_ms: u64) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            m.expires_at = m.stored_at.saturating_add(ttl_ms);
            Ok(())
        })
    }
}

/// Sets the `stale-while-revalidate` and `stale-if-error` windows (seconds
/// after expiry).
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_set_stale(
    writer: *mut cdn_writer,
    stale_while_revalidate_s: u32,
    stale_if_error_s: u32,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            m.stale_while_revalidate = stale_while_revalidate_s;
            m.stale_if_error = stale_if_error_s;
            Ok(())
        })
    }
}

/// Sets the `ETag` validator (copied, quotes included).
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer; `etag` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_set_etag(
    writer: *mut cdn_writer,
    etag: *const u8,
    len: usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            let v = bytes(
                etag,
                len,
                super::args::MAX_TEXT,
                "etag",
                CDN_INVALID_ARGUMENT,
            )?;
            m.etag = Some(Bytes::copy_from_slice(v));
            Ok(())
        })
    }
}

/// Sets `Last-Modified` (unix seconds).
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_set_last_modified(
    writer: *mut cdn_writer,
    unix_s: u64,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            m.last_modified = Some(unix_s);
            Ok(())
        })
    }
}

/// Adds an integer tag (purged by `cdn_cache_purge_tag`).
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_add_tag(writer: *mut cdn_writer, tag: u16) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            m.tags.push(tag);
            Ok(())
        })
    }
}

/// Adds a surrogate key (UTF-8, copied; purged by
/// `cdn_cache_purge_surrogate_key`).
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer; `skey` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_add_surrogate_key(
    writer: *mut cdn_writer,
    skey: *const u8,
    len: usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            let s = text(skey, len, "surrogate key")?;
            if s.is_empty() {
                return Err(FfiError::arg("surrogate key is empty"));
            }
            m.surrogate_keys.push(s.to_string());
            Ok(())
        })
    }
}

/// Sets the purge group (copied; purged by `cdn_cache_purge_group`). Without
/// one, the group is the key's first path level (for URLs, the host).
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer; `group` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_set_group(
    writer: *mut cdn_writer,
    group: *const u8,
    len: usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            let g = bytes(
                group,
                len,
                super::args::MAX_TEXT,
                "group",
                CDN_INVALID_ARGUMENT,
            )?;
            m.group = Some(Bytes::copy_from_slice(g));
            Ok(())
        })
    }
}

/// Sets the mask bitmap (purged by `cdn_cache_purge_mask` when the masks
/// share a bit).
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_set_mask(writer: *mut cdn_writer, mask: u64) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            m.mask = mask;
            Ok(())
        })
    }
}

/// Adds a response header to replay (name UTF-8 and non-empty; both copied).
/// Ownership: the writer stays the caller's; arguments are copied.
/// Thread safety: one thread at a time per writer.
///
/// # Safety
/// `writer` is a live writer; `name`/`value` point to their lengths' bytes.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_add_header(
    writer: *mut cdn_writer,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_meta(writer, |m| {
            let n = text(name, name_len, "header name")?;
            if n.is_empty() {
                return Err(FfiError::arg("header name is empty"));
            }
            let v = bytes(
                value,
                value_len,
                super::args::MAX_TEXT,
                "header value",
                CDN_INVALID_ARGUMENT,
            )?;
            m.headers.push((n.to_string(), Bytes::copy_from_slice(v)));
            Ok(())
        })
    }
}

/// Makes the object visible and frees the writer — always, also when it
/// fails: do not abort after a failed commit (that returns
/// `CDN_INVALID_HANDLE`, harmlessly).
///
/// Errors: the writer's sticky write error; `CDN_SIZE_MISMATCH` if a
/// declared size was not reached; `CDN_PURGED_DURING_FILL` if a purge
/// covering the key arrived while the writer was open (not stored).
/// Thread safety: one thread at a time per writer.
/// Ownership: releases the writer in every case.
///
/// # Safety
/// `writer` is NULL or a writer from `cdn_writer_new*` (a released one is
/// detected).
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_commit(writer: *mut cdn_writer) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { writer_take(writer)? };
        if let Some(e) = h.failed {
            return Err(e);
        }
        match h.w.commit()? {
            Commit::Stored => Ok(()),
            Commit::PurgedDuringFill => Err(purged()),
        }
    })
}

/// Drops the body and frees the writer; nothing was ever visible. NULL is a
/// no-op; an already released writer returns `CDN_INVALID_HANDLE`.
/// Thread safety: one thread at a time per writer.
/// Ownership: releases the writer.
///
/// # Safety
/// `writer` is NULL or a writer from `cdn_writer_new*`.
#[no_mangle]
pub unsafe extern "C" fn cdn_writer_abort(writer: *mut cdn_writer) -> cdn_status {
    guard(|| {
        if writer.is_null() {
            return Ok(());
        }
        // SAFETY: caller contract.
        let h = unsafe { writer_take(writer)? };
        h.w.abort();
        Ok(())
    })
}
