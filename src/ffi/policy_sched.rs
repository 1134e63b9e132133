//! Edge policies for C, part 2: the request scheduler, traffic statistics
//! and the request log line (`policy::{sched, traffic, reqlog}`).

use super::args::{bytes, out, put, text, MAX_TEXT};
use super::policy::{free_handle, handle_ref, new_handle, policy_err, tagged};
use super::policy_out::{copy_out, opt_bytes, opt_text};
use super::status::{cdn_status, cdn_status::*, guard, FfiError, FfiResult};
use crate::policy::reqlog::{self, Entry};
use crate::policy::sched::Scheduler;
use crate::policy::traffic::{CacheResult, Sample, Traffic};
use parking_lot::RwLock;
use std::net::IpAddr;

const SCHED_MAGIC: u64 = u64::from_le_bytes(*b"cdnSCHED");
const TRAFFIC_MAGIC: u64 = u64::from_le_bytes(*b"cdnTRAFC");

/// The scheduler's tables and node states. Opaque.
pub struct cdn_scheduler {
    magic: u64,
    sched: RwLock<Scheduler>,
}
tagged!(cdn_scheduler, SCHED_MAGIC, "scheduler");

/// Parses a scheduler table (`node`, `zone` and `levels` lines; see
/// docs/c-abi.md). Every node starts healthy with load 0.
/// Errors: `CDN_INVALID_CONFIG` naming the line (a bad CIDR, range, node).
/// Ownership: free with `cdn_scheduler_free`. Thread safety: any threads at
/// once (picks share a read lock, state updates take a write lock).
///
/// # Safety
/// `table` readable for `table_len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_scheduler_new(
    table: *const u8,
    table_len: usize,
    out_s: *mut *mut cdn_scheduler,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let t = unsafe { text(table, table_len, "table")? };
        let out_s = out(out_s, "out")?;
        let sched = Scheduler::parse(t).map_err(policy_err)?;
        let p = new_handle(cdn_scheduler {
            magic: SCHED_MAGIC,
            sched: RwLock::new(sched),
        });
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_s, p) };
        Ok(())
    })
}

/// Frees a scheduler. NULL is a no-op; a second free returns
/// `CDN_INVALID_HANDLE`.
///
/// # Safety
/// `s` is NULL or from `cdn_scheduler_new`, not in use.
#[no_mangle]
pub unsafe extern "C" fn cdn_scheduler_free(s: *mut cdn_scheduler) -> cdn_status {
    // SAFETY: caller contract.
    guard(|| unsafe { free_handle(s) })
}

fn ip_arg(ip: &str) -> FfiResult<IpAddr> {
    ip.trim()
        .parse()
        .map_err(|_| FfiError::arg(format!("{ip:?} is not an IPv4 or IPv6 address")))
}

/// The node URL for a client at `ip` (text, IPv4 or IPv6): the first
/// healthy, not overloaded node of its zone's levels, else any healthy
/// node, else any node; `rand` picks among equals. NUL-terminated into
/// `buf`, length to `*out_len`.
/// Errors: `CDN_INVALID_ARGUMENT` (bad address); `CDN_NOT_FOUND` when the
/// table has no nodes (serve the request locally); `CDN_BUFFER_TOO_SMALL`
/// writes the needed size. Thread safety: any thread.
///
/// # Safety
/// `s` live; `ip` readable for `ip_len`; `buf` writable for `buf_len` (NULL
/// when 0); `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_scheduler_pick(
    s: *const cdn_scheduler,
    ip: *const u8,
    ip_len: usize,
    rand: u64,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let s = unsafe { handle_ref(s)? };
        // SAFETY: caller contract.
        let ip = ip_arg(unsafe { text(ip, ip_len, "ip")? })?;
        let sched = s.sched.read();
        let node = sched
            .pick(ip, rand)
            .ok_or_else(|| FfiError::new(CDN_NOT_FOUND, "no nodes: serve locally"))?;
        // SAFETY: caller contract.
        unsafe { copy_out(node.url.as_bytes(), buf, buf_len, out_len) }
    })
}

/// The zone name of a client address, as `cdn_scheduler_pick` copies;
/// `CDN_NOT_FOUND` when no range covers it.
///
/// # Safety
/// As `cdn_scheduler_pick`.
#[no_mangle]
pub unsafe extern "C" fn cdn_scheduler_zone(
    s: *const cdn_scheduler,
    ip: *const u8,
    ip_len: usize,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let s = unsafe { handle_ref(s)? };
        // SAFETY: caller contract.
        let ip = ip_arg(unsafe { text(ip, ip_len, "ip")? })?;
        let sched = s.sched.read();
        let zone = sched
            .zone_of(ip)
            .ok_or_else(|| FfiError::new(CDN_NOT_FOUND, "no zone covers this address"))?;
        // SAFETY: caller contract.
        unsafe { copy_out(zone.as_bytes(), buf, buf_len, out_len) }
    })
}

