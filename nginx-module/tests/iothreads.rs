//! `rcdn_io_threads`: block-tier lookups on threads. Hits from a tier on
//! disk are byte-identical; a slow block read does not hold up a memory
//! hit; a client that leaves while its job runs does not hurt the worker.

mod common;
use common::*;
#[cfg(feature = "fault-injection")]
use std::time::Duration;

fn on_tmpfs(p: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated; st is writable.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    st.f_type as i64 == 0x0102_1994
}

#[test]
fn disk_tier_miss_then_hit_with_two_workers() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(2, origin.port, "rcdn_io_threads on;", "");
    let store = cdn.store.as_ref().expect("store").path().to_path_buf();
    eprintln!("store on tmpfs: {}", on_tmpfs(&store));
    for (path, file) in [("/small.txt", "small.txt"), ("/big.bin", "big.bin")] {
        let want = std::fs::read(origin.path("www").join(file)).expect("origin file");
        let a = get(cdn.port, path);
        assert_eq!((a.status, a.cache()), (200, "MISS"), "{path}");
        assert!(a.body == want, "{path}: MISS body differs");
        // Several connections: both workers answer, one from its tier.
        for _ in 0..6 {
            let b = get(cdn.port, path);
            assert_eq!((b.status, b.cache()), (200, "HIT"), "{path}");
            assert!(b.body == want, "{path}: HIT body differs");
        }
        let h = request(cdn.port, "HEAD", path, &[]);
        assert_eq!((h.status, h.cache()), (200, "HIT"));
        assert!(h.body.is_empty());
        let r = request(cdn.port, "GET", path, &[("Range", "bytes=3-9")]);
        assert_eq!(r.status, 206, "{path}");
        assert_eq!(r.body, want[3..10].to_vec(), "{path}");
        assert_eq!(origin_hits(&origin, path).len(), 1, "{path}");
    }
    cdn.check_log();
}

/// With `mode`, a memory hit sent while a 1 s block read of another
/// request runs: (when the memory hit was answered, when the slow one was).
#[cfg(feature = "fault-injection")]
fn memory_hit_during_slow_block_read(mode: &str) -> (Duration, Duration) {
    let origin = start_origin(&[], "");
    let store = store_dir();
    let io = format!("rcdn_io_threads {mode};");
    // Empty memory: /big.bin is only in the block tier.
    let cdn = cdn_with_block_copy(store.path(), &origin, &io, "", "/big.bin");
    let Race {
        fast,
        fast_at,
        slow: big,
        slow_at,
    } = race(cdn.port, "/big.bin", "slow-block-read");
    assert_eq!((fast.status, fast.cache()), (200, "HIT"));
    assert_eq!((big.status, big.cache()), (200, "HIT"));
    let want = std::fs::read(origin.path("www").join("big.bin")).expect("origin file");
    assert!(big.body == want, "block-tier hit body differs");
    assert!(slow_at >= Duration::from_secs(1), "slow took {slow_at:?}");
    cdn.check_log();
    (fast_at, slow_at)
}

#[test]
#[cfg(feature = "fault-injection")]
fn slow_block_read_does_not_block_a_memory_hit() {
    // The injected delay is 1 s. With io threads the memory hit does not
    // wait for it; without (the peer run) it does, on the one worker.
    let (fast, slow) = memory_hit_during_slow_block_read("on");
    assert!(
        fast + Duration::from_millis(500) < slow,
        "io threads on: memory hit at {fast:?}, slow block read at {slow:?}"
    );
    let (fast, slow) = memory_hit_during_slow_block_read("off");
    assert!(
        fast + Duration::from_millis(100) >= slow,
        "io threads off: memory hit at {fast:?} should wait for the block read at {slow:?}"
    );
}

#[test]
#[cfg(feature = "fault-injection")]
fn client_leaving_during_a_block_read_is_harmless() {
    let origin = start_origin(&[], "");
    let store = store_dir();
    let io = "rcdn_io_threads on;";
    // Empty memory: /big.bin is only in the block tier.
    let cdn = cdn_with_block_copy(store.path(), &origin, io, "", "/big.bin");
    leave_during(cdn.port, "/big.bin", "slow-block-read");
    let b = get(cdn.port, "/big.bin");
    assert_eq!((b.status, b.cache()), (200, "HIT"));
    cdn.check_log();
}

