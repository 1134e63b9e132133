//! The shared RAM tier: ARC decides what survives its recycling, the rest
//! moves down to the disk tiers; memory tiers hold handles into it.

use bytes::Bytes;
use cdncore::{Cache, Meta, Purge};
use std::path::Path;

fn body_for(key: &str, len: usize) -> Bytes {
    let h = key.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    (0..len).map(|i| (h >> (i % 57)) as u8 ^ i as u8).collect()
}

fn meta(tag: u16) -> Meta {
    let mut m = Meta::with_ttl(cdncore::now_ms(), 3_600_000);
    m.tags = vec![tag];
    m
}

/// 1 MiB of RAM tier in 16 regions of 64 KiB; a disk tier of 8 MiB.
fn conf(dir: &Path) -> String {
    format!(
        "mem=1m shards=1 ram={0}/ram tier={0}/disk,size=8m,region=256k",
        dir.display()
    )
}

fn body_of(c: &Cache, key: &str) -> Option<Vec<u8>> {
    let l = c.get(key.as_bytes()).unwrap();
    l.object().map(|o| o.body().to_vec())
}

#[test]
fn arc_residents_survive_laps_the_rest_moves_down_and_purged_ones_go() {
    let d = tempfile::tempdir().unwrap();
    let c = Cache::open_str(&conf(d.path())).unwrap();
    let writer = Cache::open_str(&conf(d.path())).unwrap();
    c.insert(b"r.com/hot", meta(1), body_for("hot", 5000))
        .unwrap();
    c.insert(b"r.com/gone", meta(9), body_for("gone", 5000))
        .unwrap();
    c.purge(&Purge::Tag(9)).unwrap();
    // 3 MiB of cold objects through a 1 MiB RAM tier (three laps), while
    // `hot` is hit now and then (memory-handle hits, reported in batches).
    for i in 0..600 {
        let k = format!("r.com/cold/{i}");
        writer
            .insert(k.as_bytes(), meta(1), body_for(&k, 5000))
            .unwrap();
        if i % 8 == 0 {
            assert_eq!(body_of(&c, "r.com/hot").unwrap(), body_for("hot", 5000));
            c.flush_ram_hits();
        }
    }
    let ram = &c.tiers()[0];
    let st = ram.stats();
    let recycled: u64 = [&c, &writer]
        .iter()
        .map(|x| x.tiers()[0].stats().recycled)
        .sum();
    assert!(recycled >= 32, "two laps at least: {recycled}");
    assert!(ram.get(b"r.com/hot").unwrap().is_some(), "resident: kept");
    // Cold ones left the RAM tier but are served from the disk tier.
    assert!(ram.get(b"r.com/cold/0").unwrap().is_none());
    assert!(c.tiers()[1].get(b"r.com/cold/0").unwrap().is_some());
    assert_eq!(
        body_of(&c, "r.com/cold/0").unwrap(),
        body_for("r.com/cold/0", 5000)
    );
    let wst = writer.tiers()[0].stats();
    assert!(wst.demoted + st.demoted > 300, "{wst:?}");
    assert!(wst.reinserted + st.reinserted > 0, "{wst:?}");
    // The purged one was dropped at recycling, not moved down.
    assert!(c
        .tiers()
        .iter()
        .all(|t| t.get(b"r.com/gone").unwrap().is_none()));
    assert!(wst.purged_reclaimed + st.purged_reclaimed >= 1, "{wst:?}");
    let arc = c.ram_stats().unwrap();
    assert_eq!(arc.resets, 0);
    assert!(arc.arc.t2_len >= 1, "hot is frequent: {arc:?}");
    assert!(arc.arc.t1_bytes + arc.arc.t2_bytes <= arc.arc.capacity);
}

#[test]
fn a_handle_into_a_recycled_region_is_dropped_and_the_object_found_again() {
    let d = tempfile::tempdir().unwrap();
    let c = Cache::open_str(&conf(d.path())).unwrap();
    let writer = Cache::open_str(&conf(d.path())).unwrap();
    let k = "s.com/once";
    writer
        .insert(k.as_bytes(), meta(1), body_for(k, 10_000))
        .unwrap();
    // A RAM-tier hit: `c` keeps a handle.
    assert_eq!(body_of(&c, k).unwrap(), body_for(k, 10_000));
    let held = c.get(k.as_bytes()).unwrap();
    assert!(!held.object().unwrap().from_block(), "a memory handle");
    drop(held);
    let before = c.counters().objects;
    for i in 0..300 {
        let k = format!("s.com/fill/{i}");
        writer
            .insert(k.as_bytes(), meta(1), body_for(&k, 5000))
            .unwrap();
    }
    // Its region was recycled: the sweep (this one, or the background
    // sweeper's if it came first) drops the handle, so the old file's pages
    // can go...
    c.reclaim_now();
    assert_eq!(c.counters().objects, before - 1);
    // ... and a lookup finds the object where it is now.
    assert_eq!(body_of(&c, k).unwrap(), body_for(k, 10_000));
}

