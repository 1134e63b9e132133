//! Traffic statistics: `rcdn_stats_zone` (one table for all workers) and
//! `rcdn_stats json | prometheus`, on a 2-worker node.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashSet;

/// A node whose http{} also has a stats server on its own port, and an
/// access log of worker pids (to see that both workers served).
fn node(zone: &str, loc_extra: &str) -> (Nginx, Nginx, u16) {
    let origin = start_origin(&[], "");
    let sport = free_port();
    let http = format!(
        "rcdn_stats_zone {zone};
  log_format pids '$pid $host';
  access_log logs/pids.log pids;
  server {{ listen 127.0.0.1:{sport};
    location /stats {{ rcdn_stats json; }}
    location /metrics {{ rcdn_stats prometheus; }} }}"
    );
    let cdn = start_cdn(2, origin.port, &http, loc_extra);
    (origin, cdn, sport)
}

fn stats(port: u16) -> Value {
    let r = get(port, "/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.body).expect("stats JSON")
}

fn total(v: &Value, domain: &str, field: &str) -> u64 {
    let d = if domain == "_all" {
        &v["all"]
    } else {
        &v["domains"][domain]
    };
    d["total"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("{domain}.{field} in {v}"))
}

#[test]
fn counts_every_request_across_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("hotlink.json");
    std::fs::write(&policy, r#"[{"domain": "h.test", "allow_empty": false}]"#).expect("policy");
    let (_origin, cdn, sport) = node(
        "1m window=5m windows=12",
        &format!("rcdn_hotlink {};", policy.display()),
    );
    let p = cdn.port;
    for _ in 0..25 {
        assert_eq!(
            request_host(p, "a.test", "GET", "/small.txt", &[]).status,
            200
        );
    }
    for _ in 0..10 {
        assert_eq!(
            request_host(p, "b.test", "GET", "/small.txt", &[]).status,
            200
        );
    }
    for _ in 0..5 {
        assert_eq!(
            request_host(p, "b.test", "GET", "/missing/x", &[]).status,
            404
        );
    }
    for _ in 0..3 {
        assert_eq!(
            request_host(p, "h.test", "GET", "/small.txt", &[]).status,
            403
        );
    }
    let pids: HashSet<String> = cdn
        .log("logs/pids.log")
        .lines()
        .filter_map(|l| l.split(' ').next().map(String::from))
        .collect();
    assert_eq!(pids.len(), 2, "both workers served: {pids:?}");

    let v = stats(sport);
    assert_eq!(total(&v, "_all", "requests"), 43, "{v}");
    assert_eq!(total(&v, "a.test", "requests"), 25);
    assert_eq!(total(&v, "a.test", "status_2xx"), 25);
    let body = b"hello, small world\n".len() as u64;
    assert!(total(&v, "a.test", "bytes_sent") > 25 * body);
    assert_eq!(total(&v, "a.test", "hit") + total(&v, "a.test", "miss"), 25);
    assert!(total(&v, "a.test", "miss") >= 1);
    assert_eq!(total(&v, "b.test", "requests"), 15);
    assert_eq!(total(&v, "b.test", "status_2xx"), 10);
    assert_eq!(total(&v, "b.test", "status_4xx"), 5);
    assert_eq!(total(&v, "h.test", "hotlink_denied"), 3);
    assert_eq!(total(&v, "h.test", "status_4xx"), 3);
    assert_eq!(v["overflow"], 0);
    assert_eq!(v["window_ms"], 300_000);
    let win = &v["domains"]["a.test"]["windows"][0];
    assert_eq!(win["requests"], 25, "current window: {v}");

    let m = get(sport, "/metrics");
    assert_eq!(m.status, 200);
    assert_eq!(m.header("content-type"), Some("text/plain; version=0.0.4"));
    let text = String::from_utf8(m.body).expect("utf-8");
    for line in [
        "rcdn_requests_total{domain=\"a.test\"} 25",
        "rcdn_requests_total{domain=\"b.test\"} 15",
        "rcdn_status_4xx_total{domain=\"b.test\"} 5",
        "rcdn_hotlink_denied_total{domain=\"h.test\"} 3",
        // The JSON request above is counted too.
        "rcdn_requests_total{domain=\"localhost\"} 1",
        "rcdn_requests_total{domain=\"_all\"} 44",
        "# TYPE rcdn_requests_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    cdn.check_log();
}

#[test]
fn a_full_zone_says_so() {
    let (_origin, cdn, sport) = node("64k windows=50", "");
    for i in 0..30 {
        let host = format!("d{i}.test");
        assert_eq!(
            request_host(cdn.port, &host, "GET", "/small.txt", &[]).status,
            200
        );
    }
    let v = stats(sport);
    assert_eq!(total(&v, "_all", "requests"), 30);
    let overflow = v["overflow"].as_u64().expect("overflow");
    let domains = v["domains"].as_object().expect("domains");
    let counted: u64 = domains.keys().map(|d| total(&v, d, "requests")).sum();
    assert!(overflow > 0, "{v}");
    assert_eq!(counted + overflow, 30, "{v}");
    assert!(
        cdn.error_log().contains("rcdn: stats zone full"),
        "{}",
        cdn.error_log()
    );
    // The JSON request (Host: localhost) found no slot either.
    let m = String::from_utf8(get(sport, "/metrics").body).expect("utf-8");
    let line = format!("rcdn_stats_overflow_total {}", overflow + 1);
    assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
}

#[test]
fn bad_stats_directives_fail_nginx_t() {
    let conf = |http: &str, loc: &str| {
        format!(
            "load_module {};\nerror_log logs/error.log;\nevents {{}}\nhttp {{ {http}\nserver {{ listen 127.0.0.1:{};\nlocation / {{ {loc} }}\n}}\n}}\n",
            module_so().display(),
            free_port()
        )
    };
    let (ok, err) = config_test(&conf(
        "rcdn_stats_zone 1m window=1m windows=5;",
        "rcdn_stats json;",
    ));
    assert!(ok, "{err}");
    let cases: &[(&str, &str, &[&str])] = &[
        ("rcdn_stats_zone lots;", "", &["rcdn_stats_zone", "lots"]),
        ("rcdn_stats_zone 1m windows=0;", "", &["windows=0"]),
        ("rcdn_stats_zone 1m window=soon;", "", &["window=soon"]),
        ("rcdn_stats_zone 1m colour=red;", "", &["colour=red"]),
        ("rcdn_stats_zone 32k windows=1000;", "", &["too small"]),
        (
            "rcdn_stats_zone 1m; rcdn_stats_zone 1m;",
            "",
            &["duplicate"],
        ),
        ("", "rcdn_stats xml;", &["rcdn_stats", "xml"]),
        (
            "rcdn_stats_push ftp://x/;",
            "",
            &["rcdn_stats_push", "ftp://x/"],
        ),
    ];
    for (http, loc, want) in cases {
        let (ok, err) = config_test(&conf(http, loc));
        assert!(!ok, "accepted: {http} {loc}");
        for w in *want {
            assert!(err.contains(w), "{http} {loc}: {w} not in {err}");
        }
    }
}

#[test]
fn counts_survive_a_reload() {
    let (_origin, mut cdn, sport) = node("1m", "");
    for _ in 0..5 {
        assert_eq!(
            request_host(cdn.port, "a.test", "GET", "/small.txt", &[]).status,
            200
        );
    }
    cdn.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !cdn.error_log().contains("reconfiguring") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(cdn.error_log().contains("reconfiguring"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        request_host(cdn.port, "a.test", "GET", "/small.txt", &[]).status,
        200
    );
    let v = stats(sport);
    assert_eq!(total(&v, "a.test", "requests"), 6, "{v}");
    cdn.check_log();
    cdn.stop();
}

/// A loopback collector: records the JSON bodies POSTed to it.
struct Collector {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Collector {
    fn start() -> Collector {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !st.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .expect("timeout");
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                // Read headers, then Content-Length bytes.
                let body = loop {
                    let Ok(n) = s.read(&mut buf) else { break None };
                    if n == 0 {
                        break None;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if raw.len() >= end + 4 + len {
                        assert!(head.starts_with("post /collect "), "{head}");
                        break Some(raw[end + 4..end + 4 + len].to_vec());
                    }
                };
                let _ = s.write_all(b"HTTP/1.0 204 No Content\r\n\r\n");
                if let Some(b) = body {
                    let v: Value = serde_json::from_slice(&b).expect("pushed JSON");
                    g.lock().expect("lock").push(v);
                }
            }
        });
        Collector { port, got, stop }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn closed_windows_are_pushed_once() {
    let c = Collector::start();
    let zone = format!(
        "1m window=1s windows=4;\n  rcdn_stats_push http://127.0.0.1:{}/collect;\n  rcdn_node_name edge-7",
        c.port
    );
    let (_origin, cdn, _sport) = node(&zone, "");
    for _ in 0..12 {
        assert_eq!(
            request_host(cdn.port, "a.test", "GET", "/small.txt", &[]).status,
            200
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let sum = |got: &[Value]| -> u64 {
        got.iter()
            .map(|v| v["all"]["requests"].as_u64().expect("requests"))
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while sum(&c.got.lock().expect("lock")) < 12 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Later rounds must not push a window again.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let got = c.got.lock().expect("lock").clone();
    assert_eq!(sum(&got), 12, "{got:?}");
    let a: u64 = got
        .iter()
        .map(|v| v["domains"]["a.test"]["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(a, 12, "{got:?}");
    let windows: HashSet<u64> = got
        .iter()
        .map(|v| v["window_start_ms"].as_u64().expect("window"))
        .collect();
    assert_eq!(windows.len(), got.len(), "a window pushed twice: {got:?}");
    assert!(got
        .iter()
        .all(|v| v["node"] == "edge-7" && v["window_ms"] == 1000));
    cdn.check_log();
}

/// Origin bytes (body only) and upstream time: a miss fetches the object
/// once through the background fill, a hit adds nothing; a pass (no cache
/// here: a POST) counts its own proxied fetch.
#[test]
fn origin_bytes_and_time_per_fetch() {
    const SIZE: u64 = 60_000;
    // /slow/ is rate-limited at the origin (100k/s): the fetch takes time.
    let origin = start_origin(&[("slow/obj.bin", pattern(SIZE as usize, 5))], "");
    let sport = free_port();
    let http = format!(
        "rcdn_stats_zone 1m;
  server {{ listen 127.0.0.1:{sport};
    location /stats {{ rcdn_stats json; }}
    location /metrics {{ rcdn_stats prometheus; }} }}"
    );
    let cdn = start_cdn(2, origin.port, &http, "");
    let r = request_host(cdn.port, "o.test", "GET", "/slow/obj.bin", &[]);
    assert_eq!((r.status, r.cache()), (200, "MISS"));
    assert_eq!(r.body.len() as u64, SIZE);
    let v = stats(sport);
    let bytes = total(&v, "o.test", "origin_bytes");
    let ms = total(&v, "o.test", "origin_ms");
    assert_eq!(bytes, SIZE, "{v}");
    assert!(ms > 0, "{v}");
    assert_eq!(total(&v, "o.test", "origin_fetches"), 1, "{v}");
    assert_eq!(total(&v, "_all", "origin_bytes"), SIZE, "{v}");
    for _ in 0..3 {
        let r = request_host(cdn.port, "o.test", "GET", "/slow/obj.bin", &[]);
        assert_eq!((r.status, r.cache()), (200, "HIT"));
    }
    let v = stats(sport);
    assert_eq!(
        total(&v, "o.test", "origin_bytes"),
        SIZE,
        "hits add nothing: {v}"
    );
    assert_eq!(total(&v, "o.test", "origin_ms"), ms, "{v}");
    assert_eq!(total(&v, "o.test", "origin_fetches"), 1, "{v}");
    assert_eq!(total(&v, "o.test", "requests"), 4, "{v}");
    assert_eq!(origin_hits(&origin, "/slow/obj.bin").len(), 1);
    let m = String::from_utf8(get(sport, "/metrics").body).expect("utf-8");
    for line in [
        format!("rcdn_origin_bytes_total{{domain=\"o.test\"}} {SIZE}"),
        format!("rcdn_origin_ms_total{{domain=\"o.test\"}} {ms}"),
        "rcdn_origin_fetches_total{domain=\"o.test\"} 1".to_string(),
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
    cdn.check_log();
}
