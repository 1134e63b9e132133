//! The block tiers behind a `Cache`: lookups in order, write-through to the
//! first tier, admission-filtered promotion, and the purge table shared by
//! every process through a mapping in the first tier's directory.

use super::region::DirLock;
use super::tier::{Hit, Log, PurgedFn, Tier, TierStats};
use super::{Kind, TierSpec};
use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::purge::{words_needed, Facts, PurgeTable, Words};
use memmap2::MmapMut;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Counters of the tier machinery in this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockCounters {
    /// Objects copied up (into memory, and into the first block tier when
    /// found on a slower one).
    pub promotions: u64,
    /// Promotion candidates the admission filter turned away.
    pub promotions_refused: u64,
    /// Per tier, fastest first.
    pub tiers: Vec<TierStats>,
}

impl BlockCounters {
    /// Records moved down a tier when their region was recycled.
    pub fn demotions(&self) -> u64 {
        self.tiers.iter().map(|t| t.demoted).sum()
    }
    /// Lookups answered by a block tier.
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

pub(crate) struct Tiers {
    tiers: Vec<Tier>,
    sketch: Mutex<Sketch>,
    promotions: AtomicU64,
    refused: AtomicU64,
}

impl Tiers {
    /// Opens every tier and chains them for demotion.
    pub fn open(specs: &[TierSpec], log: Log) -> Result<Tiers> {
        let tiers = specs
            .iter()
            .map(|s| Tier::open(s, log.clone()))
            .collect::<Result<Vec<_>>>()?;
        for w in tiers.windows(2) {
            w[0].set_next(Some(w[1].clone()));
        }
        Ok(Tiers {
            tiers,
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

    /// `key` from the first tier if reading it touches only memory (see
    /// [`Tier::get_resident`]); `None` otherwise, whatever the other tiers
    /// hold (a hit there is promoted: a write).
    pub fn lookup_resident(&self, key: &[u8]) -> Option<(usize, Hit)> {
        self.tiers.first()?.get_resident(key).map(|h| (0, h))
    }

    /// The first tier holding `key`. A sliced object up to `max` bytes is
    /// assembled into one body; a larger one is left to `read_range` (and
    /// hides older copies on slower tiers: the first tier's copy is newest).
    pub fn lookup(&self, key: &[u8], max: u64) -> Option<(usize, Hit)> {
        for (i, t) in self.tiers.iter().enumerate() {
            let Some(mut hit) = t.get(key).ok().flatten() else {
                continue;
            };
            if hit.kind == Kind::Manifest {
                if hit.meta.size > max {
                    return None;
                }
                let mut body = Vec::with_capacity(hit.meta.size as usize);
                let read = t.read_range(key, 0, hit.meta.size, &mut |p| {
                    body.extend_from_slice(p);
                    Ok(())
                });
                if !matches!(read, Ok(Some(_))) || body.len() as u64 != hit.meta.size {
                    continue; // lost a slice: the object is gone from this tier
                }
                hit.body = body.into();
                hit.kind = Kind::Object;
                hit.at = None; // assembled from slices: no one extent
            }
            return Some((i, hit));
        }
        None
    }

    /// Write-through of a committed object into the first tier. Errors are
    /// logged by the tier (which then degrades); memory keeps serving.
    pub fn write_through(&self, key: &[u8], meta: &Meta, born: u64, body: &[u8]) {
        if let Some(t) = self.tiers.first() {
            let _ = t.put(key, meta, born, body);
        }
    }

    /// Counts a block-tier hit; true when the object earned a promotion.
    pub fn admit(&self, h: u128) -> bool {
        let hot = self.sketch.lock().add(h) >= PROMOTE_HITS;
        if hot {
            self.promotions.fetch_add(1, Relaxed);
        } else {
            self.refused.fetch_add(1, Relaxed);
        }
        hot
    }

    /// Copies an object found on tier `from` into the first tier.
    pub fn promote(&self, from: usize, key: &[u8], meta: &Meta, born: u64, body: &[u8]) {
        if from > 0 {
            self.write_through(key, meta, born, body);
        }
    }

    pub fn remove(&self, key: &[u8]) -> bool {
        self.tiers.iter().fold(false, |any, t| t.remove(key) | any)
    }

    pub fn first(&self) -> &Tier {
        &self.tiers[0]
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    pub fn counters(&self) -> BlockCounters {
        BlockCounters {
            promotions: self.promotions.load(Relaxed),
            promotions_refused: self.refused.load(Relaxed),
            tiers: self.tiers.iter().map(|t| t.stats()).collect(),
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
