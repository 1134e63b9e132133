//! The cache handle: open, close, lookups, one-shot insert, remove, counters.

use super::args::{self, bytes, out, put};
use super::fill::FillResult;
use super::handle::{self, check_magic, null, CACHE_MAGIC, DEAD_MAGIC};
use super::object::{cdn_object, new_object};
use super::status::{cdn_status, cdn_status::*, guard, FfiError, FfiResult};
use crate::fill::Group;
use crate::{Cache, Lookup, Meta};
use bytes::Bytes;

/// A cache (today its memory tier; block tiers are configured by the same
/// config text once they land). Opaque.
pub struct cdn_cache {
    _private: [u8; 0],
}

/// What a `cdn_cache` pointer points to.
#[repr(C)]
pub(crate) struct CacheHandle {
    magic: u64,
    pub cache: Cache,
    /// In-flight `cdn_cache_fill` calls, for sharing one getter call.
    pub fills: Group<Box<[u8]>, FillResult>,
}

/// Checks and borrows a cache handle.
///
/// # Safety
/// `p` is NULL or points to memory readable for a `CacheHandle` (a handle
/// from `cdn_cache_open` not yet closed).
pub(crate) unsafe fn cache_ref<'a>(p: *const cdn_cache) -> FfiResult<&'a CacheHandle> {
    if p.is_null() {
        return Err(null("cache"));
    }
    let h = p.cast::<CacheHandle>();
    // SAFETY: non-NULL; the caller promises a live handle, whose first field
    // is the magic (repr(C)); a foreign handle also starts with a magic word.
    check_magic(unsafe { (*h).magic }, CACHE_MAGIC, "cache")?;
    // SAFETY: the magic says this is a CacheHandle, alive until closed.
    Ok(unsafe { &*h })
}

/// The key argument, bounded by the cache's `max_key` before it is read.
///
/// # Safety
/// `ptr` points to `len` readable bytes when non-NULL and `len` is in bounds.
pub(crate) unsafe fn key_arg<'a>(
    h: &CacheHandle,
    ptr: *const u8,
    len: usize,
) -> FfiResult<&'a [u8]> {
    let max = h.cache.config().max_key;
    // SAFETY: forwarded caller contract.
    unsafe { bytes(ptr, len, max, "key", CDN_INVALID_KEY) }
}

/// Opens a cache from configuration text (the `key=value` format of the
/// Rust `Config`, e.g. "mem=64m shards=8 default_ttl=2m"; "" for defaults).
/// `config` need not be NUL-terminated. On success writes a new handle to
/// `*out`.
///
/// Errors: `CDN_INVALID_CONFIG` with a message naming the bad key.
/// Ownership: the caller owns the handle and releases it with
/// `cdn_cache_close`. Thread safety: any thread; the handle may then be used
/// from any number of threads at once.
///
/// # Safety
/// `config` points to `config_len` readable bytes; `out` to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_open(
    config: *const u8,
    config_len: usize,
    out: *mut *mut cdn_cache,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract on config/config_len.
        let text = unsafe {
            bytes(
                config,
                config_len,
                args::MAX_TEXT,
                "config",
                CDN_INVALID_CONFIG,
            )?
        };
        let out = args::out(out, "out")?;
        let text = std::str::from_utf8(text)
            .map_err(|e| FfiError::new(CDN_INVALID_CONFIG, format!("config is not UTF-8: {e}")))?;
        let cache = Cache::open_str(text)?;
        let h = Box::into_raw(Box::new(CacheHandle {
            magic: CACHE_MAGIC,
            cache,
            fills: Group::new(),
        }));
        handle::register(h as usize, CACHE_MAGIC);
        // SAFETY: out checked non-NULL and writable by contract.
        unsafe { put(out, h.cast()) };
        Ok(())
    })
}