/// Records node `id`'s health and load (0.0 idle .. 1.0 full; 0.9 and up
/// is overloaded; NaN counts as full). `CDN_NOT_FOUND` for an unknown id.
///
/// # Safety
/// `s` live; `id` readable for `id_len`.
#[no_mangle]
pub unsafe extern "C" fn cdn_scheduler_set_state(
    s: *const cdn_scheduler,
    id: *const u8,
    id_len: usize,
    healthy: bool,
    load: f64,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let s = unsafe { handle_ref(s)? };
        // SAFETY: caller contract.
        let id = unsafe { text(id, id_len, "id")? };
        if s.sched.write().set_state(id, healthy, load) {
            Ok(())
        } else {
            Err(FfiError::new(CDN_NOT_FOUND, format!("no node {id:?}")))
        }
    })
}

/// Windowed traffic counters per domain and in total. Opaque.
pub struct cdn_traffic {
    magic: u64,
    traffic: Traffic,
}
tagged!(cdn_traffic, TRAFFIC_MAGIC, "traffic");

/// Cache outcome of a request, for `cdn_traffic_sample.cache`.
pub const CDN_CACHE_HIT: u32 = 0;
pub const CDN_CACHE_MISS: u32 = 1;
pub const CDN_CACHE_STALE: u32 = 2;
pub const CDN_CACHE_UPDATING: u32 = 3;
pub const CDN_CACHE_REVALIDATED: u32 = 4;
pub const CDN_CACHE_EXPIRED: u32 = 5;
pub const CDN_CACHE_BYPASS: u32 = 6;

/// What one request contributes to the statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct cdn_traffic_sample {
    pub status: u16,
    pub bytes_sent: u64,
    /// A `CDN_CACHE_*` value.
    pub cache: u32,
    pub origin_bytes: u64,
    pub origin_ms: u64,
    pub challenged: bool,
    pub blocked: bool,
    pub hotlink_denied: bool,
}

/// Makes a statistics table for up to `slots` domains (1..=65536; more are
/// counted in the total and in `overflow`), keeping the current and the last
/// `windows` (1..=1024) windows of `window_ms` (>= 1000).
/// Errors: `CDN_INVALID_CONFIG` for a shape out of range.
/// Ownership: free with `cdn_traffic_free`. Thread safety: any threads at
/// once (lock-free counters).
///
/// # Safety
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_traffic_new(
    slots: usize,
    windows: usize,
    window_ms: u64,
    out_t: *mut *mut cdn_traffic,
) -> cdn_status {
    guard(|| {
        let out_t = out(out_t, "out")?;
        let bad = |m: &str| Err(FfiError::new(CDN_INVALID_CONFIG, m));
        if !(1..=65536).contains(&slots) {
            return bad("traffic slots must be 1..=65536");
        }
        if !(1..=1024).contains(&windows) {
            return bad("traffic windows must be 1..=1024");
        }
        if window_ms < 1000 {
            return bad("traffic window must be at least 1000 ms");
        }
        let p = new_handle(cdn_traffic {
            magic: TRAFFIC_MAGIC,
            traffic: Traffic::new(slots, windows, window_ms),
        });
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_t, p) };
        Ok(())
    })
}

/// Frees a statistics table. NULL is a no-op; a second free returns
/// `CDN_INVALID_HANDLE`.
///
/// # Safety
/// `t` is NULL or from `cdn_traffic_new`, not in use.
#[no_mangle]
pub unsafe extern "C" fn cdn_traffic_free(t: *mut cdn_traffic) -> cdn_status {
    // SAFETY: caller contract.
    guard(|| unsafe { free_handle(t) })
}

/// Counts one request for `domain` (the server name) at `now_ms`.
/// Errors: `CDN_INVALID_ARGUMENT` (NULL, non-UTF-8 domain, unknown cache
/// value). Thread safety: any thread, concurrently.
///
/// # Safety
/// `t` live; `domain` readable for `domain_len`; `sample` readable.
#[no_mangle]
pub unsafe extern "C" fn cdn_traffic_record(
    t: *const cdn_traffic,
    domain: *const u8,
    domain_len: usize,
    sample: *const cdn_traffic_sample,
    now_ms: u64,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let t = unsafe { handle_ref(t)? };
        // SAFETY: caller contract.
        let domain = unsafe { text(domain, domain_len, "domain")? };
        // SAFETY: NULL or readable by contract.
        let s = unsafe { sample.as_ref() }.ok_or_else(|| FfiError::arg("sample is NULL"))?;
        let cache = match s.cache {
            CDN_CACHE_HIT => CacheResult::Hit,
            CDN_CACHE_MISS => CacheResult::Miss,
            CDN_CACHE_STALE => CacheResult::Stale,
            CDN_CACHE_UPDATING => CacheResult::Updating,
            CDN_CACHE_REVALIDATED => CacheResult::Revalidated,
            CDN_CACHE_EXPIRED => CacheResult::Expired,
            CDN_CACHE_BYPASS => CacheResult::Bypass,
            c => return Err(FfiError::arg(format!("unknown cache result {c}"))),
        };
        let sample = Sample {
            status: s.status,
            bytes_sent: s.bytes_sent,
            cache,
            origin_bytes: s.origin_bytes,
            origin_ms: s.origin_ms,
            // The C sample has no fetch count: one fetch if it used the origin.
            origin_fetches: u64::from(s.origin_bytes > 0 || s.origin_ms > 0),
            challenged: s.challenged,
            blocked: s.blocked,
            hotlink_denied: s.hotlink_denied,
        };
        t.traffic.record(domain, &sample, now_ms);
        Ok(())
    })
}

