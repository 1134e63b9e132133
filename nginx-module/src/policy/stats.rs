//! Traffic statistics shared by all workers: `rcdn_stats_zone <size>
//! [window=5m] [windows=12]` (http) makes an nginx shared zone holding the
//! engine's `cdncore::policy::traffic` word table; a log-phase handler
//! records every main request (Host as the domain, status, bytes sent,
//! `$rcdn_cache_status`, hotlink denials); `rcdn_stats json | prometheus`
//! (location) serves them.
//!
//! The zone is an nginx slab pool with one allocation: a small header
//! (shape of the table) then the words. nginx keeps it across a reload when
//! its size is unchanged; a changed window shape re-zeroes it.

use crate::base::guard;
use crate::cache::CacheStatus;
use crate::cache::ReqCtx;
use crate::conf::Module;
use crate::conf::{args, bad, lossy, parse_time, StatsConf};
use cdncore::policy::traffic::{CacheResult, Sample, Traffic};
use cdncore::purge::Words;
use core::ffi::{c_char, c_void};
use core::ptr::{self, addr_of, addr_of_mut};
use core::sync::atomic::AtomicU64;
use nginx_sys::*;
use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::{ngx_log_error, ngx_string};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAGIC: u64 = 0x7263_646e_5354_4154; // "rcdnSTAT"
/// Header words: magic, bytes, slots, windows, window_ms, then the claim
/// word of `rcdn_stats_push` (1 + the last window pushed by any worker).
const HDR: usize = 6;
const SHAPE: usize = 5;
const CLAIM: usize = 5;

/// The table's words inside the shared zone.
struct ShmWords {
    words: *const AtomicU64,
    len: usize,
}

// SAFETY: the words are in a shared mapping that lives as long as the
// worker's cycle (nginx unmaps a zone only when the cycle that owns it is
// gone, and a worker never outlives its cycle); they are only accessed
// through atomics.
unsafe impl Send for ShmWords {}
// SAFETY: as above.
unsafe impl Sync for ShmWords {}

impl Words for ShmWords {
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `words..words+len` is inside the zone's allocation (see
        // `init_zone`), 8-byte aligned (slab pages), and mapped while we live.
        unsafe { core::slice::from_raw_parts(self.words, self.len) }
    }
}

/// `rcdn_stats_zone <size> [window=<time>] [windows=<n>];`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_stats_zone", || {
        // SAFETY: conf is our MainConf.
        let mc = unsafe { &mut *conf.cast::<crate::conf::MainConf>() };
        if !mc.stats.zone.is_null() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let a = unsafe { args(cf) };
        let name = "rcdn_stats_zone";
        let mut size_arg = a[0];
        // SAFETY: ngx_parse_size reads `len` bytes.
        let size = unsafe { ngx_parse_size(&mut size_arg) };
        if size <= 0 {
            return bad(cf, name, &lossy(&a[0]), "not a size");
        }
        for v in &a[1..] {
            let text = lossy(v);
            if let Some(t) = text.strip_prefix("window=") {
                match parse_time(t.as_bytes()) {
                    Some(ms) if ms >= 100 => mc.stats.window_ms = ms,
                    _ => return bad(cf, name, &text, "window must be a time of 100ms or more"),
                }
            } else if let Some(n) = text.strip_prefix("windows=") {
                match n.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => mc.stats.windows = n,
                    _ => return bad(cf, name, &text, "windows must be 1..1000"),
                }
            } else {
                return bad(cf, name, &text, "expected window=<time> or windows=<n>");
            }
        }
        let size = size as usize;
        // SAFETY: a plain read of nginx's page size, set at startup.
        let page = unsafe { ngx_pagesize };
        // The slab pool keeps a few pages for itself.
        let usable = size.saturating_sub(4 * page);
        if usable < (HDR + Traffic::words_needed(1, mc.stats.windows)) * 8 {
            return bad(
                cf,
                name,
                &lossy(&a[0]),
                &format!("too small for one domain with windows={}", mc.stats.windows),
            );
        }
        let mut zname = ngx_string!("rcdn_stats");
        // SAFETY: cf is valid; the tag is our module, which outlives the cycle.
        let zone = unsafe {
            ngx_shared_memory_add(
                cf,
                &mut zname,
                size,
                ptr::from_ref(Module::module()).cast_mut().cast(),
            )
        };
        if zone.is_null() {
            return NGX_CONF_ERROR;
        }
        // SAFETY: zone is nginx's zone record for this cycle; mc.stats lives
        // in the cycle's conf pool as long as the zone record.
        unsafe {
            (*zone).init = Some(init_zone);
            (*zone).data = addr_of_mut!(mc.stats).cast();
        }
        mc.stats.zone = zone;
        NGX_CONF_OK
    })
}