/// Closes a cache and frees its handle. NULL is a no-op (`CDN_OK`). A second
/// close of the same handle returns `CDN_INVALID_HANDLE` without touching it.
///
/// Objects and writers obtained from the cache stay valid and must still be
/// freed/committed/aborted; memory is released when the last one goes.
/// Thread safety: no other call may be using this handle concurrently (or
/// after).
/// Ownership: releases the handle (the caller's reference ends here).
///
/// # Safety
/// `cache` is NULL or a pointer returned by `cdn_cache_open`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_close(cache: *mut cdn_cache) -> cdn_status {
    guard(|| {
        if cache.is_null() {
            return Ok(());
        }
        if !handle::unregister(cache as usize, CACHE_MAGIC) {
            return Err(handle::bad_handle("cache"));
        }
        let h = cache.cast::<CacheHandle>();
        // SAFETY: it was registered, so it is a live Box<CacheHandle> from
        // cdn_cache_open, and unregistering made us its only releaser.
        let mut b = unsafe { Box::from_raw(h) };
        // SAFETY: a valid &mut field; volatile so the store is not elided.
        unsafe { std::ptr::write_volatile(&mut b.magic, DEAD_MAGIC) };
        drop(b);
        Ok(())
    })
}

fn lookup_out(found: Lookup, out: *mut *mut cdn_object) -> FfiResult<()> {
    let (obj, fresh) = match found {
        Lookup::Fresh(o) => (o, true),
        Lookup::Stale(o) => (o, false),
        Lookup::Miss => return Err(FfiError::new(CDN_NOT_FOUND, "not cached")),
    };
    // SAFETY: out was checked by the caller of this fn.
    unsafe { put(out, new_object(obj, fresh)) };
    Ok(())
}

/// Looks `key` up now. On a hit (fresh or stale — see
/// `cdn_object_info.fresh`) writes a new object handle to `*out`; on a miss
/// returns `CDN_NOT_FOUND`.
///
/// Ownership: the caller owns the object and frees it with
/// `cdn_object_free`; its body and metadata pointers stay valid until then,
/// whatever happens to the cache (purge, eviction, close).
/// Thread safety: any thread, concurrently with every other call on the cache.
///
/// # Safety
/// `cache` is a live cache handle; `key` points to `key_len` readable bytes;
/// `out` to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_get(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    out: *mut *mut cdn_object,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe { cdn_cache_get_at(cache, key, key_len, 0, out) }
}

/// As `cdn_cache_get`, judging freshness at `now_ms` (unix milliseconds)
/// instead of the wall clock; 0 means now.
/// Ownership and thread safety as `cdn_cache_get`.
///
/// # Safety
/// As `cdn_cache_get`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_get_at(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    now_ms: u64,
    out: *mut *mut cdn_object,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        // SAFETY: caller contract.
        let key = unsafe { key_arg(h, key, key_len)? };
        let out = out_obj(out)?;
        let now = if now_ms == 0 { crate::now_ms() } else { now_ms };
        lookup_out(h.cache.get_at(key, now)?, out)
    })
}

fn out_obj(p: *mut *mut cdn_object) -> FfiResult<*mut *mut cdn_object> {
    out(p, "out")
}

/// Looks `key` up and copies its body (fresh or stale) into `buf`.
///
/// On success writes the body length to `*out_len`. If `buf_len` is too
/// small, returns `CDN_BUFFER_TOO_SMALL` and writes the needed size to
/// `*out_len` (copying nothing); `buf` may be NULL when `buf_len` is 0, to
/// ask for the size. A miss is `CDN_NOT_FOUND`.
/// Ownership: the caller owns `buf`. Thread safety: as `cdn_cache_get`.
///
/// # Safety
/// `buf` points to `buf_len` writable bytes (or is NULL with `buf_len` 0);
/// other pointers as `cdn_cache_get`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_get_copy(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        // SAFETY: caller contract.
        let key = unsafe { key_arg(h, key, key_len)? };
        let out_len = out(out_len, "out_len")?;
        if buf.is_null() && buf_len != 0 {
            return Err(FfiError::arg("buf is NULL with a non-zero buf_len"));
        }
        let found = h.cache.get(key)?;
        let obj = found
            .object()
            .ok_or_else(|| FfiError::new(CDN_NOT_FOUND, "not cached"))?;
        let body = obj.body();
        // SAFETY: out_len checked non-NULL; writable by contract.
        unsafe { put(out_len, body.len()) };
        if body.len() > buf_len {
            return Err(FfiError::new(
                CDN_BUFFER_TOO_SMALL,
                format!("body is {} bytes, buffer {buf_len}", body.len()),
            ));
        }
        if !body.is_empty() {
            // SAFETY: buf is non-NULL here (buf_len >= body.len() > 0) and
            // holds buf_len writable bytes; source and destination are
            // distinct allocations.
            unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), buf, body.len()) };
        }
        Ok(())
    })
}

