//! The memory tier's ARC: [`core`](super::core)'s algorithm over nodes on
//! the heap, each resident node holding a value.

pub use super::core::Which;
use super::core::{Core, Link, Nodes, State};
use hashbrown::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The key is already a good hash: pass its low 64 bits through.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type IdMap = HashMap<u128, u32, BuildHasherDefault<IdHasher>>;

struct Node<V> {
    link: Link,
    value: Option<V>,
}

/// Sizes of the four lists and the adaptive target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArcStats {
    pub capacity: u64,
    pub p: u64,
    pub t1_bytes: u64,
    pub t2_bytes: u64,
    pub b1_bytes: u64,
    pub b2_bytes: u64,
    pub t1_len: usize,
    pub t2_len: usize,
    pub b1_len: usize,
    pub b2_len: usize,
}

impl ArcStats {
    pub(crate) fn of(st: &State) -> ArcStats {
        let l = &st.lists;
        ArcStats {
            capacity: st.cap,
            p: st.p,
            t1_bytes: l[0].bytes,
            t2_bytes: l[1].bytes,
            b1_bytes: l[2].bytes,
            b2_bytes: l[3].bytes,
            t1_len: l[0].len as usize,
            t2_len: l[1].len as usize,
            b1_len: l[2].len as usize,
            b2_len: l[3].len as usize,
        }
    }
}

/// Nodes in a `Vec`, found through a hash map.
struct Heap<V> {
    st: State,
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    map: IdMap,
}

impl<V> Nodes for Heap<V> {
    type Value = V;
    fn state(&self) -> &State {
        &self.st
    }
    fn state_mut(&mut self) -> &mut State {
        &mut self.st
    }
    fn link(&self, i: u32) -> Link {
        self.nodes[i as usize].link
    }
    fn link_mut(&mut self, i: u32) -> &mut Link {
        &mut self.nodes[i as usize].link
    }
    fn find(&self, hash: u128) -> Option<u32> {
        self.map.get(&hash).copied()
    }
    fn alloc(&mut self, hash: u128, size: u64) -> Option<u32> {
        let node = Node {
            link: Link::new(hash, size),
            value: None,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.map.insert(hash, i);
        Some(i)
    }
    fn free(&mut self, i: u32) -> Option<V> {
        let n = &mut self.nodes[i as usize];
        self.map.remove(&n.link.hash());
        self.free.push(i);
        n.value.take()
    }
    fn take(&mut self, i: u32) -> Option<V> {
        self.nodes[i as usize].value.take()
    }
    fn set(&mut self, i: u32, v: V) {
        self.nodes[i as usize].value = Some(v);
    }
    fn capacity(&self) -> u64 {
        self.nodes.len() as u64
    }
    fn broken(&mut self) {
        debug_assert!(false, "a heap ARC is never inconsistent");
    }
    fn is_broken(&self) -> bool {
        false
    }
}

/// One ARC of `capacity` bytes holding values of type `V`.
pub struct ArcCache<V> {
    core: Core<Heap<V>>,
}

impl<V> ArcCache<V> {
    pub fn new(capacity: u64) -> Self {
        ArcCache {
            core: Core(Heap {
                st: State::new(capacity),
                nodes: Vec::new(),
                free: Vec::new(),
                map: IdMap::default(),
            }),
        }
    }

    pub fn stats(&self) -> ArcStats {
        ArcStats::of(&self.core.0.st)
    }

    /// Resident bytes (T1 + T2).
    pub fn used(&self) -> u64 {
        self.core.used()
    }

    /// Resident values.
    pub fn len(&self) -> usize {
        self.core.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.core.is_empty()
    }

    /// Which list holds `hash`, if any (ghosts included).
    pub fn which(&self, hash: u128) -> Option<Which> {
        self.core.which(hash)
    }

    /// A hit: the value, after moving it to the MRU end of T2.
    pub fn get(&mut self, hash: u128) -> Option<&mut V> {
        let i = self.core.hit(hash)?;
        self.core.0.nodes[i as usize].value.as_mut()
    }