#[test]
fn a_sliced_object_is_served_as_extents_of_its_slices_in_order() {
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().unwrap();
    let c = Cache::open_str(&conf(d.path())).unwrap();
    let other = Cache::open_str(&conf(d.path())).unwrap();
    // The RAM tier's slices are 16 KiB (a quarter of its 64 KiB regions).
    let (k, len) = ("x.com/sliced", 100_000);
    c.insert(k.as_bytes(), meta(1), body_for(k, len)).unwrap();
    for round in 0..2 {
        let l = other.get(k.as_bytes()).unwrap();
        let o = l.object().unwrap();
        assert_eq!(o.from_block(), round == 0, "a handle after the first hit");
        assert!(o.is_sliced() && o.extent().is_none());
        assert_eq!(o.size(), len as u64);
        let ext = o.extents();
        assert_eq!(ext.len(), len.div_ceil(16 << 10));
        let mut joined = Vec::new();
        for e in &ext {
            let mut b = vec![0u8; e.len as usize];
            e.file().read_exact_at(&mut b, e.offset).unwrap();
            joined.extend_from_slice(&b);
        }
        assert_eq!(joined, body_for(k, len), "extents cover the body in order");
        assert_eq!(o.body(), &body_for(k, len), "joined on request");
    }
    // The filling process's own entry was rebound to the slices too.
    let mine = c.get(k.as_bytes()).unwrap();
    assert_eq!(mine.object().unwrap().extents().len(), 7);
}

/// A store whose disk tier is at `disk` and RAM tier at `ram`, 4 MiB each.
fn store_at(ram: &Path, disk: &Path) -> Cache {
    let conf = format!(
        "mem=4m shards=1 ram={} tier={},size=8m,region=1m",
        ram.display(),
        disk.display()
    );
    Cache::open_str(&conf).unwrap()
}

#[test]
fn objects_above_ram_max_go_to_a_disk_tier_and_leave_no_heap_copy() {
    // CARGO_TARGET_TMPDIR is under target/, on the build's disk (not tmpfs).
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ram = tempfile::tempdir_in("/dev/shm").unwrap();
    let c = store_at(ram.path(), &disk.path().join("d"));
    let other = store_at(ram.path(), &disk.path().join("d"));
    let (small, large) = (body_for("small", 200 << 10), body_for("large", 300 << 10));
    c.insert(b"r.com/small", meta(1), small.clone()).unwrap();
    c.insert(b"r.com/large", meta(1), large.clone()).unwrap();
    let (tram, tdisk) = (&c.tiers()[0], &c.tiers()[1]);
    assert!(
        tram.get(b"r.com/small").unwrap().is_some(),
        "<= ram_max: RAM tier"
    );
    assert!(tdisk.get(b"r.com/small").unwrap().is_none());
    assert!(
        tram.get(b"r.com/large").unwrap().is_none(),
        "> ram_max: not in RAM"
    );
    assert!(
        tdisk.get(b"r.com/large").unwrap().is_some(),
        "> ram_max: disk tier"
    );
    // No heap copy kept for it in this process: the memory tier holds the
    // small object's handle only.
    assert_eq!(c.counters().objects, 1, "{:?}", c.counters());
    for s in [&c, &other] {
        assert!(body_of(s, "r.com/large").unwrap() == large.to_vec());
        assert!(body_of(s, "r.com/small").unwrap() == small.to_vec());
    }
    // A newer large version replaces a small one held in the RAM tier.
    let again = body_for("again", 400 << 10);
    c.insert(b"r.com/small", meta(1), again.clone()).unwrap();
    assert!(c.tiers()[0].get(b"r.com/small").unwrap().is_none());
    let third = store_at(ram.path(), &disk.path().join("d"));
    assert!(body_of(&third, "r.com/small").unwrap() == again.to_vec());
    // Hot large hits are not promoted into the RAM tier.
    for _ in 0..4 {
        assert!(body_of(&c, "r.com/large").is_some());
    }
    assert!(c.tiers()[0].get(b"r.com/large").unwrap().is_none());
}

#[test]
fn with_every_tier_in_ram_large_objects_stay_in_the_ram_tier() {
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let c = store_at(&shm.path().join("ram"), &shm.path().join("d"));
    c.insert(b"r.com/large", meta(1), body_for("large", 300 << 10))
        .unwrap();
    assert!(c.tiers()[0].get(b"r.com/large").unwrap().is_some());
    assert!(c.tiers()[1].get(b"r.com/large").unwrap().is_none());
}

