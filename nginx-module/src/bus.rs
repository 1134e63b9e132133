//! Purge broadcast between worker processes.
//!
//! Until the shared block tiers land, each worker has its own cache, so a
//! purge received by one worker must reach the others. Purges are published
//! into a ring in an nginx shared memory zone (mapped by the master before
//! fork, so every worker sees it); each worker applies the purges it has not
//! seen yet at its next lookup or purge. A reader that fell behind by a whole
//! ring, or read a slot while it was rewritten, purges everything instead:
//! more misses, never a purged object served.

use cdncore::{Cache, Purge};
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{fence, AtomicPtr, AtomicU64, Ordering::*};
use nginx_sys::*;
use ngx::core::Status;
use ngx::ngx_string;
use std::cell::Cell;

const SLOTS: usize = 256;
/// Payload words per slot (4 KiB keys plus the kind byte and length).
const WORDS: usize = 520;
const MAGIC: u64 = u64::from_le_bytes(*b"rcdnbus1");

#[repr(C)]
struct Slot {
    /// Publication number (0 while being written).
    seq: AtomicU64,
    pid: AtomicU64,
    len: AtomicU64,
    data: [AtomicU64; WORDS],
}

#[repr(C)]
struct Bus {
    magic: AtomicU64,
    head: AtomicU64,
    slots: [Slot; SLOTS],
}

/// The bus in shared memory (set in the master, inherited by workers).
static BUS: AtomicPtr<Bus> = AtomicPtr::new(ptr::null_mut());

thread_local! {
    /// Last publication this worker applied.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Adds the shared zone; called in postconfiguration.
///
/// # Safety
/// `cf` must be the http block's configuration.
pub unsafe fn add_zone(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut name = ngx_string!("rcdn_purge_bus");
    let size = core::mem::size_of::<Bus>() + (256 << 10);
    // SAFETY: cf is valid; the tag is our module's static (stable across
    // reloads, so the zone is reused).
    let zone = unsafe {
        ngx_shared_memory_add(
            cf,
            &mut name,
            size,
            ptr::addr_of_mut!(crate::ngx_http_rcdn_module).cast(),
        )
    };
    if zone.is_null() {
        return Status::NGX_ERROR.into();
    }
    // SAFETY: zone is the entry nginx just returned.
    unsafe { (*zone).init = Some(init_zone) };
    Status::NGX_OK.into()
}

unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes the zone; on a reload `old` is the previous
    // zone's data, which points into the same (reused) mapping.
    unsafe {
        let bus = if old.is_null() {
            let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
            let p = ngx_slab_calloc(pool, core::mem::size_of::<Bus>()).cast::<Bus>();
            if p.is_null() {
                return Status::NGX_ERROR.into();
            }
            (*p).magic.store(MAGIC, Release);
            p
        } else {
            old.cast::<Bus>()
        };
        (*zone).data = bus.cast();
        BUS.store(bus, Release);
    }
    Status::NGX_OK.into()
}

fn bus() -> Option<&'static Bus> {
    // SAFETY: BUS points into a shared mapping that lives as long as the
    // process (nginx unmaps zones only at exit or when a reload drops them,
    // and a reload re-runs init_zone before workers use it).
    let b = unsafe { BUS.load(Acquire).as_ref()? };
    (b.magic.load(Acquire) == MAGIC).then_some(b)
}

/// Starts this worker after the current head (history is not replayed:
/// the worker's cache starts empty).
pub fn init_worker() {
    if let Some(b) = bus() {
        SEEN.with(|s| s.set(b.head.load(Acquire)));
    }
}

fn pid() -> u64 {
    // SAFETY: ngx_pid is set once at process start.
    let p = unsafe { ngx_pid };
    p as u64
}

