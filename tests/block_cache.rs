//! The cache with block tiers: write-through, reopen, promotion with an
//! admission filter, demotion, purge across tiers, a full disk.

use bytes::Bytes;
use cdncore::{Cache, Lookup, Meta, Purge};
use std::path::Path;
use std::process::Command;

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

/// The RAM tier goes beside the fast tier (tests must leave nothing in
/// /dev/shm): `<fast>/ram`.
fn conf(fast: &Path, slow: &Path) -> String {
    format!(
        "mem=1m shards=1 tier={},size=512k,region=64k,slice=16k tier={},size=8m,region=64k,slice=16k ram={}/ram",
        fast.display(),
        slow.display(),
        fast.display()
    )
}

fn body_of(l: &Lookup) -> Option<Vec<u8>> {
    l.object().map(|o| o.body().to_vec())
}

#[test]
fn write_through_is_seen_by_a_second_cache_and_after_reopen() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c1 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    for i in 0..20 {
        let k = format!("site.com/x/{i}");
        c1.insert(k.as_bytes(), meta(1), body_for(&k, 3000))
            .unwrap();
    }
    let c2 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let k = "site.com/x/7";
    let got = c2.get(k.as_bytes()).unwrap();
    assert!(got.is_fresh());
    assert_eq!(body_of(&got).unwrap(), body_for(k, 3000));
    assert_eq!(c2.block_counters().unwrap().tier_hits(), 1);
    assert!(
        got.object().unwrap().from_block(),
        "c2 found it in the tier"
    );
    let own = c1.get(k.as_bytes()).unwrap();
    assert!(!own.object().unwrap().from_block(), "c1 has it in memory");
    drop((c1, c2));
    let c3 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    for i in 0..20 {
        let k = format!("site.com/x/{i}");
        assert_eq!(
            body_of(&c3.get(k.as_bytes()).unwrap()).unwrap(),
            body_for(&k, 3000)
        );
    }
    // Larger than a slice (16k) but within the memory limit: stored as
    // slices, and still a whole object to `get` from another cache.
    let big = body_for("site.com/big", 100_000);
    c3.insert(b"site.com/big", meta(1), big.clone()).unwrap();
    let c4 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    assert_eq!(body_of(&c4.get(b"site.com/big").unwrap()).unwrap(), big);
    assert!(c3.remove(b"site.com/x/3").unwrap());
    assert!(c3.get(b"site.com/x/3").unwrap().object().is_none());
}

#[test]
fn purge_reaches_block_tiers_and_other_caches() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c1 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    c1.insert(b"p.com/a", meta(7), body_for("a", 100)).unwrap();
    c1.insert(b"p.com/b", meta(8), body_for("b", 100)).unwrap();
    let c2 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    assert!(c2.get(b"p.com/a").unwrap().is_fresh());
    // A purge recorded by one cache (one process) is seen by the other, in
    // its memory tier and its block tiers.
    c1.purge(&Purge::Tag(7)).unwrap();
    assert!(c2.get(b"p.com/a").unwrap().object().is_none());
    assert!(c2.get(b"p.com/b").unwrap().is_fresh());
    let c3 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    assert!(
        c3.get(b"p.com/a").unwrap().object().is_none(),
        "purge survives reopen"
    );
    c3.purge(&Purge::Regex("^p\\.com/b$".into())).unwrap();
    assert!(c1.get(b"p.com/b").unwrap().object().is_none());
}

#[test]
fn a_refill_by_another_cache_replaces_a_purged_memory_copy() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c1 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let c2 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    // Both hold version 1 in their own memory tier.
    c1.insert(b"r.com/v", meta(3), body_for("v1", 500)).unwrap();
    c2.insert(b"r.com/v", meta(3), body_for("v1", 500)).unwrap();
    c1.purge(&Purge::Prefix(b"r.com/".to_vec())).unwrap();
    c1.insert(b"r.com/v", meta(3), body_for("v2", 500)).unwrap();
    // c2's memory copy is purged; the refill in the shared tier serves.
    let got = c2.get(b"r.com/v").unwrap();
    assert!(got.is_fresh(), "c2 must see c1's refill, not a miss");
    assert_eq!(body_of(&got).unwrap(), body_for("v2", 500));
}

