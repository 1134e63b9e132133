//! The shared index: one memory-mapped file that every process opening the
//! store maps. Buckets are one 64-byte cache line each: a writer lock word,
//! five 32-bit hash tags and five 64-bit locations (region, region epoch,
//! offset, hit bit), i.e. 12.8 bytes per slot. A key may live in either of
//! two buckets chosen by its 128-bit hash and is placed in the emptier one
//! ("two choices"), which keeps overflow negligible at 80 % load, i.e. 16
//! bytes of index per object. Readers take no lock; writers of a bucket
//! serialise on its lock word. The index is only a hint: every record is
//! verified against the full key and its checksums before it is served, so a
//! tag collision or a torn slot can cost a miss, never a wrong object.
//!
//! Region states live in the same mapping: one word per region holding its
//! epoch (high 32 bits) and append cursor in units (low 32 bits), so an
//! append reservation is one `fetch_add` and says which epoch it belongs to.

use super::record::UNIT;
use crate::error::{Error, Result};
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: u64 = u64::from_le_bytes(*b"RCIDX001");
const VERSION: u64 = 2;
const PAGE: usize = 4096;
/// Slots per 64-byte bucket.
pub const WAYS: usize = 5;
const BUCKET: usize = 64;
/// Byte offset of the location words inside a bucket.
const WORDS_AT: usize = 24;
const W_HEAD: usize = 16;
const W_LAP: usize = 24;
/// Cursor value that marks a region closed to appends.
pub const CLOSED: u64 = u32::MAX as u64 / 2;

/// Sizes an index is built for; a stored index of other sizes is rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub region_size: u64,
    pub regions: u64,
    pub buckets: u64,
}

impl Geometry {
    fn region_table_words(&self) -> usize {
        (self.regions as usize * 2).div_ceil(PAGE / 8) * (PAGE / 8)
    }
    /// Byte offset of the first bucket.
    fn buckets_at(&self) -> usize {
        PAGE + self.region_table_words() * 8
    }
    pub fn file_len(&self) -> u64 {
        self.buckets_at() as u64 + self.buckets * BUCKET as u64
    }
}

/// Where a record is, as packed into a slot's second word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub region: u32,
    pub epoch16: u16,
    pub unit: u32,
}

const HIT: u64 = 1 << 7;

impl Loc {
    pub fn pack(&self) -> u64 {
        (self.epoch16 as u64) << 48 | (self.region as u64) << 32 | (self.unit as u64) << 8
    }
    pub fn unpack(w: u64) -> Loc {
        Loc {
            epoch16: (w >> 48) as u16,
            region: (w >> 32) as u32 & 0xffff,
            unit: (w >> 8) as u32 & 0xff_ffff,
        }
    }
    pub fn offset(&self) -> u64 {
        self.unit as u64 * UNIT
    }
}

/// A slot found by a lookup.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub slot: usize,
    pub word: u64,
}

impl Found {
    pub fn loc(&self) -> Loc {
        Loc::unpack(self.word)
    }
    pub fn hit(&self) -> bool {
        self.word & HIT != 0
    }
}

