//! Read-while-writer: a miss's body reaches its client (and the worker's
//! collapsed waiters) as the origin sends it, not after it is stored.
//! The origin trickles the body after its first 64 KiB (`limit_rate`), so
//! it finishes about 2 s after it started; the client must get its first
//! body bytes long before its last.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Origin location: 64 KiB at once, then 40 KB/s.
const TRICKLE: &str = "location /trickle/ { limit_rate_after 64k; limit_rate 40k; }";
const SIZE: usize = 144 * 1024;

fn trickle_origin() -> (Nginx, Vec<u8>) {
    let body = pattern(SIZE, 21);
    let files = [
        ("trickle/a.bin", body.clone()),
        ("trickle/b.bin", body.clone()),
        ("trickle/c.bin", body.clone()),
    ];
    (start_origin(&files, TRICKLE), body)
}

/// GET `uri`; returns (status line + headers, body, time to the first
/// body byte, time to the end), both from the request's start.
fn timed_get(port: u16, uri: &str) -> (String, Vec<u8>, Duration, Duration) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(s, "GET {uri} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let mut first = None;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first.is_none() {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                if raw.len() > p + 4 {
                    first = Some(t0.elapsed());
                }
            }
        }
    }
    let end = t0.elapsed();
    let p = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..p]).into_owned();
    (head, raw[p + 4..].to_vec(), first.unwrap_or(end), end)
}

#[test]
fn first_bytes_arrive_while_the_origin_still_sends() {
    let (origin, want) = trickle_origin();
    let cdn = start_cdn(2, origin.port, "", "");
    let (head, body, first, end) = timed_get(cdn.port, "/trickle/a.bin");
    assert!(head.contains("X-Cache: MISS"), "{head}");
    assert!(body == want, "streamed body differs ({} bytes)", body.len());
    // The origin trickles for ~2 s after its first 64 KiB: a client served
    // only after the store would get its first byte at the very end.
    assert!(
        end.saturating_sub(first) >= Duration::from_millis(1200),
        "first body byte at {first:?}, last at {end:?}: not streamed"
    );
    let hit = get(cdn.port, "/trickle/a.bin");
    assert_eq!((hit.status, hit.cache()), (200, "HIT"));
    assert!(hit.body == want);
    assert_eq!(origin_hits(&origin, "/trickle/a.bin").len(), 1);
    cdn.check_log();
}

#[test]
fn twenty_concurrent_readers_one_origin_request() {
    let (origin, want) = trickle_origin();
    let cdn = start_cdn(2, origin.port, "", "rcdn_cache_lock_timeout 30s;");
    let port = cdn.port;
    let t0 = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || timed_get(port, "/trickle/b.bin")))
        .collect();
    let mut streamed = 0;
    for c in clients {
        let (head, body, first, end) = c.join().expect("client");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body == want, "a body differs ({} bytes)", body.len());
        if end.saturating_sub(first) >= Duration::from_millis(1000) {
            streamed += 1;
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(origin_hits(&origin, "/trickle/b.bin").len(), 1);
    // At least the initiator's worker streamed (the other worker's
    // waiters may get the object once it is stored).
    assert!(streamed >= 1, "no client was streamed to");
    assert_eq!(get(cdn.port, "/trickle/b.bin").cache(), "HIT");
    cdn.check_log();
}

#[test]
fn initiator_leaving_does_not_cut_the_other_readers() {
    let (origin, want) = trickle_origin();
    // One worker: every reader shares the leaving client's fill.
    let cdn = start_cdn(1, origin.port, "", "rcdn_cache_lock_timeout 30s;");
    let mut s = TcpStream::connect(("127.0.0.1", cdn.port)).expect("connect");
    s.write_all(b"GET /trickle/c.bin HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut buf = [0u8; 1000];
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert!(s.read(&mut buf).expect("first bytes") > 0);
    let port = cdn.port;
    let others: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || get(port, "/trickle/c.bin")))
        .collect();
    // The three readers' requests are read (they share the fill) before the
    // first client leaves.
    assert!(
        wait_requests_read(port, 4, Duration::from_secs(20)),
        "4 requests in progress"
    );
    drop(s); // the client whose request started the fill leaves
    for o in others {
        let r = o.join().expect("reader");
        assert_eq!(r.status, 200);
        assert!(r.body == want, "a reader got {} bytes", r.body.len());
    }
    assert_eq!(get(cdn.port, "/trickle/c.bin").cache(), "HIT");
    assert_eq!(origin_hits(&origin, "/trickle/c.bin").len(), 1);
    cdn.check_log();
}

#[test]
fn a_sliced_miss_streams_the_slice_being_filled() {
    let want = pattern(2 * 1024 * 1024 + 500_000, 22);
    let origin = start_origin(
        &[("slow2/s.bin", want.clone())],
        "location /slow2/ { limit_rate_after 64k; limit_rate 400k; }",
    );
    let cdn = start_cdn(
        2,
        origin.port,
        "",
        "rcdn_slice 1m; rcdn_cache_lock_timeout 30s;",
    );
    let (head, body, first, end) = timed_get(cdn.port, "/slow2/s.bin");
    assert!(head.contains("X-Cache: MISS"), "{head}");
    assert!(
        body == want,
        "sliced streamed body differs ({} bytes)",
        body.len()
    );
    // Each 1 MiB slice takes the origin ~2.5 s after its first 64 KiB.
    assert!(
        end.saturating_sub(first) >= Duration::from_millis(1200),
        "first body byte at {first:?}, last at {end:?}: not streamed"
    );
    let mut ranges: Vec<String> = origin_hits(&origin, "/slow2/s.bin")
        .iter()
        .map(|l| l.rsplit("range=").next().unwrap_or("").to_string())
        .collect();
    ranges.sort();
    assert_eq!(
        ranges,
        [
            "bytes=0-1048575",
            "bytes=1048576-2097151",
            "bytes=2097152-2597151"
        ]
    );
    let hit = get(cdn.port, "/slow2/s.bin");
    assert_eq!(hit.cache(), "HIT");
    assert!(hit.body == want);
    cdn.check_log();
}

#[test]
fn a_private_response_is_never_streamed_to_another_client() {
    let body = pattern(100_000, 23);
    let origin = start_origin(
        &[("trickleprivate/p.bin", body.clone())],
        "location /trickleprivate/ { limit_rate_after 8k; limit_rate 200k; \
         add_header Cache-Control private; }",
    );
    let cdn = start_cdn(1, origin.port, "", "rcdn_cache_lock_timeout 30s;");
    let statuses = concurrent_gets(cdn.port, "/trickleprivate/p.bin", 5, &body);
    assert!(statuses.iter().all(|s| s != "HIT"), "{statuses:?}");
    // Every client got its own origin response (plus the one judged
    // uncacheable by the first fill).
    assert!(origin_hits(&origin, "/trickleprivate/p.bin").len() >= 5);
    cdn.check_log();
}
