//! A hit's body as nginx bufs, never copied.
//!
//! - A body of [`FILE_MIN`] or more that lies in region files (the shared
//!   RAM tier's or a configured block tier's) goes out as **file bufs**: one
//!   `in_file` buf per extent, in order (one for a whole record, one per
//!   slice for an object stored as slices), each with an `ngx_file_t` over
//!   that region file's fd. With `sendfile on` nginx sends them with
//!   `sendfile` (from tmpfs or the disk's page cache); nothing is assembled.
//! - A smaller body goes out as a memory buf over the cached bytes (the
//!   RAM tier's mapping or this worker's heap): one `writev`, and no file
//!   bookkeeping, which is what keeps 4 KiB hits at static nginx's cost. A
//!   small object stored as slices gets one memory buf per slice (over the
//!   mapping, not joined).
//! - A body only in this worker's heap (just filled, not yet written
//!   through, or a store without block tiers) is one memory buf.
//!
//! Lifetime: the request pool (or the slice run's pin) holds the
//! `Arc<Object>` until the request is freed, which nginx does only after
//! the last byte was written; the object's extents each hold their region
//! file open and mapped (`Arc<RegionMap>`: the `File` and the `Mmap`).
//! A region recycled meanwhile is a *new* file renamed over the old one
//! (`src/block/region.rs`), so the fd taken at lookup still reads the old
//! inode and its bytes: a send that outlives the recycling is not corrupted.
//!
//! [`chain`] builds the bufs of any part of a body: [`send`] uses it for a
//! whole hit, the slice machinery (`rcdn_slice`) for the part of a slice a
//! response needs, so a part covers only the extents it overlaps.
//!
//! Ranges of a whole hit: nginx's range filter (below ours) cuts the chain,
//! so a single range reads and sends only the extents it overlaps. Its
//! multipart code wants the whole body in one buf, so a body of several
//! extents is marked `single_range`: a request for several ranges of it
//! gets the whole body (200), which RFC 9110 §14.2 allows.

use crate::cache::ReqCtx;
use cdncore::block::Extent;
use cdncore::Object;
use nginx_sys::*;
use ngx::core::{Pool, Status};
use std::sync::Arc;

/// Bodies at least this large go out as file bufs (sendfile). 16 KiB, not
/// 32: a 16 KiB body copied into the socket by `writev` cost 1.41x the CPU
/// per hit of `sendfile` from tmpfs with the servers pinned to one core
/// (`bench/run.sh`, same run; unpinned 0.93x); at 8 KiB and below the
/// extra syscall and file bookkeeping cost more than the copy.
pub const FILE_MIN: u64 = 16 << 10;

/// Whether `len` body bytes go out as file bufs.
fn as_files(len: u64) -> bool {
    len >= FILE_MIN
}

/// The one region-file extent of a hit large enough for file bufs (a
/// whole record; `None` for a sliced body, a small one or a heap one).
pub fn extent_of(obj: &Object) -> Option<Extent> {
    if !as_files(obj.size()) || obj.is_sliced() {
        return None;
    }
    obj.extent()
}

/// Before the header is sent: a body of several extents takes a single
/// range at most (see the module doc).
///
/// # Safety
/// `r` must be a live main request whose header was not sent.
pub unsafe fn prepare(r: *mut ngx_http_request_t, obj: &Object) {
    if obj.is_sliced() {
        // SAFETY: r is live.
        unsafe { (*r).set_single_range(1) };
    }
}

/// Sends the whole body of `obj` (non-empty) after its header; the pool
/// keeps `obj` (and so its region files, open and mapped) until the
/// request is freed, which nginx does only after all output is written.
///
/// # Safety
/// `r` must be a live main request whose header was sent.
pub unsafe fn send(r: *mut ngx_http_request_t, obj: Arc<Object>) -> ngx_int_t {
    // SAFETY: r is live.
    let pool = unsafe { Pool::from_ngx_pool((*r).pool) };
    let kept = pool.allocate(obj);
    if kept.is_null() {
        return Status::NGX_ERROR.into();
    }
    // SAFETY: the pool owns the Arc until it is destroyed, after the request.
    let obj: &Object = unsafe { &*kept };
    // SAFETY: forwarded; obj outlives the output (above).
    let Some((head, last)) = (unsafe { chain(r, obj, None, 0, obj.size()) }) else {
        return Status::NGX_ERROR.into();
    };
    // SAFETY: last is the final buf of the chain just built.
    unsafe {
        (*last).set_last_buf(1);
        (*last).set_last_in_chain(1);
    }
    // SAFETY: r is live; head is a well-formed chain.
    unsafe { ngx_http_output_filter(r, head) }
}

