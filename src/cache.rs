//! The cache: sharded byte-sized ARC memory tier, purge records checked at
//! lookup, and a background sweep that reclaims purged space.

use crate::block::engine::{facts_of, shared_purge, Through, Tiers};
use crate::block::{BlockCounters, Hit, Tier};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::evict::{ArcCache, ArcStats};
use crate::key::{self, KeyHash};
use crate::meta::{now_ms, Freshness, Meta, UnixMs};
pub use crate::object::Object;
use crate::purge::{Facts, Purge, PurgeReport, PurgeTable};
use crate::stats::Counters;
use crate::through::WriteThrough;
use crate::writer::Writer;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Slots swept per lock acquisition, so a sweep never stalls lookups long.
const SWEEP_CHUNK: usize = 4096;

/// The answer to a lookup.
#[derive(Clone, Debug)]
pub enum Lookup {
    Fresh(Arc<Object>),
    /// Expired: serve within its stale windows, or revalidate it.
    Stale(Arc<Object>),
    Miss,
}

impl Lookup {
    pub fn object(&self) -> Option<&Arc<Object>> {
        match self {
            Lookup::Fresh(o) | Lookup::Stale(o) => Some(o),
            Lookup::Miss => None,
        }
    }
    pub fn is_fresh(&self) -> bool {
        matches!(self, Lookup::Fresh(_))
    }
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    Stored,
    /// A purge that covers the object arrived while it was being filled, so
    /// the (possibly outdated) body was dropped.
    PurgedDuringFill,
}

struct Entry {
    obj: Arc<Object>,
    /// Purge sequence up to which this entry is known to be alive.
    checked: u64,
}

struct Shard {
    arc: ArcCache<Entry>,
    ctr: Counters,
    /// Births of this shard's open writers (birth -> count).
    writers: BTreeMap<u64, u32>,
}

/// Keeps shards on separate cache lines.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

pub(crate) struct Inner {
    cfg: Config,
    shards: Box<[Padded]>,
    purge: Arc<PurgeTable>,
    /// Block tiers after the memory tier; their purge table is shared.
    block: Option<Tiers>,
    purges: AtomicU64,
    swept_to: AtomicU64,
    /// The RAM tier's lap when stale handles were last dropped.
    ram_lap: AtomicU64,
    sweep_lock: Mutex<()>,
    signal: Arc<Signal>,
}

#[derive(Default)]
struct Signal {
    stop: AtomicBool,
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signal.stop.store(true, Release);
        *self.signal.pending.lock() = true;
        self.signal.cv.notify_all();
    }
}