    /// The value without counting an access.
    pub fn peek(&self, hash: u128) -> Option<&V> {
        let i = self.core.0.find(hash)?;
        self.core.0.nodes[i as usize].value.as_ref()
    }

    /// The value, to change in place, without counting an access.
    pub fn peek_mut(&mut self, hash: u128) -> Option<&mut V> {
        let i = self.core.0.find(hash)?;
        self.core.0.nodes[i as usize].value.as_mut()
    }

    /// Inserts (or replaces) a value of `size` bytes, applying ARC's cases.
    /// Values pushed out to make room are handed to `evicted`. `size` must
    /// not exceed the capacity (the cache checks this first).
    pub fn insert(&mut self, hash: u128, size: u64, value: V, evicted: &mut impl FnMut(u128, V)) {
        self.core.insert(hash, size, value, evicted)
    }

    /// Changes the size a resident value counts for (e.g. its body moved
    /// out of the heap); growing evicts from the LRU ends until it fits.
    /// False if it is not resident.
    pub fn resize(&mut self, hash: u128, size: u64, evicted: &mut impl FnMut(u128, V)) -> bool {
        self.core.resize(hash, size, evicted)
    }

    /// Removes `hash` from every list; returns its value if it was resident.
    pub fn remove(&mut self, hash: u128) -> Option<V> {
        self.core.remove(hash)
    }

    /// Number of slab slots, for incremental sweeps by index.
    pub fn slots(&self) -> usize {
        self.core.0.nodes.len()
    }

