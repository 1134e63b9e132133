//! HTTP caching to RFC 9111 through the real nginx and a scripted origin
//! (issue 13's "Must hold" rules, named by number in each test). The
//! origin records every request, so each test counts what the cache sent.

mod common;
use common::scripted::Scripted;
use common::*;

/// A CDN node (one worker) in front of a scripted origin.
fn node(o: &Scripted, loc_extra: &str) -> Nginx {
    start_cdn(1, o.port, "", loc_extra)
}

fn ok(cc: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\nDate: {{date}}\nContent-Type: text/plain\n{cc}Content-Length: {{len}}\nConnection: close\n\n{body}"
    )
}

#[test]
fn rule1_a_response_not_stored_costs_one_origin_request() {
    let o = Scripted::start();
    let big: String = "0123456789abcdef".repeat(64 * 1024); // 1 MiB
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "/nostore",
            ok("Cache-Control: no-store\n", "nostore body"),
            200,
        ),
        (
            "/private",
            ok("Cache-Control: private, max-age=60\n", "private body"),
            200,
        ),
        ("/cookie", ok("Set-Cookie: s=1\n", "cookie body"), 200),
        (
            "/varystar",
            ok("Vary: *\nCache-Control: max-age=60\n", "vary body"),
            200,
        ),
        (
            "/s307",
            "HTTP/1.1 307 Temporary Redirect\nLocation: /x\nContent-Length: 4\n\nmove".into(),
            307,
        ),
        (
            "/s404",
            "HTTP/1.1 404 Not Found\nContent-Length: 4\n\nnope".into(),
            404,
        ),
        (
            "/s410",
            "HTTP/1.1 410 Gone\nContent-Length: 4\n\ngone".into(),
            410,
        ),
        (
            "/s503",
            "HTTP/1.1 503 Service Unavailable\nContent-Length: 4\n\ndown".into(),
            503,
        ),
        (
            "/s201",
            "HTTP/1.1 201 Created\nContent-Length: 4\n\nmade".into(),
            201,
        ),
        (
            // No Content-Length: the body ends with the connection.
            "/closed",
            "HTTP/1.1 200 OK\nCache-Control: no-store\nConnection: close\n\nuntil close".into(),
            200,
        ),
        ("/nostore-big", ok("Cache-Control: no-store\n", &big), 200),
    ];
    for (path, raw, _) in &cases {
        o.script(path, &[raw]);
    }
    let cdn = node(&o, "");
    for (path, raw, status) in &cases {
        let want = raw.split("\n\n").nth(1).unwrap_or("");
        for round in 1..=2 {
            let r = get(cdn.port, path);
            assert_eq!(r.status, *status, "{path} round {round}");
            assert!(
                r.body == want.as_bytes(),
                "{path} round {round}: body of {} bytes, want {}",
                r.body.len(),
                want.len()
            );
            assert_ne!(r.cache(), "HIT", "{path} round {round}");
            assert_eq!(
                o.count(path),
                round,
                "{path}: origin requests after {round}"
            );
        }
    }
    // The client whose request fetched it gets its own cookie.
    assert_eq!(get(cdn.port, "/cookie").header("set-cookie"), Some("s=1"));
    cdn.check_log();
}