#[test]
fn ram_max_is_a_store_setting() {
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ram = tempfile::tempdir_in("/dev/shm").unwrap();
    let conf = format!(
        "mem=4m shards=1 ram_max=1m ram={} tier={}/d,size=8m,region=2m",
        ram.path().display(),
        disk.path().display()
    );
    let c = Cache::open_str(&conf).unwrap();
    c.insert(b"r.com/large", meta(1), body_for("large", 300 << 10))
        .unwrap();
    assert!(c.tiers()[0].get(b"r.com/large").unwrap().is_some());
    assert!(Cache::open_str("ram_max=12q").is_err());
}

/// Memory-tier handles (objects in the RAM tier) held by a cache opened as
/// one of `processes` sharing the store, after 2000 small objects were
/// stored and each hit once (memory-handle hits or RAM-tier hits).
fn handles_held(processes: u32) -> u64 {
    let d = tempfile::tempdir().unwrap();
    let conf = format!(
        "mem=4m shards=1 processes={processes} ram={0}/ram tier={0}/disk,size=8m,region=256k",
        d.path().display()
    );
    let c = Cache::open_str(&conf).unwrap();
    for i in 0..2000 {
        let k = format!("h.com/{i}");
        c.insert(k.as_bytes(), meta(1), body_for(&k, 500)).unwrap();
    }
    for i in 0..2000 {
        let k = format!("h.com/{i}");
        assert_eq!(body_of(&c, &k).unwrap(), body_for(&k, 500), "{k}");
    }
    c.counters().objects
}

#[test]
fn handles_take_a_share_of_mem_split_between_the_processes() {
    // 1000 KiB of bodies fit the 4 MiB RAM tier; the handles into them
    // are bounded by their heap (mem / 4 for all processes together), not
    // by the bodies' bytes.
    let one = handles_held(1);
    let four = handles_held(4);
    assert!((20..2000).contains(&one), "one process holds {one} handles");
    assert!(
        four > 0 && four * 3 <= one,
        "four processes: {four} each, one: {one}"
    );
}

#[test]
fn recycled_ram_regions_are_unmapped_without_a_lookup() {
    let d = tempfile::tempdir().unwrap();
    let c = Cache::open_str(&conf(d.path())).unwrap();
    let writer = Cache::open_str(&conf(d.path())).unwrap();
    for i in 0..100 {
        let k = format!("u.com/c/{i}");
        c.insert(k.as_bytes(), meta(1), body_for(&k, 5000)).unwrap();
    }
    // Three laps of the RAM tier by the other cache (another process in
    // nginx), while `c` looks nothing up: only housekeeping drops `c`'s
    // mappings of the region files recycling replaced (an unlinked tmpfs
    // file keeps its pages while it is mapped).
    for i in 0..600 {
        let k = format!("u.com/w/{i}");
        writer
            .insert(k.as_bytes(), meta(1), body_for(&k, 5000))
            .unwrap();
    }
    writer.reclaim_now();
    assert!(writer.tiers()[0].stats().recycled >= 32);
    c.reclaim_now();
    let ram = d.path().join("ram");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let old: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains(&*ram.to_string_lossy()) && l.ends_with("(deleted)"))
        .collect();
    assert!(old.is_empty(), "still mapped: {old:#?}");
}

/// With the RAM tier on tmpfs, the inline lookup (what an event loop does
/// before it asks a thread) finds another process's object without
/// `mincore`, and still verifies it: a lookup of a missing key, or of an
/// object stored as slices, is left to the full lookup.
#[test]
fn inline_lookups_of_a_tmpfs_ram_tier_find_whole_objects_only() {
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ram = tempfile::tempdir_in("/dev/shm").unwrap();
    let conf = format!(
        "mem=4m shards=1 max_object=1m ram_max=1m ram={} tier={}/d,size=8m,region=1m",
        ram.path().display(),
        disk.path().display()
    );
    let (a, b) = (
        Cache::open_str(&conf).unwrap(),
        Cache::open_str(&conf).unwrap(),
    );
    let small = body_for("s", 3000);
    a.insert(b"r.com/s", meta(1), small.clone()).unwrap();
    // 300 KiB: the RAM tier's regions are mem / 16 = 256 KiB, its slices
    // 64 KiB, so a manifest and five slices.
    let sliced = body_for("m", 300 << 10);
    a.insert(b"r.com/m", meta(1), sliced.clone()).unwrap();
    let now = cdncore::now_ms();
    let got = b
        .get_resident_at(b"r.com/s", now)
        .unwrap()
        .expect("inline hit");
    assert!(got.object().expect("fresh").body() == &small[..]);
    assert!(b.get_resident_at(b"r.com/none", now).unwrap().is_none());
    assert!(b.get_resident_at(b"r.com/m", now).unwrap().is_none());
    assert!(
        b.get(b"r.com/m")
            .unwrap()
            .object()
            .expect("full lookup")
            .body()
            == &sliced[..]
    );
}