#[test]
fn cold_objects_demote_and_hot_ones_promote_past_the_filter() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    // 1.5 MiB through a 512 KiB fast tier: the early objects are demoted.
    for i in 0..300 {
        let k = format!("d.com/{i}");
        c.insert(k.as_bytes(), meta(1), body_for(&k, 5000)).unwrap();
    }
    let bc = c.block_counters().unwrap();
    assert!(bc.demotions() > 50, "{bc:?}");
    drop(c);
    let c = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let ram = &c.tiers()[0];
    assert!(
        ram.get(b"d.com/0").unwrap().is_none(),
        "d.com/0 should be on a disk tier"
    );
    // A scan reads each key once: nothing is promoted.
    for i in 0..100 {
        let k = format!("d.com/{i}");
        assert_eq!(
            body_of(&c.get(k.as_bytes()).unwrap()).unwrap(),
            body_for(&k, 5000)
        );
    }
    let bc = c.block_counters().unwrap();
    assert_eq!(bc.promotions, 0, "{bc:?}");
    assert_eq!(bc.promotions_refused, 100);
    // A second hit promotes: into the RAM tier (and memory, as a handle).
    let again = c.get(b"d.com/0").unwrap();
    assert_eq!(body_of(&again).unwrap(), body_for("d.com/0", 5000));
    assert_eq!(c.block_counters().unwrap().promotions, 1);
    assert!(
        ram.get(b"d.com/0").unwrap().is_some(),
        "promoted to the RAM tier"
    );
    let tier_hits = c.block_counters().unwrap().tier_hits();
    let mem = c.get(b"d.com/0").unwrap();
    assert!(mem.is_fresh());
    assert_eq!(
        c.block_counters().unwrap().tier_hits(),
        tier_hits,
        "now served from memory"
    );
    // The promoted copy carries the body's checksum (taken from the
    // verified record, not hashed again).
    let o = mem.object().unwrap();
    assert_eq!(o.meta().checksum, xxhash_rust::xxh3::xxh3_64(o.body()));
}

#[test]
fn promote_max_keeps_large_hits_out_of_the_ram_tier() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let conf = format!("{} promote_max=1k", conf(a.path(), b.path()));
    let c = Cache::open_str(&conf).unwrap();
    // Both in the first disk tier (commits would go to the RAM tier).
    let born = u64::MAX / 2;
    for (k, n) in [("big", 5000), ("small", 500)] {
        let key = format!("p.com/{k}");
        c.tiers()[1]
            .put(key.as_bytes(), &meta(1), born, &body_for(k, n))
            .unwrap();
    }
    for _ in 0..3 {
        for (k, n) in [("big", 5000), ("small", 500)] {
            let got = c.get(format!("p.com/{k}").as_bytes()).unwrap();
            assert_eq!(body_of(&got).unwrap(), body_for(k, n));
        }
    }
    // Admitted from their second hit on; only the small one was copied
    // into the RAM tier (and is a memory handle from then on), so the big
    // one came from the disk tier every time.
    let bc = c.block_counters().unwrap();
    assert_eq!(bc.promotions, 1, "{bc:?}");
    assert_eq!((bc.tiers[1].hits, bc.tiers[0].hits), (3 + 2, 0));
    assert!(c.tiers()[0].get(b"p.com/small").unwrap().is_some());
    assert!(c.tiers()[0].get(b"p.com/big").unwrap().is_none());
    assert!(Cache::open_str("mem=1m max_object=4k promote_max=8k")
        .err()
        .is_some_and(|e| e.to_string().contains("promote_max")));
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(d.path())
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the CI runs as root)"
        );
        Tmpfs(d)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn full_disk_degrades_the_tier_and_the_cache_keeps_serving() {
    // The RAM tier (32 MiB of 2 MiB regions) on an 8 MiB tmpfs: /dev/shm
    // running full.
    let fs = Tmpfs::mount("8m");
    let disk = tempfile::tempdir().unwrap();
    let text = format!(
        "mem=32m shards=1 ram={}/ram tier={},size=64m,region=1m,slice=256k",
        fs.0.path().display(),
        disk.path().display()
    );
    let c = Cache::open_str(&text).unwrap();
    let mut failed_at = None;
    for i in 0..200 {
        let k = format!("f.com/{i}");
        // Inserts keep succeeding: memory holds what the disk cannot.
        c.insert(k.as_bytes(), meta(1), body_for(&k, 100_000))
            .unwrap();
        if failed_at.is_none() && c.tiers()[0].degraded() {
            failed_at = Some(i);
        }
    }
    let at = failed_at.expect("the 8 MiB tmpfs never filled up");
    let st = c.tiers()[0].stats();
    assert!(st.errors >= 1, "{st:?}");
    assert!(at > 5, "some objects fit before the disk filled ({at})");
    // Everything still served is byte-correct, from memory or the tier.
    let mut served = 0;
    for i in 0..200 {
        let k = format!("f.com/{i}");
        if let Some(b) = body_of(&c.get(k.as_bytes()).unwrap()) {
            assert_eq!(b, body_for(&k, 100_000), "{k}");
            served += 1;
        }
    }
    assert!(served >= 30, "served {served}");
    // Objects written before the disk filled are still on the tier.
    assert_eq!(
        c.tiers()[0].get(b"f.com/0").unwrap().unwrap().body.len(),
        100_000
    );
    drop(c);
}

