//! A deferred write-through: the disk half of a commit, split off so a
//! caller with an event loop (the nginx module) can run it on an I/O thread
//! while the object is already served from memory.

use crate::cache::{Cache, Object};
use std::sync::Arc;

/// The write of a committed object into the first block tier. `run` it
/// (on any thread); dropping it skips the write, so the object then lives
/// in memory only, as if the tier had refused it.
#[must_use = "the object reaches the block tier only when this runs"]
pub struct WriteThrough {
    cache: Cache,
    obj: Arc<Object>,
}

impl WriteThrough {
    pub(crate) fn new(cache: Cache, obj: Arc<Object>) -> WriteThrough {
        WriteThrough { cache, obj }
    }

    /// The key being written.
    pub fn key(&self) -> &[u8] {
        self.obj.key()
    }

    /// Writes the object (errors are logged by the tier, which degrades).
    /// A purge that covered it meanwhile still wins: the tier keeps its
    /// birth, which the purge records are checked against on every read.
    pub fn run(self) {
        self.cache.write_through(&self.obj);
    }
}
