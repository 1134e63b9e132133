//! Purges: every kind of the engine, each O(1) at call time and visible to
//! the next lookup.

use super::args::{bytes, out, put, text, MAX_TEXT};
use super::cache::{cache_ref, cdn_cache, key_arg};
use super::status::{cdn_status, cdn_status::*, guard, FfiResult};
use crate::{Purge, PurgeReport};

/// What a purge did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct cdn_purge_report {
    /// Sequence number of this purge (increases by one per purge).
    pub seq: u64,
    /// Objects it covered, when `covered_known` (key and all purges);
    /// otherwise 0.
    pub covered: u64,
    /// Whether `covered` is known.
    pub covered_known: bool,
}

impl From<PurgeReport> for cdn_purge_report {
    fn from(r: PurgeReport) -> Self {
        cdn_purge_report {
            seq: r.seq,
            covered: r.covered.unwrap_or(0),
            covered_known: r.covered.is_some(),
        }
    }
}

/// Runs a purge built by `make` once the cache and output are checked.
///
/// # Safety
/// `cache` is a live cache handle; `report` is writable; `make` upholds the
/// contracts of the pointers it reads.
unsafe fn purge_with(
    cache: *const cdn_cache,
    report: *mut cdn_purge_report,
    make: impl FnOnce(&super::cache::CacheHandle) -> FfiResult<Purge>,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        let report = out(report, "report")?;
        let p = make(h)?;
        let r = h.cache.purge(&p)?;
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(report, r.into()) };
        Ok(())
    })
}

/// Purges one key (removed at once). Writes the report to `*report`.
/// Every `cdn_cache_purge_*`: ownership — arguments are copied, `*report` is
/// the caller's; thread safety — any thread, concurrently with lookups and
/// inserts.
///
/// # Safety
/// `cache` is a live cache handle; `key` points to `key_len` readable bytes;
/// `report` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_purge_key(
    cache: *const cdn_cache,
    key: *const u8,
    key_len: usize,
    report: *mut cdn_purge_report,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        purge_with(cache, report, |h| {
            Ok(Purge::Key(key_arg(h, key, key_len)?.to_vec()))
        })
    }
}

/// Purges every key starting with `prefix` (O(1) for a directory prefix
/// such as "example.com/news/", a bounded ban otherwise).
/// Ownership: arguments are copied; `*report` is the caller's.
/// Thread safety: any thread, concurrently with lookups and inserts.
///
/// # Safety
/// As `cdn_cache_purge_key`, with `prefix`/`len`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_purge_prefix(
    cache: *const cdn_cache,
    prefix: *const u8,
    len: usize,
    report: *mut cdn_purge_report,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        purge_with(cache, report, |_| {
            let p = bytes(prefix, len, MAX_TEXT, "prefix", CDN_INVALID_PURGE)?;
            Ok(Purge::Prefix(p.to_vec()))
        })
    }
}

/// Purges every object of a group (`cdn_writer_set_group`, or by default
/// the key's first path level).
/// Ownership: arguments are copied; `*report` is the caller's.
/// Thread safety: any thread, concurrently with lookups and inserts.
///
/// # Safety
/// As `cdn_cache_purge_key`, with `group`/`len`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_purge_group(
    cache: *const cdn_cache,
    group: *const u8,
    len: usize,
    report: *mut cdn_purge_report,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        purge_with(cache, report, |_| {
            let g = bytes(group, len, MAX_TEXT, "group", CDN_INVALID_PURGE)?;
            Ok(Purge::Group(g.to_vec()))
        })
    }
}

/// Purges every object carrying integer tag `tag`.
/// Ownership: arguments are copied; `*report` is the caller's.
/// Thread safety: any thread, concurrently with lookups and inserts.
///
/// # Safety
/// `cache` is a live cache handle; `report` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_purge_tag(
    cache: *const cdn_cache,
    tag: u16,
    report: *mut cdn_purge_report,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe { purge_with(cache, report, |_| Ok(Purge::Tag(tag))) }
}

/// Purges every object carrying surrogate key `skey` (UTF-8).
/// Ownership: arguments are copied; `*report` is the caller's.
/// Thread safety: any thread, concurrently with lookups and inserts.
///
/// # Safety
/// As `cdn_cache_purge_key`, with `skey`/`len`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_purge_surrogate_key(
    cache: *const cdn_cache,
    skey: *const u8,
    len: usize,
    report: *mut cdn_purge_report,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        purge_with(cache, report, |_| {
            Ok(Purge::SurrogateKey(
                text(skey, len, "surrogate key")?.to_string(),
            ))
        })
    }
}

/// Purges every object whose mask shares a bit with `mask` (0 is refused
/// with `CDN_INVALID_PURGE`: it would match nothing).
/// Ownership: arguments are copied; `*report` is the caller's.
/// Thread safety: any thread, concurrently with lookups and inserts.
///
/// # Safety
/// `cache` is a live cache handle; `report` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_purge_mask(
    cache: *const cdn_cache,
    mask: u64,
    report: *mut cdn_purge_report,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe { purge_with(cache, report, |_| Ok(Purge::Mask(mask))) }
}

/// Purges every key matching `regex` (UTF-8, Rust `regex` syntax, matched
/// against the raw key). A pattern that does not compile is
/// `CDN_INVALID_REGEX` with the reason in `cdn_last_error()`.
/// Ownership: arguments are copied; `*report` is the caller's.
/// Thread safety: any thread, concurrently with lookups and inserts.
///
/// # Safety
/// As `cdn_cache_purge_key`, with `regex`/`len`.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_purge_regex(
    cache: *const cdn_cache,
    regex: *const u8,
    len: usize,
    report: *mut cdn_purge_report,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        purge_with(cache, report, |_| {
            Ok(Purge::Regex(text(regex, len, "regex")?.to_string()))
        })
    }
}

/// Purges everything.
/// Ownership: arguments are copied; `*report` is the caller's.
/// Thread safety: any thread, concurrently with lookups and inserts.
///
/// # Safety
/// `cache` is a live cache handle; `report` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_cache_purge_all(
    cache: *const cdn_cache,
    report: *mut cdn_purge_report,
) -> cdn_status {
    // SAFETY: forwarded caller contract.
    unsafe { purge_with(cache, report, |_| Ok(Purge::All)) }
}
