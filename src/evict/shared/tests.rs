use super::*;
use crate::evict::ArcCache;
use std::sync::Mutex as StdMutex;

fn quiet() -> Log {
    Arc::new(|_: &str| {})
}

/// A log that keeps its lines.
fn recording() -> (Log, Arc<StdMutex<Vec<String>>>) {
    let lines = Arc::new(StdMutex::new(Vec::new()));
    let l = lines.clone();
    let log: Log = Arc::new(move |s: &str| l.lock().unwrap().push(s.to_string()));
    (log, lines)
}

fn geo(nodes: u32, cap: u64) -> Geometry {
    Geometry { nodes, cap }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn the_mapped_directory_decides_exactly_as_the_heap_arc() {
    let d = tempfile::tempdir().unwrap();
    let dir = SharedArc::open(&d.path().join("arc"), geo(4096, 10_000), quiet()).unwrap();
    let mut heap: ArcCache<()> = ArcCache::new(10_000);
    let mut x = 12345u64;
    for step in 0..30_000 {
        let r = xorshift(&mut x);
        let k = (r % 500) as u128 | 1 << 100;
        let size = 1 + (r >> 32) % 400;
        if r % 7 == 0 {
            heap.remove(k);
            dir.remove(k);
        } else {
            let hit = heap.get(k).is_some();
            if !hit {
                heap.insert(k, size, (), &mut |_, _| {});
            }
            assert_eq!(dir.access(k, size), hit, "step {step}");
        }
        assert_eq!(dir.stats().arc, heap.stats(), "step {step}");
    }
    for k in 0..500u128 {
        let k = k | 1 << 100;
        assert_eq!(dir.which(k), heap.which(k));
    }
    assert_eq!(dir.stats().resets, 0);
}

#[test]
fn batched_hits_apply_every_batch_and_before_inserts() {
    let d = tempfile::tempdir().unwrap();
    let dir = SharedArc::open(&d.path().join("arc"), geo(1024, 1000), quiet()).unwrap();
    dir.insert(1, 10);
    dir.hit(1, 10);
    assert_eq!(dir.which(1), Some(Which::T1), "buffered, not applied");
    dir.insert(2, 10);
    assert_eq!(dir.which(1), Some(Which::T2), "applied before the insert");
    for _ in 0..BATCH {
        dir.hit(2, 10);
    }
    assert_eq!(dir.which(2), Some(Which::T2), "a full batch applies itself");
    // A hit on a key the directory does not know (after a reset) learns it.
    dir.hit(3, 10);
    dir.flush();
    assert_eq!(dir.which(3), Some(Which::T1));
}

#[test]
fn a_second_mapping_sees_the_same_directory_and_reopen_keeps_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("arc");
    let a = SharedArc::open(&p, geo(1024, 1000), quiet()).unwrap();
    let b = SharedArc::open(&p, geo(1024, 1000), quiet()).unwrap();
    a.insert(7, 100);
    b.hit(7, 100);
    b.flush();
    assert_eq!(a.which(7), Some(Which::T2), "b's hit reached a's view");
    drop((a, b));
    let c = SharedArc::open(&p, geo(1024, 1000), quiet()).unwrap();
    assert_eq!(c.which(7), Some(Which::T2));
    assert_eq!(c.stats().arc.t2_bytes, 100);
}

#[test]
fn another_geometry_or_a_damaged_header_starts_empty_with_a_log_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("arc");
    SharedArc::open(&p, geo(1024, 1000), quiet())
        .unwrap()
        .insert(7, 100);
    let (log, lines) = recording();
    let other = SharedArc::open(&p, geo(2048, 1000), log.clone()).unwrap();
    assert_eq!(other.which(7), None);
    assert!(lines.lock().unwrap()[0].contains("another geometry"));
    other.insert(8, 10);
    drop(other);
    // Scribble the version word.
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let again = SharedArc::open(&p, geo(2048, 1000), log).unwrap();
    assert_eq!(again.which(8), None);
    assert!(lines.lock().unwrap()[1].contains("header damaged"));
    assert!(SharedArc::open(&p, geo(8, 1000), quiet()).is_err());
}