/// A handle to a cache; clones share it.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl Cache {
    /// Opens a memory cache from a config; starts its background sweeper.
    pub fn open(cfg: Config) -> Result<Cache> {
        cfg.validate()?;
        let shard_bytes = cfg.shard_bytes();
        let shards = (0..cfg.shards)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    arc: ArcCache::new(shard_bytes),
                    ctr: Counters::default(),
                    writers: BTreeMap::new(),
                }))
            })
            .collect();
        let block = match cfg.ram_spec() {
            None => None,
            Some(ram) => Some(Tiers::open(
                &ram,
                &cfg.tiers,
                cfg.ram_max_bytes(),
                Tier::stderr_log(),
            )?),
        };
        // The purge table stays beside the configured tiers' data: a reboot
        // that empties /dev/shm (the RAM tier) must not lose what guards
        // the disk tiers.
        let purge = Arc::new(match &block {
            Some(b) => shared_purge(
                &b.first_configured().spec().path,
                cfg.purge_slots,
                cfg.ban_slots,
            )?,
            None => PurgeTable::new(cfg.purge_slots, cfg.ban_slots),
        });
        if let Some(b) = &block {
            b.set_purge(purge.clone());
        }
        let inner = Arc::new(Inner {
            purge,
            block,
            cfg,
            shards,
            purges: AtomicU64::new(0),
            swept_to: AtomicU64::new(1),
            ram_lap: AtomicU64::new(0),
            sweep_lock: Mutex::new(()),
            signal: Arc::new(Signal::default()),
        });
        if inner.cfg.sweeper {
            spawn_sweeper(Arc::downgrade(&inner), inner.signal.clone());
        }
        Ok(Cache { inner })
    }

    /// Opens a cache from the textual config format.
    pub fn open_str(text: &str) -> Result<Cache> {
        Cache::open(Config::parse(text)?)
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    fn shard(&self, h: u128) -> MutexGuard<'_, Shard> {
        let n = self.inner.shards.len();
        self.inner.shards[((h >> 64) as u64 % n as u64) as usize]
            .0
            .lock()
    }

    /// Looks a key up now.
    pub fn get(&self, key: &[u8]) -> Result<Lookup> {
        self.get_at(key, now_ms())
    }

    /// Looks a key up as of `now` (unix ms), for callers with their own clock.
    pub fn get_at(&self, key: &[u8], now: UnixMs) -> Result<Lookup> {
        match self.get_mem_at(key, now)? {
            Some(l) => Ok(l),
            None => self.block_get(key, KeyHash::of(key).0, now),
        }
    }

    /// The memory tier only: `None` when it misses and block tiers exist
    /// (then [`Cache::get_block_at`] finishes the lookup, possibly on
    /// another thread: it may read from disk).
    pub fn get_mem_at(&self, key: &[u8], now: UnixMs) -> Result<Option<Lookup>> {
        key::validate(key, self.inner.cfg.max_key)?;
        let h = KeyHash::of(key).0;
        let seq = self.inner.purge.seq();
        let mut s = self.shard(h);
        let Shard { arc, ctr, .. } = &mut *s;
        let Some(e) = arc.get(h).filter(|e| *e.obj.key == *key) else {
            if self.inner.block.is_some() {
                return Ok(None);
            }
            ctr.misses += 1;
            return Ok(Some(Lookup::Miss));
        };
        if e.checked != seq {
            let o = &e.obj;
            if self.inner.purge.is_purged(&o.key, &o.facts, o.born) {
                arc.remove(h);
                ctr.purged += 1;
                if self.inner.block.is_some() {
                    // Another process may have refilled it since the purge.
                    return Ok(None);
                }
                ctr.misses += 1;
                return Ok(Some(Lookup::Miss));
            }
            e.checked = seq;
        }
        let obj = e.obj.clone();
        let handle = obj.at.is_some() || obj.is_sliced();
        let ram = self.inner.block.as_ref().filter(|_| handle);
        if let Some(b) = ram {
            // A handle into a RAM region that was recycled since would keep
            // the old file's pages alive: drop it, the RAM tier has the
            // object's new copy if ARC kept it.
            if !b.handle_current(obj.at.as_ref(), &obj.slices) {
                arc.remove(h);
                return Ok(None);
            }
        }
        ctr.bytes_hit += obj.body.len() as u64;
        let found = match obj.meta.freshness(now) {
            Freshness::Fresh => {
                ctr.hits += 1;
                Lookup::Fresh(obj)
            }
            Freshness::Stale => {
                ctr.stale_hits += 1;
                Lookup::Stale(obj)
            }
        };
        drop(s);
        if let (Some(b), Some(o)) = (ram, found.object()) {
            b.ram_hit(h, key.len(), o.meta.size);
        }
        Ok(Some(found))
    }

    /// The block tiers only (after [`Cache::get_mem_at`] returned `None`).
    pub fn get_block_at(&self, key: &[u8], now: UnixMs) -> Result<Lookup> {
        key::validate(key, self.inner.cfg.max_key)?;
        self.block_get(key, KeyHash::of(key).0, now)
    }

    /// A memory miss: the block tiers in order. A hit there is promoted into
    /// memory (and the first block tier) once the admission filter has seen
    /// it before.
    fn block_get(&self, key: &[u8], h: u128, now: UnixMs) -> Result<Lookup> {
        let Some(b) = &self.inner.block else {
            return Ok(Lookup::Miss);
        };
        let Some(found) = b.lookup(key, self.max_object()) else {
            self.shard(h).ctr.misses += 1;
            return Ok(Lookup::Miss);
        };
        self.block_hit(b, key, h, found, now)
    }

    /// A block-tier hit: checked against purges. A RAM-tier hit is kept in
    /// memory as a handle (no copy); a lower-tier hit is copied into the
    /// RAM tier once the admission filter has seen it before (and is then
    /// a handle too).
    fn block_hit(
        &self,
        b: &Tiers,
        key: &[u8],
        h: u128,
        found: (usize, Hit, bool),
        now: UnixMs,
    ) -> Result<Lookup> {
        let (tier, hit, all_here) = found;
        let facts = facts_of(key, &hit.meta);
        let seq = self.inner.purge.seq();
        if self.inner.purge.is_purged(key, &facts, hit.born) {
            b.remove(key);
            let mut s = self.shard(h);
            s.ctr.purged += 1;
            s.ctr.misses += 1;
            return Ok(Lookup::Miss);
        }
        let mut obj = Object {
            from_block: true,
            at: hit.at,
            slices: hit.slices,
            ..Object::new(key.into(), hit.meta, hit.body, hit.born, facts)
        };
        let mut in_ram = tier == 0 && all_here;
        if tier > 0 && b.admit(h) && obj.size() <= self.inner.cfg.promote_max_bytes() {
            // Verified just now (or on an earlier read): not hashed again.
            let sum = hit.body_sum;
            if let Some(p) = b.promote(tier, key, &obj.meta, obj.born, obj.body(), sum) {
                let from_block = true;
                obj = Object {
                    from_block,
                    ..obj.rebound(p.body, p.at, p.slices)
                };
                in_ram = true;
            }
        }
        if in_ram && (obj.at.is_some() || obj.is_sliced()) {
            let handle = obj.rebound(obj.body.clone(), obj.at.clone(), obj.slices.clone());
            self.keep_handle(h, Arc::new(handle), seq);
        }
        let obj = Arc::new(obj);
        let mut s = self.shard(h);
        s.ctr.bytes_hit += obj.body.len() as u64;
        Ok(match obj.meta.freshness(now) {
            Freshness::Fresh => {
                s.ctr.hits += 1;
                Lookup::Fresh(obj)
            }
            Freshness::Stale => {
                s.ctr.stale_hits += 1;
                Lookup::Stale(obj)
            }
        })
    }

    /// Keeps an object whose body is in the RAM tier in this process's
    /// memory tier: metadata and a handle, no copy of the body.
    fn keep_handle(&self, h: u128, obj: Arc<Object>, checked: u64) {
        let charged = self.handle_charge(&obj);
        if charged > self.inner.cfg.shard_bytes() {
            return;
        }
        let mut s = self.shard(h);
        let Shard { arc, ctr, .. } = &mut *s;
        let mut evicted = 0;
        arc.insert(h, charged, Entry { obj, checked }, &mut |_, _| evicted += 1);
        ctr.evictions += evicted;
    }

    /// The block tiers, fastest first: the shared RAM tier, then the
    /// configured ones (empty without `tier=` in the config), for sliced
    /// large objects, range reads and `sendfile` extents.
    pub fn tiers(&self) -> &[Tier] {
        self.inner.block.as_ref().map_or(&[], |b| b.tiers())
    }

    /// Whether a block-tier lookup of `key` would read only memory: the
    /// object is in the RAM tier, or in the first configured tier with all
    /// its pages in the page cache.
    pub fn block_resident(&self, key: &[u8]) -> bool {
        key::validate(key, self.inner.cfg.max_key).is_ok()
            && self.inner.block.as_ref().is_some_and(|b| b.resident(key))
    }

    /// [`Cache::get_block_at`] when it reads only memory (the object is in
    /// the RAM tier, or in the first configured tier and its pages are in
    /// the page cache, by `mincore`),
    /// so an event loop can do it inline; `None` when it might wait for the
    /// disk (ask `get_block_at` on a thread).
    pub fn get_resident_at(&self, key: &[u8], now: UnixMs) -> Result<Option<Lookup>> {
        key::validate(key, self.inner.cfg.max_key)?;
        let Some(b) = &self.inner.block else {
            return Ok(None);
        };
        let Some(found) = b.lookup_resident(key) else {
            return Ok(None);
        };
        self.block_hit(b, key, KeyHash::of(key).0, found, now)
            .map(Some)
    }

    /// Starts a streaming insert straight into the first configured block
    /// tier (not the RAM tier, which it would flush), for objects too large
    /// for memory: slices are written as they fill, so memory stays at one
    /// slice whatever the size. Read it back with [`Cache::read_range`].
    pub fn large_writer(&self, key: &[u8], meta: Meta) -> Result<crate::block::TierWriter> {
        key::validate(key, self.inner.cfg.max_key)?;
        let Some(b) = &self.inner.block else {
            return Err(Error::config("tier", "large objects need a block tier"));
        };
        b.first_configured()
            .writer(key, meta, self.inner.purge.seq())
    }

    /// Reads body bytes `start..end` of an object in the block tiers (whole
    /// or sliced), handing verified pieces to `out`. Returns its metadata, or
    /// `None` on a miss or if a purge covers it.
    pub fn read_range(
        &self,
        key: &[u8],
        start: u64,
        end: u64,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Option<Meta>> {
        key::validate(key, self.inner.cfg.max_key)?;
        let Some(b) = &self.inner.block else {
            return Ok(None);
        };
        let purge = &self.inner.purge;
        let purged = |m: &Meta, born: u64| purge.is_purged(key, &facts_of(key, m), born);
        b.read_range(key, start, end, self.max_object(), &purged, out)
    }

    /// Promotion, demotion and per-tier counters, if there are block tiers.
    pub fn block_counters(&self) -> Option<BlockCounters> {
        self.inner.block.as_ref().map(|b| b.counters())
    }

    /// Stores a whole body at once.
    pub fn insert(&self, key: &[u8], meta: Meta, body: Bytes) -> Result<Commit> {
        key::validate(key, self.inner.cfg.max_key)?;
        self.check_size(body.len() as u64)?;
        self.store(key.into(), meta, body, None)
    }

    /// Like [`Cache::insert`], but the block-tier write-through (disk I/O)
    /// is returned to run later, e.g. on an I/O thread; the object is in
    /// memory when this returns.
    pub fn insert_deferred(
        &self,
        key: &[u8],
        meta: Meta,
        body: Bytes,
    ) -> Result<(Commit, Option<WriteThrough>)> {
        key::validate(key, self.inner.cfg.max_key)?;
        self.check_size(body.len() as u64)?;
        self.store_deferred(key.into(), meta, body, None)
    }

    /// Starts a streaming insert. Nothing is visible until `commit`; an
    /// aborted or dropped writer leaves no trace.
    pub fn writer(&self, key: &[u8], meta: Meta) -> Result<Writer> {
        self.writer_sized(key, meta, None)
    }

    /// Like `writer`, with the body size known up front (e.g. from
    /// `Content-Length`): oversized objects are refused before any byte.
    pub fn writer_sized(&self, key: &[u8], meta: Meta, size: Option<u64>) -> Result<Writer> {
        key::validate(key, self.inner.cfg.max_key)?;
        if let Some(n) = size {
            self.check_size(n)?;
        }
        let h = KeyHash::of(key).0;
        let born = {
            let mut s = self.shard(h);
            let born = self.inner.purge.seq();
            *s.writers.entry(born).or_default() += 1;
            born
        };
        Ok(Writer::new(self.clone(), key.into(), meta, size, born))
    }

    pub(crate) fn check_size(&self, size: u64) -> Result<()> {
        let max = self.max_object();
        if size > max {
            return Err(Error::ObjectTooLarge { size, max });
        }
        Ok(())
    }

    /// Largest body the memory tier accepts.
    pub fn max_object(&self) -> u64 {
        self.inner.cfg.max_object_bytes()
    }

    /// Ends a writer's registration; counts it as aborted if it did not commit.
    pub(crate) fn writer_done(&self, hash: u128, born: u64, committed: bool) {
        let mut s = self.shard(hash);
        if let Some(n) = s.writers.get_mut(&born) {
            *n -= 1;
            if *n == 0 {
                s.writers.remove(&born);
            }
        }
        if !committed {
            s.ctr.aborted += 1;
        }
    }

    /// Commits a body. `born` is the writer's birth, or `None` for a one-shot
    /// insert, which is born now, under the shard lock.
    pub(crate) fn store(
        &self,
        key: Box<[u8]>,
        meta: Meta,
        body: Bytes,
        born: Option<u64>,
    ) -> Result<Commit> {
        let (commit, through) = self.store_deferred(key, meta, body, born)?;
        if let Some(t) = through {
            t.run();
        }
        Ok(commit)
    }

    /// Commits into memory and returns the write-through into the first
    /// block tier (other processes see it there, and it survives a crash of
    /// this one), if there is a block tier.
    pub(crate) fn store_deferred(
        &self,
        key: Box<[u8]>,
        meta: Meta,
        body: Bytes,
        born: Option<u64>,
    ) -> Result<(Commit, Option<WriteThrough>)> {
        let (commit, kept) = self.store_inner(key, meta, body, born, None)?;
        let through = kept
            .filter(|_| self.inner.block.is_some())
            .map(|obj| WriteThrough::new(self.clone(), obj));
        Ok((commit, through))
    }

    /// Writes a committed object into the RAM tier, then points its
    /// memory entry (if it is still this object) at the copy there, so the
    /// heap copy goes and every process serves the same bytes.
    pub(crate) fn write_through(&self, obj: &Arc<Object>) {
        let Some(b) = &self.inner.block else { return };
        let sum = Some(obj.meta.checksum);
        let through = b.write_through(&obj.key, &obj.meta, obj.born, &obj.body, sum);
        let h = KeyHash::of(&obj.key).0;
        let handle = match through {
            Through::Ram(p) => Some(Arc::new(obj.rebound(p.body, p.at, p.slices))),
            Through::Below => None,
            Through::Failed => return,
        };
        let charge = handle.as_ref().map(|o| self.handle_charge(o));
        let mut s = self.shard(h);
        let Shard { arc, ctr, .. } = &mut *s;
        if arc.peek(h).is_none_or(|e| !Arc::ptr_eq(&e.obj, obj)) {
            return;
        }
        match (handle, charge) {
            (Some(handle), Some(charge)) => {
                if let Some(e) = arc.peek_mut(h) {
                    e.obj = handle;
                }
                // Its body left the heap: it now counts as a handle.
                let mut evicted = 0;
                arc.resize(h, charge, &mut |_, _| evicted += 1);
                ctr.evictions += evicted;
            }
            // A large object is served from the tier it went to: no heap
            // copy stays in this process.
            _ => {
                arc.remove(h);
            }
        }
    }

    /// What a handle counts for in a shard: its heap bytes, scaled so that
    /// a shard's capacity (`mem / shards`, which heap bodies waiting for
    /// their write-through count against in full) holds this process's
    /// share of the handle heap ([`Config::handle_bytes`]).
    fn handle_charge(&self, obj: &Object) -> u64 {
        let cfg = &self.inner.cfg;
        let scale = (cfg.mem / cfg.handle_bytes().max(1)).max(1);
        obj.handle_heap().saturating_mul(scale)
    }

    /// Commits into memory only; returns the stored object. `sum`: the
    /// body's checksum when already known (a verified block hit).
    fn store_inner(
        &self,
        key: Box<[u8]>,
        mut meta: Meta,
        body: Bytes,
        born: Option<u64>,
        sum: Option<u64>,
    ) -> Result<(Commit, Option<Arc<Object>>)> {
        let h = KeyHash::of(&key).0;
        meta.size = body.len() as u64;
        meta.checksum = sum.unwrap_or_else(|| xxhash_rust::xxh3::xxh3_64(&body));
        let facts = Facts::new(
            &key,
            meta.group.as_deref(),
            &meta.tags,
            &meta.surrogate_keys,
            meta.mask,
        );
        let mut s = self.shard(h);
        let seq = self.inner.purge.seq();
        let born = born.unwrap_or(seq);
        let obj = Arc::new(Object::new(key, meta, body, born, facts));
        let charged = obj.charged();
        let cap = self.inner.cfg.shard_bytes();
        if charged > cap {
            return Err(Error::ObjectTooLarge {
                size: charged,
                max: cap,
            });
        }
        if self.inner.purge.is_purged(&obj.key, &obj.facts, born) {
            s.ctr.purged += 1;
            return Ok((Commit::PurgedDuringFill, None));
        }
        let Shard { arc, ctr, .. } = &mut *s;
        ctr.inserts += 1;
        ctr.bytes_inserted += obj.body.len() as u64;
        let kept = obj.clone();
        let entry = Entry { obj, checked: seq };
        let mut evicted = 0;
        arc.insert(h, charged, entry, &mut |_, _| evicted += 1);
        ctr.evictions += evicted;
        Ok((Commit::Stored, Some(kept)))
    }

    /// Removes one key. Returns whether it was cached.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        key::validate(key, self.inner.cfg.max_key)?;
        let h = KeyHash::of(key).0;
        let mut s = self.shard(h);
        let mut ours = s.arc.peek(h).is_some_and(|e| *e.obj.key == *key);
        if ours {
            s.arc.remove(h);
            s.ctr.removed += 1;
        }
        drop(s);
        if let Some(b) = &self.inner.block {
            ours |= b.remove(key);
        }
        Ok(ours)
    }

    /// Records a purge: O(1), visible to the next lookup; space is reclaimed
    /// in the background.
    pub fn purge(&self, p: &Purge) -> Result<PurgeReport> {
        if let Purge::Key(k) = p {
            key::validate(k, self.inner.cfg.max_key)?;
        }
        let covered = match p {
            Purge::All => Some(self.counters().objects),
            _ => None,
        };
        let seq = self.inner.purge.record(p)?;
        self.inner.purges.fetch_add(1, Relaxed);
        let covered = match p {
            // Cached here, or in a block tier that other processes share.
            Purge::Key(k) => {
                let in_memory = self.evict_purged(k);
                let in_blocks = self.inner.block.as_ref().is_some_and(|b| b.remove(k));
                Some(u64::from(in_memory || in_blocks))
            }
            _ => covered,
        };
        let sig = &self.inner.signal;
        *sig.pending.lock() = true;
        sig.cv.notify_one();
        Ok(PurgeReport { seq, covered })
    }

    /// Drops a purged key at once (the record stays for in-flight fills).
    fn evict_purged(&self, key: &[u8]) -> bool {
        let h = KeyHash::of(key).0;
        let mut s = self.shard(h);
        let ours = s.arc.peek(h).is_some_and(|e| *e.obj.key == *key);
        if ours {
            s.arc.remove(h);
            s.ctr.purged += 1;
        }
        ours
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for p in self.inner.shards.iter() {
            let s = p.0.lock();
            let mut c = s.ctr;
            c.objects = s.arc.len() as u64;
            c.bytes_used = s.arc.used();
            c.bytes_capacity = s.arc.stats().capacity;
            total.add(&c);
        }
        total.purges = self.inner.purges.load(Relaxed);
        total.active_bans = self.inner.purge.active_bans();
        total
    }

    /// ARC list sizes per shard (for tests, benchmarks and debugging).
    pub fn arc_stats(&self) -> Vec<ArcStats> {
        self.inner
            .shards
            .iter()
            .map(|p| p.0.lock().arc.stats())
            .collect()
    }

    /// Sweeps every shard now, removing purged objects (and handles into
    /// recycled RAM regions) and retiring purge records no object needs
    /// any more. Returns the objects removed. The background sweeper calls
    /// this after purges; tests may call it directly.
    pub fn reclaim_now(&self) -> u64 {
        let removed = self.inner.sweep() + self.inner.drop_stale_handles();
        if let Some(b) = &self.inner.block {
            b.prune_recycled();
        }
        removed
    }

    /// Applies this process's batched hits on RAM-tier objects to the
    /// shared ARC directory now (otherwise every 64 hits, before each
    /// insert, and once a second).
    pub fn flush_ram_hits(&self) {
        if let Some(b) = &self.inner.block {
            b.flush_hits();
        }
    }

    /// Holds the ARC directory's lock until the guard drops: for tests of a
    /// process killed while holding it. Not for other uses.
    #[doc(hidden)]
    pub fn hold_ram_lock_for_tests(&self) -> Option<crate::evict::shared::Held<'_>> {
        self.inner
            .block
            .as_ref()
            .map(|b| b.directory().hold_lock_for_tests())
    }

    /// The shared RAM tier's ARC directory: list sizes, `p`, resets.
    pub fn ram_stats(&self) -> Option<crate::evict::shared::SharedStats> {
        self.inner.block.as_ref().map(|b| b.counters().ram)
    }
}