/// The statistics as VTS-like JSON at `now_ms`, NUL-terminated into `buf`,
/// length to `*out_len`; `CDN_BUFFER_TOO_SMALL` writes the needed size
/// (`buf` may be NULL with `buf_len` 0 to ask). The size can grow between
/// calls while requests are counted: retry on `CDN_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `t` live; `buf` writable for `buf_len`; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_traffic_json(
    t: *const cdn_traffic,
    now_ms: u64,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let t = unsafe { handle_ref(t)? };
        let json = t.traffic.to_json(now_ms).to_string();
        // SAFETY: caller contract.
        unsafe { copy_out(json.as_bytes(), buf, buf_len, out_len) }
    })
}

/// The statistics as Prometheus text (version 0.0.4, `_total` counters),
/// copied as by `cdn_traffic_json`.
///
/// # Safety
/// As `cdn_traffic_json`.
#[no_mangle]
pub unsafe extern "C" fn cdn_traffic_prometheus(
    t: *const cdn_traffic,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let t = unsafe { handle_ref(t)? };
        let text = t.traffic.to_prometheus();
        // SAFETY: caller contract.
        unsafe { copy_out(text.as_bytes(), buf, buf_len, out_len) }
    })
}

/// One request for the JSON request log: (pointer, length) pairs; `data`
/// and `data_type` (the `X-Minicdn-Data`/`-Type` headers) may be NULL with
/// length 0 (absent).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cdn_reqlog_entry {
    pub time_ms: u64,
    pub key: *const u8,
    pub key_len: usize,
    pub client: *const u8,
    pub client_len: usize,
    pub user_agent: *const u8,
    pub user_agent_len: usize,
    pub cache_status: *const u8,
    pub cache_status_len: usize,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub node: *const u8,
    pub node_len: usize,
    pub data: *const u8,
    pub data_len: usize,
    pub data_type: *const u8,
    pub data_type_len: usize,
}

/// The JSON log line of one request (no newline), NUL-terminated into
/// `buf`, length to `*out_len`; `CDN_BUFFER_TOO_SMALL` writes the needed
/// size. Key, user agent and data may be any bytes (invalid UTF-8 is
/// replaced); client, cache status and node must be UTF-8.
/// Thread safety: any thread (no state).
///
/// # Safety
/// `e` readable, its pointers readable for their lengths; `buf` writable
/// for `buf_len`; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_reqlog_line(
    e: *const cdn_reqlog_entry,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: NULL or readable by contract.
        let e = unsafe { e.as_ref() }.ok_or_else(|| FfiError::arg("entry is NULL"))?;
        let b = |p, n, what| {
            // SAFETY: each pair is readable by contract.
            unsafe { bytes(p, n, MAX_TEXT, what, CDN_INVALID_ARGUMENT) }
        };
        // SAFETY: each pair is readable by contract.
        let t = |p, n, what| unsafe { opt_text(p, n, what) }.map(Option::unwrap_or_default);
        let entry = Entry {
            time_ms: e.time_ms,
            key: b(e.key, e.key_len, "key")?,
            client: t(e.client, e.client_len, "client")?,
            user_agent: b(e.user_agent, e.user_agent_len, "user_agent")?,
            cache_status: t(e.cache_status, e.cache_status_len, "cache_status")?,
            status: e.status,
            bytes_sent: e.bytes_sent,
            duration_ms: e.duration_ms,
            node: t(e.node, e.node_len, "node")?,
            // SAFETY: each pair is readable by contract.
            data: unsafe { opt_bytes(e.data, e.data_len, "data")? },
            // SAFETY: each pair is readable by contract.
            data_type: unsafe { opt_bytes(e.data_type, e.data_type_len, "data_type")? },
        };
        let line = reqlog::line(&entry);
        // SAFETY: caller contract.
        unsafe { copy_out(line.as_bytes(), buf, buf_len, out_len) }
    })
}
