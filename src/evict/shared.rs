//! The ARC directory of the shared RAM tier: [`core`](super::core)'s
//! algorithm over nodes in a file every process of a store maps
//! (`<ram dir>/arc`), so all of them share one set of residency decisions.
//! It holds no values: which objects are resident is all it says; their
//! bytes are records of the RAM tier.
//!
//! Layout: a 4 KiB header (magic, version, geometry, its checksum, the lock
//! word, a reset counter, the free-list head, then ARC's [`State`]), a slab
//! of 40-byte [`Link`]s, and an open-addressing table (linear probing,
//! backward-shift deletion) of `u32` slab indices + 1, twice the slab size.
//!
//! Every access holds the lock word (the owner's pid and a ticket). A
//! holder that died, or that holds it for more than [`STALE`], is taken
//! over and the directory is **reset**, since a killed holder may have left
//! the lists half-updated: the RAM tier's records stay, and are learnt again
//! as they are hit. Hits are batched per process ([`SharedArc::hit`]) so the
//! hit path takes no cross-process lock.

use super::arc::ArcStats;
use super::core::{Core, Link, Nodes, State, Which, NIL};
use crate::error::{Error, Result};
use memmap2::MmapMut;
use parking_lot::Mutex;
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64;

/// Where log lines go (resets).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

const MAGIC: u64 = u64::from_le_bytes(*b"RCARC001");
const VERSION: u64 = 1;
const PAGE: usize = 4096;
/// Header words.
const W_SUM: usize = 5;
const W_LOCK: usize = 6;
const W_RESETS: usize = 7;
const W_FREE: usize = 8;
const STATE_AT: usize = 128;
const LINK: usize = std::mem::size_of::<Link>();
/// `list` of a node on the free list.
const FREE: u32 = 4;
/// A lock held this long is taken over: operations under it take
/// microseconds, so its holder was killed or is stuck.
pub const STALE: Duration = Duration::from_millis(500);
/// Hits buffered per stripe before they are applied.
pub const BATCH: usize = 64;
const STRIPES: usize = 8;

/// Size of a directory: slab nodes and ARC capacity `c` in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub nodes: u32,
    pub cap: u64,
}

impl Geometry {
    fn slots(&self) -> usize {
        (self.nodes as usize * 2).next_power_of_two()
    }
    fn table_at(&self) -> usize {
        (PAGE + self.nodes as usize * LINK).div_ceil(64) * 64
    }
    fn file_len(&self) -> usize {
        (self.table_at() + self.slots() * 4).div_ceil(PAGE) * PAGE
    }
    fn words(&self) -> [u64; 5] {
        [
            MAGIC,
            VERSION,
            self.nodes as u64,
            self.slots() as u64,
            self.cap,
        ]
    }
}

/// Counters of the directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStats {
    pub arc: ArcStats,
    /// Resets since the file was created (a holder killed with the lock, an
    /// inconsistency found), by any process.
    pub resets: u64,
}

/// The shared directory; one per process and store (threads share it).
pub struct SharedArc {
    /// Keeps the mapping alive; accessed through `base`.
    _map: MmapMut,
    base: *mut u8,
    geo: Geometry,
    path: PathBuf,
    /// Threads of this process take this before the lock word.
    local: Mutex<()>,
    pending: Box<[Pending]>,
    log: Log,
}

#[repr(align(128))]
#[derive(Default)]
struct Pending(Mutex<Vec<(u128, u64)>>);

