//! Adaptive Replacement Cache (Megiddo & Modha, FAST 2003), counting bytes.
//!
//! Four LRU lists: T1 (seen once recently) and T2 (seen at least twice) hold
//! values; B1 and B2 remember only the hashes and sizes of what was evicted
//! from them. A hit in B1 means "recency would have helped" and grows the
//! target size `p` of T1; a hit in B2 shrinks it. Sizes are in bytes, so the
//! paper's unit steps become the size of the object at hand, scaled by the
//! ghost-list ratio as in the paper.
//!
//! Nodes live in a slab (`Vec`) linked by `u32` indices, and a map from the
//! 128-bit key hash to the slab index finds them; every operation is O(1).

use hashbrown::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const NIL: u32 = u32::MAX;

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

/// Which list a node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    T1 = 0,
    T2 = 1,
    B1 = 2,
    B2 = 3,
}

#[derive(Clone, Copy, Default)]
struct List {
    head: u32, // MRU
    tail: u32, // LRU
    bytes: u64,
    len: usize,
}

struct Node<V> {
    hash: u128,
    prev: u32,
    next: u32,
    list: Which,
    size: u64,
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

/// One ARC of `capacity` bytes holding values of type `V`.
pub struct ArcCache<V> {
    cap: u64,
    p: u64,
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    map: IdMap,
    lists: [List; 4],
}

impl<V> ArcCache<V> {
    pub fn new(capacity: u64) -> Self {
        let empty = List {
            head: NIL,
            tail: NIL,
            ..List::default()
        };
        ArcCache {
            cap: capacity,
            p: 0,
            nodes: Vec::new(),
            free: Vec::new(),
            map: IdMap::default(),
            lists: [empty; 4],
        }
    }

    pub fn stats(&self) -> ArcStats {
        let l = &self.lists;
        ArcStats {
            capacity: self.cap,
            p: self.p,
            t1_bytes: l[0].bytes,
            t2_bytes: l[1].bytes,
            b1_bytes: l[2].bytes,
            b2_bytes: l[3].bytes,
            t1_len: l[0].len,
            t2_len: l[1].len,
            b1_len: l[2].len,
            b2_len: l[3].len,
        }
    }

    /// Resident bytes (T1 + T2).
    pub fn used(&self) -> u64 {
        self.lists[0].bytes + self.lists[1].bytes
    }

