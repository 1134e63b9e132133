//! One store shared by every worker (a block tier): what one worker cached
//! every worker serves, misses collapse across workers, the cache survives
//! reload and restart, and block-tier hits go out with sendfile.

mod common;
use common::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Logs the worker pid, status and body kind of every request.
const LOG: &str = "log_format w '$pid $uri $rcdn_cache_status $rcdn_body'; \
                   access_log logs/w.log w; sendfile on;";

fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.txt", b"shared object\n".to_vec()),
        ("slow/obj.bin", pattern(300_000, 5)),
    ]
}

/// (pid, uri, status, body) of every logged request.
fn logged(cdn: &Nginx) -> Vec<(String, String, String, String)> {
    cdn.log("logs/w.log")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 4).then(|| (f[0].into(), f[1].into(), f[2].into(), f[3].into()))
        })
        .collect()
}

fn pids_with(cdn: &Nginx, uri: &str, status: &str) -> HashSet<String> {
    logged(cdn)
        .into_iter()
        .filter(|(_, u, s, _)| u == uri && s == status)
        .map(|(p, ..)| p)
        .collect()
}

/// Requests `uri` on fresh connections until two workers have answered
/// it (bounded); every answer must be a HIT with `want` as body.
fn hits_from_both_workers(cdn: &Nginx, uri: &str, want: &[u8]) {
    for i in 0..200 {
        let r = get(cdn.port, uri);
        assert_eq!(r.status, 200);
        assert_eq!(r.cache(), "HIT", "request {i}");
        assert!(r.body == want, "request {i}: body differs");
        if i >= 20 && pids_with(cdn, uri, "HIT").len() >= 2 {
            return;
        }
    }
    panic!("200 connections never reached a second worker");
}

#[test]
fn every_worker_serves_what_one_worker_cached() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(2, origin.port, LOG, "");
    let first = get(cdn.port, "/a.txt");
    assert_eq!(first.cache(), "MISS");
    hits_from_both_workers(&cdn, "/a.txt", b"shared object\n");
    assert_eq!(origin_hits(&origin, "/a.txt").len(), 1);
    cdn.check_log();
}

#[test]
fn concurrent_misses_in_two_workers_cause_one_origin_request() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(2, origin.port, LOG, "rcdn_cache_lock_timeout 30s;");
    let want = std::fs::read(origin.path("www/slow/obj.bin")).expect("file");
    let statuses = concurrent_gets(cdn.port, "/slow/obj.bin", 50, &want);
    assert_eq!(
        origin_hits(&origin, "/slow/obj.bin").len(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "MISS").count(),
        1,
        "{statuses:?}"
    );
    let pids: HashSet<String> = logged(&cdn)
        .into_iter()
        .filter(|(_, u, ..)| u == "/slow/obj.bin")
        .map(|(p, ..)| p)
        .collect();
    assert_eq!(pids.len(), 2, "both workers must have had requests");
    cdn.check_log();
}

#[test]
fn reload_keeps_the_cache() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(2, origin.port, LOG, "");
    assert_eq!(get(cdn.port, "/a.txt").cache(), "MISS");
    let master = cdn.pid().expect("master pid");
    let before: HashSet<u32> = workers_of(master).into_iter().collect();
    assert_eq!(before.len(), 2, "two workers before the reload");
    cdn.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now: HashSet<u32> = workers_of(master).into_iter().collect();
        if now.len() == 2 && now.is_disjoint(&before) {
            break;
        }
        assert!(Instant::now() < deadline, "no new workers after HUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    hits_from_both_workers(&cdn, "/a.txt", b"shared object\n");
    assert_eq!(origin_hits(&origin, "/a.txt").len(), 1);
    cdn.check_log();
}

#[test]
fn restart_keeps_the_cache_and_block_hits_go_out_with_sendfile() {
    let origin = start_origin(&files(), "");
    let store = store_dir();
    let want = std::fs::read(origin.path("www/big.bin")).expect("file");
    {
        let mut cdn = start_cdn_on(store.path(), 2, origin.port, LOG, "");
        let r = get(cdn.port, "/big.bin");
        assert_eq!(r.cache(), "MISS");
        assert!(r.body == want, "filled body differs");
        assert_eq!(get(cdn.port, "/a.txt").cache(), "MISS");
        cdn.check_log();
        cdn.stop();
    }
    let cdn = start_cdn_on(store.path(), 2, origin.port, LOG, "");
    // A new process has nothing in memory: the first hit of each worker is
    // from the block tier (the 3 MiB object as a file buf, sendfile).
    let r = get(cdn.port, "/big.bin");
    assert_eq!(r.cache(), "HIT");
    assert_eq!(r.body.len(), want.len());
    assert!(r.body == want, "body from the block tier differs");
    let ranged = request(
        cdn.port,
        "GET",
        "/big.bin",
        &[("Range", "bytes=1000000-1999999")],
    );
    assert_eq!(ranged.status, 206);
    assert!(ranged.body == want[1_000_000..2_000_000], "range differs");
    assert_eq!(get(cdn.port, "/a.txt").cache(), "HIT");
    assert_eq!(origin_hits(&origin, "/big.bin").len(), 1);
    assert_eq!(origin_hits(&origin, "/a.txt").len(), 1);
    let big: Vec<String> = logged(&cdn)
        .into_iter()
        .filter(|(_, u, ..)| u == "/big.bin")
        .map(|(.., body)| body)
        .collect();
    assert_eq!(big.first().map(String::as_str), Some("sendfile"), "{big:?}");
    // The small object comes from the block tier's mapping (under the
    // sendfile threshold).
    let small: Vec<String> = logged(&cdn)
        .into_iter()
        .filter(|(_, u, ..)| u == "/a.txt")
        .map(|(.., body)| body)
        .collect();
    assert_eq!(small, vec!["memory".to_string()]);
    cdn.check_log();
}