pub struct Index {
    map: MmapMut,
    pub geo: Geometry,
    pub salt: u64,
    table: usize,
    buckets_at: usize,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

fn tag_of(h: u128) -> u32 {
    ((h >> 96) as u32).max(1)
}

impl Index {
    /// Maps an existing index if it is intact and of this geometry.
    pub fn attach(path: &Path, geo: Geometry) -> Result<Option<Index>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path, "open", e)),
        };
        let len = file.metadata().map_err(|e| io(path, "stat", e))?.len();
        if len != geo.file_len() {
            return Ok(None);
        }
        let idx = Self::map(path, &file, geo, 0)?;
        let w = idx.words();
        let sum = xxh3_64(&idx.map[..48]);
        let ok = w[0].load(Acquire) == MAGIC
            && w[1].load(Relaxed) == VERSION
            && w[2].load(Relaxed) == geo.region_size
            && w[3].load(Relaxed) == geo.regions
            && w[4].load(Relaxed) == geo.buckets
            && w[6].load(Relaxed) == sum;
        if !ok {
            return Ok(None);
        }
        let salt = w[5].load(Relaxed);
        Ok(Some(Index { salt, ..idx }))
    }

    /// Creates a fresh, empty index file at `path` (a temporary name; the
    /// caller fills it and renames it into place).
    pub fn create(path: &Path, geo: Geometry, salt: u64) -> Result<Index> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io(path, "create", e))?;
        file.set_len(geo.file_len())
            .map_err(|e| io(path, "size", e))?;
        super::region::preallocate(&file, geo.file_len()).map_err(|e| io(path, "allocate", e))?;
        let mut idx = Self::map(path, &file, geo, salt)?;
        for (i, v) in [
            MAGIC,
            VERSION,
            geo.region_size,
            geo.regions,
            geo.buckets,
            salt,
        ]
        .into_iter()
        .enumerate()
        {
            idx.map[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        let sum = xxh3_64(&idx.map[..48]);
        idx.map[48..56].copy_from_slice(&sum.to_le_bytes());
        idx.words()[W_HEAD].store(geo.regions - 1, Relaxed);
        for r in 0..geo.regions as usize {
            idx.state(r).store(CLOSED, Relaxed);
        }
        Ok(idx)
    }

    fn map(path: &Path, file: &File, geo: Geometry, salt: u64) -> Result<Index> {
        // SAFETY: the file is ours to map; other processes change it only
        // through atomic operations on aligned words (see `words`), and the
        // header bytes written non-atomically are written before the file is
        // renamed into place, i.e. before any other process can map it.
        let map = unsafe { MmapMut::map_mut(file) }.map_err(|e| io(path, "mmap", e))?;
        let table = PAGE / 8;
        Ok(Index {
            map,
            geo,
            salt,
            table,
            buckets_at: geo.buckets_at(),
        })
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned and a whole number of words
        // long, lives as long as `self`, and `AtomicU64` has the layout of
        // `u64`; all shared access to it is atomic.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.map.len() / 8)
        }
    }

    /// The region being appended to.
    pub fn head(&self) -> &AtomicU64 {
        &self.words()[W_HEAD]
    }
    /// Count of region (re)openings: the FIFO clock.
    pub fn lap(&self) -> &AtomicU64 {
        &self.words()[W_LAP]
    }
    /// Epoch (high 32 bits) and append cursor in units (low 32 bits).
    pub fn state(&self, r: usize) -> &AtomicU64 {
        &self.words()[self.table + 2 * r]
    }
    /// The lap at which region `r` was last opened.
    pub fn region_lap(&self, r: usize) -> &AtomicU64 {
        &self.words()[self.table + 2 * r + 1]
    }

    /// Tag and location of slot `i` (bucket `i / WAYS`).
    fn slot(&self, i: usize) -> (&AtomicU32, &AtomicU64) {
        let base = self.buckets_at + i / WAYS * BUCKET;
        let j = i % WAYS;
        // SAFETY: `i` is below buckets * WAYS (callers derive it from
        // `pair`), so both fields lie inside the mapping; the tag is 4-byte
        // and the word 8-byte aligned (buckets are 64-byte aligned); every
        // process accesses them only atomically.
        unsafe {
            let p = self.map.as_ptr();
            (
                &*(p.add(base + 4 + 4 * j) as *const AtomicU32),
                &*(p.add(base + WORDS_AT + 8 * j) as *const AtomicU64),
            )
        }
    }

    fn lock_word(&self, bucket: usize) -> &AtomicU32 {
        // SAFETY: as in `slot`; offset 0 of a bucket is its lock word.
        unsafe { &*(self.map.as_ptr().add(self.buckets_at + bucket * BUCKET) as *const AtomicU32) }
    }

    /// The two buckets a key may occupy. The second follows from the first
    /// and the tag alone (`b1 + b2 = f(tag) mod n`), so an entry can later be
    /// moved to its other bucket without knowing its key.
    fn pair(&self, h: u128) -> (usize, usize) {
        let b1 = (h as u64 % self.geo.buckets) as usize;
        (b1, self.other(b1, tag_of(h)))
    }

    fn other(&self, b: usize, tag: u32) -> usize {
        let n = self.geo.buckets;
        let f = (tag as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % n;
        ((f + n - b as u64) % n) as usize
    }

    fn try_lock_bucket(&self, b: usize) -> Option<BucketGuard<'_>> {
        let l = self.lock_word(b);
        l.compare_exchange(0, 1, Acquire, Relaxed)
            .ok()
            .map(|_| BucketGuard(l))
    }

    /// Both buckets are full of live entries: move one of them to its other
    /// bucket if that has room, and return the slot freed. The third bucket
    /// is only try-locked, so lock order cannot deadlock.
    fn kick(&self, buckets: [usize; 2], age: &impl Fn(u64) -> Option<u64>) -> Option<usize> {
        for b in buckets {
            for slot in b * WAYS..b * WAYS + WAYS {
                let (t, l) = self.slot(slot);
                let (tv, lv) = (t.load(Acquire), l.load(Acquire));
                let alt = self.other(b, tv);
                if buckets.contains(&alt) {
                    continue;
                }
                let has_room = |i: usize| {
                    let w = self.slot(i).1.load(Acquire);
                    w == 0 || age(w).is_none()
                };
                // Look before locking: most other buckets are full too.
                if !(alt * WAYS..alt * WAYS + WAYS).any(has_room) {
                    continue;
                }
                let Some(_g) = self.try_lock_bucket(alt) else {
                    continue;
                };
                let free = (alt * WAYS..alt * WAYS + WAYS).find(|&i| has_room(i));
                if let Some(dst) = free {
                    let (dt, dl) = self.slot(dst);
                    dl.store(0, Release);
                    dt.store(tv, Release);
                    dl.store(lv, Release);
                    return Some(slot);
                }
            }
        }
        None
    }

    fn slots_of(&self, h: u128) -> impl Iterator<Item = usize> {
        let (b1, b2) = self.pair(h);
        (b1 * WAYS..b1 * WAYS + WAYS).chain(b2 * WAYS..b2 * WAYS + WAYS)
    }

    /// Slots whose tag matches `h`.
    pub fn lookup(&self, h: u128, out: &mut Vec<Found>) {
        let tag = tag_of(h);
        for slot in self.slots_of(h) {
            let (t, l) = self.slot(slot);
            if t.load(Acquire) != tag {
                continue;
            }
            let word = l.load(Acquire);
            if word != 0 && t.load(Acquire) == tag {
                out.push(Found { slot, word });
            }
        }
    }

    /// Serialises writers of one bucket (readers never wait). Held for a few
    /// stores only, so a lock older than `STALE` belongs to a killed process
    /// and is taken over.
    fn lock_bucket(&self, b: usize) -> BucketGuard<'_> {
        const STALE: Duration = Duration::from_millis(500);
        let l = self.lock_word(b);
        let mut since: Option<Instant> = None;
        loop {
            if l.compare_exchange_weak(0, 1, Acquire, Relaxed).is_ok() {
                return BucketGuard(l);
            }
            let t = *since.get_or_insert_with(Instant::now);
            if t.elapsed() > STALE {
                return BucketGuard(l); // the holder died mid-update
            }
            std::thread::yield_now();
        }
    }

    /// Publishes a location for `h`: replaces the slot holding its tag, or
    /// takes an empty or dead slot in the emptier bucket, or else the slot
    /// `age` says is oldest.
    pub fn publish(&self, h: u128, word: u64, age: impl Fn(u64) -> Option<u64>) {
        let tag = tag_of(h);
        let (b1, b2) = self.pair(h);
        // Lock both buckets, lower first, so writers never deadlock.
        let _g1 = self.lock_bucket(b1.min(b2));
        let _g2 = (b1 != b2).then(|| self.lock_bucket(b1.max(b2)));
        for slot in self.slots_of(h) {
            let (t, l) = self.slot(slot);
            if t.load(Acquire) == tag {
                l.store(word, Release);
                return;
            }
        }
        let live = |b: usize| {
            (b * WAYS..b * WAYS + WAYS)
                .filter(|&i| {
                    let w = self.slot(i).1.load(Acquire);
                    w != 0 && age(w).is_some()
                })
                .count()
        };
        let order = if live(b2) < live(b1) {
            [b2, b1]
        } else {
            [b1, b2]
        };
        let mut victim = (u64::MAX, b1 * WAYS);
        for slot in order.iter().flat_map(|&b| b * WAYS..b * WAYS + WAYS) {
            let lv = self.slot(slot).1.load(Acquire);
            // Empty or dead slots first (emptier bucket first), then the
            // oldest region's.
            let a = if lv == 0 { 0 } else { age(lv).unwrap_or(0) };
            if a < victim.0 {
                victim = (a, slot);
            }
        }
        if victim.0 != 0 {
            if let Some(freed) = self.kick(order, &age) {
                victim.1 = freed;
            }
        }
        let (t, l) = self.slot(victim.1);
        // A reader between these stores sees a dead or foreign location and
        // misses after checking the record's key.
        l.store(0, Release);
        t.store(tag, Release);
        l.store(word, Release);
    }

    /// Replaces `old` by `new` in `slot` if it still holds `old`.
    pub fn replace(&self, slot: usize, old: u64, new: u64) -> bool {
        let _g = self.lock_bucket(slot / WAYS);
        let (_, l) = self.slot(slot);
        l.compare_exchange(old, new, AcqRel, Acquire).is_ok()
            || (l.load(Acquire) == old | HIT
                && l.compare_exchange(old | HIT, new, AcqRel, Acquire).is_ok())
    }

    /// Replaces the entry of `h` whose location is `old` (hit bit aside)
    /// by `new`, wherever in `h`'s two buckets it sits now: a publish of
    /// another key may have moved it to its other bucket (cuckoo kick) since
    /// it was looked up. Both buckets are locked, as by `publish`, so it
    /// cannot move meanwhile. False if no slot holds it any more (replaced
    /// by a newer location of the key, or removed).
    pub fn replace_entry(&self, h: u128, old: u64, new: u64) -> bool {
        let tag = tag_of(h);
        let (b1, b2) = self.pair(h);
        let _g1 = self.lock_bucket(b1.min(b2));
        let _g2 = (b1 != b2).then(|| self.lock_bucket(b1.max(b2)));
        let old = old & !HIT;
        for slot in self.slots_of(h) {
            let (t, l) = self.slot(slot);
            if t.load(Acquire) != tag {
                continue;
            }
            // Only the hit bit changes without the bucket lock.
            for cur in [old, old | HIT] {
                if l.compare_exchange(cur, new, AcqRel, Acquire).is_ok() {
                    return true;
                }
            }
        }
        false
    }

    /// Empties the entry of `h` at location `word` wherever it sits in
    /// `h`'s buckets (see [`Index::replace_entry`]).
    pub fn remove_entry(&self, h: u128, word: u64) -> bool {
        self.replace_entry(h, word, 0)
    }

    /// Marks a slot as hit since written (for re-insertion at recycling).
    pub fn mark_hit(&self, f: &Found) {
        if !f.hit() {
            let (_, l) = self.slot(f.slot);
            let _ = l.compare_exchange(f.word, f.word | HIT, AcqRel, Relaxed);
        }
    }

    /// Empties a slot if it still holds `word`.
    pub fn remove(&self, f: &Found) -> bool {
        self.replace(f.slot, f.word, 0)
    }

    /// Occupied slots (a scan; for tests and statistics only).
    pub fn occupied(&self) -> u64 {
        let n = self.geo.buckets as usize * WAYS;
        (0..n)
            .filter(|&i| self.slot(i).1.load(Relaxed) != 0)
            .count() as u64
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.map.flush_async()
    }
}

struct BucketGuard<'a>(&'a AtomicU32);

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

/// A region state word: epoch in the high half, cursor (units) in the low.
pub fn state_word(epoch: u32, cursor: u64) -> u64 {
    ((epoch as u64) << 32) | cursor
}