/// With `mode`, a memory hit sent while a fill's 1 s write-through runs:
/// when the memory hit was answered (the fill's own response is checked).
#[cfg(feature = "fault-injection")]
fn memory_hit_during_slow_write(mode: &str) -> Duration {
    let origin = start_origin(&[], "");
    let io = format!("rcdn_io_threads {mode};");
    let cdn = start_cdn(1, origin.port, &io, "");
    let port = cdn.port;
    let Race {
        fast,
        fast_at,
        slow: big,
        ..
    } = race(port, "/big.bin", "slow-write");
    assert_eq!((fast.status, fast.cache()), (200, "HIT"));
    assert_eq!((big.status, big.cache()), (200, "MISS"));
    let want = std::fs::read(origin.path("www").join("big.bin")).expect("origin file");
    assert!(big.body == want, "MISS body differs");
    std::thread::sleep(Duration::from_millis(1000)); // the write finishes
    assert_eq!(get(port, "/big.bin").cache(), "HIT");
    assert_eq!(origin_hits(&origin, "/big.bin").len(), 1);
    cdn.check_log();
    fast_at
}

#[test]
#[cfg(feature = "fault-injection")]
fn slow_write_through_does_not_block_a_memory_hit() {
    // The injected delay is 1 s, from ~0 s. Without io threads (the peer
    // run) the memory hit at 0.15 s waits for it on the one worker.
    let on = memory_hit_during_slow_write("on");
    let off = memory_hit_during_slow_write("off");
    assert!(
        off >= Duration::from_millis(900),
        "io threads off: hit at {off:?}"
    );
    assert!(
        on + Duration::from_millis(500) < off,
        "io threads on: hit at {on:?}, off: {off:?}"
    );
}

#[test]
#[cfg(feature = "fault-injection")]
fn a_write_through_queued_at_shutdown_still_lands() {
    let origin = start_origin(&[], "");
    let store = store_dir();
    let io = "rcdn_io_threads on;";
    let mut first = start_cdn_on(store.path(), 1, origin.port, io, "");
    let r = request(
        first.port,
        "GET",
        "/big.bin",
        &[("X-Rcdn-Fault", "slow-write")],
    );
    assert_eq!((r.status, r.cache()), (200, "MISS"));
    // Graceful stop while the 1 s write runs: the worker waits for it.
    first.signal(libc::SIGQUIT);
    assert!(
        first.wait_exit(Duration::from_secs(20)),
        "nginx did not exit"
    );
    first.check_log();
    // Same store, empty memory: only the block tier can answer.
    let cdn = start_cdn_on(store.path(), 1, origin.port, io, "");
    let b = get(cdn.port, "/big.bin");
    assert_eq!((b.status, b.cache()), (200, "HIT"));
    let want = std::fs::read(origin.path("www").join("big.bin")).expect("origin file");
    assert!(b.body == want, "tier body differs");
    assert_eq!(origin_hits(&origin, "/big.bin").len(), 1);
    cdn.check_log();
}

#[test]
#[cfg(feature = "fault-injection")]
fn other_workers_wait_for_the_write_instead_of_the_origin() {
    let origin = start_origin(&[], "");
    let loc = "add_header X-Pid $pid always;";
    let cdn = start_cdn(2, origin.port, "rcdn_io_threads on;", loc);
    let port = cdn.port;
    let r = request(port, "GET", "/big.bin", &[("X-Rcdn-Fault", "slow-write")]);
    assert_eq!((r.status, r.cache()), (200, "MISS"));
    let filler = r.header("x-pid").expect("pid").to_string();
    let want = std::fs::read(origin.path("www").join("big.bin")).expect("origin file");
    // During the 1 s write: new connections land on both workers; the
    // other worker finds the shared fill marker still held and waits.
    let mut other = 0;
    for _ in 0..20 {
        let b = get(port, "/big.bin");
        assert_eq!(b.status, 200);
        assert!(b.body == want, "body differs");
        if b.header("x-pid") != Some(filler.as_str()) {
            other += 1;
        }
    }
    assert!(other > 0, "no request reached the other worker");
    assert_eq!(
        origin_hits(&origin, "/big.bin").len(),
        1,
        "origin asked twice"
    );
    cdn.check_log();
}