    /// Resident values.
    pub fn len(&self) -> usize {
        self.lists[0].len + self.lists[1].len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which list holds `hash`, if any (ghosts included).
    pub fn which(&self, hash: u128) -> Option<Which> {
        self.map.get(&hash).map(|&i| self.nodes[i as usize].list)
    }

    /// A hit: the value, after moving it to the MRU end of T2.
    pub fn get(&mut self, hash: u128) -> Option<&mut V> {
        let i = *self.map.get(&hash)?;
        if !matches!(self.nodes[i as usize].list, Which::T1 | Which::T2) {
            return None;
        }
        self.unlink(i);
        self.push_mru(i, Which::T2);
        self.nodes[i as usize].value.as_mut()
    }

    /// The value without counting an access.
    pub fn peek(&self, hash: u128) -> Option<&V> {
        let i = *self.map.get(&hash)?;
        self.nodes[i as usize].value.as_ref()
    }

    /// Inserts (or replaces) a value of `size` bytes, applying ARC's cases.
    /// Values pushed out to make room are handed to `evicted`. `size` must
    /// not exceed the capacity (the cache checks this first).
    pub fn insert(&mut self, hash: u128, size: u64, value: V, evicted: &mut impl FnMut(u128, V)) {
        let size = size.min(self.cap);
        match self.map.get(&hash).copied() {
            Some(i) => self.insert_known(i, size, value, evicted),
            None => self.insert_new(hash, size, value, evicted),
        }
    }

    fn insert_known(&mut self, i: u32, size: u64, value: V, evicted: &mut impl FnMut(u128, V)) {
        let list = self.nodes[i as usize].list;
        let (b1, b2) = (self.lists[2].bytes.max(1), self.lists[3].bytes.max(1));
        match list {
            // Case II: a ghost hit in B1 says T1 was too small.
            Which::B1 => self.p = (self.p + size * (b2 / b1).max(1)).min(self.cap),
            // Case III: a ghost hit in B2 says T2 was too small.
            Which::B2 => self.p = self.p.saturating_sub(size * (b1 / b2).max(1)),
            // Case I: a refill of a resident key counts as a second access.
            Which::T1 | Which::T2 => {}
        }
        self.unlink(i);
        self.nodes[i as usize].size = size;
        self.make_room(size, list == Which::B2, evicted);
        self.nodes[i as usize].value = Some(value);
        self.push_mru(i, Which::T2);
    }

    fn insert_new(&mut self, hash: u128, size: u64, value: V, evicted: &mut impl FnMut(u128, V)) {
        // Case IV: keep L1 = T1 + B1 within c, and L1 + L2 within 2c.
        if self.lists[0].bytes + self.lists[2].bytes + size > self.cap {
            while self.lists[0].bytes + self.lists[2].bytes + size > self.cap
                && self.lists[2].len > 0
            {
                self.drop_lru(Which::B1);
            }
            while self.lists[0].bytes + size > self.cap && self.lists[0].len > 0 {
                let j = self.lists[0].tail;
                self.evict_node(j, None, evicted);
            }
        }
        while self.total() + size > 2 * self.cap && self.lists[3].len > 0 {
            self.drop_lru(Which::B2);
        }
        self.make_room(size, false, evicted);
        let i = self.alloc(hash, size, value);
        self.map.insert(hash, i);
        self.push_mru(i, Which::T1);
    }

    /// Removes `hash` from every list; returns its value if it was resident.
    pub fn remove(&mut self, hash: u128) -> Option<V> {
        let i = self.map.remove(&hash)?;
        self.unlink(i);
        self.release(i)
    }

    /// Number of slab slots, for incremental sweeps by index.
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// The resident value in slab slot `i`, if any.
    pub fn resident_at(&self, i: usize) -> Option<(u128, &V)> {
        let n = self.nodes.get(i)?;
        n.value.as_ref().map(|v| (n.hash, v))
    }

    fn total(&self) -> u64 {
        self.lists.iter().map(|l| l.bytes).sum()
    }

    /// REPLACE until `size` more bytes fit in T1 + T2.
    fn make_room(&mut self, size: u64, hit_in_b2: bool, evicted: &mut impl FnMut(u128, V)) {
        while self.used() + size > self.cap && !self.is_empty() {
            let t1 = self.lists[0].bytes;
            let from_t1 = self.lists[0].len > 0
                && (t1 > self.p || (hit_in_b2 && t1 >= self.p) || self.lists[1].len == 0);
            let (from, ghost) = if from_t1 {
                (Which::T1, Which::B1)
            } else {
                (Which::T2, Which::B2)
            };
            let j = self.lists[from as usize].tail;
            self.evict_node(j, Some(ghost), evicted);
        }
        // Ghosts describe at most one cache's worth of history.
        while self.lists[2].bytes + self.lists[3].bytes > self.cap {
            let g = if self.lists[2].bytes >= self.lists[3].bytes {
                Which::B1
            } else {
                Which::B2
            };
            self.drop_lru(g);
        }
    }

    /// Takes the value out of node `j`; keeps it as a ghost or forgets it.
    fn evict_node(&mut self, j: u32, ghost: Option<Which>, evicted: &mut impl FnMut(u128, V)) {
        self.unlink(j);
        let hash = self.nodes[j as usize].hash;
        let value = self.nodes[j as usize].value.take();
        match ghost {
            Some(g) => self.push_mru(j, g),
            None => {
                self.map.remove(&hash);
                self.free.push(j);
            }
        }
        if let Some(v) = value {
            evicted(hash, v);
        }
    }

    fn drop_lru(&mut self, which: Which) {
        let j = self.lists[which as usize].tail;
        if j != NIL {
            let hash = self.nodes[j as usize].hash;
            self.map.remove(&hash);
            self.unlink(j);
            self.release(j);
        }
    }

    fn alloc(&mut self, hash: u128, size: u64, value: V) -> u32 {
        let node = Node {
            hash,
            prev: NIL,
            next: NIL,
            list: Which::T1,
            size,
            value: Some(value),
        };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, i: u32) -> Option<V> {
        self.free.push(i);
        self.nodes[i as usize].value.take()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, list, size) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next, n.list as usize, n.size)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.lists[list].head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.lists[list].tail = prev;
        }
        self.lists[list].bytes -= size;
        self.lists[list].len -= 1;
        let n = &mut self.nodes[i as usize];
        n.prev = NIL;
        n.next = NIL;
    }

    fn push_mru(&mut self, i: u32, which: Which) {
        let l = &mut self.lists[which as usize];
        let old = l.head;
        l.head = i;
        if l.tail == NIL {
            l.tail = i;
        }
        l.bytes += self.nodes[i as usize].size;
        l.len += 1;
        let n = &mut self.nodes[i as usize];
        n.list = which;
        n.prev = NIL;
        n.next = old;
        if old != NIL {
            self.nodes[old as usize].prev = i;
        }
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
        assert_eq!(c.map.len(), s.t1_len + s.t2_len + s.b1_len + s.b2_len);
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
        c.p = 80;
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
