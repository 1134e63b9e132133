//! Serving: MISS then HIT with identical bytes, 304s, Range, HEAD, Age, and
//! two workers. Tests that count origin requests per key run one worker:
//! until the shared block tiers land, each worker has its own cache.

mod common;
use common::*;

#[test]
fn miss_then_hit_small_and_multi_mib() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(1, origin.port, "", "");
    for (path, file) in [("/small.txt", "small.txt"), ("/big.bin", "big.bin")] {
        let want = std::fs::read(origin.path("www").join(file)).expect("origin file");
        let a = get(cdn.port, path);
        assert_eq!((a.status, a.cache()), (200, "MISS"), "{path}");
        assert!(a.body == want, "{path}: MISS body differs");
        for _ in 0..3 {
            let b = get(cdn.port, path);
            assert_eq!((b.status, b.cache()), (200, "HIT"), "{path}");
            assert!(b.body == want, "{path}: HIT body differs");
            assert_eq!(
                b.header("content-length"),
                Some(want.len().to_string().as_str())
            );
            assert!(b.header("age").is_some(), "{path}: no Age header");
        }
        assert_eq!(
            origin_hits(&origin, path).len(),
            1,
            "{path}: origin fetched more than once"
        );
    }
    cdn.check_log();
}

#[test]
fn conditional_requests_get_304() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(1, origin.port, "", "");
    let a = get(cdn.port, "/small.txt");
    let etag = a.header("etag").expect("etag").to_string();
    let lm = a
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    let b = request(cdn.port, "GET", "/small.txt", &[("If-None-Match", &etag)]);
    assert_eq!((b.status, b.cache()), (304, "HIT"));
    assert!(b.body.is_empty());
    let c = request(cdn.port, "GET", "/small.txt", &[("If-Modified-Since", &lm)]);
    assert_eq!(c.status, 304);
    let d = request(
        cdn.port,
        "GET",
        "/small.txt",
        &[("If-None-Match", "\"other\"")],
    );
    assert_eq!(d.status, 200);
    assert_eq!(d.body, b"hello, small world\n");
    cdn.check_log();
}

#[test]
fn range_requests_206_and_416() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(1, origin.port, "", "");
    let want = std::fs::read(origin.path("www/big.bin")).expect("big");
    // A Range on a miss: the fill fetches the whole object, the client gets 206.
    let a = request(cdn.port, "GET", "/big.bin", &[("Range", "bytes=100-199")]);
    assert_eq!(a.status, 206);
    assert_eq!(a.body, &want[100..200]);
    let logged = origin_hits(&origin, "/big.bin");
    assert_eq!(logged.len(), 1);
    assert!(
        logged[0].ends_with("range=-"),
        "fill forwarded the Range: {}",
        logged[0]
    );
    let b = request(
        cdn.port,
        "GET",
        "/big.bin",
        &[("Range", "bytes=3000000-3000009")],
    );
    assert_eq!((b.status, b.cache()), (206, "HIT"));
    assert_eq!(b.body, &want[3_000_000..3_000_010]);
    let total = want.len().to_string();
    assert_eq!(
        b.header("content-range"),
        Some(format!("bytes 3000000-3000009/{total}").as_str())
    );
    let c = request(cdn.port, "GET", "/big.bin", &[("Range", "bytes=-5")]);
    assert_eq!(c.body, &want[want.len() - 5..]);
    let d = request(cdn.port, "GET", "/big.bin", &[("Range", "bytes=99999999-")]);
    assert_eq!(d.status, 416);
    assert_eq!(origin_hits(&origin, "/big.bin").len(), 1);
    cdn.check_log();
}

#[test]
fn head_requests() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(1, origin.port, "", "");
    // HEAD on a miss fills with a GET and answers without a body.
    let a = request(cdn.port, "HEAD", "/small.txt", &[]);
    assert_eq!((a.status, a.cache()), (200, "MISS"));
    assert!(a.body.is_empty());
    assert_eq!(a.header("content-length"), Some("19"));
    let logged = origin_hits(&origin, "/small.txt");
    assert_eq!(logged.len(), 1);
    assert!(logged[0].starts_with("GET "), "{}", logged[0]);
    let b = request(cdn.port, "HEAD", "/small.txt", &[]);
    assert_eq!((b.status, b.cache()), (200, "HIT"));
    assert!(b.body.is_empty());
    let c = get(cdn.port, "/small.txt");
    assert_eq!(
        (c.cache(), c.body.as_slice()),
        ("HIT", &b"hello, small world\n"[..])
    );
    cdn.check_log();
}

#[test]
fn cached_statuses_follow_rcdn_cache_valid() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(
        1,
        origin.port,
        "",
        "rcdn_cache_valid 200 1m; rcdn_cache_valid 404 10s;",
    );
    let a = get(cdn.port, "/missing/x");
    assert_eq!((a.status, a.cache()), (404, "MISS"));
    let b = get(cdn.port, "/missing/x");
    assert_eq!((b.status, b.cache()), (404, "HIT"));
    // 503 is an origin error: never stored.
    for _ in 0..2 {
        assert_eq!(get(cdn.port, "/err/x").status, 503);
    }
    assert!(origin_hits(&origin, "/err/x").len() >= 2);
    cdn.check_log();
}

#[test]
fn two_workers_serve_identical_bytes() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(2, origin.port, "", "");
    let want = std::fs::read(origin.path("www/big.bin")).expect("big");
    for _ in 0..10 {
        let r = get(cdn.port, "/big.bin");
        assert_eq!(r.status, 200);
        assert!(r.body == want);
        assert!(matches!(r.cache(), "MISS" | "HIT"), "{}", r.cache());
    }
    // Each worker has its own cache today: at most one fill per worker.
    assert!(origin_hits(&origin, "/big.bin").len() <= 2);
    cdn.check_log();
}

#[test]
fn method_bypass() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(1, origin.port, "", "");
    let a = request(cdn.port, "POST", "/small.txt", &[("Content-Length", "0")]);
    assert_eq!(a.cache(), "BYPASS");
    let b = get(cdn.port, "/small.txt");
    assert_eq!(b.cache(), "MISS");
    // An authorised request may be served a response stored for an
    // anonymous one (RFC 9111 §4), but its own response is stored only
    // with public, s-maxage or must-revalidate (§3.5; tests/rfc9111.rs).
    let auth = [("Authorization", "Basic dTpw")];
    let c = request(cdn.port, "GET", "/small.txt", &auth);
    assert_eq!((c.status, c.cache()), (200, "HIT"));
    let before = origin_hits(&origin, "/big.bin").len();
    request(cdn.port, "GET", "/big.bin", &auth);
    assert_eq!(get(cdn.port, "/big.bin").cache(), "MISS");
    assert_eq!(origin_hits(&origin, "/big.bin").len(), before + 2);
    cdn.check_log();
}

#[test]
fn fill_with_many_request_headers() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(1, origin.port, "", "");
    let names: Vec<String> = (0..60).map(|i| format!("X-Test-{i}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    headers.push(("Range", "bytes=0-4"));
    headers.push(("Accept-Encoding", "gzip"));
    let a = request(cdn.port, "GET", "/small.txt", &headers);
    assert_eq!(
        (a.status, a.cache(), a.body.as_slice()),
        (206, "MISS", &b"hello"[..])
    );
    let b = get(cdn.port, "/small.txt");
    assert_eq!(
        (b.cache(), b.body.as_slice()),
        ("HIT", &b"hello, small world\n"[..])
    );
    cdn.check_log();
}