#[test]
fn rule2_statuses_with_explicit_freshness_are_stored() {
    let o = Scripted::start();
    let statuses = [
        (200, "OK"),
        (203, "Non-Authoritative Information"),
        (204, "No Content"),
        (299, "Whatever"),
        (300, "Multiple Choices"),
        (301, "Moved Permanently"),
        (307, "Temporary Redirect"),
        (308, "Permanent Redirect"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (410, "Gone"),
        (414, "URI Too Long"),
        (500, "Internal Server Error"),
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (599, "Whatever"),
    ];
    for (s, reason) in statuses {
        let body = if s == 204 { "" } else { "body" };
        o.script(
            &format!("/x{s}"),
            &[&format!(
                "HTTP/1.1 {s} {reason}\nDate: {{date}}\nCache-Control: max-age=300\nLast-Modified: {LM}\nLocation: /else\nContent-Length: {{len}}\n\n{body}"
            )],
        );
    }
    let cdn = node(&o, "");
    for (s, _) in statuses {
        let path = format!("/x{s}");
        let a = get(cdn.port, &path);
        let b = get(cdn.port, &path);
        assert_eq!((a.status, b.status), (s, s), "{path}");
        assert_eq!(b.cache(), "HIT", "{path}");
        assert_eq!(o.count(&path), 1, "{path}");
        // Every stored field is replayed, on the miss and on the hit
        // (nginx's header filter would drop it on a non-200).
        assert_eq!(a.header("last-modified"), Some(LM), "{path} miss");
        assert_eq!(b.header("last-modified"), Some(LM), "{path} hit");
    }
    cdn.check_log();
}

const LM: &str = "Tue, 01 Dec 2026 10:00:00 GMT";

#[test]
fn rule2_heuristic_freshness_only_for_heuristically_cacheable_statuses() {
    let o = Scripted::start();
    // Ten days old: a tenth is a day, the default heuristic_max.
    let lm = "Last-Modified: {date-864000}\n";
    for (s, reason) in [
        (200, "OK"),
        (404, "Not Found"),
        (201, "Created"),
        (403, "Forbidden"),
        (502, "Bad Gateway"),
    ] {
        o.script(
            &format!("/h{s}"),
            &[&format!(
                "HTTP/1.1 {s} {reason}\nDate: {{date}}\n{lm}Content-Length: 4\n\nbody"
            )],
        );
    }
    // No Last-Modified: no heuristic; 200 is in the default fallback table,
    // 404 is not.
    o.script("/n200", &[&ok("", "body")]);
    o.script(
        "/n404",
        &["HTTP/1.1 404 Not Found\nDate: {date}\nContent-Length: 4\n\nbody"],
    );
    let cdn = node(&o, "");
    for (path, stored) in [
        ("/h200", true),
        ("/h404", true),
        ("/h201", false),
        ("/h403", false),
        ("/h502", false),
        ("/n200", true),
        ("/n404", false),
    ] {
        get(cdn.port, path);
        let b = get(cdn.port, path);
        assert_eq!(b.cache() == "HIT", stored, "{path}: {}", b.cache());
        assert_eq!(o.count(path), if stored { 1 } else { 2 }, "{path}");
    }
    cdn.check_log();
}

#[test]
fn rule2_rcdn_cache_valid_is_the_table_for_responses_without_freshness() {
    let o = Scripted::start();
    o.script(
        "/v404",
        &["HTTP/1.1 404 Not Found\nDate: {date}\nContent-Length: 4\n\nnope"],
    );
    o.script("/v200", &[&ok("", "body")]);
    o.script("/v200cc", &[&ok("Cache-Control: max-age=300\n", "body")]);
    // 404 listed; 200 not: without freshness it is not stored, with its
    // own max-age it is (the table is only a fallback).
    let cdn = node(&o, "rcdn_cache_valid 404 1m;");
    for (path, stored) in [("/v404", true), ("/v200", false), ("/v200cc", true)] {
        get(cdn.port, path);
        let b = get(cdn.port, path);
        assert_eq!(b.cache() == "HIT", stored, "{path}: {}", b.cache());
        assert_eq!(o.count(path), if stored { 1 } else { 2 }, "{path}");
    }
    cdn.check_log();
}

#[test]
fn rule3_age_is_kept_and_grows_and_date_is_the_origins() {
    let o = Scripted::start();
    o.script(
        "/aged",
        &["HTTP/1.1 200 OK\nDate: Tue, 01 Dec 2026 10:00:00 GMT\nAge: 30\nCache-Control: max-age=999999999\nContent-Length: 4\n\nbody"],
    );
    let cdn = node(&o, "");
    let a = get(cdn.port, "/aged");
    assert_eq!(a.header("date"), Some("Tue, 01 Dec 2026 10:00:00 GMT"));
    // The apparent age (now − Date) is larger than Age: 30 here.
    let age_a: u64 = a.header("age").and_then(|v| v.parse().ok()).expect("Age");
    assert!(age_a >= 30, "first Age {age_a}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = get(cdn.port, "/aged");
    assert_eq!(b.cache(), "HIT");
    assert_eq!(b.header("date"), Some("Tue, 01 Dec 2026 10:00:00 GMT"));
    let age_b: u64 = b.header("age").and_then(|v| v.parse().ok()).expect("Age");
    assert!(age_b > age_a, "Age {age_a} then {age_b}");
    assert_eq!(o.count("/aged"), 1);
    cdn.check_log();
}

#[test]
fn rule3_expires_before_date_and_age_beyond_expires_are_stale() {
    let o = Scripted::start();
    o.script(
        "/past",
        &["HTTP/1.1 200 OK\nDate: {date}\nExpires: {date-10}\nContent-Length: 4\n\nbody"],
    );
    o.script(
        "/aged-out",
        &["HTTP/1.1 200 OK\nDate: {date}\nAge: 7200\nExpires: {date+3600}\nContent-Length: 4\n\nbody"],
    );
    o.script(
        "/bad-expires",
        &["HTTP/1.1 200 OK\nDate: {date}\nExpires: soon\nContent-Length: 4\n\nbody"],
    );
    o.script(
        "/future",
        &["HTTP/1.1 200 OK\nDate: {date}\nExpires: {date+3600}\nContent-Length: 4\n\nbody"],
    );
    let cdn = node(&o, "");
    for (path, fresh) in [
        ("/past", false),
        ("/aged-out", false),
        ("/bad-expires", false),
        ("/future", true),
    ] {
        get(cdn.port, path);
        let b = get(cdn.port, path);
        assert_eq!(b.cache() == "HIT", fresh, "{path}: {}", b.cache());
        assert_eq!(o.count(path), if fresh { 1 } else { 2 }, "{path}");
    }
    cdn.check_log();
}

#[test]
fn rule7_cdn_cache_control_takes_precedence_and_can_be_renamed() {
    let o = Scripted::start();
    o.script(
        "/cdn-stores",
        &[&ok(
            "CDN-Cache-Control: max-age=300\nCache-Control: no-store\n",
            "a",
        )],
    );
    o.script(
        "/cdn-forbids",
        &[&ok(
            "CDN-Cache-Control: no-store\nCache-Control: max-age=300\n",
            "b",
        )],
    );
    o.script(
        "/surrogate",
        &[&ok(
            "Surrogate-Control: max-age=300\nCache-Control: private\n",
            "c",
        )],
    );
    o.script(
        "/acme",
        &[&ok(
            "Acme-Cache-Control: max-age=300\nCDN-Cache-Control: no-store\nCache-Control: no-store\n",
            "d",
        )],
    );
    let cdn = node(&o, "");
    for (path, stored) in [
        ("/cdn-stores", true),
        ("/cdn-forbids", false),
        ("/surrogate", true),
        ("/acme", false),
    ] {
        get(cdn.port, path);
        let b = get(cdn.port, path);
        assert_eq!(b.cache() == "HIT", stored, "{path}: {}", b.cache());
    }
    // CDN-Cache-Control is forwarded downstream (RFC 9213 §3).
    assert!(get(cdn.port, "/cdn-stores")
        .header("cdn-cache-control")
        .is_some());
    drop(cdn);
    // Renamed: only Acme-Cache-Control is this cache's field.
    let cdn = node(&o, "rcdn_cdn_cache_control Acme-Cache-Control;");
    for (path, stored) in [("/acme", true), ("/cdn-stores", false)] {
        get(cdn.port, path);
        let b = get(cdn.port, path);
        assert_eq!(b.cache() == "HIT", stored, "{path}: {}", b.cache());
    }
    cdn.check_log();
}

#[test]
fn rule6_connection_fields_set_cookie_and_content_range() {
    let o = Scripted::start();
    o.script(
        "/hop",
        &[&ok(
            "Connection: close, X-Hop\nX-Hop: secret\nX-Kept: yes\nCache-Control: max-age=300\n",
            "hop",
        )],
    );
    o.script(
        "/range416",
        &["HTTP/1.1 416 Range Not Satisfiable\nDate: {date}\nContent-Range: bytes */1000\nCache-Control: max-age=300\nContent-Length: 0\n\n"],
    );
    o.script(
        "/cookie",
        &[&ok(
            "Set-Cookie: id=1\nCache-Control: max-age=300\n",
            "cookie",
        )],
    );
    let cdn = node(&o, "");
    get(cdn.port, "/hop");
    let b = get(cdn.port, "/hop");
    assert_eq!(b.cache(), "HIT");
    assert_eq!(b.header("x-kept"), Some("yes"));
    assert_eq!(
        b.header("x-hop"),
        None,
        "a field named in Connection was stored"
    );
    get(cdn.port, "/range416");
    let c = get(cdn.port, "/range416");
    assert_eq!((c.status, c.cache()), (416, "HIT"));
    assert_eq!(c.header("content-range"), Some("bytes */1000"));
    // Set-Cookie: by default the response is not stored for others.
    let first = get(cdn.port, "/cookie");
    assert_eq!(first.header("set-cookie"), Some("id=1"));
    let second = get(cdn.port, "/cookie");
    assert_ne!(second.cache(), "HIT");
    assert_eq!(o.count("/cookie"), 2);
    drop(cdn);
    // cache_set_cookie=on: stored, the cookie never replayed.
    let dir = store_dir();
    let tokens = format!("{} cache_set_cookie=on", store_tokens(dir.path()));
    let cdn = start_cdn_tokens(&tokens, 1, o.port, "", "");
    let first = get(cdn.port, "/cookie");
    assert_eq!(first.header("set-cookie"), None, "{:?}", first.headers);
    let second = get(cdn.port, "/cookie");
    assert_eq!(second.cache(), "HIT");
    assert_eq!(second.header("set-cookie"), None);
    cdn.check_log();
}

/// (path, request headers, wanted status).
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

fn http_date(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now();
    let d = std::time::Duration::from_secs(offset_secs.unsigned_abs());
    httpdate::fmt_http_date(if offset_secs < 0 { now - d } else { now + d })
}

#[test]
fn rule5_client_conditionals_on_a_fresh_stored_response() {
    let o = Scripted::start();
    o.script(
        "/cond",
        &[&ok(
            "ETag: \"v1\"\nLast-Modified: {date-86400}\nCache-Control: max-age=300\n",
            "body",
        )],
    );
    o.script(
        "/cond-nolm",
        &["HTTP/1.1 200 OK\nDate: {date-100}\nCache-Control: max-age=300\nContent-Length: 4\n\nbody"],
    );
    let cdn = node(&o, "");
    get(cdn.port, "/cond");
    get(cdn.port, "/cond-nolm");
    let now = http_date(0);
    let old = http_date(-2 * 86400);
    let cases: Vec<Case> = vec![
        ("/cond", vec![("If-None-Match", "\"v1\"")], 304),
        ("/cond", vec![("If-None-Match", "W/\"v1\", \"x\"")], 304),
        ("/cond", vec![("If-None-Match", "\"other\"")], 200),
        // If-None-Match decides; If-Modified-Since is then ignored.
        (
            "/cond",
            vec![("If-None-Match", "\"v1\""), ("If-Modified-Since", &old)],
            304,
        ),
        (
            "/cond",
            vec![("If-None-Match", "\"other\""), ("If-Modified-Since", &now)],
            200,
        ),
        // Not newer than If-Modified-Since (not only equal): 304.
        ("/cond", vec![("If-Modified-Since", &now)], 304),
        ("/cond", vec![("If-Modified-Since", &old)], 200),
        // Without Last-Modified, the Date is the modification time.
        ("/cond-nolm", vec![("If-Modified-Since", &now)], 304),
        ("/cond-nolm", vec![("If-Modified-Since", &old)], 200),
        ("/cond", vec![("If-Match", "\"nope\"")], 412),
    ];
    for (path, headers, want) in &cases {
        let r = request(cdn.port, "GET", path, headers);
        assert_eq!(r.status, *want, "{path} {headers:?}");
        assert_eq!(r.cache(), "HIT", "{path} {headers:?}");
        if *want == 304 {
            assert!(r.body.is_empty());
            assert!(r.header("age").is_some(), "{path}: 304 without Age");
            if *path == "/cond" {
                assert_eq!(r.header("etag"), Some("\"v1\""));
            }
        }
    }
    assert_eq!((o.count("/cond"), o.count("/cond-nolm")), (1, 1));
    cdn.check_log();
}

#[test]
fn rule5_revalidation_sends_validators_and_a_304_updates_the_stored_headers() {
    let o = Scripted::start();
    o.script(
        "/reval",
        &[
            &ok(
                "ETag: \"r1\"\nLast-Modified: Mon, 30 Nov 2026 08:00:00 GMT\nCache-Control: max-age=1\nVary: Accept-Encoding\nX-Version: 1\n",
                "abcd",
            ),
            "HTTP/1.1 304 Not Modified\nDate: {date}\nETag: \"r1\"\nCache-Control: max-age=300\nX-Version: 2\n\n",
        ],
    );
    let cdn = node(&o, "");
    let gz = [("Accept-Encoding", "gzip")];
    let a = request(cdn.port, "GET", "/reval", &gz);
    assert_eq!((a.status, a.cache()), (200, "MISS"));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let b = request(cdn.port, "GET", "/reval", &gz);
    assert_eq!(
        (b.status, b.cache(), b.body.as_slice()),
        (200, "REVALIDATED", &b"abcd"[..])
    );
    let reqs = o.requests("/reval");
    assert_eq!(reqs.len(), 2);
    let reval = &reqs[1];
    assert_eq!(reval.header("if-none-match"), Some("\"r1\""));
    assert_eq!(
        reval.header("if-modified-since"),
        Some("Mon, 30 Nov 2026 08:00:00 GMT")
    );
    // The field the response varies on, with the value that selected it.
    assert_eq!(reval.header("accept-encoding"), Some("gzip"));
    let c = request(cdn.port, "GET", "/reval", &gz);
    assert_eq!((c.cache(), c.body.as_slice()), ("HIT", &b"abcd"[..]));
    assert_eq!(
        c.header("x-version"),
        Some("2"),
        "the 304 updated the headers"
    );
    assert_eq!(o.count("/reval"), 2);
    cdn.check_log();
}

#[test]
fn rule4_a_successful_unsafe_method_invalidates_the_url_and_its_locations() {
    let o = Scripted::start();
    let cached = ok("Cache-Control: max-age=300\n", "stored");
    for p in ["/inv", "/inv2", "/inv3", "/inv4", "/kept", "/failed"] {
        o.script(p, &[&cached]);
    }
    o.script(
        "/form",
        &["HTTP/1.1 201 Created\nLocation: /inv2\nContent-Location: http://localhost/inv3\nContent-Length: 2\n\nok"],
    );
    o.script(
        "/elsewhere",
        &["HTTP/1.1 303 See Other\nLocation: http://other.example/kept\nContent-Length: 0\n\n"],
    );
    let cdn = node(&o, "");
    let paths = ["/inv", "/inv2", "/inv3", "/inv4", "/kept", "/failed"];
    for p in paths {
        get(cdn.port, p);
        assert_eq!(get(cdn.port, p).cache(), "HIT", "{p}");
    }
    let body = [("Content-Length", "0")];
    assert_eq!(request(cdn.port, "POST", "/inv", &body).status, 200);
    assert_eq!(request(cdn.port, "PUT", "/form", &body).status, 201);
    assert_eq!(request(cdn.port, "DELETE", "/elsewhere", &body).status, 303);
    assert_eq!(request(cdn.port, "FROB", "/inv4", &body).status, 200);
    // A failed unsafe request invalidates nothing.
    o.script(
        "/failed",
        &["HTTP/1.1 500 Oops\nContent-Length: 0\n\n", &cached],
    );
    assert_eq!(request(cdn.port, "POST", "/failed", &body).status, 500);
    for (p, gone) in [
        ("/inv", true),
        ("/inv2", true),
        ("/inv3", true),
        ("/inv4", true),
        ("/kept", false),
        ("/failed", false),
    ] {
        let r = get(cdn.port, p);
        assert_eq!(r.cache() == "MISS", gone, "{p}: {}", r.cache());
    }
    cdn.check_log();
}

#[test]
fn rule9_a_head_miss_fills_with_get_and_a_head_response_freshens_the_get() {
    let o = Scripted::start();
    let v1 = "ETag: \"h1\"\nCache-Control: max-age=300\nX-Version: 1\n";
    o.script("/head", &[&ok(v1, "body")]);
    let cdn = node(&o, "");
    // A HEAD miss is filled with GET; the GET after it is a hit.
    let h = request(cdn.port, "HEAD", "/head", &[]);
    assert_eq!((h.status, h.body.len()), (200, 0));
    let reqs = o.requests("/head");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(get(cdn.port, "/head").cache(), "HIT");
    drop(cdn);
    // HEAD not cached: it goes to the origin, and its response updates
    // the stored GET when the validators match, else drops it.
    let o = Scripted::start();
    o.script(
        "/head",
        &[
            &ok(v1, "body"),
            &ok(
                "ETag: \"h1\"\nCache-Control: max-age=300\nX-Version: 2\n",
                "body",
            ),
            &ok(
                "ETag: \"h2\"\nCache-Control: max-age=300\nX-Version: 3\n",
                "BODY",
            ),
        ],
    );
    let cdn = node(&o, "rcdn_cache_methods GET;");
    get(cdn.port, "/head");
    assert_eq!(request(cdn.port, "HEAD", "/head", &[]).status, 200);
    let b = get(cdn.port, "/head");
    assert_eq!(b.cache(), "HIT");
    assert_eq!(b.header("x-version"), Some("2"), "the HEAD updated the GET");
    assert_eq!(b.body, b"body");
    assert_eq!(request(cdn.port, "HEAD", "/head", &[]).status, 200);
    let c = get(cdn.port, "/head");
    assert_eq!(c.cache(), "MISS", "another ETag: the stored GET is stale");
    assert_eq!(c.body, b"BODY");
    cdn.check_log();
}

/// A final 200 after `interim` (raw 1xx responses, each ending in a blank
/// line): explicit `Content-Length`, since `{len}` would count from the
/// first blank line.
fn after_interim(interim: &str, cc: &str, body: &str) -> String {
    format!(
        "{interim}HTTP/1.1 200 OK\nDate: {{date}}\nContent-Type: text/plain\n{cc}Content-Length: {}\nConnection: close\n\n{body}",
        body.len()
    )
}

#[test]
fn rule1_interim_responses_are_skipped_and_never_stored() {
    let o = Scripted::start();
    let fresh = "Cache-Control: max-age=300\n";
    let hints = "HTTP/1.1 103 Early Hints\nLink: </style.css>; rel=preload; as=style\nLink: </app.js>; rel=preload; as=script\nX-Hint: early\n\n";
    let chunked = "HTTP/1.1 102 Processing\n\nHTTP/1.1 200 OK\nDate: {date}\nCache-Control: max-age=300\nTransfer-Encoding: chunked\nConnection: close\n\n5\nhello\n6\n world\n0\n\n";
    // Early hints as origins send them: apart from the final response, and
    // more of them than the proxy's header buffer (4k) holds at once.
    let link = format!("Link: </{}.css>; rel=preload\n", "x".repeat(3000));
    let big_hints = format!("HTTP/1.1 103 Early Hints\n{link}\n").repeat(4);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "/i100",
            after_interim("HTTP/1.1 100 Continue\n\n", fresh, "after continue"),
            "after continue",
        ),
        (
            "/i103",
            after_interim(hints, fresh, "after hints"),
            "after hints",
        ),
        ("/i102-chunked", chunked.to_string(), "hello world"),
        (
            "/i-many",
            after_interim(
                &format!("HTTP/1.1 100 Continue\n\nHTTP/1.1 102 Processing\n\n{hints}"),
                fresh,
                "after three",
            ),
            "after three",
        ),
        (
            "/i103-apart",
            after_interim(&format!("{hints}{{flush}}"), fresh, "after a pause"),
            "after a pause",
        ),
        (
            "/i103-big",
            after_interim(&big_hints, fresh, "after big hints"),
            "after big hints",
        ),
    ];
    for (path, raw, _) in &cases {
        o.script(path, &[raw]);
    }
    let cdn = node(&o, "");
    for (path, _, want) in &cases {
        let a = get(cdn.port, path);
        let b = get(cdn.port, path);
        for (round, r) in [(1, &a), (2, &b)] {
            assert_eq!(
                (r.status, String::from_utf8_lossy(&r.body).as_ref()),
                (200, *want),
                "{path} round {round}: {r:?}"
            );
            assert_eq!(r.header("link"), None, "{path} round {round}: {r:?}");
            assert_eq!(r.header("x-hint"), None, "{path} round {round}: {r:?}");
        }
        // The final response's own fields, stored and replayed.
        assert_eq!(a.header("cache-control"), Some("max-age=300"), "{path}");
        assert_eq!(b.header("cache-control"), Some("max-age=300"), "{path}");
        assert_eq!(a.cache(), "MISS", "{path}");
        assert_eq!(b.cache(), "HIT", "{path}: the final response is stored");
        assert_eq!(o.count(path), 1, "{path}: origin requests");
    }
    cdn.check_log();
}