fn encode(p: &Purge) -> Option<Vec<u8>> {
    let (kind, body): (u8, Vec<u8>) = match p {
        Purge::Key(k) => (1, k.clone()),
        Purge::Prefix(k) => (2, k.clone()),
        Purge::Group(g) => (3, g.clone()),
        Purge::Tag(t) => (4, t.to_le_bytes().to_vec()),
        Purge::SurrogateKey(s) => (5, s.as_bytes().to_vec()),
        Purge::Mask(m) => (6, m.to_le_bytes().to_vec()),
        Purge::Regex(r) => (7, r.as_bytes().to_vec()),
        Purge::All => (8, Vec::new()),
    };
    let mut out = vec![kind];
    out.extend_from_slice(&body);
    (out.len() <= WORDS * 8).then_some(out)
}

fn decode(b: &[u8]) -> Option<Purge> {
    let (&kind, body) = b.split_first()?;
    let text = || String::from_utf8(body.to_vec()).ok();
    Some(match kind {
        1 => Purge::Key(body.to_vec()),
        2 => Purge::Prefix(body.to_vec()),
        3 => Purge::Group(body.to_vec()),
        4 => Purge::Tag(u16::from_le_bytes(body.try_into().ok()?)),
        5 => Purge::SurrogateKey(text()?),
        6 => Purge::Mask(u64::from_le_bytes(body.try_into().ok()?)),
        7 => Purge::Regex(text()?),
        8 => Purge::All,
        _ => return None,
    })
}

/// Tells the other workers about a purge this worker applied.
pub fn publish(p: &Purge) {
    let Some(b) = bus() else { return };
    // Too long to carry: the others purge everything (safe, just costly).
    let bytes = encode(p).unwrap_or_else(|| vec![8]);
    let s = b.head.fetch_add(1, AcqRel) + 1;
    let slot = &b.slots[(s % SLOTS as u64) as usize];
    slot.seq.store(0, Relaxed);
    fence(Release);
    slot.pid.store(pid(), Relaxed);
    slot.len.store(bytes.len() as u64, Relaxed);
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        slot.data[i].store(u64::from_le_bytes(w), Relaxed);
    }
    slot.seq.store(s, Release);
    // Our own purge is already applied here.
    SEEN.with(|seen| {
        if seen.get() + 1 == s {
            seen.set(s);
        }
    });
}

/// Reads slot `s`: `Some(Some(p))` a purge, `Some(None)` ours or
/// unreadable-but-skippable, `None` not published yet.
fn read(b: &Bus, s: u64) -> Result<Option<Option<Purge>>, ()> {
    let slot = &b.slots[(s % SLOTS as u64) as usize];
    let seq = slot.seq.load(Acquire);
    if seq == 0 || seq < s {
        return Ok(None); // being written, or not yet
    }
    if seq > s {
        return Err(()); // overwritten: we fell behind
    }
    let owner = slot.pid.load(Relaxed);
    let len = (slot.len.load(Relaxed) as usize).min(WORDS * 8);
    let mut bytes = Vec::with_capacity(len);
    for w in slot.data.iter().take(len.div_ceil(8)) {
        bytes.extend_from_slice(&w.load(Relaxed).to_le_bytes());
    }
    bytes.truncate(len);
    fence(Acquire);
    if slot.seq.load(Relaxed) != s {
        return Err(()); // torn read
    }
    if owner == pid() {
        return Ok(Some(None));
    }
    Ok(Some(decode(&bytes)))
}

/// Applies every purge other workers published since the last call.
pub fn apply(cache: &Cache) {
    let Some(b) = bus() else { return };
    let head = b.head.load(Acquire);
    let mut seen = SEEN.with(Cell::get);
    while seen < head {
        let s = seen + 1;
        let lost = head - s >= SLOTS as u64 / 2;
        match read(b, s) {
            Ok(None) if !lost => break, // a writer is mid-way; next time
            Ok(Some(Some(p))) => {
                let _ = cache.purge(&p);
            }
            Ok(Some(None)) => {}
            Ok(None) | Err(()) => {
                let _ = cache.purge(&Purge::All);
                seen = head;
                break;
            }
        }
        seen = s;
    }
    SEEN.with(|c| c.set(seen));
}
