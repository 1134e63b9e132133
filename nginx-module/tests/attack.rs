//! Anti-attack guard: `rcdn_guard challenge= block= window=`. A burst on
//! one URL gets a 302 challenge, a valid token passes, a bad one and a
//! bigger burst get 403, and the flag is lifted after idle windows (one
//! worker here; tests/guard_shared.rs runs two). The decisions are counted
//! in the shared stats.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn node() -> (Nginx, Nginx, u16) {
    let origin = start_origin(&[], "");
    let sport = free_port();
    let http = format!(
        "rcdn_stats_zone 1m;
  server {{ listen 127.0.0.1:{sport}; location /stats {{ rcdn_stats json; }} }}"
    );
    let cdn = start_cdn(
        1,
        origin.port,
        &http,
        "rcdn_guard challenge=5 block=30 window=2s;",
    );
    (origin, cdn, sport)
}

/// The path and query of a Location header (absolute or not).
fn path_of(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
}

#[test]
fn burst_challenge_block_and_lift() {
    let (_origin, cdn, sport) = node();
    let p = cdn.port;
    let (mut challenged, mut blocked) = (0u64, 0u64);
    // A burst: the first requests pass, then 302 challenges.
    let mut location = None;
    for _ in 0..40 {
        let r = get(p, "/small.txt?v=1");
        if r.status == 302 {
            challenged += 1;
            location = r.header("location").map(String::from);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let location = location.expect("a 302 challenge within 40 requests");
    let path = path_of(&location).to_string();
    assert!(path.starts_with("/small.txt?v=1&rcdn_challenge="), "{path}");
    // A browser follows it and passes.
    let r = get(p, &path);
    assert_eq!(r.status, 200, "{path}");
    assert_eq!(r.body, b"hello, small world\n");
    // A forged token is refused.
    let r = get(p, "/small.txt?v=1&rcdn_challenge=99999999999999.00ff");
    assert_eq!(r.status, 403);
    blocked += 1;
    // The flood goes on without following: challenges, then blocks.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first_block = false;
    for _ in 0..400 {
        if Instant::now() > deadline {
            break;
        }
        match get(p, "/small.txt?v=1").status {
            302 => challenged += 1,
            403 => {
                blocked += 1;
                first_block = true;
                break;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(first_block, "the flood was blocked");
    // Other URLs are not affected.
    assert_eq!(get(p, "/small.txt?other=1").status, 200);
    // Two idle windows later the flag is lifted.
    std::thread::sleep(Duration::from_millis(4_500));
    assert_eq!(get(p, "/small.txt?v=1").status, 200);

    let v: Value = serde_json::from_slice(&get(sport, "/stats").body).expect("stats");
    let all = &v["all"]["total"];
    assert_eq!(all["guard_challenged"], challenged, "{v}");
    assert_eq!(all["guard_blocked"], blocked, "{v}");
    assert!(cdn.error_log().contains("rcdn: guard blocked"));
    cdn.check_log();
}

#[test]
fn bad_thresholds_fail_nginx_t() {
    let conf = |g: &str| {
        format!(
            "load_module {};\nerror_log logs/error.log;\nevents {{}}\nhttp {{\nserver {{ listen 127.0.0.1:{};\nlocation / {{ {g} proxy_pass http://127.0.0.1:9; }}\n}}\n}}\n",
            module_so().display(),
            free_port()
        )
    };
    let (ok, err) = config_test(&conf("rcdn_guard challenge=100 block=1000 window=5m;"));
    assert!(ok, "{err}");
    for (g, want) in [
        ("rcdn_guard challenge=10;", "block= is required"),
        ("rcdn_guard challenge=10 block=5;", "at least the challenge"),
        ("rcdn_guard challenge=x block=5;", "challenge=x"),
        (
            "rcdn_guard challenge=1 block=5 window=100ms;",
            "at least 1s",
        ),
        ("rcdn_guard challenge=1 block=5 colour=1;", "colour=1"),
        ("rcdn_guard challenge=1 block=5 capacity=2;", "capacity"),
    ] {
        let (ok, err) = config_test(&conf(g));
        assert!(!ok, "accepted: {g}");
        assert!(
            err.contains("rcdn_guard") && err.contains(want),
            "{g}: {err}"
        );
    }
}