#[test]
fn a_full_slab_drops_ghosts_first_then_the_lru_resident() {
    let d = tempfile::tempdir().unwrap();
    let dir = SharedArc::open(&d.path().join("arc"), geo(16, 1000), quiet()).unwrap();
    for k in 0..16u128 {
        dir.insert(k, 10);
    }
    let s = dir.stats().arc;
    assert_eq!((s.t1_len, s.b1_len), (16, 0));
    // The 17th key has no node and there are no ghosts: the LRU resident
    // (key 0) is forgotten.
    dir.insert(100, 10);
    assert_eq!(dir.which(0), None);
    assert_eq!(dir.which(100), Some(Which::T1));

    // With ghosts, a full slab costs only history: the same residents as
    // an ARC without a node limit.
    let dir = SharedArc::open(&d.path().join("arc2"), geo(16, 100), quiet()).unwrap();
    let mut heap: ArcCache<()> = ArcCache::new(100);
    let mut access = |k: u128| {
        if heap.get(k).is_none() {
            heap.insert(k, 10, (), &mut |_, _| {});
        }
        dir.access(k, 10);
    };
    for k in 0..10u128 {
        access(k);
        access(k);
    }
    for k in 10..20u128 {
        access(k);
    }
    let s = dir.stats().arc;
    let nodes = s.t1_len + s.t2_len + s.b1_len + s.b2_len;
    let h = heap.stats();
    assert_eq!(nodes, 16, "{s:?}");
    assert!(h.b1_len + h.b2_len > s.b1_len + s.b2_len, "{h:?} {s:?}");
    assert_eq!((s.t1_len, s.t2_len), (h.t1_len, h.t2_len));
    for k in 0..20u128 {
        let resident = |w: Option<Which>| w.is_some_and(Which::resident);
        assert_eq!(resident(dir.which(k)), resident(heap.which(k)), "{k}");
    }
}

#[test]
fn recycling_keeps_residents_within_a_budget_and_evicts_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let dir = SharedArc::open(&d.path().join("arc"), geo(1024, 1000), quiet()).unwrap();
    for k in 1..=4u128 {
        dir.insert(k, 100);
    }
    dir.remove(2);
    let objects = [(1, 100), (2, 100), (3, 100), (4, 100), (5, 100)];
    let (keep, forced) = dir.keep(&objects, 150);
    // 1 fits, 2 and 5 are not resident, 3 and 4 no longer fit.
    assert_eq!(keep, [true, false, false, false, false]);
    assert_eq!(forced, 2);
    assert_eq!(dir.which(3), Some(Which::B1), "evicted to its ghost list");
    assert_eq!(dir.which(1), Some(Which::T1));
}

#[test]
fn a_lock_left_by_a_dead_process_is_taken_over_and_the_directory_reset() {
    let d = tempfile::tempdir().unwrap();
    let (log, lines) = recording();
    let dir = SharedArc::open(&d.path().join("arc"), geo(1024, 1000), log).unwrap();
    dir.insert(1, 10);
    // The pid of a process that has exited (and been reaped).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    dir.word(W_LOCK).store(5 << 32 | dead as u64, Relaxed);
    dir.insert(2, 10);
    assert_eq!(dir.stats().resets, 1);
    assert_eq!(dir.which(1), None, "reset: the half-updated lists are gone");
    assert_eq!(dir.which(2), Some(Which::T1), "and it keeps working");
    assert!(lines.lock().unwrap()[0].contains("died or hung"));
    assert_eq!(dir.word(W_LOCK).load(Relaxed), 0, "released");
}

#[test]
fn a_lock_held_too_long_by_a_live_process_is_taken_over() {
    let d = tempfile::tempdir().unwrap();
    let dir = SharedArc::open(&d.path().join("arc"), geo(1024, 1000), quiet()).unwrap();
    // Our own pid: alive, so only the age of the word lets it go.
    dir.word(W_LOCK)
        .store(u64::MAX << 32 | std::process::id() as u64, Relaxed);
    dir.insert(2, 10);
    assert_eq!(dir.stats().resets, 1);
    assert_eq!(dir.which(2), Some(Which::T1));
}

#[test]
fn scribbled_slab_and_table_cost_resets_never_a_panic_or_a_hang() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("arc");
    let g = geo(64, 1000);
    let dir = SharedArc::open(&p, g, quiet()).unwrap();
    let mut x = 99u64;
    // Nothing to assert per round: getting through them is the point.
    for _ in 0..200 {
        for _ in 0..20 {
            let r = xorshift(&mut x);
            dir.access((r % 100) as u128, 1 + (r >> 40) % 80);
        }
        // Scribble a few random bytes past the header words.
        // SAFETY: inside the mapping; this thread is the only user.
        unsafe {
            for _ in 0..4 {
                let r = xorshift(&mut x) as usize;
                let at = STATE_AT + r % (g.file_len() - STATE_AT);
                *dir.base.add(at) = (r >> 32) as u8;
            }
        }
        dir.stats();
    }
    assert!(dir.stats().resets > 0, "scribbles were noticed");
    // Emptied again, it is consistent.
    // SAFETY: this thread is the only user.
    unsafe { clear(dir.base, g) };
    for k in 0..50u128 {
        dir.access(k, 10);
    }
    let s = dir.stats().arc;
    assert_eq!(s.t1_len + s.t2_len, 50);
}
