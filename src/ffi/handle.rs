//! Handle checks. Every handle starts with a magic word naming its kind, so a
//! handle of the wrong kind (or garbage that does not happen to carry the
//! magic) is refused with `CDN_INVALID_HANDLE` instead of being used.
//! Handles whose release is a plausible double-call (`cdn_cache_close`,
//! `cdn_writer_commit` then `cdn_writer_abort`) are also kept in a registry
//! of live addresses, which is checked before the handle is touched, so a
//! second release is refused without reading freed memory.

use super::status::{cdn_status::*, FfiError, FfiResult};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

pub(crate) const CACHE_MAGIC: u64 = u64::from_le_bytes(*b"cdnCACHE");
pub(crate) const OBJECT_MAGIC: u64 = u64::from_le_bytes(*b"cdnOBJCT");
pub(crate) const WRITER_MAGIC: u64 = u64::from_le_bytes(*b"cdnWRITE");
/// Written over the magic of a released handle.
pub(crate) const DEAD_MAGIC: u64 = u64::from_le_bytes(*b"cdnDEAD!");

const SHARDS: usize = 16;

/// Live handle addresses with their magic, sharded by address. (B-trees:
/// they point at the start of their nodes, so leak checkers see them as
/// reachable, and they free everything once empty.)
struct Registry {
    shards: Vec<Mutex<BTreeMap<usize, u64>>>,
}

static LIVE: LazyLock<Registry> = LazyLock::new(|| Registry {
    shards: (0..SHARDS).map(|_| Mutex::new(BTreeMap::new())).collect(),
});

fn shard(addr: usize) -> &'static Mutex<BTreeMap<usize, u64>> {
    // Handles are at least 8-aligned: drop the always-zero bits.
    &LIVE.shards[(addr >> 4) % SHARDS]
}

/// Records a new handle.
pub(crate) fn register(addr: usize, magic: u64) {
    shard(addr).lock().insert(addr, magic);
}

/// Is this a live handle of this kind?
pub(crate) fn is_live(addr: usize, magic: u64) -> bool {
    shard(addr).lock().get(&addr) == Some(&magic)
}

/// Forgets a handle; false if it was not a live handle of this kind.
pub(crate) fn unregister(addr: usize, magic: u64) -> bool {
    let mut s = shard(addr).lock();
    if s.get(&addr) == Some(&magic) {
        s.remove(&addr);
        true
    } else {
        false
    }
}

pub(crate) fn null(what: &str) -> FfiError {
    FfiError::arg(format!("{what} is NULL"))
}

pub(crate) fn bad_handle(what: &str) -> FfiError {
    FfiError::new(
        CDN_INVALID_HANDLE,
        format!("{what} is not a live {what} handle (wrong kind, or already released)"),
    )
}

/// Checks that `magic` (read from the handle) is `want`.
pub(crate) fn check_magic(magic: u64, want: u64, what: &str) -> FfiResult<()> {
    if magic == want {
        Ok(())
    } else {
        Err(bad_handle(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_tracks_kind_and_release() {
        let addr = 0x1000usize;
        register(addr, CACHE_MAGIC);
        assert!(is_live(addr, CACHE_MAGIC));
        assert!(!is_live(addr, WRITER_MAGIC));
        assert!(!unregister(addr, WRITER_MAGIC));
        assert!(unregister(addr, CACHE_MAGIC));
        assert!(!unregister(addr, CACHE_MAGIC));
        assert!(!is_live(addr, CACHE_MAGIC));
    }
}