    /// The resident value in slab slot `i`, if any.
    pub fn resident_at(&self, i: usize) -> Option<(u128, &V)> {
        let n = self.core.0.nodes.get(i)?;
        n.value.as_ref().map(|v| (n.link.hash(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(c: &mut ArcCache<u32>, k: u128, size: u64) -> Vec<u128> {
        let mut ev = Vec::new();
        c.insert(k, size, k as u32, &mut |h, _| ev.push(h));
        ev
    }

    /// Access as a cache user would: get, and insert on a miss.
    fn access(c: &mut ArcCache<u32>, k: u128, size: u64) -> bool {
        if c.get(k).is_some() {
            return true;
        }
        put(c, k, size);
        false
    }

    fn check_invariants(c: &ArcCache<u32>) {
        let s = c.stats();
        assert!(s.t1_bytes + s.t2_bytes <= s.capacity, "{s:?}");
        assert!(s.b1_bytes + s.b2_bytes <= s.capacity, "{s:?}");
        assert!(s.p <= s.capacity);
        assert_eq!(
            c.core.0.map.len(),
            s.t1_len + s.t2_len + s.b1_len + s.b2_len
        );
    }

    #[test]
    fn second_access_moves_to_t2() {
        let mut c = ArcCache::new(100);
        put(&mut c, 1, 10);
        assert_eq!(c.which(1), Some(Which::T1));
        assert!(c.get(1).is_some());
        assert_eq!(c.which(1), Some(Which::T2));
        assert!(c.get(2).is_none());
    }

    #[test]
    fn bytes_not_entries_bound_the_cache() {
        let mut c = ArcCache::new(100);
        for k in 0..10 {
            put(&mut c, k, 10);
        }
        assert_eq!(c.used(), 100);
        let ev = put(&mut c, 99, 35);
        assert_eq!(ev.len(), 4, "35 bytes need four 10-byte victims");
        assert!(c.used() <= 100);
        check_invariants(&c);
    }

    #[test]
    fn resizing_a_resident_keeps_its_place_and_evicts_only_to_grow() {
        let mut c = ArcCache::new(100);
        for k in 0..10 {
            put(&mut c, k, 10);
        }
        assert!(c.get(3).is_some()); // in T2 now
        let mut ev = Vec::new();
        assert!(c.resize(3, 1, &mut |h, _| ev.push(h)) && c.resize(7, 2, &mut |h, _| ev.push(h)));
        assert_eq!((c.used(), ev.len()), (83, 0));
        assert_eq!((c.which(3), c.which(7)), (Some(Which::T2), Some(Which::T1)));
        // The freed bytes take new entries without evicting anyone.
        assert!(put(&mut c, 50, 17).is_empty());
        // Growing past the capacity evicts the LRU of T1 (key 0) first.
        assert!(c.resize(7, 12, &mut |h, _| ev.push(h)));
        assert_eq!(ev, vec![0]);
        assert!(c.used() <= 100);
        assert!(!c.resize(42, 1, &mut |_, _| ()), "absent");
        assert!(!c.resize(0, 1, &mut |_, _| ()), "evicted: not resident");
        check_invariants(&c);
    }

    #[test]
    fn one_time_scan_does_not_flush_the_frequent_set() {
        let mut c = ArcCache::new(1000);
        // A working set of 50 objects, each used many times.
        for _ in 0..5 {
            for k in 0..50 {
                access(&mut c, k, 10);
            }
        }
        // A scan of 1,000 objects seen once each, twice the cache size.
        for k in 1000..2000 {
            access(&mut c, k, 10);
            check_invariants(&c);
        }
        let kept = (0..50).filter(|&k| c.peek(k).is_some()).count();
        assert_eq!(kept, 50, "ARC keeps the frequent set through a scan");

        // Plain LRU of the same size loses all of it: the contrast that
        // makes this test meaningful.
        let mut lru: std::collections::VecDeque<u128> = Default::default();
        for k in (0..50).chain(1000..2000) {
            lru.retain(|&x| x != k);
            lru.push_front(k);
            lru.truncate(100);
        }
        assert_eq!((0..50).filter(|k| lru.contains(k)).count(), 0);
    }

    #[test]
    fn b1_ghost_hits_grow_p_and_b2_ghost_hits_shrink_it() {
        let mut c = ArcCache::new(100);
        // Half the cache frequent (T2), half seen once (T1).
        for k in 0..5 {
            put(&mut c, k, 10);
            c.get(k);
        }
        for k in 10..15 {
            put(&mut c, k, 10);
        }
        // New once-seen objects push T1's oldest into the B1 ghost list.
        for k in 20..23 {
            put(&mut c, k, 10);
        }
        assert_eq!(c.which(10), Some(Which::B1));
        let p0 = c.stats().p;
        put(&mut c, 10, 10); // recency would have helped
        let p1 = c.stats().p;
        assert!(p1 > p0, "B1 hit grows p: {p0} -> {p1}");
        assert_eq!(c.which(10), Some(Which::T2));

        // Make frequent objects, then evict them from T2 into B2.
        let mut c = ArcCache::new(100);
        for k in 0..10 {
            put(&mut c, k, 10);
            c.get(k);
        }
        c.core.0.st.p = 80;
        for k in 100..110 {
            put(&mut c, k, 10);
            c.get(k);
        }
        let ghost = (0..10).find(|&k| c.which(k) == Some(Which::B2));
        let ghost = ghost.expect("some frequent object became a B2 ghost");
        let p0 = c.stats().p;
        put(&mut c, ghost, 10); // frequency would have helped
        assert!(c.stats().p < p0, "B2 hit shrinks p");
        check_invariants(&c);
    }

    #[test]
    fn remove_and_replace() {
        let mut c = ArcCache::new(100);
        put(&mut c, 1, 10);
        put(&mut c, 1, 30); // refill with a new size
        assert_eq!(c.used(), 30);
        assert_eq!(c.which(1), Some(Which::T2));
        assert_eq!(c.remove(1), Some(1));
        assert_eq!(c.remove(1), None);
        assert!(c.is_empty());
        // The slot is reused.
        put(&mut c, 2, 10);
        assert_eq!(c.slots(), 1);
        check_invariants(&c);
    }

    #[test]
    fn random_workload_keeps_invariants() {
        let mut c = ArcCache::new(10_000);
        let mut x: u64 = 12345;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % 500) as u128;
            let size = 1 + (x >> 32) % 400;
            match x % 7 {
                0 => {
                    c.remove(k);
                }
                _ => {
                    access(&mut c, k, size);
                }
            }
            check_invariants(&c);
        }
    }
}