impl Inner {
    fn sweep(&self) -> u64 {
        let _one = self.sweep_lock.lock();
        let start = self.purge.seq();
        let mut removed = 0;
        let purged = |o: &Object| self.purge.is_purged(&o.key, &o.facts, o.born);
        for p in self.shards.iter() {
            removed += self.sweep_shard(&p.0, &purged, true);
        }
        // Records at or before `safe` match no resident object any more and
        // no open writer was born before them.
        let oldest_writer = self
            .shards
            .iter()
            .filter_map(|p| p.0.lock().writers.keys().next().copied())
            .min();
        let safe = oldest_writer.map_or(start, |w| w.min(start));
        // A shared table also guards objects in other processes and in the
        // block tiers, which this sweep has not visited: never retire it.
        if self.block.is_none() {
            self.purge.retire(safe);
        }
        self.swept_to.store(start, Release);
        removed
    }

    /// Sweeps one shard in chunks. The purge checks run without the shard
    /// lock, on a snapshot of the chunk; the lock is held only to copy the
    /// chunk's references and to remove what is dead, so lookups never wait
    /// behind thousands of checks. Removed objects are freed unlocked too.
    /// Drops handles into RAM regions recycled since they were taken: a
    /// mapped, unlinked tmpfs file keeps its pages until the last handle
    /// goes. Returns how many went.
    fn drop_stale_handles(&self) -> u64 {
        let Some(b) = &self.block else { return 0 };
        let lap = b.ram().lap();
        if self.ram_lap.swap(lap, AcqRel) == lap {
            return 0;
        }
        let stale = |o: &Object| !b.handle_current(o.at.as_ref(), &o.slices);
        let shards = self.shards.iter();
        shards.map(|p| self.sweep_shard(&p.0, &stale, false)).sum()
    }

