//! Purge over HTTP: every kind, its JSON answer, malformed and unauthorised
//! requests. One worker: until the shared block tiers land, a purge reaches
//! only the worker that received it.

mod common;
use common::*;

fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("news/a.txt", b"news a".to_vec()),
        ("news/b.txt", b"news b".to_vec()),
        ("sport/a.txt", b"sport a".to_vec()),
        ("tagged/t.txt", b"tagged".to_vec()),
        ("img/x.jpg", b"jpeg".to_vec()),
    ]
}

const ALL: &[&str] = &[
    "/news/a.txt",
    "/news/b.txt",
    "/sport/a.txt",
    "/tagged/t.txt",
    "/img/x.jpg",
];

/// Fills every object, purges, and checks which ones miss afterwards.
fn check(query: &str, purged: &[&str]) {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    for p in ALL {
        assert_eq!(get(cdn.port, p).cache(), "MISS", "{p}");
        assert_eq!(get(cdn.port, p).cache(), "HIT", "{p}");
    }
    let r = get(cdn.port, &format!("/purge?{query}"));
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 200, "{query}: {body}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["ok"], true, "{body}");
    for p in ALL {
        let want = if purged.contains(p) { "MISS" } else { "HIT" };
        assert_eq!(get(cdn.port, p).cache(), want, "{query}: {p}");
    }
    cdn.check_log();
}

#[test]
fn purge_single_url() {
    check("url=/news/a.txt", &["/news/a.txt"]);
}

#[test]
fn purge_wildcard_prefix() {
    check("url=/news/*", &["/news/a.txt", "/news/b.txt"]);
    check("prefix=/sport/", &["/sport/a.txt"]);
}

#[test]
fn purge_by_surrogate_key_integer_tag_and_mask() {
    check("tag=sport", &["/tagged/t.txt"]);
    check("itag=42", &["/tagged/t.txt"]);
    check("mask=0x30", &["/tagged/t.txt"]);
    check("mask=0x20", &[]);
}

#[test]
fn purge_by_group() {
    check("group=teamA", &["/tagged/t.txt"]);
    // Default group: the key's host part.
    check(
        "group=localhost",
        &["/news/a.txt", "/news/b.txt", "/sport/a.txt", "/img/x.jpg"],
    );
}

#[test]
fn purge_by_regex_and_all_and_key() {
    check("regex=%5C.jpg%24", &["/img/x.jpg"]);
    check("all=1", ALL);
    check("key=localhost/sport/a.txt", &["/sport/a.txt"]);
}

#[test]
fn url_purge_reports_what_it_removed() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    get(cdn.port, "/news/a.txt");
    let r = get(cdn.port, "/purge?url=/news/a.txt");
    let j: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(j["purge"], "url");
    assert_eq!(j["key"], "localhost/news/a.txt");
    assert_eq!(j["removed"], 1);
    let again = get(cdn.port, "/purge?url=/news/a.txt");
    let j: serde_json::Value = serde_json::from_slice(&again.body).expect("json");
    assert_eq!(j["removed"], 0);
    cdn.check_log();
}

#[test]
fn malformed_purges_get_400_json() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    for q in [
        "",
        "bogus=1",
        "url=news/a.txt",
        "url=/a&tag=b",
        "itag=70000",
        "itag=x",
        "mask=0",
        "mask=zz",
        "regex=((",
        "url=%zz",
        "tag=",
        "all=maybe",
    ] {
        let r = get(cdn.port, &format!("/purge?{q}"));
        assert_eq!(r.status, 400, "{q}");
        let j: serde_json::Value = serde_json::from_slice(&r.body).expect("json error body");
        assert_eq!(j["ok"], false, "{q}");
        assert!(j["error"].as_str().is_some_and(|e| !e.is_empty()), "{q}");
    }
    cdn.check_log();
}

/// A control byte in a value that becomes part of a key (after
/// percent-decoding) is a malformed purge too; the same purge without it
/// is accepted, and the cached object is still there after the refusals.
#[test]
fn purges_with_control_bytes_get_400_json() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    assert_eq!(get(cdn.port, "/news/a.txt").status, 200);
    for q in [
        "url=/a%00.bin",
        "url=/news/a.txt%0a",
        "url=/news/%0d*",
        "prefix=/news%1f/",
        "key=localhost/news/a.txt%7f",
        "group=exa%09mple.com",
        "url=/news/a.txt&host=local%00host",
    ] {
        let r = get(cdn.port, &format!("/purge?{q}"));
        assert_eq!(r.status, 400, "{q}");
        let j: serde_json::Value = serde_json::from_slice(&r.body).expect("json error body");
        assert_eq!(j["ok"], false, "{q}");
        let e = j["error"].as_str().unwrap_or_default();
        assert!(e.contains("control byte"), "{q}: {e}");
    }
    let r = get(cdn.port, "/news/a.txt");
    assert_eq!(r.cache(), "HIT", "refused purges purged nothing");
    assert_eq!(get(cdn.port, "/purge?url=/a.bin").status, 200);
    cdn.check_log();
}