/// Zone init (master, at every configuration load): reuse the table when
/// its shape is unchanged, else (re)build it zeroed.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, _old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes our zone with its shm mapped.
    let log = unsafe { (*zone).shm.log };
    // SAFETY: as above, for the call.
    guard::request(
        log,
        "rcdn_stats_zone",
        Status::NGX_ERROR.into(),
        || unsafe { init_zone_inner(zone) },
    )
}

/// # Safety
/// `zone` is our zone with its shm mapped (nginx's init callback).
unsafe fn init_zone_inner(zone: *mut ngx_shm_zone_t) -> ngx_int_t {
    // SAFETY: nginx passes our zone with its shm mapped.
    let (sc, shpool, log) = unsafe {
        (
            &*(*zone).data.cast::<StatsConf>(),
            (*zone).shm.addr.cast::<ngx_slab_pool_t>(),
            (*zone).shm.log,
        )
    };
    // SAFETY: the zone starts with the slab pool nginx initialised.
    let mut data = unsafe { (*shpool).data }.cast::<u64>();
    if data.is_null() {
        // SAFETY: as above; pfree pages are free and contiguous in a new pool.
        let bytes = unsafe { (*shpool).pfree * ngx_pagesize };
        // SAFETY: ngx_slab_alloc takes the pool's lock itself.
        data = unsafe { ngx_slab_alloc(shpool, bytes) }.cast::<u64>();
        if data.is_null() {
            ngx_log_error!(NGX_LOG_EMERG, log, "rcdn: rcdn_stats_zone: cannot allocate");
            return Status::NGX_ERROR.into();
        }
        // SAFETY: data has `bytes` bytes, at least HDR words (checked by the
        // directive); the pool is ours.
        unsafe {
            *data.add(1) = bytes as u64;
            (*shpool).data = data.cast();
        }
    }
    // SAFETY: data is our allocation, starting with the header.
    let bytes = unsafe { *data.add(1) } as usize;
    let words = (bytes / 8).saturating_sub(HDR);
    let mut slots = 0;
    while Traffic::words_needed(slots + 1, sc.windows) <= words {
        slots += 1;
    }
    if slots == 0 {
        ngx_log_error!(NGX_LOG_EMERG, log, "rcdn: rcdn_stats_zone: too small");
        return Status::NGX_ERROR.into();
    }
    let want = [
        MAGIC,
        bytes as u64,
        slots as u64,
        sc.windows as u64,
        sc.window_ms,
    ];
    // SAFETY: the header is HDR words of our allocation.
    let have = unsafe { core::slice::from_raw_parts_mut(data, HDR) };
    if have[..SHAPE] != want {
        // SAFETY: the whole allocation is `bytes` long; no worker of this
        // configuration runs yet, and old workers only hold atomics.
        unsafe { ptr::write_bytes(data.add(HDR), 0, words) };
        have[..SHAPE].copy_from_slice(&want);
        have[CLAIM] = 0;
    }
    Status::NGX_OK.into()
}