#[test]
fn rule1_a_final_response_not_stored_after_an_interim_one_is_passed() {
    let o = Scripted::start();
    let hints = "HTTP/1.1 103 Early Hints\nLink: </a.css>; rel=preload\n\n";
    o.script(
        "/i-nostore",
        &[&after_interim(
            hints,
            "Cache-Control: no-store\n",
            "mine only",
        )],
    );
    o.script(
        "/i-404",
        &["HTTP/1.1 100 Continue\n\nHTTP/1.1 404 Not Found\nContent-Length: 4\nConnection: close\n\nnope"],
    );
    let cdn = node(&o, "");
    for round in 1..=2 {
        let r = get(cdn.port, "/i-nostore");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"mine only"[..]),
            "{r:?}"
        );
        assert_eq!(r.header("link"), None, "{r:?}");
        assert_ne!(r.cache(), "HIT");
        assert_eq!(o.count("/i-nostore"), round, "origin requests");
        let r = get(cdn.port, "/i-404");
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]), "{r:?}");
        assert_eq!(o.count("/i-404"), round, "origin requests");
    }
    cdn.check_log();
}

#[test]
fn rule1_an_endless_stream_of_interim_responses_is_a_bad_gateway() {
    let o = Scripted::start();
    let many = "HTTP/1.1 100 Continue\n\n".repeat(40);
    o.script(
        "/i-endless",
        &[&after_interim(
            &many,
            "Cache-Control: max-age=300\n",
            "never",
        )],
    );
    let cdn = node(&o, "");
    let r = get(cdn.port, "/i-endless");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(o.count("/i-endless"), 1, "origin requests");
    assert!(
        cdn.error_log().contains("more than 16 interim responses"),
        "{}",
        cdn.error_log()
    );
    cdn.check_log();
}