// SAFETY: `base` points into `_map`, which lives as long as the struct; the
// header words are accessed atomically, and everything else only while
// holding both `local` (threads) and the lock word (processes).
unsafe impl Send for SharedArc {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedArc {}

fn io(p: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: p.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

impl SharedArc {
    /// Maps `path`, creating it (or replacing one of another geometry or
    /// with a damaged header, with a log line). The caller serialises
    /// opening between processes (the RAM tier's directory lock).
    pub fn open(path: &Path, geo: Geometry, log: Log) -> Result<SharedArc> {
        if !(16..=1 << 28).contains(&geo.nodes) || geo.cap == 0 {
            return Err(Error::config("arc", "directory needs 16..=2^28 nodes"));
        }
        let (file, why) = match Self::existing(path, geo) {
            Ok(f) => (f, None),
            Err(why) => (Self::create(path, geo)?, why),
        };
        // SAFETY: a file of `file_len` bytes that other processes change
        // only under the lock word (or atomically, for header words).
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| io(path, "mmap", e))?;
        let base = map.as_mut_ptr();
        let dir = SharedArc {
            _map: map,
            base,
            geo,
            path: path.to_path_buf(),
            local: Mutex::new(()),
            pending: (0..STRIPES).map(|_| Pending::default()).collect(),
            log,
        };
        if let Some(why) = why {
            (dir.log)(&format!(
                "ARC directory {}: {why}; starting empty",
                path.display()
            ));
        }
        Ok(dir)
    }

    /// The file at `path` if it is an intact directory of `geo`; else why not
    /// (`None`: there was none).
    fn existing(path: &Path, geo: Geometry) -> std::result::Result<File, Option<String>> {
        let f = OpenOptions::new().read(true).write(true).open(path);
        let f = f.map_err(|_| None)?;
        let len = f.metadata().map_err(|e| Some(e.to_string()))?.len();
        if len != geo.file_len() as u64 {
            return Err(Some("of another geometry".into()));
        }
        let mut head = [0u8; 48];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0)
            .map_err(|e| Some(e.to_string()))?;
        let want: Vec<u8> = geo.words().iter().flat_map(|w| w.to_le_bytes()).collect();
        let sum = u64::from_le_bytes(head[40..48].try_into().unwrap_or_default());
        if head[..40] != want[..] || sum != xxh3_64(&want) {
            return Err(Some(
                "header damaged or of another version or geometry".into(),
            ));
        }
        Ok(f)
    }

