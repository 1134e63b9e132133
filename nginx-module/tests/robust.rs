//! Robustness: clients that vanish mid-request, graceful shutdown with
//! requests waiting on a fill, and a reload under traffic.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn files() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![("slow/obj.bin", pattern(200_000, 9))];
    for (i, name) in ["k/0", "k/1", "k/2", "k/3", "k/4", "k/5", "k/6", "k/7"]
        .iter()
        .enumerate()
    {
        v.push((name, pattern(50_000 + i * 1000, i as u64)));
    }
    v
}

#[test]
fn clients_that_vanish_do_not_hurt_the_workers() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(2, origin.port, "", "rcdn_cache_lock_timeout 10s;");
    let port = cdn.port;
    let threads: Vec<_> = (0..120)
        .map(|i| {
            std::thread::spawn(move || {
                let path = if i % 3 == 0 {
                    "/slow/obj.bin".to_string()
                } else {
                    format!("/k/{}", i % 8)
                };
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("timeout");
                let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
                s.write_all(req.as_bytes()).expect("send");
                match i % 4 {
                    0 => {} // leave at once
                    1 => {
                        let mut b = [0u8; 100];
                        let _ = s.read(&mut b); // leave after the first bytes
                    }
                    _ => {
                        let mut all = Vec::new();
                        let _ = s.read_to_end(&mut all);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    for i in 0..8 {
        let want = std::fs::read(origin.path(&format!("www/k/{i}"))).expect("file");
        let r = get(cdn.port, &format!("/k/{i}"));
        assert_eq!(r.status, 200);
        assert!(r.body == want, "k/{i} differs");
    }
    cdn.check_log();
}

#[test]
fn graceful_shutdown_lets_waiting_requests_finish() {
    let origin = start_origin(&files(), "");
    let mut cdn = start_cdn(1, origin.port, "", "rcdn_cache_lock_timeout 20s;");
    let port = cdn.port;
    let want = std::fs::read(origin.path("www/slow/obj.bin")).expect("file");
    let clients: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || get(port, "/slow/obj.bin")))
        .collect();
    // All three requests are read (one fills, two wait on its lock) before
    // the signal; one still in the accept queue would be reset by it.
    assert!(
        wait_requests_read(port, 3, Duration::from_secs(20)),
        "3 requests in progress"
    );
    cdn.signal(libc::SIGQUIT);
    for c in clients {
        let r = c.join().expect("client");
        assert_eq!(r.status, 200);
        assert!(r.body == want, "body differs");
    }
    assert!(cdn.wait_exit(Duration::from_secs(20)), "nginx did not exit");
    let log = cdn.error_log();
    assert!(
        !log.contains("[alert]") && !log.contains("signal 11"),
        "{log}"
    );
}

#[test]
fn reload_under_traffic_keeps_serving() {
    let origin = start_origin(&files(), "");
    let cdn = start_cdn(2, origin.port, "", "");
    assert_eq!(get(cdn.port, "/k/1").status, 200);
    cdn.signal(libc::SIGHUP);
    for _ in 0..50 {
        let r = get(cdn.port, "/k/1");
        assert_eq!(r.status, 200);
        assert!(matches!(r.cache(), "MISS" | "HIT"));
    }
    // Until the shared block tiers land, new workers start with empty
    // caches; purges still reach them.
    let p = get(cdn.port, "/purge?all=1");
    assert_eq!(p.status, 200);
    cdn.check_log();
}