thread_local! {
    /// This worker's view of the table, keyed by the zone address.
    static TABLE: RefCell<Option<(usize, Arc<Traffic>)>> = const { RefCell::new(None) };
    static LAST_FULL_LOG: RefCell<Option<Instant>> = const { RefCell::new(None) };
}

/// The table of the configured zone, if any.
fn table(mc: &crate::conf::MainConf) -> Option<Arc<Traffic>> {
    let zone = mc.stats.zone;
    if zone.is_null() {
        return None;
    }
    // SAFETY: the zone of the running cycle is mapped; init_zone ran.
    let data = unsafe { (*(*zone).shm.addr.cast::<ngx_slab_pool_t>()).data }.cast::<u64>();
    if data.is_null() {
        return None;
    }
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        if let Some((addr, tr)) = t.as_ref() {
            if *addr == data as usize {
                return Some(tr.clone());
            }
        }
        // SAFETY: header written by init_zone.
        let h = unsafe { core::slice::from_raw_parts(data, HDR) };
        let (bytes, slots, windows, window_ms) = (h[1] as usize, h[2], h[3], h[4]);
        let words = ShmWords {
            // SAFETY: the words follow the header inside the allocation.
            words: unsafe { data.add(HDR) }.cast::<AtomicU64>(),
            len: (bytes / 8).saturating_sub(HDR),
        };
        let tr = Traffic::attach(Box::new(words), slots as usize, windows as usize, window_ms)
            .ok()
            .map(Arc::new)?;
        *t = Some((data as usize, tr.clone()));
        if let Some(url) = &mc.stats.push {
            // SAFETY: the claim word is in the header, mapped while we live.
            let claim = unsafe { &*data.add(CLAIM).cast::<AtomicU64>() };
            crate::policy::stats_push::start(
                tr.clone(),
                claim,
                url.clone(),
                node_name(mc),
                window_ms,
            );
        }
        Some(tr)
    })
}

/// `rcdn_node_name`, or the host name nginx knows.
pub fn node_name(mc: &crate::conf::MainConf) -> String {
    mc.node_name.clone().unwrap_or_else(|| {
        // SAFETY: the global cycle is the running one.
        lossy(unsafe { &(*ngx_cycle).hostname })
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What an access-phase check did to a request, for the stats.
#[derive(Clone, Copy)]
pub enum Mark {
    /// Refused by hotlink protection.
    Denied,
    /// Answered with a guard challenge.
    Challenged,
    /// Blocked by the guard.
    Blocked,
}

/// Distinct addresses that tag the marker cleanups.
static MARKS: [u8; 3] = [0; 3];

fn mark_tag(m: Mark) -> *mut c_void {
    addr_of!(MARKS[m as usize]).cast_mut().cast()
}

unsafe extern "C" fn noop(_: *mut c_void) {}

/// Flags a request (a marker cleanup in its pool, found again in the log
/// phase; survives internal redirects).
///
/// # Safety
/// `r` must be live.
pub unsafe fn mark(r: *mut ngx_http_request_t, m: Mark) {
    // SAFETY: r is live; a 0-byte cleanup only links a record.
    let c = unsafe { ngx_pool_cleanup_add((*r).pool, 0) };
    if !c.is_null() {
        // SAFETY: c is the fresh cleanup record.
        unsafe {
            (*c).handler = Some(noop);
            (*c).data = mark_tag(m);
        }
    }
}

/// # Safety
/// `r` must be live.
unsafe fn marked(r: *mut ngx_http_request_t, m: Mark) -> bool {
    // SAFETY: r is live; the cleanup list is null-terminated.
    let mut c = unsafe { (*(*r).pool).cleanup };
    while !c.is_null() {
        // SAFETY: c is a live cleanup record.
        if unsafe { (*c).data } == mark_tag(m) {
            return true;
        }
        // SAFETY: as above.
        c = unsafe { (*c).next };
    }
    false
}

fn cache_result(s: CacheStatus) -> CacheResult {
    match s {
        CacheStatus::Hit => CacheResult::Hit,
        CacheStatus::Miss => CacheResult::Miss,
        CacheStatus::Expired => CacheResult::Expired,
        CacheStatus::Stale => CacheResult::Stale,
        CacheStatus::Updating => CacheResult::Updating,
        CacheStatus::Revalidated => CacheResult::Revalidated,
        CacheStatus::Bypass | CacheStatus::None => CacheResult::Bypass,
    }
}

/// Log phase: counts the main request.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn log_phase(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(log, "stats", Status::NGX_OK.into(), || {
        // SAFETY: r is live for the call.
        unsafe { record(r, log) };
        Status::NGX_OK.into()
    })
}

