//! `rcdn_hotlink_url`: policies fetched per domain from a loopback policy
//! server that counts its fetches; the first request waits for the fetch
//! and gets the policy; refreshes come within the jitter bound; a bad
//! answer is logged and the last good policy kept.

mod common;
use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (status, body) per domain; unknown domains get 404.
type Answers = Arc<Mutex<HashMap<String, (u16, String)>>>;

/// The loopback policy server: answers `GET /policy?domain=<d>` and logs
/// (domain, time) of every fetch.
struct PolicyServer {
    port: u16,
    answers: Answers,
    fetches: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
}

impl PolicyServer {
    fn start() -> PolicyServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let answers: Answers = Arc::default();
        let fetches: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (a, f, st) = (answers.clone(), fetches.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(90);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut raw = Vec::new();
                let mut buf = [0u8; 1024];
                while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&raw).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let domain = target
                    .strip_prefix("/policy?domain=")
                    .unwrap_or("?")
                    .to_string();
                f.lock()
                    .expect("lock")
                    .push((domain.clone(), Instant::now()));
                let (status, body) = a
                    .lock()
                    .expect("lock")
                    .get(&domain)
                    .cloned()
                    .unwrap_or((404, String::new()));
                let resp = format!(
                    "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes());
            }
        });
        PolicyServer {
            port,
            answers,
            fetches,
            stop,
        }
    }

    fn answer(&self, domain: &str, status: u16, body: &str) {
        self.answers
            .lock()
            .expect("lock")
            .insert(domain.into(), (status, body.into()));
    }

    fn fetched(&self, domain: &str) -> Vec<Instant> {
        let f = self.fetches.lock().expect("lock");
        f.iter()
            .filter(|(d, _)| d == domain)
            .map(|(_, t)| *t)
            .collect()
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn with_referer(port: u16, host: &str, referer: &str) -> u16 {
    request_host(port, host, "GET", "/small.txt", &[("Referer", referer)]).status
}

const GOOD: &str = "http://good.test/page";
const EVIL: &str = "http://evil.test/page";

#[test]
fn fetched_on_first_sight_refreshed_and_kept_on_bad_answers() {
    let ps = PolicyServer::start();
    ps.answer(
        "a.test",
        200,
        r#"{"domain": "a.test", "allow": ["good.test"], "allow_empty": false}"#,
    );
    let origin = start_origin(&[], "");
    let loc = format!(
        "rcdn_hotlink_url http://127.0.0.1:{}/policy refresh=1500ms wait=3s;\n      rcdn_hotlink_unknown refuse;",
        ps.port
    );
    let cdn = start_cdn(1, origin.port, "", &loc);
    let p = cdn.port;
    // The first request waits for the fetch and is judged by the policy
    // (without it, `refuse` would answer 403).
    assert_eq!(with_referer(p, "a.test", GOOD), 200);
    assert_eq!(ps.fetched("a.test").len(), 1, "one fetch");
    assert_eq!(with_referer(p, "a.test", EVIL), 403);
    assert_eq!(
        request_host(p, "a.test", "GET", "/small.txt", &[]).status,
        403
    );
    // A domain the server has no policy for: the unknown rule, one fetch.
    assert_eq!(with_referer(p, "b.test", GOOD), 403);
    assert_eq!(with_referer(p, "b.test", GOOD), 403);
    assert_eq!(ps.fetched("b.test").len(), 1);

    // Refreshes: each within 1.5 s (+ slack) of the previous fetch.
    let deadline = Instant::now() + Duration::from_secs(15);
    while ps.fetched("a.test").len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let times = ps.fetched("a.test");
    assert!(times.len() >= 4, "refreshed: {times:?}");
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap <= Duration::from_millis(1500 + 400), "gap {gap:?}");
    }

    // A bad answer (another domain's policy) is refused; the old one stays.
    ps.answer("a.test", 200, r#"{"domain": "other.test"}"#);
    let n = ps.fetched("a.test").len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ps.fetched("a.test").len() < n + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ps.fetched("a.test").len() >= n + 2);
    // A failing policy server: kept too.
    ps.answer("a.test", 500, "");
    let n = ps.fetched("a.test").len();
    while ps.fetched("a.test").len() < n + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(400)); // the log timer runs every 200 ms
    assert_eq!(
        with_referer(p, "a.test", GOOD),
        200,
        "last good policy kept"
    );
    assert_eq!(with_referer(p, "a.test", EVIL), 403);
    let log = cdn.error_log();
    assert!(log.contains("another domain"), "{log}");
    assert!(log.contains("answered 500"), "{log}");
    assert!(
        log.contains("rcdn: hotlink policy from http://127.0.0.1:"),
        "{log}"
    );
    cdn.check_log();
}

#[test]
fn a_pending_fetch_past_its_wait_gets_the_unknown_rule() {
    // A policy "server" that accepts and never answers.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let origin = start_origin(&[], "");
    let loc = format!(
        "rcdn_hotlink_url http://127.0.0.1:{port}/policy wait=300ms;\n      rcdn_hotlink_unknown allow;"
    );
    let cdn = start_cdn(1, origin.port, "", &loc);
    let t = Instant::now();
    assert_eq!(
        with_referer(cdn.port, "c.test", EVIL),
        200,
        "allowed as unknown"
    );
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "waited {took:?}");
    assert!(took < Duration::from_secs(2), "bounded: {took:?}");
    assert!(cdn.error_log().contains("not fetched yet"));
    drop(l);
    cdn.check_log();
}

#[test]
fn bad_policy_urls_fail_nginx_t() {
    let conf = |d: &str| {
        format!(
            "load_module {};\nerror_log logs/error.log;\nevents {{}}\nhttp {{\nserver {{ listen 127.0.0.1:{};\nlocation / {{ {d} proxy_pass http://127.0.0.1:9; }}\n}}\n}}\n",
            module_so().display(),
            free_port()
        )
    };
    let (ok, err) = config_test(&conf(
        "rcdn_hotlink_url http://127.0.0.1:1/p refresh=5m wait=1s;",
    ));
    assert!(ok, "{err}");
    for (d, want) in [
        ("rcdn_hotlink_url ftp://x/p;", "ftp://x/p"),
        (
            "rcdn_hotlink_url http://127.0.0.1:1/p refresh=soon;",
            "refresh=soon",
        ),
        ("rcdn_hotlink_url http://127.0.0.1:1/p wait=2h;", "wait=2h"),
        (
            "rcdn_hotlink_url http://127.0.0.1:1/p colour=red;",
            "colour=red",
        ),
    ] {
        let (ok, err) = config_test(&conf(d));
        assert!(!ok, "accepted: {d}");
        assert!(
            err.contains("rcdn_hotlink_url") && err.contains(want),
            "{d}: {err}"
        );
    }
}