#[test]
fn rule5_a_304_after_an_interim_response_revalidates_without_its_fields() {
    let o = Scripted::start();
    o.script(
        "/i-reval",
        &[
            &ok("ETag: \"v1\"\nCache-Control: max-age=1\nX-Version: 1\n", "abcd"),
            "HTTP/1.1 103 Early Hints\nLink: </a.css>; rel=preload\nX-Version: early\n\nHTTP/1.1 304 Not Modified\nDate: {date}\nETag: \"v1\"\nCache-Control: max-age=300\nX-Version: 2\n\n",
        ],
    );
    let cdn = node(&o, "");
    assert_eq!(get(cdn.port, "/i-reval").cache(), "MISS");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let b = get(cdn.port, "/i-reval");
    assert_eq!(
        (b.status, b.cache(), b.body.as_slice()),
        (200, "REVALIDATED", &b"abcd"[..]),
        "{b:?}"
    );
    let c = get(cdn.port, "/i-reval");
    assert_eq!((c.cache(), c.body.as_slice()), ("HIT", &b"abcd"[..]));
    for r in [&b, &c] {
        assert_eq!(r.header("x-version"), Some("2"), "{r:?}");
        assert_eq!(r.header("link"), None, "{r:?}");
    }
    assert_eq!(o.count("/i-reval"), 2);
    cdn.check_log();
}