/// # Safety
/// `r` must be live.
unsafe fn record(r: *mut ngx_http_request_t, log: *mut ngx_log_t) {
    // SAFETY: r is live.
    let r = unsafe { (*r).main };
    // SAFETY: r is live.
    let Some(mc) = Module::main_conf(unsafe { &*r }) else {
        return;
    };
    let Some(t) = table(mc) else {
        return;
    };
    // SAFETY: r is live; its strings live as long as the request.
    let (host, status, sent, cache) = unsafe {
        (
            String::from_utf8_lossy((*r).headers_in.server.as_bytes()).into_owned(),
            (*r).headers_out.status,
            (*(*r).connection).sent,
            ReqCtx::get(r).map_or(CacheStatus::None, |c| c.status),
        )
    };
    // SAFETY: r is live.
    let is = |m| unsafe { marked(r, m) };
    // SAFETY: r is live.
    let (origin_bytes, origin_ms, origin_fetches) = unsafe { upstream_totals(r) };
    let s = Sample {
        origin_bytes,
        origin_ms,
        origin_fetches,
        status: u16::try_from(status).unwrap_or(0),
        bytes_sent: u64::try_from(sent).unwrap_or(0),
        cache: cache_result(cache),
        hotlink_denied: is(Mark::Denied),
        challenged: is(Mark::Challenged),
        blocked: is(Mark::Blocked),
    };
    let host = if host.is_empty() { "-" } else { &host };
    let before = t.overflow();
    t.record(host, &s, now_ms());
    if t.overflow() > before {
        log_full(log, t.overflow());
    }
}

/// Body bytes, upstream time (ms) and attempts of the request's own
/// upstream (`$upstream_response_length`, `$upstream_response_time`),
/// summed over retries; zeros when it did not go to an upstream.
///
/// # Safety
/// `r` must be live.
unsafe fn upstream_totals(r: *mut ngx_http_request_t) -> (u64, u64, u64) {
    // SAFETY: r is live; upstream_states is null or nginx's array of states.
    let states = unsafe { (*r).upstream_states };
    if states.is_null() {
        return (0, 0, 0);
    }
    // SAFETY: a non-null array holds `nelts` states.
    let all = unsafe {
        core::slice::from_raw_parts(
            (*states).elts as *const ngx_http_upstream_state_t,
            (*states).nelts,
        )
    };
    let (mut bytes, mut ms) = (0u64, 0u64);
    for s in all {
        bytes += u64::try_from(s.response_length).unwrap_or(0);
        // An unfinished state holds (ngx_msec_t) -1.
        if s.response_time != ngx_msec_t::MAX {
            ms += s.response_time as u64;
        }
    }
    (bytes, ms, 1)
}

/// Tags the fill subrequests already counted (a post-subrequest handler
/// can run twice); the cleanup's data is the subrequest.
static ORIGIN_COUNTED: unsafe extern "C" fn(*mut c_void) = noop_counted;

unsafe extern "C" fn noop_counted(_: *mut c_void) {}

