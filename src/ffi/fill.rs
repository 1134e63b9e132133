//! `cdn_cache_fill`: look up, and on a miss (or a stale hit) have a C getter
//! produce the object, groupcache style. Concurrent fills of one key share a
//! single getter call.

use super::args::{out, put};
use super::cache::{cache_ref, cdn_cache, key_arg, CacheHandle};
use super::object::{cdn_object, new_object};
use super::status::{cdn_status, cdn_status::*, guard, FfiError};
use super::writer::{cdn_writer, WriterHandle};
use crate::cache::Object;
use crate::{Commit, Lookup, Meta};
use std::ffi::c_void;
use std::sync::Arc;

/// Getter attempts per fill when purges keep dropping the filled body.
const ATTEMPTS: usize = 3;

/// What a fill produced: the object and whether it is fresh.
pub(crate) type FillResult = Result<(Arc<Object>, bool), FfiError>;

/// Produces the object for `key` on a miss: write the body with
/// `cdn_writer_write` and set metadata with `cdn_writer_set_*`/`add_*` on
/// `writer`, then return 0. Any other return value fails the fill with
/// `CDN_GETTER_FAILED` (nothing is stored).
///
/// The writer is lent: do not commit, abort or keep it (commit/abort return
/// `CDN_INVALID_ARGUMENT`). It starts as a 200 response fresh for the
/// cache's `default_ttl`. `key` is valid only during the call. The getter
/// must not fill the same key on the same cache (that returns
/// `CDN_WOULD_DEADLOCK`); other keys are fine.
pub type cdn_getter = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        key: *const u8,
        key_len: usize,
        writer: *mut cdn_writer,
    ) -> i32,
>;

/// Returns the object cached under `key`, calling `getter(userdata, ...)` to
/// produce and store it when the key is missing or stale. While a getter
/// runs for a key, other `cdn_cache_fill` calls for that key wait and share
/// its result (one getter call, like groupcache's singleflight). If a purge
/// covering the key lands during the getter, the body is dropped and the
/// getter is called again (up to 3 times, then `CDN_PURGED_DURING_FILL`).
///
/// On success writes a new object handle to `*out` (freed with
/// `cdn_object_free`). Errors: `CDN_GETTER_FAILED`, `CDN_TOO_LARGE`, the
/// lookup's errors, `CDN_WOULD_DEADLOCK`.
/// Ownership: `userdata` is passed through untouched and never freed.
/// Thread safety: any thread, concurrently; the getter runs on the calling
/// thread of the call that leads the fill.
///
/// # Safety
/// `cache` is a live cache handle; `key` points to `key_len` readable bytes;
/// `getter` is a valid function; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_fill(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    getter: cdn_getter,
    userdata: *mut c_void,
    out_obj: *mut *mut cdn_object,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        // SAFETY: caller contract.
        let key = unsafe { key_arg(h, key, key_len)? };
        let getter = getter.ok_or_else(|| FfiError::arg("getter is NULL"))?;
        let out_obj = out(out_obj, "out")?;
        let (obj, fresh) = match h.cache.get(key)? {
            Lookup::Fresh(o) => (o, true),
            _ => shared_fill(h, key, getter, userdata)?,
        };
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_obj, new_object(obj, fresh)) };
        Ok(())
    })
}

type Getter = unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut cdn_writer) -> i32;

fn shared_fill(h: &CacheHandle, key: &[u8], getter: Getter, userdata: *mut c_void) -> FillResult {
    let run = h
        .fills
        .run(key.into(), || fill(h, key, getter, userdata))
        .map_err(|_| {
            FfiError::new(
                CDN_WOULD_DEADLOCK,
                "the getter filled its own key (it would wait on itself)",
            )
        })?;
    run.value
}

/// Leads one fill: calls the getter until its body is stored.
fn fill(h: &CacheHandle, key: &[u8], getter: Getter, userdata: *mut c_void) -> FillResult {
    for _ in 0..ATTEMPTS {
        let cfg_ttl = h.cache.config().default_ttl_ms;
        let w = h
            .cache
            .writer(key, Meta::with_ttl(crate::now_ms(), cfg_ttl))?;
        let lent = WriterHandle::lend(w, h.cache.max_object());
        // SAFETY: the caller of cdn_cache_fill vouches for getter and
        // userdata; key and the lent writer stay valid during the call.
        let rc = unsafe { getter(userdata, key.as_ptr(), key.len(), lent) };
        // SAFETY: lent came from `lend` and the getter has returned.
        let (w, failed) = unsafe { WriterHandle::reclaim(lent)? };
        if rc != 0 {
            w.abort();
            return Err(FfiError::new(
                CDN_GETTER_FAILED,
                format!("getter returned {rc}"),
            ));
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if w.commit()? == Commit::PurgedDuringFill {
            continue;
        }
        match h.cache.get(key)? {
            Lookup::Fresh(o) => return Ok((o, true)),
            Lookup::Stale(o) => return Ok((o, false)),
            // Purged (or evicted) between commit and lookup: fill again.
            Lookup::Miss => continue,
        }
    }
    Err(FfiError::new(
        CDN_PURGED_DURING_FILL,
        format!("purges dropped the filled object {ATTEMPTS} times in a row"),
    ))
}
