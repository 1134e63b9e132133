//! The tiers behind a `Cache`: the shared RAM tier (a block tier in tmpfs
//! whose residency an ARC directory shared by every process decides), then
//! the configured block tiers in order. Commits go into the RAM tier
//! (objects above `ram_max` into the first configured tier when it is on a
//! disk: its page cache is their one copy in RAM, reclaimable, and `mem`
//! is left to small objects); records ARC no longer holds move down when their RAM
//! region is recycled
//! (one copy in RAM per node); a lower-tier hit is copied back up on its
//! second hit (admission sketch). The purge table is shared by every
//! process through a mapping in the first configured tier's directory.

use super::ram::{on_ram_fs, open_directory, ram_charge, warn_unless_ram, ArcResidency};
use super::region::DirLock;
use super::tier::{BodyAt, Extent, Hit, Log, PurgedFn, Tier, TierStats};
use super::{Kind, TierSpec};
use crate::error::{Error, Result};
use crate::evict::shared::{SharedArc, SharedStats};
use crate::key::KeyHash;
use crate::meta::Meta;
use crate::purge::{words_needed, Facts, PurgeTable, Words};
use bytes::Bytes;
use memmap2::MmapMut;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Counters of the tier machinery in this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockCounters {
    /// Objects copied up into the RAM tier from a lower tier.
    pub promotions: u64,
    /// Promotion candidates the admission filter turned away.
    pub promotions_refused: u64,
    /// Per tier, fastest first: the RAM tier, then the configured ones.
    pub tiers: Vec<TierStats>,
    /// The RAM tier's ARC directory (shared by every process).
    pub ram: SharedStats,
}

impl BlockCounters {
    /// Records moved down a tier when their region was recycled.
    pub fn demotions(&self) -> u64 {
        self.tiers.iter().map(|t| t.demoted).sum()
    }
    /// Lookups answered by a block tier (the RAM tier included).
    pub fn tier_hits(&self) -> u64 {
        self.tiers.iter().map(|t| t.hits).sum()
    }
}

/// A count-min sketch of recent block-tier hits: an object is promoted on
/// its second hit within the window, so a one-pass scan promotes nothing.
struct Sketch {
    rows: [Vec<u8>; 4],
    adds: u64,
}

const SKETCH_WIDTH: usize = 1 << 16;
/// Hits an object needs (in the sketch window) before it is promoted.
pub const PROMOTE_HITS: u8 = 2;

impl Sketch {
    fn new() -> Sketch {
        Sketch {
            rows: std::array::from_fn(|_| vec![0; SKETCH_WIDTH]),
            adds: 0,
        }
    }

    /// Counts a hit; returns the estimated count including it.
    fn add(&mut self, h: u128) -> u8 {
        self.adds += 1;
        if self.adds >= 8 * SKETCH_WIDTH as u64 {
            // Age: halve everything, so old popularity fades.
            self.adds = 0;
            self.rows.iter_mut().flatten().for_each(|c| *c >>= 1);
        }
        let mut est = u8::MAX;
        for (i, row) in self.rows.iter_mut().enumerate() {
            let c = &mut row[(h >> (i * 16)) as usize % SKETCH_WIDTH];
            *c = c.saturating_add(1);
            est = est.min(*c);
        }
        est
    }
}

/// Where an object written into the RAM tier lies: one record (`at`,
/// `body` mapped) or slices.
pub(crate) struct Placed {
    pub body: Bytes,
    pub at: Option<BodyAt>,
    pub slices: Vec<Extent>,
}

/// What [`Tiers::write_through`] did with a committed object.
pub(crate) enum Through {
    /// In the RAM tier, here.
    Ram(Placed),
    /// In the first configured tier (a large object): served from there.
    Below,
    /// Not stored in any tier (logged by the tier).
    Failed,
}

pub(crate) struct Tiers {
    /// The RAM tier, then the configured tiers.
    tiers: Vec<Tier>,
    dir: Arc<SharedArc>,
    /// Objects larger than this are committed to the first configured
    /// tier; `u64::MAX` when that tier is itself in RAM.
    ram_max: u64,
    /// The RAM tier is on tmpfs/ramfs: its lookups need no `mincore`.
    ram_in_ram: bool,
    sketch: Mutex<Sketch>,
    promotions: AtomicU64,
    refused: AtomicU64,
}

