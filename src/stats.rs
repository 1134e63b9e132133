//! Counters. Each shard keeps plain integers updated under its own lock (no
//! shared cache line bounces between cores on the hit path); a snapshot sums
//! them. `Counters` is `repr(C)` plain `u64`s so the C ABI and a shared
//! mapping can hold it as is.

/// A snapshot of the cache's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Lookups answered with a fresh object.
    pub hits: u64,
    /// Lookups answered with an expired object.
    pub stale_hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Objects committed.
    pub inserts: u64,
    /// Body bytes committed.
    pub bytes_inserted: u64,
    /// Body bytes handed out by hits (fresh or stale).
    pub bytes_hit: u64,
    /// Objects pushed out to make room.
    pub evictions: u64,
    /// Objects removed because a purge covered them.
    pub purged: u64,
    /// Objects removed by `remove`.
    pub removed: u64,
    /// Writers that ended without a commit, or whose commit failed.
    pub aborted: u64,
    /// Objects resident now.
    pub objects: u64,
    /// Bytes charged against the memory budget now (bodies, keys, metadata).
    pub bytes_used: u64,
    /// The memory budget.
    pub bytes_capacity: u64,
    /// Purges recorded.
    pub purges: u64,
    /// Bans (regex, mask, odd prefix) still checked at lookup.
    pub active_bans: u64,
}

impl Counters {
    /// Fresh hits over all lookups, 0 when there were none.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.stale_hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }

    pub(crate) fn add(&mut self, o: &Counters) {
        self.hits += o.hits;
        self.stale_hits += o.stale_hits;
        self.misses += o.misses;
        self.inserts += o.inserts;
        self.bytes_inserted += o.bytes_inserted;
        self.bytes_hit += o.bytes_hit;
        self.evictions += o.evictions;
        self.purged += o.purged;
        self.removed += o.removed;
        self.aborted += o.aborted;
        self.objects += o.objects;
        self.bytes_used += o.bytes_used;
        self.bytes_capacity += o.bytes_capacity;
    }
}
