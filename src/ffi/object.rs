//! Object handles: a looked-up object, read without copying.

use super::args::{bytes, out, put, MAX_TEXT};
use super::handle::{check_magic, null, DEAD_MAGIC, OBJECT_MAGIC};
use super::status::{cdn_status, cdn_status::*, guard, FfiError, FfiResult};
use crate::cache::Object;
use std::sync::Arc;

/// A cached object (body and metadata), immutable. Opaque.
pub struct cdn_object {
    _private: [u8; 0],
}

#[repr(C)]
pub(crate) struct ObjectHandle {
    magic: u64,
    fresh: bool,
    pub(crate) obj: Arc<Object>,
}

/// Scalar metadata of an object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct cdn_object_info {
    /// HTTP status to replay (200 unless the writer set another).
    pub status: u16,
    /// Fresh at lookup time; false means stale (expired but still cached).
    pub fresh: bool,
    /// When it was stored, unix ms.
    pub stored_at_ms: u64,
    /// Fresh until this instant, unix ms.
    pub expires_at_ms: u64,
    /// `stale-while-revalidate` window after expiry, seconds.
    pub stale_while_revalidate_s: u32,
    /// `stale-if-error` window after expiry, seconds.
    pub stale_if_error_s: u32,
    /// `Last-Modified`, unix seconds; 0 if none.
    pub last_modified_s: u64,
    /// Bitmap matched by mask purges.
    pub mask: u64,
    /// Body length in bytes.
    pub size: u64,
    /// xxh3-64 of the body.
    pub checksum: u64,
    /// Number of headers (`cdn_object_header`).
    pub header_count: usize,
    /// Number of integer tags (`cdn_object_tags`).
    pub tag_count: usize,
    /// Number of surrogate keys (`cdn_object_surrogate_key`).
    pub surrogate_key_count: usize,
}

pub(crate) fn new_object(obj: Arc<Object>, fresh: bool) -> *mut cdn_object {
    Box::into_raw(Box::new(ObjectHandle {
        magic: OBJECT_MAGIC,
        fresh,
        obj,
    }))
    .cast()
}

/// # Safety
/// `p` is NULL or a live object handle.
pub(crate) unsafe fn object_ref<'a>(p: *const cdn_object) -> FfiResult<&'a ObjectHandle> {
    if p.is_null() {
        return Err(null("object"));
    }
    let h = p.cast::<ObjectHandle>();
    // SAFETY: non-NULL live handle by contract; magic is its first field.
    check_magic(unsafe { (*h).magic }, OBJECT_MAGIC, "object")?;
    // SAFETY: the magic identifies an ObjectHandle, alive until freed.
    Ok(unsafe { &*h })
}

/// Writes a borrowed byte range to the two outputs.
///
/// # Safety
/// Both outputs were checked by `out` and are writable.
unsafe fn put_slice(data: *mut *const u8, len: *mut usize, s: &[u8]) {
    // SAFETY: per this fn's contract.
    unsafe {
        put(data, s.as_ptr());
        put(len, s.len());
    }
}

/// Borrows `field` of a live object into `*data`/`*len`.
///
/// # Safety
/// `obj` NULL or live; `data`/`len` NULL or writable.
unsafe fn borrow_field(
    obj: *const cdn_object,
    data: *mut *const u8,
    len: *mut usize,
    field: impl FnOnce(&ObjectHandle) -> FfiResult<&[u8]>,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { object_ref(obj)? };
        let (data, len) = (out(data, "data")?, out(len, "len")?);
        let s = field(h)?;
        // SAFETY: both checked non-NULL, writable by contract.
        unsafe { put_slice(data, len, s) };
        Ok(())
    })
}

fn absent(what: &str) -> FfiError {
    FfiError::new(CDN_NOT_FOUND, format!("the object has no {what}"))
}

/// Borrows the body: `*data` points to `*len` bytes (for an empty body,
/// `*len` is 0 and `*data` is a non-NULL dangling pointer).
///
/// Ownership: the bytes belong to the object; they stay valid and unchanged
/// until `cdn_object_free(obj)`. Thread safety: objects are immutable; any
/// number of threads may read one at once.
///
/// # Safety
/// `obj` is a live object handle; `data` and `len` are writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_body(
    obj: *const cdn_object,
    data: *mut *const u8,
    len: *mut usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe { borrow_field(obj, data, len, |h| Ok(&h.obj.body()[..])) }
}

/// Borrows the key. Ownership and thread safety as `cdn_object_body`.
///
/// # Safety
/// As `cdn_object_body`.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_key(
    obj: *const cdn_object,
    data: *mut *const u8,
    len: *mut usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe { borrow_field(obj, data, len, |h| Ok(h.obj.key())) }
}

/// Borrows the `ETag` (quotes included); `CDN_NOT_FOUND` if it has none.
/// Ownership and thread safety as `cdn_object_body`.
///
/// # Safety
/// As `cdn_object_body`.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_etag(
    obj: *const cdn_object,
    data: *mut *const u8,
    len: *mut usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        borrow_field(obj, data, len, |h| {
            h.obj.meta().etag.as_deref().ok_or_else(|| absent("etag"))
        })
    }
}

/// Borrows the purge group set by the writer; `CDN_NOT_FOUND` if none was
/// set (the object then belongs to its key's first path level).
/// Ownership and thread safety as `cdn_object_body`.
///
/// # Safety
/// As `cdn_object_body`.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_group(
    obj: *const cdn_object,
    data: *mut *const u8,
    len: *mut usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        borrow_field(obj, data, len, |h| {
            h.obj.meta().group.as_deref().ok_or_else(|| absent("group"))
        })
    }
}

