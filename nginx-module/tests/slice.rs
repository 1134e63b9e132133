//! `rcdn_slice`: large objects fetched by Range and stored slice by slice,
//! on 2 workers and a shared block tier, against a real nginx origin.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// A node on a store large enough for the 64 MiB object, slicing by 1 MiB.
fn sliced_cdn(origin: &Nginx, store: &tempfile::TempDir, loc_extra: &str) -> Nginx {
    let tokens = format!(
        "mem=128m max_object=16m default_ttl=2m tier={0}/shm,size=256m,region=16m,slice=4m ram={0}/ram",
        store.path().display()
    );
    let loc = format!("rcdn_slice 1m; {loc_extra}");
    start_cdn_tokens(&tokens, 2, origin.port, "sendfile on;", &loc)
}

/// The `range=` values the origin logged for `uri`.
fn ranges(origin: &Nginx, uri: &str) -> Vec<String> {
    origin_hits(origin, uri)
        .iter()
        .map(|l| l.rsplit("range=").next().unwrap_or("").to_string())
        .collect()
}

fn slice_ranges(total: usize, slice: usize) -> Vec<String> {
    (0..total.div_ceil(slice))
        .map(|i| {
            let end = ((i + 1) * slice).min(total) - 1;
            format!("bytes={}-{end}", i * slice)
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn big_object_miss_then_hit_ranges_head_304() {
    let want = pattern(64 * MIB, 11);
    let origin = start_origin(&[("big64.bin", want.clone())], "");
    let store = store_dir();
    let cdn = sliced_cdn(&origin, &store, "");
    let a = get(cdn.port, "/big64.bin");
    assert_eq!((a.status, a.cache()), (200, "MISS"));
    assert_eq!(a.header("content-length"), Some("67108864"));
    assert!(a.body == want, "MISS body differs ({} bytes)", a.body.len());
    for _ in 0..2 {
        let b = get(cdn.port, "/big64.bin");
        assert_eq!((b.status, b.cache()), (200, "HIT"));
        assert!(b.body == want, "HIT body differs ({} bytes)", b.body.len());
    }
    // Every slice fetched exactly once, with its own Range.
    assert_eq!(
        sorted(ranges(&origin, "/big64.bin")),
        sorted(slice_ranges(want.len(), MIB))
    );
    // Ranges across slice boundaries.
    for (spec, from, to) in [
        ("bytes=1048000-1049999", 1_048_000, 1_050_000),
        ("bytes=0-0", 0, 1),
        ("bytes=5242879-8388608", 5_242_879, 8_388_609),
        ("bytes=67000000-", 67_000_000, want.len()),
        ("bytes=-100", want.len() - 100, want.len()),
    ] {
        let r = request(cdn.port, "GET", "/big64.bin", &[("Range", spec)]);
        assert_eq!(r.status, 206, "{spec}");
        assert!(r.body == want[from..to], "{spec}: wrong bytes");
        let cr = format!("bytes {from}-{}/{}", to - 1, want.len());
        assert_eq!(r.header("content-range"), Some(cr.as_str()), "{spec}");
    }
    let r = request(
        cdn.port,
        "GET",
        "/big64.bin",
        &[("Range", "bytes=99999999-")],
    );
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */67108864"));
    let h = request(cdn.port, "HEAD", "/big64.bin", &[]);
    assert_eq!(
        (h.status, h.header("content-length")),
        (200, Some("67108864"))
    );
    assert!(h.body.is_empty());
    let etag = a.header("etag").expect("etag").to_string();
    let c = request(cdn.port, "GET", "/big64.bin", &[("If-None-Match", &etag)]);
    assert_eq!((c.status, c.body.len()), (304, 0));
    let lm = a
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    let d = request(cdn.port, "GET", "/big64.bin", &[("If-Modified-Since", &lm)]);
    assert_eq!(d.status, 304);
    // If-Range: a match keeps the range, a mismatch gives the whole object.
    let e = request(
        cdn.port,
        "GET",
        "/big64.bin",
        &[("Range", "bytes=10-19"), ("If-Range", &etag)],
    );
    assert_eq!((e.status, e.body.as_slice()), (206, &want[10..20]));
    let f = request(
        cdn.port,
        "HEAD",
        "/big64.bin",
        &[("Range", "bytes=10-19"), ("If-Range", "\"other\"")],
    );
    assert_eq!(f.status, 200);
    // Nothing went back to the origin.
    assert_eq!(ranges(&origin, "/big64.bin").len(), 64);
    cdn.check_log();
}

#[test]
fn range_on_a_miss_fetches_only_the_slices_it_needs() {
    let want = pattern(16 * MIB, 12);
    let origin = start_origin(&[("r16.bin", want.clone())], "");
    let store = store_dir();
    let cdn = sliced_cdn(&origin, &store, "");
    let r = request(
        cdn.port,
        "GET",
        "/r16.bin",
        &[("Range", "bytes=5000000-6300000")],
    );
    assert_eq!(r.status, 206);
    assert!(r.body == want[5_000_000..6_300_001]);
    let got = sorted(ranges(&origin, "/r16.bin"));
    // Slices 4 and 5 hold the range; the prefetch window may add 6 and 7.
    let all = slice_ranges(want.len(), MIB);
    assert!(got.contains(&all[4]) && got.contains(&all[5]), "{got:?}");
    assert!(
        got.iter().all(|g| all[4..8].contains(g)),
        "fetched slices outside the range and window: {got:?}"
    );
    // The rest comes later, each slice once.
    let full = get(cdn.port, "/r16.bin");
    assert!(full.body == want);
    assert_eq!(sorted(ranges(&origin, "/r16.bin")), sorted(all));
    cdn.check_log();
}

#[test]
fn client_that_leaves_early_does_no_harm() {
    let want = pattern(24 * MIB, 13);
    let origin = start_origin(&[("leave.bin", want.clone())], "");
    let store = store_dir();
    let cdn = sliced_cdn(&origin, &store, "");
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", cdn.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /leave.bin HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("send");
        let mut buf = vec![0u8; 100_000];
        let mut got = 0;
        while got < buf.len() {
            match s.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert!(got > 1000, "no response bytes");
        drop(s);
    }
    let full = get(cdn.port, "/leave.bin");
    assert_eq!(full.status, 200);
    assert!(full.body == want, "body after early leavers differs");
    let again = get(cdn.port, "/leave.bin");
    assert_eq!(again.cache(), "HIT");
    assert!(again.body == want);
    cdn.check_log();
}

#[test]
fn origin_that_ignores_range() {
    let small = pattern(5 * MIB, 14);
    let large = pattern(20 * MIB, 15);
    let origin = start_origin(
        &[
            ("norange/small.bin", small.clone()),
            ("norange/large.bin", large.clone()),
        ],
        "location /norange/ { max_ranges 0; }",
    );
    let store = store_dir();
    let cdn = sliced_cdn(&origin, &store, "");
    // Up to max_object: stored whole.
    let a = get(cdn.port, "/norange/small.bin");
    assert_eq!((a.status, a.cache()), (200, "MISS"));
    assert!(a.body == small);
    let b = get(cdn.port, "/norange/small.bin");
    assert_eq!((b.status, b.cache()), (200, "HIT"));
    assert!(b.body == small);
    let c = request(
        cdn.port,
        "GET",
        "/norange/small.bin",
        &[("Range", "bytes=3-9")],
    );
    assert_eq!((c.status, c.body.as_slice()), (206, &small[3..10]));
    // Larger: passed through, correct, not cached.
    for _ in 0..2 {
        let d = get(cdn.port, "/norange/large.bin");
        assert_eq!(d.status, 200);
        assert!(d.body == large, "pass-through body differs");
        assert_ne!(d.cache(), "HIT");
    }
    let e = request(
        cdn.port,
        "GET",
        "/norange/large.bin",
        &[("Range", "bytes=7-8")],
    );
    assert!(e.status == 200 && e.body == large || e.status == 206 && e.body == large[7..9]);
    cdn.check_log();
}

#[test]
fn url_and_tag_purge_remove_every_slice() {
    let want = pattern(3 * MIB + 12345, 16);
    let origin = start_origin(&[("tagged/s.bin", want.clone())], "");
    let store = store_dir();
    let cdn = sliced_cdn(&origin, &store, "");
    let uri = "/tagged/s.bin";
    let fetches = || ranges(&origin, uri).len();
    assert_eq!(get(cdn.port, uri).cache(), "MISS");
    assert_eq!(fetches(), 4);
    let hit = get(cdn.port, uri);
    assert_eq!(hit.cache(), "HIT");
    assert!(hit.body == want);
    // URL purge.
    let p = get(cdn.port, "/purge?url=/tagged/s.bin");
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    let a = get(cdn.port, uri);
    assert_eq!(a.cache(), "MISS");
    assert!(a.body == want);
    assert_eq!(fetches(), 8, "every slice refetched after the URL purge");
    assert_eq!(get(cdn.port, uri).cache(), "HIT");
    // Only the middle slices cached: a purge must still reach them.
    let p = get(cdn.port, "/purge?tag=news");
    assert_eq!(p.status, 200);
    let r = request(cdn.port, "GET", uri, &[("Range", "bytes=2000000-2000009")]);
    assert_eq!((r.status, r.cache()), (206, "MISS"));
    assert!(r.body == want[2_000_000..2_000_010]);
    let b = get(cdn.port, uri);
    assert!(b.body == want);
    assert_eq!(fetches(), 12, "every slice refetched after the tag purge");
    cdn.check_log();
}

#[test]
fn origin_dying_mid_object_never_gives_wrong_bytes() {
    let want = pattern(12 * MIB, 17);
    let mut origin = start_origin(
        &[("rate/d.bin", want.clone())],
        "location /rate/ { limit_rate 1m; }",
    );
    let store = store_dir();
    let cdn = sliced_cdn(&origin, &store, "");
    let port = cdn.port;
    let client = std::thread::spawn(move || get(port, "/rate/d.bin"));
    std::thread::sleep(Duration::from_millis(1500));
    origin.stop();
    let t0 = Instant::now();
    let r = client.join().expect("client");
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(r.status, 200);
    assert!(r.body.len() < want.len(), "a full body without the origin?");
    assert!(r.body == want[..r.body.len()], "wrong bytes before the cut");
    // With the origin gone, what is cached is still only right bytes.
    let again = get(cdn.port, "/rate/d.bin");
    assert_eq!(again.status, 200);
    assert!(again.body.len() < want.len());
    assert!(again.body == want[..again.body.len()], "wrong bytes cached");
    cdn.check_log();
}

#[test]
fn slice_larger_than_max_object_fails_config_test() {
    let so = module_so();
    let conf = format!(
        "load_module {}; events {{}} http {{ rcdn_store mem=64m max_object=8m; \
         server {{ listen 127.0.0.1:{}; location / {{ rcdn_cache on; rcdn_slice 32m; }} }} }}",
        so.display(),
        free_port()
    );
    let (ok, err) = config_test(&conf);
    assert!(!ok, "nginx -t accepted a slice above max_object");
    assert!(err.contains("rcdn_slice") && err.contains("32m"), "{err}");
    let bad = conf.replace("rcdn_slice 32m", "rcdn_slice lots");
    let (ok, err) = config_test(&bad);
    assert!(!ok);
    assert!(
        err.contains("\"lots\"") && err.contains("rcdn_slice"),
        "{err}"
    );
    let fine = conf.replace("rcdn_slice 32m", "rcdn_slice 1m");
    let (ok, err) = config_test(&fine);
    assert!(ok, "{err}");
}
