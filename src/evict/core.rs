//! Adaptive Replacement Cache (Megiddo & Modha, FAST 2003), counting bytes:
//! the algorithm, written once over a [`Nodes`] storage, so the per-process
//! memory tier (nodes on the heap, with values) and the directory shared by
//! every process of a store (nodes in a mapped file, without values) make
//! the same decisions.
//!
//! Four LRU lists: T1 (seen once recently) and T2 (seen at least twice) are
//! resident; B1 and B2 remember only the hashes and sizes of what was
//! evicted from them. A hit in B1 means "recency would have helped" and
//! grows the target size `p` of T1; a hit in B2 shrinks it. Sizes are in
//! bytes, so the paper's unit steps become the size of the object at hand,
//! scaled by the ghost-list ratio as in the paper. Nodes are linked by `u32`
//! indices; every operation is O(1).

/// No node.
pub const NIL: u32 = u32::MAX;

/// Which list a node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    T1 = 0,
    T2 = 1,
    B1 = 2,
    B2 = 3,
}

impl Which {
    fn of(v: u32) -> Which {
        match v {
            0 => Which::T1,
            1 => Which::T2,
            2 => Which::B1,
            _ => Which::B2,
        }
    }
    /// T1 or T2.
    pub fn resident(self) -> bool {
        matches!(self, Which::T1 | Which::T2)
    }
}

/// One list: MRU head, LRU tail, total bytes and length. `repr(C)`: it may
/// live in a shared mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct List {
    pub head: u32,
    pub tail: u32,
    pub bytes: u64,
    pub len: u64,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        bytes: 0,
        len: 0,
    };
}

/// Everything of an ARC but its nodes: capacity `c`, target `p`, the lists.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct State {
    pub cap: u64,
    pub p: u64,
    pub lists: [List; 4],
}

impl State {
    pub fn new(cap: u64) -> State {
        State {
            cap,
            p: 0,
            lists: [List::EMPTY; 4],
        }
    }
}

/// A node's key hash, size and links. `repr(C)`, 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub hash_lo: u64,
    pub hash_hi: u64,
    pub size: u64,
    pub prev: u32,
    pub next: u32,
    pub list: u32,
    pub pad: u32,
}

impl Link {
    pub fn hash(&self) -> u128 {
        (self.hash_hi as u128) << 64 | self.hash_lo as u128
    }
    pub fn new(hash: u128, size: u64) -> Link {
        Link {
            hash_lo: hash as u64,
            hash_hi: (hash >> 64) as u64,
            size,
            prev: NIL,
            next: NIL,
            list: Which::T1 as u32,
            pad: 0,
        }
    }
}

/// Where nodes live: a slab of [`Link`]s, a map from hash to slab index and,
/// for the heap storage, a value per resident node.
pub trait Nodes {
    type Value;
    fn state(&self) -> &State;
    fn state_mut(&mut self) -> &mut State;
    fn link(&self, i: u32) -> Link;
    fn link_mut(&mut self, i: u32) -> &mut Link;
    fn find(&self, hash: u128) -> Option<u32>;
    /// A new node for `hash` (not present), linked nowhere yet; `None` when
    /// the slab is full.
    fn alloc(&mut self, hash: u128, size: u64) -> Option<u32>;
    /// Forgets node `i` (map and slab); returns its value.
    fn free(&mut self, i: u32) -> Option<Self::Value>;
    fn take(&mut self, i: u32) -> Option<Self::Value>;
    fn set(&mut self, i: u32, v: Self::Value);
    /// Slab size: no list can be longer (bounds every loop).
    fn capacity(&self) -> u64;
    /// The structure was found inconsistent (only shared storage, which a
    /// killed process may leave half-updated, can be).
    fn broken(&mut self);
    fn is_broken(&self) -> bool;
}

/// The ARC algorithm over a storage.
pub struct Core<S>(pub S);

impl<S: Nodes> Core<S> {
    fn list(&self, w: Which) -> List {
        self.0.state().lists[w as usize]
    }

    /// Resident bytes (T1 + T2).
    pub fn used(&self) -> u64 {
        self.list(Which::T1).bytes + self.list(Which::T2).bytes
    }