#[test]
fn rule5_a_stale_variant_of_any_vary_is_revalidated_with_its_validators_and_fields() {
    let o = Scripted::start();
    let one = "ETag: \"v1\"\nCache-Control: max-age=0\nVary: Abc\nX-Version: 1\n";
    let two = "ETag: \"v2\"\nCache-Control: max-age=300\nVary: Abc\n";
    let none = "ETag: \"v3\"\nCache-Control: max-age=300\nVary: Abc\n";
    o.script(
        "/vary",
        &[
            &ok(one, "one"),
            &ok(two, "two"),
            "HTTP/1.1 304 Not Modified\nDate: {date}\nETag: \"v1\"\nCache-Control: max-age=300\nX-Version: 2\n\n",
            &ok(none, "none"),
            &ok(two, "after purge"),
        ],
    );
    let cdn = node(&o, "");
    let abc = |v: &'static str| [("Abc", v)];
    let a = request(cdn.port, "GET", "/vary", &abc("1"));
    assert_eq!((a.cache(), a.body.as_slice()), ("MISS", &b"one"[..]));
    let b = request(cdn.port, "GET", "/vary", &abc("2"));
    assert_eq!((b.cache(), b.body.as_slice()), ("MISS", &b"two"[..]));
    // Stored stale (max-age=0): revalidated with its own validators and
    // the field value that selected it; the 304 freshens that variant.
    let c = request(cdn.port, "GET", "/vary", &abc("1"));
    assert_eq!(
        (c.status, c.cache(), c.body.as_slice()),
        (200, "REVALIDATED", &b"one"[..])
    );
    let reqs = o.requests("/vary");
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].header("if-none-match"), Some("\"v1\""));
    assert_eq!(reqs[2].header("abc"), Some("1"));
    assert_eq!(reqs[1].header("if-none-match"), None, "a new variant");
    let d = request(cdn.port, "GET", "/vary", &abc("1"));
    assert_eq!((d.cache(), d.body.as_slice()), ("HIT", &b"one"[..]));
    assert_eq!(d.header("x-version"), Some("2"), "the 304 updated it");
    assert_eq!(d.header("vary"), Some("Abc"));
    let e = request(cdn.port, "GET", "/vary", &abc("2"));
    assert_eq!((e.cache(), e.body.as_slice()), ("HIT", &b"two"[..]));
    // Combined lines and spaces around commas select the same variant;
    // an absent field is a variant of its own.
    let e2 = request(cdn.port, "GET", "/vary", &[("Abc", " 2 ")]);
    assert_eq!(e2.cache(), "HIT");
    let f = get(cdn.port, "/vary");
    assert_eq!((f.cache(), f.body.as_slice()), ("MISS", &b"none"[..]));
    assert_eq!(get(cdn.port, "/vary").cache(), "HIT");
    assert_eq!(o.count("/vary"), 4);
    // A purge of the URL takes every variant.
    let p = get(cdn.port, "/purge?url=/vary");
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    let g = request(cdn.port, "GET", "/vary", &abc("2"));
    assert_eq!(
        (g.cache(), g.body.as_slice()),
        ("MISS", &b"after purge"[..])
    );
    assert_eq!(request(cdn.port, "GET", "/vary", &abc("1")).cache(), "MISS");
    assert_eq!(o.count("/vary"), 6);
    cdn.check_log();
}

