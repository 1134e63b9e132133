//! Reading a slice from the block tiers, which may wait on the disk: run
//! on an io thread ([`crate::engine::iothread::call`]) when there are io threads,
//! inline otherwise. The memory tier is asked first, on the loop.

use cdncore::block::Extent;
use cdncore::{now_ms, Cache, Lookup, Object};
use std::sync::Arc;

/// A fresh slice from the cache, with its region-file extent when it came
/// from a block tier and is large enough to go out with `sendfile`.
pub struct Block {
    pub obj: Arc<Object>,
    pub ext: Option<Box<Extent>>,
}

/// What the memory tier says of a slice.
pub enum Mem {
    Hit(Block),
    Miss,
    /// Not in memory: the block tiers must be asked.
    AskBlocks,
}

/// Slice `key` (`len` bytes) in the memory tier only.
pub fn in_memory(cache: &Cache, key: &[u8], len: u64) -> Mem {
    match cache.get_mem_at(key, now_ms()) {
        Ok(Some(found)) => match fresh(cache, key, found, len) {
            Some(b) => Mem::Hit(b),
            None => Mem::Miss,
        },
        Ok(None) => Mem::AskBlocks,
        Err(_) => Mem::Miss,
    }
}

/// Slice `key` when reading it touches only memory: the memory tier, or a
/// block tier whose pages are resident (`Cache::get_resident_at`), so an
/// event loop may ask. For a miss seen earlier on an io thread that a fill
/// (of another worker, stored in a block tier) may have ended since:
/// looking only at the memory tier, the slice would be filled twice.
pub fn resident(cache: &Cache, key: &[u8], len: u64) -> Option<Block> {
    match in_memory(cache, key, len) {
        Mem::Hit(b) => Some(b),
        Mem::Miss => None,
        Mem::AskBlocks => {
            let found = cache.get_resident_at(key, now_ms()).ok().flatten()?;
            with_extent(fresh(cache, key, found, len)?)
        }
    }
}

/// Slice `key` (`len` bytes) in the block tiers: reads and checksums it
/// (its extent comes with the hit). `slow`: the injected 1 s delay of
/// `X-Rcdn-Fault: slow-slice-read`.
pub fn in_blocks(cache: &Cache, key: &[u8], len: u64, slow: bool) -> Option<Block> {
    crate::base::guard::injected_delay(slow);
    let found = cache.get_block_at(key, now_ms()).unwrap_or(Lookup::Miss);
    with_extent(fresh(cache, key, found, len)?)
}

/// A block-tier hit with its region-file extent (for `sendfile`).
fn with_extent(mut b: Block) -> Option<Block> {
    b.ext = crate::cache::serve::extent_of(&b.obj).map(Box::new);
    Some(b)
}

/// A fresh copy of the right length (a wrong one is removed: never serve
/// a slice of the wrong length).
fn fresh(cache: &Cache, key: &[u8], found: Lookup, len: u64) -> Option<Block> {
    let Lookup::Fresh(obj) = found else {
        return None;
    };
    if obj.size() == len {
        return Some(Block { obj, ext: None });
    }
    let _ = cache.remove(key);
    None
}