    fn sweep_shard(
        &self,
        shard: &Mutex<Shard>,
        dead: &dyn Fn(&Object) -> bool,
        purge: bool,
    ) -> u64 {
        let mut removed = 0;
        let mut i = 0;
        loop {
            let (chunk, slots) = {
                let s = shard.lock();
                let end = (i + SWEEP_CHUNK).min(s.arc.slots());
                let chunk: Vec<(u128, Arc<Object>)> = (i..end)
                    .filter_map(|j| s.arc.resident_at(j))
                    .map(|(h, e)| (h, e.obj.clone()))
                    .collect();
                i = end;
                (chunk, s.arc.slots())
            };
            let dead: Vec<(u128, Arc<Object>)> =
                chunk.into_iter().filter(|(_, o)| dead(o)).collect();
            let mut freed = Vec::with_capacity(dead.len());
            if !dead.is_empty() {
                let mut s = shard.lock();
                let Shard { arc, ctr, .. } = &mut *s;
                for (h, o) in &dead {
                    // Only if the slot still holds that object: it may have
                    // been replaced (and checked at commit) meanwhile.
                    if arc.peek(*h).is_some_and(|e| Arc::ptr_eq(&e.obj, o)) {
                        freed.extend(arc.remove(*h));
                    }
                }
                if purge {
                    ctr.purged += freed.len() as u64;
                }
            }
            removed += freed.len() as u64;
            drop((freed, dead));
            if i >= slots {
                return removed;
            }
        }
    }
}