#[test]
fn rule4_an_unsafe_method_invalidates_every_variant_and_unsendable_vary_is_not_stored() {
    let o = Scripted::start();
    let v = ok(
        "Cache-Control: max-age=300\nVary: Abc, Accept-Encoding\n",
        "v",
    );
    o.script("/inv-vary", &[&v]);
    // The fill drops Cache-Control: the origin never sees what this varies on.
    o.script(
        "/vary-cc",
        &[&ok(
            "Cache-Control: max-age=300\nVary: Cache-Control\n",
            "cc",
        )],
    );
    let cdn = node(&o, "");
    let sel = [("Abc", "x"), ("Accept-Encoding", "gzip")];
    for h in [&sel[..], &sel[..1]] {
        assert_eq!(request(cdn.port, "GET", "/inv-vary", h).cache(), "MISS");
        assert_eq!(request(cdn.port, "GET", "/inv-vary", h).cache(), "HIT");
    }
    assert_eq!(o.count("/inv-vary"), 2);
    let reqs = o.requests("/inv-vary");
    assert_eq!(reqs[0].header("accept-encoding"), Some("gzip"));
    assert_eq!(reqs[1].header("accept-encoding"), None);
    let body = [("Content-Length", "0")];
    assert_eq!(request(cdn.port, "POST", "/inv-vary", &body).status, 200);
    for h in [&sel[..], &sel[..1]] {
        assert_eq!(request(cdn.port, "GET", "/inv-vary", h).cache(), "MISS");
    }
    for round in 1..=2 {
        let r = request(
            cdn.port,
            "GET",
            "/vary-cc",
            &[("Cache-Control", "max-age=9")],
        );
        assert_eq!((r.status, r.cache()), (200, "MISS"));
        assert_eq!(o.count("/vary-cc"), round);
    }
    cdn.check_log();
}