#[test]
fn unauthorised_purges_get_403() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    get(cdn.port, "/news/a.txt");
    let no = get(cdn.port, "/purge-secret?url=/news/a.txt");
    assert_eq!(no.status, 403);
    let j: serde_json::Value = serde_json::from_slice(&no.body).expect("json");
    assert_eq!(j["ok"], false);
    let wrong = request(
        cdn.port,
        "GET",
        "/purge-secret?url=/news/a.txt",
        &[("X-Rcdn-Purge-Secret", "nope")],
    );
    assert_eq!(wrong.status, 403);
    assert_eq!(get(cdn.port, "/news/a.txt").cache(), "HIT");
    let denied = get(cdn.port, "/purge-denied?url=/news/a.txt");
    assert_eq!(denied.status, 403);
    assert_eq!(get(cdn.port, "/news/a.txt").cache(), "HIT");
    let ok = request(
        cdn.port,
        "GET",
        "/purge-secret?url=/news/a.txt",
        &[("X-Rcdn-Purge-Secret", "s3cret")],
    );
    assert_eq!(ok.status, 200);
    assert_eq!(get(cdn.port, "/news/a.txt").cache(), "MISS");
}

#[test]
fn purge_method_and_post_work_too() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(1, origin.port, "", "");
    get(cdn.port, "/news/a.txt");
    get(cdn.port, "/news/b.txt");
    let r = request(cdn.port, "PURGE", "/purge?url=/news/a.txt", &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = request(
        cdn.port,
        "POST",
        "/purge?url=/news/b.txt",
        &[("Content-Length", "0")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(cdn.port, "/news/a.txt").cache(), "MISS");
    assert_eq!(get(cdn.port, "/news/b.txt").cache(), "MISS");
    cdn.check_log();
}

/// Distinct worker pids that logged `uri` with body `body`.
fn workers_serving(cdn: &Nginx, uri: &str, body_len: usize) -> usize {
    cdn.log("logs/w.log")
        .lines()
        .filter(|l| l.ends_with(&format!(" {uri} {body_len}")))
        .filter_map(|l| l.split(' ').next())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[test]
fn purges_reach_every_worker() {
    let origin = start_origin(&[("news/v.txt", b"version 1".to_vec())], "");
    let log = "log_format w '$pid $uri $body_bytes_sent'; access_log logs/w.log w;";
    let cdn = start_cdn(2, origin.port, log, "");
    // One fill; then hits until both workers have served (and so hold) it.
    for i in 0..200 {
        assert_eq!(get(cdn.port, "/news/v.txt").body, b"version 1");
        if i >= 10 && workers_serving(&cdn, "/news/v.txt", 9) >= 2 {
            break;
        }
    }
    assert_eq!(workers_serving(&cdn, "/news/v.txt", 9), 2);
    assert_eq!(
        origin_hits(&origin, "/news/v.txt").len(),
        1,
        "one shared fill"
    );
    std::fs::write(origin.path("www/news/v.txt"), b"version 2!").expect("update");
    // An old file, as the first version: a Last-Modified of just now
    // would give it no heuristic freshness (every request revalidates).
    backdate(
        &origin.path("www/news/v.txt"),
        std::time::Duration::from_secs(86_400),
    );
    let r = get(cdn.port, "/purge?url=/news/*");
    assert_eq!(r.status, 200);
    for i in 0..200 {
        let b = get(cdn.port, "/news/v.txt");
        assert_eq!(
            b.body,
            b"version 2!",
            "request {i} got the purged copy ({})",
            b.cache()
        );
        if i >= 10 && workers_serving(&cdn, "/news/v.txt", 10) >= 2 {
            break;
        }
    }
    assert_eq!(workers_serving(&cdn, "/news/v.txt", 10), 2);
    assert_eq!(
        origin_hits(&origin, "/news/v.txt").len(),
        2,
        "one refill, shared by both workers"
    );
    cdn.check_log();
}