fn spawn_sweeper(inner: Weak<Inner>, signal: Arc<Signal>) {
    let (mut released_at, mut last_tick) = (0, 0);
    let spawned = std::thread::Builder::new()
        .name("cdncore-sweep".into())
        .spawn(move || loop {
            {
                let mut pending = signal.pending.lock();
                if !*pending {
                    signal.cv.wait_for(&mut pending, Duration::from_secs(1));
                }
                *pending = false;
            }
            if signal.stop.load(Acquire) {
                return;
            }
            let Some(inner) = inner.upgrade() else { return };
            if let Some(b) = &inner.block {
                b.flush_hits(); // so a quiet process's hits reach ARC too
                inner.drop_stale_handles();
                // After the handles: what still maps a recycled region.
                b.prune_recycled();
                // Give freed heap pages back after every RELEASE_AFTER bytes
                // stored, and once stores pause (a tick without any).
                let written = b.bytes_written();
                let paused = written == last_tick && written != released_at;
                if paused || written >= released_at + crate::heap::RELEASE_AFTER {
                    released_at = written;
                    crate::heap::release_freed();
                }
                last_tick = written;
            }
            if inner.purge.seq() > inner.swept_to.load(Acquire) {
                inner.sweep();
            }
        });
    // Without a thread, purged space is still reclaimed by lookups and
    // eviction; records then retire only through `reclaim_now`.
    if let Err(e) = spawned {
        eprintln!("cdncore: cannot start the purge sweeper: {e}");
    }
}