#[test]
fn rule7_surrogate_capability_is_sent_so_surrogate_control_can_target_this_node() {
    let o = Scripted::start();
    let targeted = "Cache-Control: no-store\nSurrogate-Control: max-age=300;rcdn, no-store;other\n";
    for p in ["/sc", "/sc-chained", "/sc-off"] {
        o.script(p, &[&ok(targeted, "sc")]);
    }
    let cdn = node(&o, "");
    let a = get(cdn.port, "/sc");
    assert_eq!((a.status, a.cache()), (200, "MISS"));
    assert_eq!(a.header("surrogate-control"), None, "consumed");
    let b = get(cdn.port, "/sc");
    assert_eq!((b.cache(), b.body.as_slice()), ("HIT", &b"sc"[..]));
    let seen = o.requests("/sc");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("surrogate-capability"),
        Some("rcdn=\"Surrogate/1.0\"")
    );
    // A surrogate in front of this one: its capability first, then ours.
    let edge = [("Surrogate-Capability", "edge=\"Surrogate/1.0\"")];
    request(cdn.port, "GET", "/sc-chained", &edge);
    assert_eq!(
        o.requests("/sc-chained")[0].header("surrogate-capability"),
        Some("edge=\"Surrogate/1.0\", rcdn=\"Surrogate/1.0\"")
    );
    drop(cdn);
    // Not obeying Surrogate-Control: nothing advertised, no-store holds.
    let cdn = node(&o, "rcdn_cdn_cache_control CDN-Cache-Control;");
    for round in 1..=2 {
        assert_ne!(get(cdn.port, "/sc-off").cache(), "HIT");
        assert_eq!(o.count("/sc-off"), round);
    }
    assert_eq!(
        o.requests("/sc-off")[0].header("surrogate-capability"),
        None
    );
    cdn.check_log();
}

#[test]
fn rule10_authorization_responses_are_reused_only_with_public_s_maxage_or_must_revalidate() {
    let o = Scripted::start();
    let allowing = [
        ("/auth-public", "public, max-age=300"),
        ("/auth-smaxage", "s-maxage=300"),
        ("/auth-mustrev", "max-age=300, must-revalidate"),
    ];
    for (p, cc) in allowing {
        o.script(p, &[&ok(&format!("Cache-Control: {cc}\n"), p)]);
    }
    o.script(
        "/auth-plain",
        &[&ok("Cache-Control: max-age=300\n", "plain")],
    );
    o.script(
        "/auth-vary",
        &[&ok(
            "Cache-Control: public, max-age=300\nVary: Authorization\n",
            "per user",
        )],
    );
    let cdn = node(&o, "");
    let alice = [("Authorization", "Basic YWxpY2U6MQ==")];
    let bob = [("Authorization", "Basic Ym9iOjI=")];
    for (p, _) in allowing {
        let a = request(cdn.port, "GET", p, &alice);
        assert_eq!((a.status, a.cache()), (200, "MISS"), "{p}");
        assert_eq!(o.requests(p)[0].header("authorization"), alice[0].1.into());
        // Stored: reused for any later request (RFC 9111 §3.5).
        assert_eq!(request(cdn.port, "GET", p, &bob).cache(), "HIT", "{p}");
        assert_eq!(get(cdn.port, p).cache(), "HIT", "{p}");
        assert_eq!(o.count(p), 1, "{p}");
    }
    // Without them: not stored, one origin request per request.
    for round in 1..=2 {
        let r = request(cdn.port, "GET", "/auth-plain", &alice);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"plain"[..]));
        assert_ne!(r.cache(), "HIT");
        assert_eq!(o.count("/auth-plain"), round);
    }
    // It says nothing of anonymous requests (no hit-for-pass): the first
    // one is stored, and a stored response to a request without
    // Authorization serves authorised ones too (RFC 9111 §4: only `Vary`
    // separates them).
    assert_eq!(get(cdn.port, "/auth-plain").cache(), "MISS");
    assert_eq!(get(cdn.port, "/auth-plain").cache(), "HIT");
    assert_eq!(request(cdn.port, "GET", "/auth-plain", &bob).cache(), "HIT");
    assert_eq!(o.count("/auth-plain"), 3);
    // `Vary: Authorization`: one stored response per credential.
    for (who, want) in [
        (&alice, "MISS"),
        (&alice, "HIT"),
        (&bob, "MISS"),
        (&bob, "HIT"),
    ] {
        assert_eq!(request(cdn.port, "GET", "/auth-vary", who).cache(), want);
    }
    assert_eq!(get(cdn.port, "/auth-vary").cache(), "MISS");
    assert_eq!(o.count("/auth-vary"), 3);
    cdn.check_log();
    drop(cdn);
    // Never caching authorised requests is a configuration: an empty key
    // bypasses the cache.
    let map = r#"map $http_authorization $anon_key { "" $host$request_uri; default ""; }"#;
    let cdn = start_cdn(1, o.port, map, "rcdn_cache_key $anon_key;");
    o.script(
        "/auth-bypass",
        &[&ok("Cache-Control: public, max-age=300\n", "b")],
    );
    for round in 1..=2 {
        let r = request(cdn.port, "GET", "/auth-bypass", &alice);
        assert_eq!((r.status, r.cache()), (200, "BYPASS"));
        assert_eq!(o.count("/auth-bypass"), round);
    }
    assert_eq!(get(cdn.port, "/auth-bypass").cache(), "MISS");
    assert_eq!(get(cdn.port, "/auth-bypass").cache(), "HIT");
    cdn.check_log();
}

