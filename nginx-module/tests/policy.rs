//! HTTP caching rules: Cache-Control, Set-Cookie, Vary variants,
//! stale-if-error, revalidation, collapsed misses, fills that survive a
//! client abort. One worker where origin requests are counted (each worker
//! has its own cache until the shared block tiers land).

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("nostore/a.txt", b"no store".to_vec()),
        ("private/a.txt", b"private".to_vec()),
        ("cookie/a.txt", b"cookie".to_vec()),
        ("short/a.txt", pattern(5000, 1)),
        ("shortnosie/a.txt", pattern(5000, 2)),
        (
            "gz/page.html",
            b"<html>".iter().cycle().take(6000).copied().collect(),
        ),
        ("slow/obj.bin", pattern(300_000, 3)),
        ("swr/a.txt", pattern(4000, 4)),
    ]
}

#[test]
fn no_store_private_and_set_cookie_are_not_cached() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    for path in ["/nostore/a.txt", "/private/a.txt", "/cookie/a.txt"] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let r = get(cdn.port, path);
            assert_eq!(r.status, 200, "{path}");
            assert_ne!(r.cache(), "HIT", "{path} was served from the cache");
            seen.push(origin_hits(&origin, path).len());
        }
        // Every request reached the origin (the first also ran the probing fill).
        assert!(
            seen[0] >= 1 && seen[1] > seen[0] && seen[2] > seen[1],
            "{path}: {seen:?}"
        );
    }
    // The response itself still carries the cookie to the client.
    let r = get(cdn.port, "/cookie/a.txt");
    assert_eq!(r.header("set-cookie"), Some("session=1"));
    cdn.check_log();
}

#[test]
fn vary_accept_encoding_variants_and_purge_of_all() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    let gz = [("Accept-Encoding", "gzip, deflate")];
    let a = request(cdn.port, "GET", "/gz/page.html", &gz);
    assert_eq!(
        (a.cache(), a.header("content-encoding")),
        ("MISS", Some("gzip"))
    );
    let b = get(cdn.port, "/gz/page.html");
    assert_eq!(b.cache(), "MISS", "identity must be its own variant");
    assert_eq!(b.header("content-encoding"), None);
    assert_eq!(b.body.len(), 6000);
    let c = request(cdn.port, "GET", "/gz/page.html", &gz);
    assert_eq!(
        (c.cache(), c.header("content-encoding")),
        ("HIT", Some("gzip"))
    );
    assert_eq!(c.body, a.body);
    assert!(c.body.len() < 6000);
    let d = get(cdn.port, "/gz/page.html");
    assert_eq!((d.cache(), d.body.len()), ("HIT", 6000));
    assert_eq!(origin_hits(&origin, "/gz/page.html").len(), 2);
    let p = get(cdn.port, "/purge?url=/gz/page.html");
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    assert_eq!(
        request(cdn.port, "GET", "/gz/page.html", &gz).cache(),
        "MISS"
    );
    assert_eq!(get(cdn.port, "/gz/page.html").cache(), "MISS");
    cdn.check_log();
}

#[test]
fn stale_served_when_origin_is_down_and_error_without_stale() {
    let mut origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "proxy_connect_timeout 2s;");
    let want = std::fs::read(origin.path("www/short/a.txt")).expect("file");
    assert_eq!(get(cdn.port, "/short/a.txt").cache(), "MISS");
    // A configured window covers responses without stale-if-error.
    origin.stop();
    std::thread::sleep(Duration::from_millis(1600));
    let r = get(cdn.port, "/short/a.txt");
    assert_eq!((r.status, r.cache()), (200, "STALE"));
    assert!(r.body == want);
    let never = get(cdn.port, "/small.txt");
    assert!(
        never.status >= 500,
        "nothing stale: expected an error, got {}",
        never.status
    );
    cdn.check_log();
}

