//! Peer health shared by the workers of a node: an nginx shared zone
//! (`rcdn_peers`, added when `rcdn_peer` is used) holding, per peer id, the
//! time until which it is down, and the node's peer counters. Only atomics:
//! no lock a killed worker could leave held. The zone keeps its size across
//! reloads, so nginx reuses it (marks are by id hash, not list position).

use crate::base::guard;
use crate::conf::Module;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use nginx_sys::*;
use ngx::core::Status;
use ngx::http::HttpModule;
use ngx::{ngx_log_error, ngx_string};

/// Counter words at the start of the table.
pub const PEER_FILLS: usize = 0;
pub const PEER_FAILURES: usize = 1;
pub const MARKED_DOWN: usize = 2;
const COUNTERS: usize = 4;
/// Peer slots: (id hash, down until) pairs; far more than any cluster.
const SLOTS: usize = 256;
const WORDS: usize = COUNTERS + 2 * SLOTS;
const ZONE_SIZE: usize = 64 << 10;

/// A marker whose address is the zone's `data` (nginx wants it non-null).
static TAG: u8 = 0;

/// Adds the zone to the configuration; returns its address (0 on failure).
///
/// # Safety
/// `cf` must be the http block's configuration being parsed.
pub unsafe fn add_zone(cf: *mut ngx_conf_t) -> usize {
    let mut name = ngx_string!("rcdn_peers");
    // SAFETY: cf is valid; the tag is our module, which outlives the cycle.
    let zone = unsafe {
        ngx_shared_memory_add(
            cf,
            &mut name,
            ZONE_SIZE,
            ptr::from_ref(Module::module()).cast_mut().cast(),
        )
    };
    if zone.is_null() {
        return 0;
    }
    // SAFETY: zone is nginx's record for this cycle.
    unsafe {
        (*zone).init = Some(init_zone);
        (*zone).data = (&TAG as *const u8).cast_mut().cast();
    }
    zone as usize
}

/// Zone init (master): allocate the zeroed table once; a reload reuses it.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, _old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes our zone with its shm mapped.
    let log = unsafe { (*zone).shm.log };
    guard::request(log, "rcdn_peers zone", Status::NGX_ERROR.into(), || {
        // SAFETY: the zone starts with the slab pool nginx initialised.
        let shpool = unsafe { (*zone).shm.addr.cast::<ngx_slab_pool_t>() };
        // SAFETY: as above.
        if !unsafe { (*shpool).data }.is_null() {
            return Status::NGX_OK.into();
        }
        // SAFETY: ngx_slab_alloc takes the pool's lock itself.
        let data = unsafe { ngx_slab_alloc(shpool, WORDS * 8) }.cast::<u64>();
        if data.is_null() {
            ngx_log_error!(NGX_LOG_EMERG, log, "rcdn: rcdn_peers zone: cannot allocate");
            return Status::NGX_ERROR.into();
        }
        // SAFETY: data has WORDS u64s, ours alone until the workers start.
        unsafe {
            core::ptr::write_bytes(data, 0, WORDS);
            (*shpool).data = data.cast();
        }
        Status::NGX_OK.into()
    })
}

/// The shared table of the zone at `zone` (from `add_zone`), if ready.
pub fn table(zone: usize) -> Option<&'static [AtomicU64]> {
    if zone == 0 {
        return None;
    }
    let zone = zone as *mut ngx_shm_zone_t;
    // SAFETY: the running cycle's zone is mapped in every worker at the
    // same address for the worker's life; init_zone allocated the table
    // (WORDS aligned u64s) or left data null.
    unsafe {
        let shpool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
        if shpool.is_null() || (*shpool).data.is_null() {
            return None;
        }
        Some(core::slice::from_raw_parts(
            (*shpool).data.cast::<AtomicU64>(),
            WORDS,
        ))
    }
}

fn id_hash(id: &str) -> u64 {
    (cdncore::KeyHash::of(id.as_bytes()).0 as u64) | 1
}

/// The slot index of `id` (claimed if `claim` and new).
fn slot(t: &[AtomicU64], id: &str, claim: bool) -> Option<usize> {
    let h = id_hash(id);
    for i in 0..SLOTS {
        let s = (h as usize + i) % SLOTS;
        let w = &t[COUNTERS + 2 * s];
        match w.load(Relaxed) {
            x if x == h => return Some(s),
            0 if claim => match w.compare_exchange(0, h, Relaxed, Relaxed) {
                Ok(_) => return Some(s),
                Err(x) if x == h => return Some(s),
                Err(_) => continue,
            },
            0 => return None,
            _ => continue,
        }
    }
    None
}

/// Until when `id` is down (0: not marked).
pub fn down_until(t: &[AtomicU64], id: &str) -> u64 {
    slot(t, id, false).map_or(0, |s| t[COUNTERS + 2 * s + 1].load(Relaxed))
}

/// Marks `id` down until `until`; true if it was not down at `now`.
pub fn set_down(t: &[AtomicU64], id: &str, now: u64, until: u64) -> bool {
    match slot(t, id, true) {
        Some(s) => t[COUNTERS + 2 * s + 1].swap(until, Relaxed) <= now,
        None => false,
    }
}

pub fn add(t: &[AtomicU64], counter: usize) {
    t[counter].fetch_add(1, Relaxed);
}

pub fn get(t: &[AtomicU64], counter: usize) -> u64 {
    t[counter].load(Relaxed)
}