#[test]
fn rule10_an_authorised_request_refreshes_only_a_copy_that_allows_it() {
    let o = Scripted::start();
    let not_modified = |etag: &str, cc: &str| {
        format!(
            "HTTP/1.1 304 Not Modified\nDate: {{date}}\nETag: \"{etag}\"\nCache-Control: {cc}\n\n"
        )
    };
    o.script(
        "/stale-anon",
        &[
            &ok("ETag: \"a1\"\nCache-Control: max-age=0\n", "anon"),
            &ok("ETag: \"a2\"\nCache-Control: max-age=300\n", "alice's"),
            &not_modified("a1", "max-age=300"),
        ],
    );
    o.script(
        "/stale-public",
        &[
            &ok("ETag: \"p1\"\nCache-Control: public, max-age=0\n", "pub"),
            &not_modified("p1", "public, max-age=300"),
        ],
    );
    let cdn = node(&o, "");
    let alice = [("Authorization", "Basic YWxpY2U6MQ==")];
    assert_eq!(get(cdn.port, "/stale-anon").cache(), "MISS");
    // The stale copy was stored for a request without Authorization and
    // does not allow reuse for one with it: fetched in full, not stored.
    let a = request(cdn.port, "GET", "/stale-anon", &alice);
    assert_eq!((a.status, a.body.as_slice()), (200, &b"alice's"[..]));
    let reqs = o.requests("/stale-anon");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("if-none-match"), None);
    assert_eq!(reqs[1].header("authorization"), Some(alice[0].1));
    // The copy is intact: the next anonymous request revalidates it.
    let b = get(cdn.port, "/stale-anon");
    assert_eq!(
        (b.cache(), b.body.as_slice()),
        ("REVALIDATED", &b"anon"[..])
    );
    assert_eq!(
        o.requests("/stale-anon")[2].header("if-none-match"),
        Some("\"a1\"")
    );
    assert_eq!(get(cdn.port, "/stale-anon").cache(), "HIT");
    // A public copy is revalidated for an authorised request.
    assert_eq!(get(cdn.port, "/stale-public").cache(), "MISS");
    let c = request(cdn.port, "GET", "/stale-public", &alice);
    assert_eq!((c.cache(), c.body.as_slice()), ("REVALIDATED", &b"pub"[..]));
    let reqs = o.requests("/stale-public");
    assert_eq!(reqs[1].header("if-none-match"), Some("\"p1\""));
    assert_eq!(reqs[1].header("authorization"), Some(alice[0].1));
    assert_eq!(get(cdn.port, "/stale-public").cache(), "HIT");
    assert_eq!((o.count("/stale-anon"), o.count("/stale-public")), (3, 2));
    cdn.check_log();
}

#[test]
#[cfg(feature = "fault-injection")]
fn rule5_field_variants_are_kept_on_the_block_tier_and_found_by_an_io_thread() {
    let o = Scripted::start();
    let cc = "Cache-Control: max-age=300\nVary: Abc\n";
    o.script(
        "/vary-tier",
        &[&ok(cc, "first"), &ok(cc, "second"), &ok(cc, "third")],
    );
    let store = store_dir();
    let mut before = start_cdn_on(store.path(), 1, o.port, "", "");
    for v in ["1", "2"] {
        let r = request(before.port, "GET", "/vary-tier", &[("Abc", v)]);
        assert_eq!(r.cache(), "MISS");
    }
    before.signal(libc::SIGQUIT); // graceful: the write-throughs land
    assert!(before.wait_exit(std::time::Duration::from_secs(20)));
    before.check_log();
    // Same store, empty memory; a slow read always takes an io thread,
    // which selects the variant from its copy of the request's fields.
    let cdn = start_cdn_on(store.path(), 1, o.port, "", "");
    let slow = ("X-Rcdn-Fault", "slow-block-read");
    for (v, cache, body) in [
        ("2", "HIT", "second"),
        ("1", "HIT", "first"),
        ("3", "MISS", "third"),
    ] {
        let r = request(cdn.port, "GET", "/vary-tier", &[("Abc", v), slow]);
        assert_eq!(
            (r.cache(), r.body.as_slice()),
            (cache, body.as_bytes()),
            "Abc: {v}"
        );
    }
    assert_eq!(o.count("/vary-tier"), 3);
    cdn.check_log();
}