#[test]
fn large_objects_through_the_cache_by_range_and_purge() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let text = format!(
        "mem=1m shards=1 tier={},size=16m,region=1m,slice=64k tier={},size=8m,region=1m ram={}/ram",
        a.path().display(),
        b.path().display(),
        a.path().display()
    );
    let c = Cache::open_str(&text).unwrap();
    let body = body_for("large", 3_000_000); // larger than the memory tier
    let mut w = c.large_writer(b"l.com/video", meta(9)).unwrap();
    for part in body.chunks(100_000) {
        w.write(part).unwrap();
    }
    w.commit().unwrap();
    let read = |from: u64, to: u64| {
        let mut got = Vec::new();
        let m = c
            .read_range(b"l.com/video", from, to, &mut |p| {
                got.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
        m.map(|m| (m.size, got))
    };
    let (size, got) = read(1_000_000, 1_200_000).unwrap();
    assert_eq!(size, 3_000_000);
    assert_eq!(got, body[1_000_000..1_200_000]);
    assert_eq!(read(0, u64::MAX).unwrap().1, body);
    c.purge(&Purge::Tag(9)).unwrap();
    assert!(read(0, 10).is_none(), "purged large object served");
}

#[test]
fn a_key_purge_counts_a_copy_another_process_stored() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let purger = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    writer
        .insert(b"site.com/p", meta(1), body_for("site.com/p", 500))
        .unwrap();
    // The purger never looked the key up: its memory tier has no copy.
    let r = purger.purge(&Purge::Key(b"site.com/p".to_vec())).unwrap();
    assert_eq!(r.covered, Some(1), "the block-tier copy counts");
    let r = purger.purge(&Purge::Key(b"site.com/p".to_vec())).unwrap();
    assert_eq!(r.covered, Some(0), "nothing left to purge");
    assert!(!writer.get(b"site.com/p").unwrap().is_fresh());
}