/// The output chain of body bytes `[from, to)` of `obj` (`from < to <=
/// size`) and its last buf: one file buf over `ext` (an extent of the whole
/// body found beforehand) or over the object's own extent when the part is
/// large enough; for a sliced body one buf per slice it overlaps (file
/// bufs, or memory bufs over the mapping for a small part); otherwise one
/// memory buf over the body. Sets `$rcdn_body`. `None`: out of memory.
///
/// # Safety
/// `r` must be a live main request; the caller keeps `obj` (and `ext`)
/// alive until the output is written.
pub unsafe fn chain(
    r: *mut ngx_http_request_t,
    obj: &Object,
    ext: Option<&Extent>,
    from: u64,
    to: u64,
) -> Option<(*mut ngx_chain_t, *mut ngx_buf_t)> {
    let files = as_files(to - from);
    // SAFETY: r is live.
    let pool = unsafe { Pool::from_ngx_pool((*r).pool) };
    // SAFETY: r is live.
    let log = unsafe { (*(*r).connection).log };
    let mut head: *mut ngx_chain_t = core::ptr::null_mut();
    let mut tail: *mut *mut ngx_chain_t = &mut head;
    let mut last: *mut ngx_buf_t = core::ptr::null_mut();
    let mut any_file = false;
    let mut push = |b: *mut ngx_buf_t| -> Option<()> {
        // SAFETY: the pool is live.
        let cl = unsafe { ngx_alloc_chain_link(pool.as_ptr()) };
        if cl.is_null() {
            return None;
        }
        // SAFETY: cl is a fresh link; tail points at the list's end.
        unsafe {
            (*cl).buf = b;
            (*cl).next = core::ptr::null_mut();
            *tail = cl;
            tail = &mut (*cl).next;
        }
        last = b;
        Some(())
    };
    let whole = if files && !obj.is_sliced() {
        ext.cloned().or_else(|| obj.extent())
    } else {
        None
    };
    if let Some(e) = whole {
        push(file_buf(&pool, log, &e, from, to)?)?;
        any_file = true;
    } else if obj.is_sliced() {
        let mut off = 0u64;
        for e in obj.extents() {
            let (a, b) = (off, off + e.len);
            off = b;
            let (lo, hi) = (a.max(from), b.min(to));
            if lo >= hi {
                continue;
            }
            let buf = if files {
                any_file = true;
                file_buf(&pool, log, &e, lo - a, hi - a)?
            } else {
                mem_buf(&pool, &e.bytes()[(lo - a) as usize..(hi - a) as usize])?
            };
            push(buf)?;
        }
    } else {
        let body = obj.body();
        push(mem_buf(&pool, &body[from as usize..to as usize])?)?;
    }
    if last.is_null() {
        return None;
    }
    // SAFETY: r is the live main request being served.
    if let Some(ctx) = unsafe { ReqCtx::get(r) } {
        if ctx.body != "slices" {
            ctx.body = if any_file { "sendfile" } else { "memory" };
        }
    }
    Some((head, last))
}

/// An `in_file` buf over bytes `[from, to)` of extent `e`.
fn file_buf(
    pool: &Pool,
    log: *mut ngx_log_t,
    e: &Extent,
    from: u64,
    to: u64,
) -> Option<*mut ngx_buf_t> {
    let b = pool.calloc_type::<ngx_buf_t>();
    let file = pool.calloc_type::<ngx_file_t>();
    if b.is_null() || file.is_null() {
        return None;
    }
    // SAFETY: b and file are zeroed pool objects; the fd stays open while
    // the caller keeps the extent's owner; from..to lies in the verified
    // body.
    unsafe {
        (*file).fd = e.fd();
        (*file).name = ngx::ngx_string!("rcdn region");
        (*file).log = log;
        (*b).file = file;
        (*b).file_pos = (e.offset + from) as off_t;
        (*b).file_last = (e.offset + to) as off_t;
        (*b).set_in_file(1);
    }
    Some(b)
}

/// A memory buf over `bytes` (which the caller keeps alive and unchanged).
fn mem_buf(pool: &Pool, bytes: &[u8]) -> Option<*mut ngx_buf_t> {
    let b = pool.calloc_type::<ngx_buf_t>();
    if b.is_null() {
        return None;
    }
    let start = bytes.as_ptr().cast_mut();
    // SAFETY: b is a zeroed pool buf; `memory` tells nginx not to write
    // into the bytes.
    unsafe {
        (*b).start = start;
        (*b).pos = start;
        (*b).last = start.add(bytes.len());
        (*b).end = (*b).last;
        (*b).set_memory(1);
    }
    Some(b)
}