/// Counts a finished fill subrequest's origin fetch (body bytes and
/// upstream time) for its Host and the total, once. Called from the fill's
/// post-subrequest handler, after nginx finalized its upstream.
///
/// # Safety
/// `sr` must be a live subrequest.
// Registering and comparing use the same static pointer value.
#[allow(unpredictable_function_pointer_comparisons)]
pub unsafe fn fill_done(sr: *mut ngx_http_request_t) {
    // SAFETY: sr is live.
    let Some(mc) = Module::main_conf(unsafe { &*sr }) else {
        return;
    };
    let Some(t) = table(mc) else {
        return;
    };
    // SAFETY: sr is live; its pool is the main request's.
    unsafe {
        let mut c = (*(*sr).pool).cleanup;
        while !c.is_null() {
            if (*c).handler == Some(ORIGIN_COUNTED) && (*c).data == sr.cast() {
                return;
            }
            c = (*c).next;
        }
        let (bytes, ms, fetches) = upstream_totals(sr);
        if fetches == 0 {
            return;
        }
        let c = ngx_pool_cleanup_add((*sr).pool, 0);
        if c.is_null() {
            return;
        }
        (*c).handler = Some(ORIGIN_COUNTED);
        (*c).data = sr.cast();
        let host = String::from_utf8_lossy((*sr).headers_in.server.as_bytes()).into_owned();
        let host = if host.is_empty() { "-" } else { &host };
        t.record_origin(host, bytes, ms, now_ms());
    }
}

/// Says so when a domain found no slot (at most every 10 s per worker).
fn log_full(log: *mut ngx_log_t, n: u64) {
    let due = LAST_FULL_LOG.with(|l| {
        let mut l = l.borrow_mut();
        let due = l.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            *l = Some(Instant::now());
        }
        due
    });
    if due {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "rcdn: stats zone full: {n} requests counted in the total only (enlarge rcdn_stats_zone)"
        );
    }
}

/// `rcdn_stats json | prometheus;` (location): serve the statistics.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_stats(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_stats", || {
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        let h: unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t = match v.as_bytes() {
            b"json" => json_handler,
            b"prometheus" => prometheus_handler,
            _ => {
                return bad(
                    cf,
                    "rcdn_stats",
                    &lossy(&v),
                    "expected \"json\" or \"prometheus\"",
                )
            }
        };
        // SAFETY: cf is valid during parsing; the core loc conf exists.
        match NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) {
            Some(clcf) => {
                clcf.handler = Some(h);
                NGX_CONF_OK
            }
            None => NGX_CONF_ERROR,
        }
    })
}

unsafe extern "C" fn json_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    unsafe { serve(r, false) }
}

unsafe extern "C" fn prometheus_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    unsafe { serve(r, true) }
}

/// # Safety
/// `r` must be live.
unsafe fn serve(r: *mut ngx_http_request_t, prom: bool) -> ngx_int_t {
    // SAFETY: r is live.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "rcdn_stats",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is live.
            let mc = Module::main_conf(unsafe { &*r });
            let Some(t) = mc.and_then(table) else {
                return NGX_HTTP_NOT_FOUND as ngx_int_t;
            };
            let guard = mc.and_then(crate::policy::attack_zone::get);
            let (body, ct) = if prom {
                let mut s = t.to_prometheus();
                if let Some(g) = guard {
                    s.push_str(&format!(
                        "# TYPE rcdn_guard_zone_full_total counter\nrcdn_guard_zone_full_total {}\n\
                         # TYPE rcdn_guard_lifted_total counter\nrcdn_guard_lifted_total {}\n",
                        g.rates.full(),
                        g.rates.lifted()
                    ));
                }
                (s, ngx_string!("text/plain; version=0.0.4"))
            } else {
                let mut v = t.to_json(now_ms());
                if let Some(g) = guard {
                    v["guard_zone"] = serde_json::json!({
                        "slots": g.rates.slots(),
                        "full": g.rates.full(),
                        "lifted": g.rates.lifted(),
                    });
                }
                let mut s = v.to_string();
                s.push('\n');
                (s, ngx_string!("application/json"))
            };
            // SAFETY: r is live.
            unsafe { crate::http::reply::send(r, NGX_HTTP_OK, body.as_bytes(), ct) }
        },
    )
}