#[test]
fn memory_and_block_lookups_split() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c1 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let k = "site.com/split";
    c1.insert(k.as_bytes(), meta(1), body_for(k, 3000)).unwrap();
    let now = cdncore::now_ms();
    // c1 has it in memory: the memory lookup answers.
    let mem = c1
        .get_mem_at(k.as_bytes(), now)
        .unwrap()
        .expect("in memory");
    assert_eq!(body_of(&mem).unwrap(), body_for(k, 3000));
    // c2 does not: the memory lookup defers to the block tiers.
    let c2 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    assert!(c2.get_mem_at(k.as_bytes(), now).unwrap().is_none());
    let blk = c2.get_block_at(k.as_bytes(), now).unwrap();
    assert!(blk.object().unwrap().from_block());
    assert_eq!(body_of(&blk).unwrap(), body_for(k, 3000));
    assert!(c2
        .get_block_at(b"site.com/none", now)
        .unwrap()
        .object()
        .is_none());
    // Without block tiers a memory miss is a final miss.
    let m = Cache::open_str("mem=1m").unwrap();
    assert!(matches!(
        m.get_mem_at(b"x/y", now).unwrap(),
        Some(Lookup::Miss)
    ));
}

#[test]
fn a_deferred_write_through_reaches_the_tier_only_when_run() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c1 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let c2 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let (k1, k2) = ("site.com/d/1", "site.com/d/2");
    let mut w = c1.writer(k1.as_bytes(), meta(1)).unwrap();
    w.write(&body_for(k1, 5000)).unwrap();
    let (commit, later) = w.commit_deferred().unwrap();
    assert_eq!(commit, cdncore::Commit::Stored);
    let later = later.expect("a block tier wants the write");
    assert_eq!(later.key(), k1.as_bytes());
    assert!(
        c1.get(k1.as_bytes()).unwrap().is_fresh(),
        "in memory at once"
    );
    assert!(
        !c2.get(k1.as_bytes()).unwrap().is_fresh(),
        "not on disk yet"
    );
    later.run();
    let got = c2.get(k1.as_bytes()).unwrap();
    assert_eq!(body_of(&got).unwrap(), body_for(k1, 5000));

    // Dropped: memory only. Purged before it runs: the tier copy is dead.
    let (_, dropped) = c1
        .insert_deferred(k2.as_bytes(), meta(2), body_for(k2, 100))
        .unwrap();
    drop(dropped);
    assert!(!c2.get(k2.as_bytes()).unwrap().is_fresh());
    let (_, late) = c1
        .insert_deferred(k2.as_bytes(), meta(2), body_for(k2, 100))
        .unwrap();
    c1.purge(&Purge::Tag(2)).unwrap();
    late.unwrap().run();
    assert!(!c2.get(k2.as_bytes()).unwrap().is_fresh(), "purge wins");
}

#[test]
fn without_block_tiers_nothing_is_deferred() {
    let c = Cache::open_str("mem=1m shards=1").unwrap();
    let (commit, later) = c
        .insert_deferred(b"site.com/m", meta(1), body_for("m", 10))
        .unwrap();
    assert_eq!(commit, cdncore::Commit::Stored);
    assert!(later.is_none());
}

/// Writes back and drops from the page cache every file under `dir`.
fn drop_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            drop_page_cache(&p);
            continue;
        }
        let f = std::fs::File::open(&p).unwrap();
        f.sync_all().unwrap();
        // SAFETY: f is an open file; the advice has no memory effects.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