/// Stores a whole body at once: a 200 response fresh for `ttl_ms`
/// milliseconds. For metadata (tags, headers, ...) use a writer.
///
/// Errors: `CDN_INVALID_KEY`, `CDN_TOO_LARGE`, `CDN_PURGED_DURING_FILL` (a
/// purge covering the key raced the insert and won: not stored).
/// Ownership: the body is copied; the caller keeps `body`.
/// Thread safety: any thread, concurrently.
///
/// # Safety
/// `body` points to `body_len` readable bytes (it may be NULL only when
/// `body_len` is 0); other pointers as `cdn_cache_get`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_insert(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    body: *const u8,
    body_len: usize,
    ttl_ms: u64,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        // SAFETY: caller contract.
        let key = unsafe { key_arg(h, key, key_len)? };
        let body = if body.is_null() && body_len == 0 {
            &[][..]
        } else {
            let max = usize::try_from(h.cache.max_object()).unwrap_or(usize::MAX);
            // SAFETY: caller contract on body/body_len.
            unsafe { bytes(body, body_len, max, "body", CDN_TOO_LARGE)? }
        };
        let meta = Meta::with_ttl(crate::now_ms(), ttl_ms);
        match h.cache.insert(key, meta, Bytes::copy_from_slice(body))? {
            crate::Commit::Stored => Ok(()),
            crate::Commit::PurgedDuringFill => Err(purged()),
        }
    })
}

pub(crate) fn purged() -> FfiError {
    FfiError::new(
        CDN_PURGED_DURING_FILL,
        "a purge covering the object arrived during the write; not stored",
    )
}

/// Removes `key`. Returns `CDN_NOT_FOUND` if it was not cached.
/// Thread safety: any thread, concurrently.
/// Ownership: the key is only read during the call.
///
/// # Safety
/// As `cdn_cache_get` (without `out`).
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_remove(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        // SAFETY: caller contract.
        let key = unsafe { key_arg(h, key, key_len)? };
        if h.cache.remove(key)? {
            Ok(())
        } else {
            Err(FfiError::new(CDN_NOT_FOUND, "not cached"))
        }
    })
}

/// Writes a snapshot of the cache's counters to `*out`.
/// Ownership: the caller owns `*out` (a plain struct).
/// Thread safety: any thread, concurrently.
///
/// # Safety
/// `cache` is a live cache handle; `out` points to a writable `cdn_counters`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_counters(
    cache: *const cdn_cache,
    out: *mut crate::Counters,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        let out = args::out(out, "out")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put(out, h.cache.counters()) };
        Ok(())
    })
}

/// Sweeps the cache now, removing purged objects (a background thread does
/// this anyway after purges), and writes how many were removed to
/// `*removed`. Thread safety: any thread, concurrently.
/// Ownership: `*removed` is the caller's.
///
/// # Safety
/// `cache` is a live cache handle; `removed` points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_reclaim(
    cache: *const cdn_cache,
    removed: *mut u64,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        let out = args::out(removed, "removed")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put(out, h.cache.reclaim_now()) };
        Ok(())
    })
}

/// The largest body the cache stores, or 0 if `cache` is not a valid handle.
/// Thread safety: any thread.
/// Ownership: nothing to free.
///
/// # Safety
/// `cache` is NULL or a live cache handle.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_max_object(cache: *const cdn_cache) -> u64 {
    super::status::guard_value(0, || {
        // SAFETY: caller contract.
        unsafe { cache_ref(cache) }.map_or(0, |h| h.cache.max_object())
    })
}