#[test]
fn configured_stale_window_and_its_absence() {
    let mut origin = start_origin(&files(), "");
    let with = start_cdn(1, origin.port, "", "rcdn_stale_if_error 1m;");
    let without = start_cdn(1, origin.port, "", "");
    assert_eq!(get(with.port, "/shortnosie/a.txt").cache(), "MISS");
    assert_eq!(get(without.port, "/shortnosie/a.txt").cache(), "MISS");
    origin.stop();
    std::thread::sleep(Duration::from_millis(1600));
    let a = get(with.port, "/shortnosie/a.txt");
    assert_eq!((a.status, a.cache()), (200, "STALE"));
    let b = get(without.port, "/shortnosie/a.txt");
    assert!(
        b.status >= 500,
        "no stale window: got {} {}",
        b.status,
        b.cache()
    );
    with.check_log();
    without.check_log();
}

#[test]
fn expired_objects_are_revalidated_with_conditional_requests() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    let a = get(cdn.port, "/shortnosie/a.txt");
    assert_eq!(a.cache(), "MISS");
    std::thread::sleep(Duration::from_millis(1600));
    let b = get(cdn.port, "/shortnosie/a.txt");
    assert_eq!((b.status, b.cache()), (200, "REVALIDATED"));
    assert_eq!(b.body, a.body);
    let logged = origin_hits(&origin, "/shortnosie/a.txt");
    assert_eq!(logged.len(), 2);
    // nginx's access log escapes the quotes of the ETag as \x22.
    let etag = a.header("etag").expect("etag").replace('"', "\\x22");
    assert!(logged[1].contains(&format!("inm={etag}")), "{}", logged[1]);
    assert!(!logged[1].contains("ims=-"), "{}", logged[1]);
    let c = get(cdn.port, "/shortnosie/a.txt");
    assert_eq!(c.cache(), "HIT");
    cdn.check_log();
}

#[test]
fn concurrent_misses_collapse_into_one_origin_request() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "rcdn_cache_lock_timeout 30s;");
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
    cdn.check_log();
}

#[test]
fn fill_completes_after_the_client_disconnects() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "rcdn_cache_lock_timeout 30s;");
    {
        let mut s = TcpStream::connect(("127.0.0.1", cdn.port)).expect("connect");
        s.write_all(b"GET /slow/obj.bin HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("send");
        std::thread::sleep(Duration::from_millis(300));
    } // the client goes away mid-fill
      // The origin sends at 100k/s: ~3 s. Wait (bounded) for the stored copy.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        if origin.log("logs/origin.log").contains("GET /slow/obj.bin") {
            let r = get(cdn.port, "/slow/obj.bin");
            last = r.cache().to_string();
            if last == "HIT" {
                assert_eq!(origin_hits(&origin, "/slow/obj.bin").len(), 1);
                cdn.check_log();
                return;
            }
        }
    }
    panic!("the fill was not stored after the client left (last status {last})");
}

#[test]
fn stale_while_revalidate_serves_at_once_and_refreshes_in_background() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    let a = get(cdn.port, "/swr/a.txt");
    assert_eq!(a.cache(), "MISS");
    std::thread::sleep(Duration::from_millis(1600));
    let b = get(cdn.port, "/swr/a.txt");
    assert_eq!((b.status, b.cache()), (200, "UPDATING"));
    assert_eq!(b.body, a.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin_hits(&origin, "/swr/a.txt").len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let c = get(cdn.port, "/swr/a.txt");
    assert_eq!((c.cache(), c.body == a.body), ("HIT", true));
    let logged = origin_hits(&origin, "/swr/a.txt");
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(
        !logged[1].contains("inm=-"),
        "refresh was not conditional: {}",
        logged[1]
    );
    cdn.check_log();
}

#[test]
fn expired_object_replaced_when_the_origin_changed() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    let a = get(cdn.port, "/shortnosie/a.txt");
    assert_eq!(a.cache(), "MISS");
    std::fs::write(
        origin.path("www/shortnosie/a.txt"),
        b"new content, new etag",
    )
    .expect("update");
    std::thread::sleep(Duration::from_millis(1600));
    let b = get(cdn.port, "/shortnosie/a.txt");
    assert_eq!((b.status, b.cache()), (200, "EXPIRED"));
    assert_eq!(b.body, b"new content, new etag");
    let c = get(cdn.port, "/shortnosie/a.txt");
    assert_eq!(
        (c.cache(), c.body.as_slice()),
        ("HIT", &b"new content, new etag"[..])
    );
    cdn.check_log();
}