#[test]
fn block_resident_tells_whether_a_lookup_would_read_the_disk() {
    let a = tempfile::tempdir().unwrap();
    // The RAM tier in tmpfs (removed with the guard), as in production.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let conf = format!(
        "mem=4m shards=1 tier={},size=16m,region=4m ram={}",
        a.path().display(),
        shm.path().display()
    );
    // A body well past the 64 KiB the kernel maps around a read fault,
    // placed in the disk tier itself (commits go to the RAM tier).
    let (k, len) = ("site.com/r/1", 400_000);
    let (small, slen) = ("site.com/r/ram", 30_000);
    // Opened before the write, so its opening scan has not read the
    // record's pages.
    let c3 = Cache::open_str(&conf).unwrap();
    {
        let c1 = Cache::open_str(&conf).unwrap();
        // Born after the store's purge floor (no purge covers it).
        let born = u64::MAX / 2;
        let disk = &c1.tiers()[1];
        disk.put(k.as_bytes(), &meta(1), born, &body_for(k, len))
            .unwrap();
        c1.insert(small.as_bytes(), meta(1), body_for(small, slen))
            .unwrap();
        let mut w = c1.large_writer(b"site.com/r/big", meta(1)).unwrap();
        w.write(&body_for("big", 2_500_000)).unwrap();
        w.commit().unwrap();
    }
    assert!(c3.block_resident(k.as_bytes()), "just written");
    assert!(c3.block_resident(small.as_bytes()), "in the RAM tier");
    assert!(
        !c3.block_resident(b"site.com/r/big"),
        "in slices: a thread's job"
    );
    assert!(!c3.block_resident(b"site.com/r/none"), "not stored");
    assert!(!c3.block_resident(&[]), "bad key");
    // Only the pages around the record's header are mapped: the rest go.
    drop_page_cache(a.path());
    drop_page_cache(shm.path());
    assert!(c3.block_resident(small.as_bytes()), "tmpfs keeps its pages");
    if c3.block_resident(k.as_bytes()) {
        // tmpfs keeps its pages: nothing to drop, nothing would block.
        assert_eq!(
            nix_fs_type(a.path()),
            0x0102_1994,
            "pages not dropped on disk"
        );
        return;
    }
    let now = cdncore::now_ms();
    assert!(c3.get_resident_at(k.as_bytes(), now).unwrap().is_none());
    let inline = c3.get_resident_at(small.as_bytes(), now).unwrap();
    assert_eq!(body_of(&inline.unwrap()).unwrap(), body_for(small, slen));
    let got = c3.get(k.as_bytes()).unwrap();
    assert_eq!(body_of(&got).unwrap(), body_for(k, len));
    assert!(c3.block_resident(k.as_bytes()), "the read brought it in");
    let inline = c3
        .get_resident_at(k.as_bytes(), now)
        .unwrap()
        .expect("resident");
    assert!(inline.is_fresh());
    assert_eq!(body_of(&inline).unwrap(), body_for(k, len));
    let big = c3.get_resident_at(b"site.com/r/big", now).unwrap();
    assert!(big.is_none(), "in slices: a thread's job");
}

fn nix_fs_type(p: &Path) -> i64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated; st is writable.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    st.f_type as i64
}

#[test]
fn hits_carry_their_region_extent_once_the_write_through_landed() {
    use std::os::unix::fs::FileExt;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c1 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let k = "site.com/e/1";
    let (_, later) = c1
        .insert_deferred(k.as_bytes(), meta(1), body_for(k, 9000))
        .unwrap();
    let heap = c1.get(k.as_bytes()).unwrap();
    let heap = heap.object().unwrap();
    assert!(heap.extent().is_none(), "only in this process's heap yet");
    later.unwrap().run();
    // The memory entry now points into the RAM tier: a handle, no copy.
    let mem = c1.get(k.as_bytes()).unwrap();
    let mem = mem.object().unwrap();
    assert!(!mem.from_block());
    let e = mem.extent().expect("a handle into the RAM tier");
    let ram = c1.tiers()[0].extent(k.as_bytes()).unwrap().unwrap();
    assert_eq!((e.offset, e.len), (ram.offset, ram.len));
    assert!(!std::ptr::eq(mem.body().as_ptr(), heap.body().as_ptr()));
    assert_eq!(mem.body(), heap.body());
    // A second process finds it in the RAM tier, with the same extent.
    let c2 = Cache::open_str(&conf(a.path(), b.path())).unwrap();
    let got = c2.get(k.as_bytes()).unwrap();
    let o = got.object().unwrap();
    assert!(o.from_block());
    let e = o.extent().expect("extent");
    assert_eq!((e.offset, e.len), (ram.offset, ram.len));
    let mut bytes = vec![0u8; e.len as usize];
    e.file().read_exact_at(&mut bytes, e.offset).unwrap();
    assert_eq!(bytes, body_for(k, 9000).to_vec());
    // and keeps a handle: the next hit is in its memory tier.
    let again = c2.get(k.as_bytes()).unwrap();
    assert!(!again.object().unwrap().from_block());
    assert!(again.object().unwrap().extent().is_some());
}
