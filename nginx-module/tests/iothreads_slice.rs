//! `rcdn_io_threads` with `rcdn_slice`: slices read from a block tier on
//! disk are byte-identical with io threads on and off; a slow slice read
//! holds up a memory hit of another URL only with io threads off; a client
//! that leaves while its slice is being read does no harm.

mod common;
use common::*;
#[cfg(feature = "fault-injection")]
use std::time::Duration;

const MIB: usize = 1 << 20;

/// FNV-1a 64 of a body, to compare bodies across runs.
fn sum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Slicing by 1 MiB.
const SLICED: &str = "rcdn_slice 1m;";

/// A one-worker node slicing by 1 MiB, io threads `mode`, on `store`
/// whose block tier (not its memory) holds `path`.
fn node_with_block_copy(
    store: &tempfile::TempDir,
    origin: &Nginx,
    mode: &str,
    path: &str,
) -> Nginx {
    let http = format!("rcdn_io_threads {mode}; sendfile on;");
    cdn_with_block_copy(store.path(), origin, &http, SLICED, path)
}

/// With io threads `mode`: (sums of the whole body and of two ranges
/// across slice boundaries) of a sliced object served from the block tier.
fn block_tier_sums(mode: &str) -> Vec<u64> {
    let want = pattern(5 * MIB + 123, 21);
    let origin = start_origin(&[("s5.bin", want.clone())], "");
    let store = store_dir();
    let cdn = node_with_block_copy(&store, &origin, mode, "/s5.bin");
    let fetched = origin_hits(&origin, "/s5.bin").len();
    assert_eq!(fetched, 6, "{mode}: one origin request per slice");
    let mut sums = Vec::new();
    for _ in 0..2 {
        let b = get(cdn.port, "/s5.bin");
        assert_eq!((b.status, b.cache()), (200, "HIT"), "{mode}");
        assert!(b.body == want, "{mode}: block-tier body differs");
        sums.push(sum(&b.body));
    }
    for (spec, from, to) in [
        ("bytes=1048000-3145999", 1_048_000, 3_146_000),
        ("bytes=5242000-", 5_242_000, want.len()),
    ] {
        let r = request(cdn.port, "GET", "/s5.bin", &[("Range", spec)]);
        assert_eq!(r.status, 206, "{mode} {spec}");
        assert!(r.body == want[from..to], "{mode} {spec}: wrong bytes");
        sums.push(sum(&r.body));
    }
    // Every slice came from the tier: the origin saw nothing new.
    assert_eq!(origin_hits(&origin, "/s5.bin").len(), fetched, "{mode}");
    cdn.check_log();
    sums
}

#[test]
fn sliced_block_tier_hits_are_identical_with_io_threads_on_and_off() {
    let off = block_tier_sums("off");
    let on = block_tier_sums("on");
    assert_eq!(on, off);
}

/// With io threads `mode`, a memory hit of `/small.txt` sent while the
/// slices of a block-tier object are read slowly (1 s each): (when the
/// memory hit was answered, when the sliced one was).
#[cfg(feature = "fault-injection")]
fn memory_hit_during_slow_slice_reads(mode: &str) -> (Duration, Duration) {
    let want = pattern(MIB + MIB / 2, 22); // two slices
    let origin = start_origin(&[("s2.bin", want.clone())], "");
    let store = store_dir();
    let cdn = node_with_block_copy(&store, &origin, mode, "/s2.bin");
    let Race {
        fast,
        fast_at,
        slow: big,
        slow_at,
    } = race(cdn.port, "/s2.bin", "slow-slice-read");
    assert_eq!((fast.status, fast.cache()), (200, "HIT"), "{mode}");
    assert_eq!((big.status, big.cache()), (200, "HIT"), "{mode}");
    assert!(big.body == want, "{mode}: sliced block-tier body differs");
    assert!(
        slow_at >= Duration::from_secs(1),
        "{mode}: slow took {slow_at:?}"
    );
    cdn.check_log();
    (fast_at, slow_at)
}

#[test]
#[cfg(feature = "fault-injection")]
fn slow_slice_read_does_not_block_a_memory_hit() {
    // Each slice read sleeps 1 s. With io threads the memory hit does not
    // wait for them; without (the peer run) it waits, on the one worker.
    let (fast, slow) = memory_hit_during_slow_slice_reads("on");
    eprintln!("on: memory hit {fast:?}, sliced {slow:?}");
    assert!(
        fast + Duration::from_millis(500) < slow,
        "io threads on: memory hit at {fast:?}, slow slices at {slow:?}"
    );
    let (fast, slow) = memory_hit_during_slow_slice_reads("off");
    eprintln!("off: memory hit {fast:?}, sliced {slow:?}");
    assert!(
        fast >= Duration::from_secs(1),
        "io threads off: memory hit at {fast:?} should wait for a slice read (sliced at {slow:?})"
    );
}

#[test]
#[cfg(feature = "fault-injection")]
fn client_leaving_during_a_slice_read_is_harmless() {
    let want = pattern(3 * MIB, 23);
    let origin = start_origin(&[("s3.bin", want.clone())], "");
    let store = store_dir();
    let cdn = node_with_block_copy(&store, &origin, "on", "/s3.bin");
    leave_during(cdn.port, "/s3.bin", "slow-slice-read");
    let b = get(cdn.port, "/s3.bin");
    assert_eq!((b.status, b.cache()), (200, "HIT"));
    assert!(b.body == want, "body after the aborted reads differs");
    cdn.check_log();
}

/// With io threads `mode`: a URL purge of a sliced object found only in
/// the block tier (made 1 s slower), and a memory hit of another URL sent
/// meanwhile: (when the memory hit was answered, when the purge was).
#[cfg(feature = "fault-injection")]
fn memory_hit_during_slow_purge(mode: &str) -> (Duration, Duration) {
    let want = pattern(3 * MIB + 5, 24);
    let origin = start_origin(&[("s3.bin", want.clone())], "");
    let store = store_dir();
    let cdn = node_with_block_copy(&store, &origin, mode, "/s3.bin");
    let Race {
        fast,
        fast_at,
        slow: p,
        slow_at: purge_at,
    } = race(cdn.port, "/purge?url=/s3.bin", "slow-slice-read");
    let text = String::from_utf8_lossy(&p.body).to_string();
    assert_eq!((fast.status, fast.cache()), (200, "HIT"), "{mode}");
    assert_eq!(p.status, 200, "{mode}: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("purge json");
    // The manifest was read from the block tier: every slice is named.
    assert_eq!(v["slices"], 4, "{mode}: {text}");
    let a = get(cdn.port, "/s3.bin");
    assert_eq!(a.cache(), "MISS", "{mode}: purged");
    assert!(a.body == want, "{mode}: refetched body differs");
    cdn.check_log();
    (fast_at, purge_at)
}

#[test]
#[cfg(feature = "fault-injection")]
fn slow_sliced_purge_does_not_block_a_memory_hit() {
    let (fast, slow) = memory_hit_during_slow_purge("on");
    eprintln!("on: memory hit {fast:?}, purge {slow:?}");
    assert!(
        fast + Duration::from_millis(500) < slow,
        "io threads on: memory hit at {fast:?}, purge at {slow:?}"
    );
    let (fast, slow) = memory_hit_during_slow_purge("off");
    eprintln!("off: memory hit {fast:?}, purge {slow:?}");
    assert!(
        fast >= Duration::from_secs(1),
        "io threads off: memory hit at {fast:?} should wait for the purge (at {slow:?})"
    );
}