    /// Resident nodes.
    pub fn len(&self) -> u64 {
        self.list(Which::T1).len + self.list(Which::T2).len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn total(&self) -> u64 {
        self.0.state().lists.iter().map(|l| l.bytes).sum()
    }

    /// Which list holds `hash`, if any (ghosts included).
    pub fn which(&self, hash: u128) -> Option<Which> {
        self.0.find(hash).map(|i| Which::of(self.0.link(i).list))
    }

    /// A hit on a resident node: moves it to the MRU end of T2.
    pub fn hit(&mut self, hash: u128) -> Option<u32> {
        let i = self.0.find(hash)?;
        if !Which::of(self.0.link(i).list).resident() {
            return None;
        }
        self.unlink(i);
        self.push_mru(i, Which::T2);
        Some(i)
    }

    /// An access as a cache user makes it: a hit, or an insert of a node
    /// without a value (the shared directory, whose values are elsewhere).
    pub fn touch(&mut self, hash: u128, size: u64, evicted: &mut impl FnMut(u128, S::Value))
    where
        S::Value: Default,
    {
        if self.hit(hash).is_none() {
            self.insert(hash, size, S::Value::default(), evicted);
        }
    }

    /// Inserts (or replaces) a value of `size` bytes, applying ARC's cases.
    /// Values pushed out to make room are handed to `evicted`.
    pub fn insert(
        &mut self,
        hash: u128,
        size: u64,
        value: S::Value,
        evicted: &mut impl FnMut(u128, S::Value),
    ) {
        let size = size.min(self.0.state().cap);
        match self.0.find(hash) {
            Some(i) => self.insert_known(i, size, value, evicted),
            None => self.insert_new(hash, size, value, evicted),
        }
    }

    fn insert_known(
        &mut self,
        i: u32,
        size: u64,
        value: S::Value,
        evicted: &mut impl FnMut(u128, S::Value),
    ) {
        let list = Which::of(self.0.link(i).list);
        let b1 = self.list(Which::B1).bytes.max(1);
        let b2 = self.list(Which::B2).bytes.max(1);
        let st = self.0.state_mut();
        match list {
            // Case II: a ghost hit in B1 says T1 was too small.
            Which::B1 => st.p = (st.p + size * (b2 / b1).max(1)).min(st.cap),
            // Case III: a ghost hit in B2 says T2 was too small.
            Which::B2 => st.p = st.p.saturating_sub(size * (b1 / b2).max(1)),
            // Case I: a refill of a resident key counts as a second access.
            Which::T1 | Which::T2 => {}
        }
        self.unlink(i);
        self.0.link_mut(i).size = size;
        self.make_room(size, list == Which::B2, evicted);
        self.0.set(i, value);
        self.push_mru(i, Which::T2);
    }

    fn insert_new(
        &mut self,
        hash: u128,
        size: u64,
        value: S::Value,
        evicted: &mut impl FnMut(u128, S::Value),
    ) {
        let cap = self.0.state().cap;
        let l1 = |c: &Self| c.list(Which::T1).bytes + c.list(Which::B1).bytes;
        // Every loop here ends when a list empties; the step bound only
        // matters for a broken shared directory.
        let mut steps = self.0.capacity() + 1;
        // Case IV: keep L1 = T1 + B1 within c, and L1 + L2 within 2c.
        if l1(self) + size > cap {
            while l1(self) + size > cap && self.list(Which::B1).len > 0 {
                if !self.step(&mut steps) || !self.drop_lru(Which::B1) {
                    return;
                }
            }
            while self.list(Which::T1).bytes + size > cap && self.list(Which::T1).len > 0 {
                if !self.step(&mut steps) {
                    return;
                }
                let Some(j) = self.tail(Which::T1) else {
                    return;
                };
                self.evict_node(j, None, evicted);
            }
        }
        while self.total() + size > 2 * cap && self.list(Which::B2).len > 0 {
            if !self.step(&mut steps) || !self.drop_lru(Which::B2) {
                return;
            }
        }
        self.make_room(size, false, evicted);
        let i = loop {
            if let Some(i) = self.0.alloc(hash, size) {
                break i;
            }
            if !self.step(&mut steps) || !self.free_a_node(evicted) {
                return; // an empty slab that is full: only if broken
            }
        };
        self.0.set(i, value);
        self.push_mru(i, Which::T1);
    }

    /// The slab is full (many small objects): forget the LRU ghost (B1,
    /// then B2), or else the LRU resident node.
    fn free_a_node(&mut self, evicted: &mut impl FnMut(u128, S::Value)) -> bool {
        for g in [Which::B1, Which::B2] {
            if self.list(g).len > 0 {
                return self.drop_lru(g);
            }
        }
        for t in [Which::T1, Which::T2] {
            if let Some(j) = self.tail(t) {
                self.evict_node(j, None, evicted);
                return true;
            }
        }
        self.0.broken();
        false
    }

    /// Changes the size a resident node counts for, in place (it keeps its
    /// list and position); if it grew, the LRU ends are evicted until the
    /// residents fit again (possibly this node). False if not resident.
    pub fn resize(
        &mut self,
        hash: u128,
        size: u64,
        evicted: &mut impl FnMut(u128, S::Value),
    ) -> bool {
        let Some(i) = self.0.find(hash) else {
            return false;
        };
        let n = self.0.link(i);
        if !Which::of(n.list).resident() {
            return false;
        }
        let size = size.min(self.0.state().cap);
        let l = &mut self.0.state_mut().lists[n.list as usize];
        l.bytes = (l.bytes + size).saturating_sub(n.size);
        self.0.link_mut(i).size = size;
        self.make_room(0, false, evicted);
        true
    }

    /// Removes `hash` from every list; returns its value if it was resident.
    pub fn remove(&mut self, hash: u128) -> Option<S::Value> {
        let i = self.0.find(hash)?;
        self.unlink(i);
        self.0.free(i)
    }

    /// Evicts a resident `hash` to its ghost list (as REPLACE would), e.g.
    /// when there is no room to keep it; returns whether it was resident.
    pub fn evict(&mut self, hash: u128, evicted: &mut impl FnMut(u128, S::Value)) -> bool {
        let Some(i) = self.0.find(hash) else {
            return false;
        };
        let ghost = match Which::of(self.0.link(i).list) {
            Which::T1 => Which::B1,
            Which::T2 => Which::B2,
            _ => return false,
        };
        self.evict_node(i, Some(ghost), evicted);
        self.trim_ghosts();
        true
    }

    /// Counts a loop step; false (and broken) when a loop ran longer than
    /// any list can be, or the structure was found broken.
    fn step(&mut self, steps: &mut u64) -> bool {
        *steps = steps.saturating_sub(1);
        if *steps == 0 {
            self.0.broken();
        }
        !self.0.is_broken()
    }

    /// The LRU node of `w`, or `None` if it is empty (or broken).
    fn tail(&mut self, w: Which) -> Option<u32> {
        let l = self.list(w);
        if l.len == 0 {
            return None;
        }
        if l.tail == NIL || self.0.link(l.tail).list != w as u32 {
            self.0.broken();
            return None;
        }
        Some(l.tail)
    }

    /// REPLACE until `size` more bytes fit in T1 + T2.
    fn make_room(&mut self, size: u64, hit_in_b2: bool, evicted: &mut impl FnMut(u128, S::Value)) {
        let mut steps = self.0.capacity() + 1;
        while self.used() + size > self.0.state().cap && !self.is_empty() {
            if !self.step(&mut steps) {
                return;
            }
            let st = self.0.state();
            let (t1, p) = (st.lists[0], st.p);
            let from_t1 = t1.len > 0
                && (t1.bytes > p || (hit_in_b2 && t1.bytes >= p) || st.lists[1].len == 0);
            let (from, ghost) = if from_t1 {
                (Which::T1, Which::B1)
            } else {
                (Which::T2, Which::B2)
            };
            let Some(j) = self.tail(from) else {
                return;
            };
            self.evict_node(j, Some(ghost), evicted);
        }
        self.trim_ghosts();
    }

    /// Ghosts describe at most one cache's worth of history.
    fn trim_ghosts(&mut self) {
        let mut steps = self.0.capacity() + 1;
        while self.list(Which::B1).bytes + self.list(Which::B2).bytes > self.0.state().cap {
            if !self.step(&mut steps) {
                return;
            }
            let g = if self.list(Which::B1).bytes >= self.list(Which::B2).bytes {
                Which::B1
            } else {
                Which::B2
            };
            if !self.drop_lru(g) {
                self.0.broken();
                return;
            }
        }
    }

    /// Takes the value out of node `j`; keeps it as a ghost or forgets it.
    fn evict_node(
        &mut self,
        j: u32,
        ghost: Option<Which>,
        evicted: &mut impl FnMut(u128, S::Value),
    ) {
        self.unlink(j);
        let hash = self.0.link(j).hash();
        let value = match ghost {
            Some(g) => {
                let v = self.0.take(j);
                self.push_mru(j, g);
                v
            }
            None => self.0.free(j),
        };
        if let Some(v) = value {
            evicted(hash, v);
        }
    }

    /// Forgets the LRU node of `which`; false if there was none.
    fn drop_lru(&mut self, which: Which) -> bool {
        let Some(j) = self.tail(which) else {
            return false;
        };
        self.unlink(j);
        self.0.free(j);
        true
    }

    fn unlink(&mut self, i: u32) {
        let n = self.0.link(i);
        if n.prev != NIL {
            self.0.link_mut(n.prev).next = n.next;
        } else {
            self.0.state_mut().lists[n.list as usize].head = n.next;
        }
        if n.next != NIL {
            self.0.link_mut(n.next).prev = n.prev;
        } else {
            self.0.state_mut().lists[n.list as usize].tail = n.prev;
        }
        let l = &mut self.0.state_mut().lists[n.list as usize];
        let ok = l.bytes >= n.size && l.len > 0;
        l.bytes = l.bytes.saturating_sub(n.size);
        l.len = l.len.saturating_sub(1);
        if !ok {
            self.0.broken();
        }
        let n = self.0.link_mut(i);
        n.prev = NIL;
        n.next = NIL;
    }

    fn push_mru(&mut self, i: u32, which: Which) {
        let size = self.0.link(i).size;
        let l = &mut self.0.state_mut().lists[which as usize];
        let old = l.head;
        l.head = i;
        if l.tail == NIL {
            l.tail = i;
        }
        l.bytes += size;
        l.len += 1;
        let n = self.0.link_mut(i);
        n.list = which as u32;
        n.prev = NIL;
        n.next = old;
        if old != NIL {
            self.0.link_mut(old).prev = i;
        }
    }
}