    /// Writes a new, empty directory and renames it over `path`.
    fn create(path: &Path, geo: Geometry) -> Result<File> {
        let tmp = path.with_extension(format!("new.{}", std::process::id()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io(&tmp, "create", e))?;
        let len = geo.file_len() as u64;
        f.set_len(len).map_err(|e| io(&tmp, "size", e))?;
        crate::block::region::preallocate(&f, len).map_err(|e| io(&tmp, "allocate", e))?;
        // SAFETY: a new file no other process has opened yet.
        let mut map = unsafe { MmapMut::map_mut(&f) }.map_err(|e| io(&tmp, "mmap", e))?;
        let words = geo.words();
        for (i, w) in words.iter().enumerate() {
            map[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let at = W_SUM * 8;
        map[at..at + 8].copy_from_slice(&xxh3_64(&bytes).to_le_bytes());
        // SAFETY: the mapping is ours alone and `file_len` long.
        unsafe { clear(map.as_mut_ptr(), geo) };
        drop(map);
        std::fs::rename(&tmp, path).map_err(|e| io(&tmp, "rename", e))?;
        Ok(f)
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: header words are 8-byte aligned inside the mapping (its
        // base is page-aligned) and only ever accessed atomically.
        unsafe { &*(self.base.add(i * 8) as *const AtomicU64) }
    }

    /// Counts a hit on `hash` (`size` bytes) in this process's buffer; the
    /// buffer is applied to the directory every [`BATCH`] hits.
    pub fn hit(&self, hash: u128, size: u64) {
        let full = {
            let mut p = self.stripe().0.lock();
            p.push((hash, size));
            (p.len() >= BATCH).then(|| std::mem::take(&mut *p))
        };
        if let Some(hits) = full {
            self.with(|c| apply(c, &hits));
        }
    }

    fn stripe(&self) -> &Pending {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        thread_local! {
            static STRIPE: usize = NEXT.fetch_add(1, Relaxed) as usize % STRIPES;
        }
        &self.pending[STRIPE.with(|s| *s)]
    }

    fn drain(&self) -> Vec<(u128, u64)> {
        let mut all = Vec::new();
        for p in self.pending.iter() {
            all.append(&mut p.0.lock());
        }
        all
    }

    /// Applies this process's buffered hits now.
    pub fn flush(&self) {
        let hits = self.drain();
        if !hits.is_empty() {
            self.with(|c| apply(c, &hits));
        }
    }

    /// An object of `size` bytes was stored: ARC's insert, after this
    /// process's buffered hits. Residents pushed out become ghosts (their
    /// records stay servable until their region is recycled).
    pub fn insert(&self, hash: u128, size: u64) {
        let hits = self.drain();
        self.with(|c| {
            apply(c, &hits);
            c.insert(hash, size, (), &mut |_, _| {});
        });
    }

    /// Forgets `hash` (removed or purged).
    pub fn remove(&self, hash: u128) {
        self.with(|c| c.remove(hash));
    }

    /// Where `hash` is now (this process's buffered hits not applied).
    pub fn which(&self, hash: u128) -> Option<Which> {
        self.with(|c| c.which(hash))
    }

    /// For the objects of a region being recycled (hash, bytes in that
    /// region), in order: keep the resident ones while `budget` bytes last;
    /// residents beyond it are evicted to their ghost list. Returns the
    /// verdicts and how many residents were evicted for lack of budget.
    pub fn keep(&self, objects: &[(u128, u64)], budget: u64) -> (Vec<bool>, u64) {
        let hits = self.drain();
        self.with(|c| {
            apply(c, &hits);
            let mut left = budget;
            let mut forced = 0;
            let keep = objects
                .iter()
                .map(|&(h, bytes)| {
                    let resident = c.which(h).is_some_and(Which::resident);
                    if resident && bytes <= left {
                        left -= bytes;
                        return true;
                    }
                    if resident {
                        c.evict(h, &mut |_, _| {});
                        forced += 1;
                    }
                    false
                })
                .collect();
            (keep, forced)
        })
    }

    pub fn stats(&self) -> SharedStats {
        let arc = self.with(|c| ArcStats::of(c.0.state()));
        SharedStats {
            arc,
            resets: self.word(W_RESETS).load(Relaxed),
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Takes the lock and keeps it until the guard drops: for tests of a
    /// holder killed with it. Not for other uses.
    #[doc(hidden)]
    pub fn hold_lock_for_tests(&self) -> Held<'_> {
        let local = self.local.lock();
        let (lock, _) = self.lock();
        Held {
            _lock: lock,
            _local: local,
        }
    }

    /// Accesses `hash` now, as a cache user would (a hit, or an insert
    /// on a miss), without batching; returns whether it was resident.
    pub fn access(&self, hash: u128, size: u64) -> bool {
        let hits = self.drain();
        self.with(|c| {
            apply(c, &hits);
            let hit = c.hit(hash).is_some();
            if !hit {
                c.insert(hash, size, (), &mut |_, _| {});
            }
            hit
        })
    }

    /// Runs `f` on the directory under both locks. An inconsistency found
    /// on the way resets it (after `f`: its answer is then worthless but
    /// harmless).
    fn with<R>(&self, f: impl FnOnce(&mut Core<MapNodes<'_>>) -> R) -> R {
        let _local = self.local.lock();
        let (_g, took_over) = self.lock();
        if took_over {
            self.reset("its lock holder died or hung");
        }
        let (r, broken) = {
            // SAFETY: both locks are held, so nothing else accesses the
            // slab, table and state while these references live.
            let mut core = Core(unsafe { self.nodes() });
            let r = f(&mut core);
            (r, core.0.broken.get())
        };
        if broken {
            self.reset("found inconsistent");
        }
        r
    }

    /// Takes the lock word; true if it was taken over from a holder that
    /// died or hung.
    fn lock(&self) -> (LockGuard<'_>, bool) {
        // Unique in this process, so two directories of one file here
        // never hold the same word.
        static TICKET: AtomicU32 = AtomicU32::new(1);
        let me = (TICKET.fetch_add(1, Relaxed) as u64) << 32 | std::process::id() as u64;
        let w = self.word(W_LOCK);
        let (mut seen, mut since, mut spin) = (0, Instant::now(), 0u64);
        loop {
            let cur = match w.compare_exchange_weak(0, me, Acquire, Relaxed) {
                Ok(_) => return (LockGuard { w, me }, false),
                Err(cur) => cur,
            };
            spin += 1;
            if cur == 0 {
                continue;
            }
            if cur != seen {
                (seen, since) = (cur, Instant::now());
            } else if spin % 64 == 0
                && (gone(cur as u32) || since.elapsed() > STALE)
                && w.compare_exchange(cur, me, AcqRel, Relaxed).is_ok()
            {
                return (LockGuard { w, me }, true);
            }
            if spin < 128 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Empties the directory in place (under the locks).
    fn reset(&self, why: &str) {
        // SAFETY: the caller holds both locks; the mapping is `file_len` long.
        unsafe { clear(self.base, self.geo) };
        let n = self.word(W_RESETS).fetch_add(1, Relaxed) + 1;
        (self.log)(&format!(
            "ARC directory {}: {why}; reset (reset {n}); the RAM tier keeps its records",
            self.path.display()
        ));
    }

    /// The slab, table and state as a [`Nodes`] storage.
    ///
    /// # Safety
    /// The caller holds both locks for the lifetime of the result.
    unsafe fn nodes(&self) -> MapNodes<'_> {
        let g = self.geo;
        // SAFETY: the regions are disjoint, aligned (page-aligned base,
        // offsets multiples of 8) and inside the mapping; exclusive by the
        // caller's locks.
        unsafe {
            MapNodes {
                st: &mut *(self.base.add(STATE_AT) as *mut State),
                links: std::slice::from_raw_parts_mut(
                    self.base.add(PAGE) as *mut Link,
                    g.nodes as usize,
                ),
                table: std::slice::from_raw_parts_mut(
                    self.base.add(g.table_at()) as *mut u32,
                    g.slots(),
                ),
                free: &mut *(self.base.add(W_FREE * 8) as *mut u64),
                broken: Cell::new(false),
                scratch: Link::default(),
            }
        }
    }
}

impl Drop for SharedArc {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Applies batched hits: resident → T2's MRU end; a ghost (its record is
/// still in the RAM tier, served without a copy) → ARC's case II/III
/// re-admission; unknown (learnt again after a reset) → a T1 insert.
fn apply(c: &mut Core<MapNodes<'_>>, hits: &[(u128, u64)]) {
    for &(h, size) in hits {
        c.touch(h, size, &mut |_, _| {});
    }
}

/// The lock held by [`SharedArc::hold_lock_for_tests`].
#[doc(hidden)]
pub struct Held<'a> {
    _lock: LockGuard<'a>,
    _local: parking_lot::MutexGuard<'a, ()>,
}

struct LockGuard<'a> {
    w: &'a AtomicU64,
    me: u64,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Fails only if it was taken over: then it is not ours to release.
        let _ = self.w.compare_exchange(self.me, 0, Release, Relaxed);
    }
}

/// Whether the process `pid` holding the lock is gone. (Our own pid counts
/// as alive: another directory of this file in this process may hold it.)
fn gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence; no memory is passed.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Writes an empty ARC (state, free list of every node, empty table).
///
/// # Safety
/// `base` is a mapping of `geo.file_len()` bytes that nothing else accesses
/// meanwhile (a new file, or under both locks).
unsafe fn clear(base: *mut u8, geo: Geometry) {
    // SAFETY: as promised by the caller; the regions are aligned and inside.
    unsafe {
        *(base.add(STATE_AT) as *mut State) = State::new(geo.cap);
        *(base.add(W_FREE * 8) as *mut u64) = 0;
        let links = std::slice::from_raw_parts_mut(base.add(PAGE) as *mut Link, geo.nodes as usize);
        let last = geo.nodes - 1;
        for (i, l) in links.iter_mut().enumerate() {
            let next = if i as u32 == last { NIL } else { i as u32 + 1 };
            *l = Link {
                next,
                list: FREE,
                ..Link::default()
            };
        }
        std::ptr::write_bytes(base.add(geo.table_at()), 0, geo.slots() * 4);
    }
}

/// Nodes in the mapping; every index read from it is checked, so a
/// half-updated directory costs a reset, never a wild access or a hang.
struct MapNodes<'a> {
    st: &'a mut State,
    links: &'a mut [Link],
    table: &'a mut [u32],
    free: &'a mut u64,
    broken: Cell<bool>,
    /// Written instead of a node whose index was out of range.
    scratch: Link,
}

impl MapNodes<'_> {
    fn home(&self, h: u128) -> usize {
        ((h as u64) ^ (h >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize
            & (self.table.len() - 1)
    }

    fn ok_index(&self, i: u32) -> bool {
        i == NIL || (i as usize) < self.links.len()
    }

    /// The table slot holding node `i` + 1.
    fn slot_of(&self, i: u32) -> Option<usize> {
        let mask = self.table.len() - 1;
        let mut s = self.home(self.links.get(i as usize)?.hash());
        for _ in 0..self.table.len() {
            match self.table[s] {
                0 => return None,
                e if e == i + 1 => return Some(s),
                _ => s = (s + 1) & mask,
            }
        }
        None
    }
}

impl Nodes for MapNodes<'_> {
    type Value = ();
    fn state(&self) -> &State {
        self.st
    }
    fn state_mut(&mut self) -> &mut State {
        self.st
    }
    fn link(&self, i: u32) -> Link {
        let Some(&l) = self.links.get(i as usize) else {
            self.broken.set(true);
            return Link::new(0, 0);
        };
        if l.list > 3 || !self.ok_index(l.prev) || !self.ok_index(l.next) {
            self.broken.set(true);
            return Link {
                list: 0,
                ..Link::new(l.hash(), l.size)
            };
        }
        l
    }
    fn link_mut(&mut self, i: u32) -> &mut Link {
        match self.links.get_mut(i as usize) {
            Some(l) => l,
            None => {
                self.broken.set(true);
                &mut self.scratch
            }
        }
    }
    fn find(&self, hash: u128) -> Option<u32> {
        let mask = self.table.len() - 1;
        let mut s = self.home(hash);
        for _ in 0..self.table.len() {
            let e = self.table[s];
            if e == 0 {
                return None;
            }
            let i = e - 1;
            match self.links.get(i as usize) {
                Some(l) if l.hash() == hash && l.list <= 3 => return Some(i),
                Some(_) => {}
                None => self.broken.set(true),
            }
            s = (s + 1) & mask;
        }
        None
    }
    fn alloc(&mut self, hash: u128, size: u64) -> Option<u32> {
        let i = *self.free as u32;
        if i == NIL {
            return None;
        }
        let Some(next) = self.links.get(i as usize).map(|l| l.next) else {
            self.broken.set(true);
            return None;
        };
        let mask = self.table.len() - 1;
        let mut s = self.home(hash);
        for _ in 0..self.table.len() {
            if self.table[s] == 0 {
                self.table[s] = i + 1;
                *self.free = next as u64;
                self.links[i as usize] = Link::new(hash, size);
                return Some(i);
            }
            s = (s + 1) & mask;
        }
        self.broken.set(true);
        None
    }
    fn free(&mut self, i: u32) -> Option<()> {
        let Some(mut s) = self.slot_of(i) else {
            self.broken.set(true);
            return None;
        };
        // Backward-shift deletion: pull later entries of the probe run
        // into the hole, so lookups never need tombstones.
        let mask = self.table.len() - 1;
        let mut j = s;
        for _ in 0..self.table.len() {
            j = (j + 1) & mask;
            let e = self.table[j];
            if e == 0 {
                break;
            }
            let Some(l) = self.links.get(e as usize - 1) else {
                self.broken.set(true);
                break;
            };
            let k = self.home(l.hash());
            // Move e into the hole unless its home lies cyclically in (s, j].
            let stays = if s <= j {
                s < k && k <= j
            } else {
                s < k || k <= j
            };
            if !stays {
                self.table[s] = e;
                s = j;
            }
        }
        self.table[s] = 0;
        self.links[i as usize] = Link {
            next: *self.free as u32,
            list: FREE,
            ..Link::default()
        };
        *self.free = i as u64;
        None
    }
    fn take(&mut self, _: u32) -> Option<()> {
        None
    }
    fn set(&mut self, _: u32, _: ()) {}
    fn capacity(&self) -> u64 {
        self.links.len() as u64
    }
    fn broken(&mut self) {
        self.broken.set(true);
    }
    fn is_broken(&self) -> bool {
        self.broken.get()
    }
}

#[cfg(test)]
mod tests;