impl Tiers {
    /// Opens the RAM tier and its directory, then every configured tier,
    /// and chains them for demotion. `ram_max`: the largest object the RAM
    /// tier takes when the first configured tier is on a disk.
    pub fn open(ram: &TierSpec, specs: &[TierSpec], ram_max: u64, log: Log) -> Result<Tiers> {
        let ram_tier = Tier::open(ram, log.clone())?;
        warn_unless_ram(&ram.path, &log);
        let dir = Arc::new(open_directory(ram, log.clone())?);
        ram_tier.set_residency(Some(Arc::new(ArcResidency {
            dir: dir.clone(),
            budget: crate::config::ram_compaction_budget(ram.region),
        })));
        let mut tiers = vec![ram_tier];
        for s in specs {
            tiers.push(Tier::open(s, log.clone())?);
        }
        for w in tiers.windows(2) {
            w[0].set_next(Some(w[1].clone()));
        }
        let disk_below = specs
            .first()
            .is_some_and(|s| on_ram_fs(&s.path) == Some(false));
        Ok(Tiers {
            tiers,
            dir,
            ram_max: if disk_below { ram_max } else { u64::MAX },
            ram_in_ram: on_ram_fs(&ram.path) == Some(true),
            sketch: Mutex::new(Sketch::new()),
            promotions: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Lets recycling drop purged records instead of moving them.
    pub fn set_purge(&self, purge: Arc<PurgeTable>) {
        let f: PurgedFn = Arc::new(move |key: &[u8], m: &Meta, born: u64| {
            purge.is_purged(key, &facts_of(key, m), born)
        });
        for t in &self.tiers {
            t.set_purged(Some(f.clone()));
        }
    }

    /// `key` from the RAM tier, or the first configured tier if reading it
    /// touches only memory (see [`Tier::get_resident`]); `None` otherwise.
    pub fn lookup_resident(&self, key: &[u8]) -> Option<(usize, Hit, bool)> {
        let ram = match self.ram_in_ram {
            true => self.tiers[0].get_in_ram(key),
            false => self.tiers[0].get_resident(key),
        };
        let found = ram
            .map(|h| (0, h, true))
            .or_else(|| self.tiers[1].get_resident(key).map(|h| (1, h, true)));
        if let Some((0, hit, _)) = &found {
            self.dir
                .hit(KeyHash::of(key).0, ram_charge(key.len(), hit.meta.size));
        }
        found
    }

    /// Whether [`Tiers::lookup_resident`] would find `key`.
    pub fn resident(&self, key: &[u8]) -> bool {
        self.tiers[..2].iter().any(|t| t.resident(key))
    }

    /// The first tier holding `key`, and whether a sliced object's slices
    /// all lie in that tier. A sliced object up to `max` bytes comes with
    /// its slices as verified extents (found in any tier: recycling moves
    /// records down one by one); a larger one is left to `read_range` (and
    /// hides older copies on slower tiers: the first tier's copy is newest).
    /// A RAM-tier hit is counted in the ARC directory (batched).
    pub fn lookup(&self, key: &[u8], max: u64) -> Option<(usize, Hit, bool)> {
        for (i, t) in self.tiers.iter().enumerate() {
            let Some(mut hit) = t.get(key).ok().flatten() else {
                continue;
            };
            let mut here = true;
            if hit.kind == Kind::Manifest {
                if hit.meta.size > max {
                    return None;
                }
                let Some((slices, all_here)) = self.slices_of(i, key, &hit) else {
                    continue; // lost a slice: the object is gone from this tier
                };
                (hit.slices, here) = (slices, all_here);
            }
            if i == 0 {
                self.dir
                    .hit(KeyHash::of(key).0, ram_charge(key.len(), hit.meta.size));
            }
            return Some((i, hit, here));
        }
        None
    }

    /// The slices of the manifest `hit` found in tier `i`, each looked for
    /// there first, then in the other tiers; and whether all were in `i`.
    fn slices_of(&self, i: usize, key: &[u8], hit: &Hit) -> Option<(Vec<Extent>, bool)> {
        let (size, slice) = (hit.meta.size, hit.slice);
        let region = self.tiers[i].spec().region;
        if !(4096..=region).contains(&slice) || hit.parts != size.div_ceil(slice) {
            return None;
        }
        let mut all_here = true;
        let mut out = Vec::with_capacity(hit.parts as usize);
        for s in 0..hit.parts {
            let want = slice.min(size - s * slice);
            let find = |t: &Tier| t.slice_extent(key, hit.version, s, want);
            let e = match find(&self.tiers[i]) {
                Some(e) => e,
                None => {
                    all_here = false;
                    self.tiers.iter().find_map(find)?
                }
            };
            out.push(e);
        }
        Some((out, all_here))
    }

    /// Body bytes `start..end` of `key` from the first tier holding it, to
    /// `out` in verified pieces; its metadata, or `None` on a miss or when
    /// `purged` says so (then it is removed). The slices of an object up to
    /// `max` bytes are found in any tier (as [`Tiers::lookup`]); a larger
    /// one is read from its tier by `pread` (bounded memory).
    pub fn read_range(
        &self,
        key: &[u8],
        start: u64,
        end: u64,
        max: u64,
        purged: &dyn Fn(&Meta, u64) -> bool,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Option<Meta>> {
        for (i, t) in self.tiers.iter().enumerate() {
            let Some(hit) = t.get(key)? else { continue };
            if purged(&hit.meta, hit.born) {
                self.remove(key);
                return Ok(None);
            }
            if hit.kind != Kind::Manifest || hit.meta.size > max {
                match t.read_range(key, start, end, out)? {
                    Some(m) => return Ok(Some(m)),
                    None => continue,
                }
            }
            let Some((slices, _)) = self.slices_of(i, key, &hit) else {
                continue;
            };
            let mut at = 0;
            for e in &slices {
                let (a, b) = (start.max(at), end.min(at + e.len));
                if a < b {
                    out(&e.bytes()[(a - at) as usize..(b - at) as usize])?;
                }
                at += e.len;
            }
            return Ok(Some(hit.meta));
        }
        Ok(None)
    }

    /// Stores a committed object in the RAM tier (every process sees it
    /// there, and it survives a crash of this one) and tells the ARC
    /// directory; an object above `ram_max` goes to the first configured
    /// tier instead (and any older copy leaves the RAM tier, which lookups
    /// read first). Errors are logged by the tier (which then degrades);
    /// memory keeps serving.
    pub fn write_through(
        &self,
        key: &[u8],
        meta: &Meta,
        born: u64,
        body: &[u8],
        sum: Option<u64>,
    ) -> Through {
        let large = body.len() as u64 > self.ram_max;
        if large && self.tiers[1].put_placed(key, meta, born, body, sum).is_ok() {
            self.dir.remove(KeyHash::of(key).0);
            self.tiers[0].remove(key);
            return Through::Below;
        }
        match self.write_ram(key, meta, born, body, sum) {
            Some(p) => Through::Ram(p),
            None => Through::Failed,
        }
    }

    /// Stores an object in the RAM tier; where it lies, if this process
    /// may serve it from there.
    fn write_ram(
        &self,
        key: &[u8],
        meta: &Meta,
        born: u64,
        body: &[u8],
        sum: Option<u64>,
    ) -> Option<Placed> {
        let ram = &self.tiers[0];
        let whole = ram.put_placed(key, meta, born, body, sum).ok()?;
        self.dir
            .insert(KeyHash::of(key).0, ram_charge(key.len(), body.len() as u64));
        if let Some((body, at)) = whole {
            let at = Some(at);
            return Some(Placed {
                body,
                at,
                slices: Vec::new(),
            });
        }
        // Stored as slices: find them (the newest version is ours unless
        // another process stored the key meanwhile; then leave it).
        let hit = ram.get(key).ok()??;
        let ours =
            hit.kind == Kind::Manifest && hit.born == born && hit.meta.size == body.len() as u64;
        let (slices, here) = self.slices_of(0, key, &hit).filter(|_| ours)?;
        here.then_some(Placed {
            body: Bytes::new(),
            at: None,
            slices,
        })
    }

    /// Whether a memory-tier handle still points into current RAM regions
    /// (one atomic load per region file it holds).
    pub fn handle_current(&self, at: Option<&BodyAt>, slices: &[Extent]) -> bool {
        let ram = &self.tiers[0];
        at.is_none_or(|a| ram.is_current(a)) && slices.iter().all(|e| ram.extent_is_current(e))
    }

    /// Counts a lower-tier hit; true when the object earned a promotion.
    pub fn admit(&self, h: u128) -> bool {
        let hot = self.sketch.lock().add(h) >= PROMOTE_HITS;
        if !hot {
            self.refused.fetch_add(1, Relaxed);
        }
        hot
    }

    /// Copies an object found on tier `from` (below the RAM tier) into the
    /// RAM tier.
    pub fn promote(
        &self,
        from: usize,
        key: &[u8],
        meta: &Meta,
        born: u64,
        body: &[u8],
        sum: Option<u64>,
    ) -> Option<Placed> {
        if from == 0 || body.len() as u64 > self.ram_max {
            return None;
        }
        let placed = self.write_ram(key, meta, born, body, sum);
        self.promotions.fetch_add(placed.is_some() as u64, Relaxed);
        placed
    }

    pub fn remove(&self, key: &[u8]) -> bool {
        self.dir.remove(KeyHash::of(key).0);
        self.tiers.iter().fold(false, |any, t| t.remove(key) | any)
    }

    pub fn ram(&self) -> &Tier {
        &self.tiers[0]
    }

    /// The first configured tier (large objects, fill markers, purges).
    pub fn first_configured(&self) -> &Tier {
        &self.tiers[1]
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Counts a hit on an object in the RAM tier (batched for the ARC
    /// directory).
    pub fn ram_hit(&self, h: u128, key_len: usize, size: u64) {
        self.dir.hit(h, ram_charge(key_len, size));
    }

    pub fn directory(&self) -> &SharedArc {
        &self.dir
    }

    /// Applies this process's batched RAM-tier hits to the directory.
    pub fn flush_hits(&self) {
        self.dir.flush();
    }

    /// Drops this process's mappings of recycled regions in every tier.
    pub fn prune_recycled(&self) {
        self.tiers.iter().for_each(Tier::maybe_prune);
    }

    /// Bytes this process has written into the tiers (stores, promotions,
    /// relocations, demotions).
    pub fn bytes_written(&self) -> u64 {
        self.tiers.iter().map(|t| t.stats().bytes_written).sum()
    }

    pub fn counters(&self) -> BlockCounters {
        BlockCounters {
            promotions: self.promotions.load(Relaxed),
            promotions_refused: self.refused.load(Relaxed),
            tiers: self.tiers.iter().map(|t| t.stats()).collect(),
            ram: self.dir.stats(),
        }
    }
}

pub(crate) fn facts_of(key: &[u8], m: &Meta) -> Facts {
    Facts::new(key, m.group.as_deref(), &m.tags, &m.surrogate_keys, m.mask)
}

/// The purge table in a shared file mapping; purges are serialised between
/// processes by `flock` on `purge.lock` (released by the kernel if the holder
/// dies, so a killed process never wedges purging).
struct SharedWords {
    map: MmapMut,
    lock: DirLock,
}

impl Words for SharedWords {
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, a whole number of words long
        // and lives as long as `self`; every process accesses it only through
        // these atomics.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.map.len() / 8)
        }
    }

    fn lock_writers(&self) -> Option<Box<dyn crate::purge::WriterLock + '_>> {
        match self.lock.lock() {
            Ok(g) => Some(Box::new(g)),
            Err(e) => {
                eprintln!("cdncore: purge lock: {e}; purging under the process lock only");
                None
            }
        }
    }
}

fn io(p: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io {
        path: p.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// Maps (creating if needed) `<dir>/purge`, shared by every process.
pub(crate) fn shared_purge(dir: &Path, gen_slots: usize, ban_slots: usize) -> Result<PurgeTable> {
    let path = dir.join("purge");
    let len = (words_needed(gen_slots, ban_slots) * 8) as u64;
    let dir_lock = DirLock::open(dir).map_err(|e| io(dir, "lock", e))?;
    let _g = dir_lock.lock().map_err(|e| io(dir, "lock", e))?;
    let mut fresh = false;
    let file = match open_sized(&path, len) {
        Some(f) => f,
        None => {
            // Missing, or of other slot counts: a new table.
            fresh = true;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| io(&path, "create", e))?;
            f.set_len(len).map_err(|e| io(&path, "size", e))?;
            super::region::preallocate(&f, len).map_err(|e| io(&path, "allocate", e))?;
            f
        }
    };
    // SAFETY: shared file mapping; all access goes through atomics (see
    // `SharedWords::words`).
    let map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| io(&path, "mmap", e))?;
    let lock = DirLock::open_named(dir, "purge.lock").map_err(|e| io(dir, "lock", e))?;
    let table = PurgeTable::attach(Box::new(SharedWords { map, lock }), gen_slots, ban_slots)?;
    if fresh {
        // Objects already in the tiers were born under a table we no longer
        // have: declare them all dead rather than risk serving a purged one.
        table.restart_at(crate::meta::now_ms());
    }
    Ok(table)
}

fn open_sized(path: &Path, len: u64) -> Option<File> {
    let f = OpenOptions::new().read(true).write(true).open(path).ok()?;
    (f.metadata().ok()?.len() == len).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::super::record::{self, Head};
    use super::*;

    #[test]
    fn slices_that_moved_to_another_tier_are_still_found() {
        let d = tempfile::tempdir().unwrap();
        let spec = |name: &str, size: u64, region: u64| TierSpec {
            region,
            slice: 16 << 10,
            ..TierSpec::new(d.path().join(name), size)
        };
        let log: Log = Arc::new(|_: &str| {});
        let ram = spec("ram", 1 << 20, 64 << 10);
        let t = Tiers::open(&ram, &[spec("disk", 8 << 20, 256 << 10)], u64::MAX, log).unwrap();
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let meta = Meta::with_ttl(1000, 1 << 30);
        t.tiers()[1].put(b"k", &meta, 5, &body).unwrap();
        let m = t.tiers()[1].get(b"k").unwrap().unwrap();
        assert_eq!((m.kind, m.parts), (Kind::Manifest, 7));
        // The manifest alone in the RAM tier, as recycling can leave it
        // (records move down one by one).
        let slice = m.slice.to_le_bytes();
        let head = Head {
            kind: Kind::Manifest,
            key_len: 0,
            meta_len: 0,
            body_len: 8,
            born: 5,
            part: m.parts,
            version: m.version,
            body_sum: record::body_sum(&slice),
        };
        let enc = record::encode_meta(&m.meta);
        let h = KeyHash::of(b"k").0;
        t.tiers()[0]
            .write_record(h, head, b"k", &enc, &slice)
            .unwrap();
        let (i, hit, all_here) = t.lookup(b"k", 1 << 20).unwrap();
        assert_eq!((i, all_here), (0, false));
        let joined: Vec<u8> = hit.slices.iter().flat_map(|e| e.bytes().to_vec()).collect();
        assert_eq!(joined, body);
        let mut got = Vec::new();
        let alive = |_: &Meta, _: u64| false;
        let read = t.read_range(b"k", 1000, 50_000, 1 << 20, &alive, &mut |p| {
            got.extend_from_slice(p);
            Ok(())
        });
        assert_eq!(read.unwrap().unwrap().size, 100_000);
        assert_eq!(got, body[1000..50_000]);
        // Too large for extents: the tier's own slices only, and it has none.
        let mut none = |_: &[u8]| Ok(());
        let big = t.read_range(b"k", 0, 10, 1000, &alive, &mut none).unwrap();
        assert_eq!(
            big.map(|m| m.size),
            Some(100_000),
            "served by the disk tier"
        );
    }
}
