//! The guard's shared zone: `rcdn_guard_zone <size>` (http; 1m by default
//! when `rcdn_guard` is used without it). An nginx slab pool with one
//! allocation: a header (magic, size, challenge secret) then the engine's
//! `cdncore::policy::rates` words, so every worker counts into one table
//! and a challenge token from one worker is valid in all. nginx keeps the
//! zone (counts, flags and secret) across a reload when its size is
//! unchanged.

use crate::base::guard;
use crate::conf::{args, bad, lossy, MainConf, Module};
use cdncore::policy::rates::{Rates, SharedGuard};
use cdncore::purge::Words;
use core::ffi::{c_char, c_void};
use core::ptr;
use core::sync::atomic::AtomicU64;
use nginx_sys::*;
use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::HttpModule;
use ngx::{ngx_log_error, ngx_string};
use std::cell::RefCell;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

const MAGIC: u64 = 0x7263_646e_4755_4152; // "rcdnGUAR"
/// Header words: magic, bytes, 4 words of secret.
const HDR: usize = 6;
/// Zone size when `rcdn_guard` is used without `rcdn_guard_zone`.
pub const DEFAULT_SIZE: usize = 1 << 20;
/// Token lifetime.
const TOKEN_TTL_MS: u64 = 60_000;

struct ShmWords {
    words: *const AtomicU64,
    len: usize,
}

// SAFETY: the words are in a shared mapping that outlives the worker's use
// of its cycle; they are only accessed through atomics.
unsafe impl Send for ShmWords {}
// SAFETY: as above.
unsafe impl Sync for ShmWords {}

impl Words for ShmWords {
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: inside the zone's allocation (see init_zone), 8-aligned.
        unsafe { core::slice::from_raw_parts(self.words, self.len) }
    }
}

/// `rcdn_guard_zone <size>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_guard_zone", || {
        // SAFETY: conf is our MainConf.
        let mc = unsafe { &mut *conf.cast::<MainConf>() };
        if !mc.guard.zone.is_null() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let mut a = unsafe { args(cf) }[0];
        // SAFETY: ngx_parse_size reads `len` bytes.
        let size = unsafe { ngx_parse_size(&mut a) };
        // SAFETY: a plain read of nginx's page size, set at startup.
        let page = unsafe { ngx_pagesize };
        if size <= 0 {
            return bad(cf, "rcdn_guard_zone", &lossy(&a), "not a size");
        }
        if (size as usize) < 8 * page {
            return bad(
                cf,
                "rcdn_guard_zone",
                &lossy(&a),
                &format!("too small (at least {}k)", 8 * page / 1024),
            );
        }
        // SAFETY: forwarded.
        unsafe { add_zone(cf, mc, size as usize) }
    })
}

/// Adds the zone of `size` bytes.
///
/// # Safety
/// `cf` is the http block's conf being parsed; `mc` its main conf.
pub unsafe fn add_zone(cf: *mut ngx_conf_t, mc: &mut MainConf, size: usize) -> *mut c_char {
    let mut name = ngx_string!("rcdn_guard");
    // SAFETY: cf is valid; the tag is our module, which outlives the cycle.
    let zone = unsafe {
        ngx_shared_memory_add(
            cf,
            &mut name,
            size,
            ptr::from_ref(Module::module()).cast_mut().cast(),
        )
    };
    if zone.is_null() {
        return NGX_CONF_ERROR;
    }
    // SAFETY: zone is nginx's record for this cycle.
    unsafe { (*zone).init = Some(init_zone) };
    mc.guard.zone = zone;
    NGX_CONF_OK
}

/// Zone init (master): reuse the table when the size is unchanged, else
/// zero it and draw a new challenge secret.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, _old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes our zone with its shm mapped.
    let log = unsafe { (*zone).shm.log };
    guard::request(log, "rcdn_guard_zone", Status::NGX_ERROR.into(), || {
        // SAFETY: as above.
        unsafe { init_inner(zone, log) }
    })
}

/// # Safety
/// `zone` is our zone with its shm mapped.
unsafe fn init_inner(zone: *mut ngx_shm_zone_t, log: *mut ngx_log_t) -> ngx_int_t {
    // SAFETY: the zone starts with the slab pool nginx initialised.
    let shpool = unsafe { (*zone).shm.addr.cast::<ngx_slab_pool_t>() };
    // SAFETY: as above.
    let mut data = unsafe { (*shpool).data }.cast::<u64>();
    if data.is_null() {
        // SAFETY: pfree pages are free and contiguous in a new pool.
        let bytes = unsafe { (*shpool).pfree * ngx_pagesize };
        // SAFETY: ngx_slab_alloc takes the pool's lock itself.
        data = unsafe { ngx_slab_alloc(shpool, bytes) }.cast::<u64>();
        if data.is_null() || bytes < (HDR + Rates::words_needed(1)) * 8 {
            ngx_log_error!(NGX_LOG_EMERG, log, "rcdn: rcdn_guard_zone: cannot allocate");
            return Status::NGX_ERROR.into();
        }
        // SAFETY: data has `bytes` bytes; the pool is ours.
        unsafe {
            *data.add(1) = bytes as u64;
            (*shpool).data = data.cast();
        }
    }
    // SAFETY: data is our allocation, starting with the header.
    let bytes = unsafe { *data.add(1) } as usize;
    // SAFETY: the header is HDR words of our allocation.
    let h = unsafe { core::slice::from_raw_parts_mut(data, HDR) };
    if h[0] != MAGIC {
        // SAFETY: the allocation is `bytes` long; no worker of it runs yet.
        unsafe { ptr::write_bytes(data.add(HDR), 0, bytes / 8 - HDR) };
        h[2..HDR].copy_from_slice(&secret());
        h[0] = MAGIC;
    }
    Status::NGX_OK.into()
}

/// 32 bytes from the OS-seeded hasher keys.
fn secret() -> [u64; 4] {
    let mut out = [0u64; 4];
    for (i, w) in out.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        i.hash(&mut h);
        std::time::SystemTime::now().hash(&mut h);
        *w = h.finish();
    }
    out
}

thread_local! {
    /// This worker's view of the zone, keyed by the allocation address.
    static VIEW: RefCell<Option<(usize, Arc<SharedGuard>)>> = const { RefCell::new(None) };
}

/// The shared guard of the configured zone.
pub fn get(mc: &MainConf) -> Option<Arc<SharedGuard>> {
    let zone = mc.guard.zone;
    if zone.is_null() {
        return None;
    }
    // SAFETY: the zone of the running cycle is mapped; init_zone ran.
    let data = unsafe { (*(*zone).shm.addr.cast::<ngx_slab_pool_t>()).data }.cast::<u64>();
    if data.is_null() {
        return None;
    }
    VIEW.with(|v| {
        let mut v = v.borrow_mut();
        if let Some((addr, g)) = v.as_ref() {
            if *addr == data as usize {
                return Some(g.clone());
            }
        }
        // SAFETY: header written by init_zone.
        let h = unsafe { core::slice::from_raw_parts(data, HDR) };
        let secret: Vec<u8> = h[2..HDR].iter().flat_map(|w| w.to_le_bytes()).collect();
        let words = ShmWords {
            // SAFETY: the words follow the header inside the allocation.
            words: unsafe { data.add(HDR) }.cast::<AtomicU64>(),
            len: (h[1] as usize / 8).saturating_sub(HDR),
        };
        let rates = Rates::attach(Box::new(words)).ok()?;
        let g = Arc::new(SharedGuard::new(rates, &secret, TOKEN_TTL_MS).ok()?);
        *v = Some((data as usize, g.clone()));
        Some(g)
    })
}