/// Borrows the `index`-th surrogate key (0-based, below
/// `surrogate_key_count`); `CDN_NOT_FOUND` past the end. Not NUL-terminated.
/// Ownership and thread safety as `cdn_object_body`.
///
/// # Safety
/// As `cdn_object_body`.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_surrogate_key(
    obj: *const cdn_object,
    index: usize,
    data: *mut *const u8,
    len: *mut usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        borrow_field(obj, data, len, |h| {
            let keys = &h.obj.meta().surrogate_keys;
            keys.get(index).map(|s| s.as_bytes()).ok_or_else(|| {
                FfiError::new(CDN_NOT_FOUND, format!("index {index} >= {}", keys.len()))
            })
        })
    }
}

/// Borrows the integer tags: `*tags` points to `*count` `uint16_t`s (a
/// non-NULL dangling pointer when there are none).
/// Ownership and thread safety as `cdn_object_body`.
///
/// # Safety
/// `obj` is a live object handle; `tags` and `count` are writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_tags(
    obj: *const cdn_object,
    tags: *mut *const u16,
    count: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { object_ref(obj)? };
        let (tags, count) = (out(tags, "tags")?, out(count, "count")?);
        let t = &h.obj.meta().tags;
        // SAFETY: both checked non-NULL, writable by contract.
        unsafe {
            put(tags, t.as_ptr());
            put(count, t.len());
        }
        Ok(())
    })
}

/// Borrows the `index`-th header (0-based, in stored order, below
/// `header_count`): name and value, not NUL-terminated. `CDN_NOT_FOUND`
/// past the end. Ownership and thread safety as `cdn_object_body`.
///
/// # Safety
/// `obj` is a live object handle; the four outputs are writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_header(
    obj: *const cdn_object,
    index: usize,
    name: *mut *const u8,
    name_len: *mut usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { object_ref(obj)? };
        let (name, name_len) = (out(name, "name")?, out(name_len, "name_len")?);
        let (value, value_len) = (out(value, "value")?, out(value_len, "value_len")?);
        let headers = &h.obj.meta().headers;
        let (n, v) = headers.get(index).ok_or_else(|| {
            FfiError::new(CDN_NOT_FOUND, format!("index {index} >= {}", headers.len()))
        })?;
        // SAFETY: all four checked non-NULL, writable by contract.
        unsafe {
            put_slice(name, name_len, n.as_bytes());
            put_slice(value, value_len, v);
        }
        Ok(())
    })
}

/// Borrows the value of the first header named `name` (ASCII
/// case-insensitive); `CDN_NOT_FOUND` if there is none.
/// Ownership and thread safety as `cdn_object_body`.
///
/// # Safety
/// `name` points to `name_len` readable bytes; others as `cdn_object_body`.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_header_find(
    obj: *const cdn_object,
    name: *const u8,
    name_len: usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        borrow_field(obj, value, value_len, |h| {
            // SAFETY: caller contract on name/name_len.
            let name = bytes(name, name_len, MAX_TEXT, "name", CDN_INVALID_ARGUMENT)?;
            let name = std::str::from_utf8(name).map_err(|_| FfiError::arg("name is not UTF-8"))?;
            h.obj
                .meta()
                .header(name)
                .map(|v| &v[..])
                .ok_or_else(|| absent("such header"))
        })
    }
}

/// Writes the object's scalar metadata to `*out`.
/// Ownership: `*out` is a plain struct owned by the caller.
/// Thread safety: as `cdn_object_body`.
///
/// # Safety
/// `obj` is a live object handle; `out` points to a writable `cdn_object_info`.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_get_info(
    obj: *const cdn_object,
    out: *mut cdn_object_info,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { object_ref(obj)? };
        let out = super::args::out(out, "out")?;
        let m = h.obj.meta();
        let info = cdn_object_info {
            status: m.status,
            fresh: h.fresh,
            stored_at_ms: m.stored_at,
            expires_at_ms: m.expires_at,
            stale_while_revalidate_s: m.stale_while_revalidate,
            stale_if_error_s: m.stale_if_error,
            last_modified_s: m.last_modified.unwrap_or(0),
            mask: m.mask,
            size: m.size,
            checksum: m.checksum,
            header_count: m.headers.len(),
            tag_count: m.tags.len(),
            surrogate_key_count: m.surrogate_keys.len(),
        };
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put(out, info) };
        Ok(())
    })
}

/// Frees an object handle; pointers borrowed from it become invalid. NULL
/// is a no-op. A handle of another kind is refused with
/// `CDN_INVALID_HANDLE`. Freeing the same object twice is undefined
/// behaviour, as with `free()` (the magic word is cleared on free, which
/// catches many such mistakes but not all).
/// Thread safety: any thread, once no other thread uses the object.
/// Ownership: releases the handle and everything borrowed from it.
///
/// # Safety
/// `obj` is NULL or a live object handle.
#[no_mangle]
pub unsafe extern "C" fn cdn_object_free(obj: *mut cdn_object) -> cdn_status {
    guard(|| {
        if obj.is_null() {
            return Ok(());
        }
        // SAFETY: caller contract.
        unsafe { object_ref(obj)? };
        // SAFETY: a live ObjectHandle made by new_object (Box::into_raw).
        let mut b = unsafe { Box::from_raw(obj.cast::<ObjectHandle>()) };
        // SAFETY: a valid &mut field; volatile so the store is not elided.
        unsafe { std::ptr::write_volatile(&mut b.magic, DEAD_MAGIC) };
        drop(b);
        Ok(())
    })
}
