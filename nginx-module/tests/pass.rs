//! A response that is not stored streams to the client whose miss fetched
//! it (`cache/pass.rs`), and a client slower than the origin never gets it
//! cut: once `rcdn_pass_buffer` bytes wait for it, the fill stops reading
//! the origin (nginx's non-buffered upstream keeps its bufs busy and reads
//! no more), and reads on as the client takes them. The origin here counts
//! the body bytes it has written, so the test sees it held back while the
//! client stalls, and the worker's RSS shows memory stays bounded.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The body: 64 MiB, several times what loopback sockets buffer (a few
/// MiB each way) and 256 times the test's `rcdn_pass_buffer`.
const SIZE: u64 = 64 << 20;
const CAP: &str = "rcdn_pass_buffer 256k;";
/// A block of the body's pattern; the body is it repeated, each repeat
/// xored with its index (a prime length: a shifted or repeated piece of
/// the body never matches).
const BLOCK: usize = 1_000_003;

fn byte_at(block: &[u8], i: u64) -> u8 {
    block[(i % BLOCK as u64) as usize] ^ (i / BLOCK as u64) as u8
}

/// An origin with one large uncacheable response per path: `/private`
/// (`Cache-Control: private`, with `Content-Length`) and `/closed`
/// (`no-store`, ended by closing the connection). It counts requests and
/// the body bytes written so far. At most 16 connections; 60 s socket
/// timeouts; stopped and joined on drop.
struct BigOrigin {
    port: u16,
    requests: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl BigOrigin {
    fn start(block: Arc<Vec<u8>>) -> BigOrigin {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (rq, st, sp) = (requests.clone(), sent.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut workers = Vec::new();
            let mut conns = 0;
            while !sp.load(Ordering::Relaxed) && conns < 16 {
                match l.accept() {
                    Ok((s, _)) => {
                        conns += 1;
                        let (rq, st, sp, block) =
                            (rq.clone(), st.clone(), sp.clone(), block.clone());
                        workers.push(std::thread::spawn(move || serve(s, &rq, &st, &sp, &block)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        BigOrigin {
            port,
            requests,
            sent,
            stop,
            accept: Some(accept),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until the body bytes written have not grown for 500 ms (the
    /// origin is blocked, or done), at most 60 s; returns the count.
    fn settled(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = self.sent();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.sent();
            if now == last {
                break;
            }
            last = now;
        }
        last
    }
}

impl Drop for BigOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut s: TcpStream,
    requests: &AtomicUsize,
    sent: &AtomicU64,
    stop: &AtomicBool,
    block: &[u8],
) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 1 << 16 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head);
    let reply = if text.starts_with("GET /private ") {
        format!("HTTP/1.1 200 OK\r\nCache-Control: private\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n")
    } else if text.starts_with("GET /closed ") {
        "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n".to_string()
    } else {
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    if s.write_all(reply.as_bytes()).is_err() {
        return;
    }
    let mut piece = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    while at < SIZE && !stop.load(Ordering::Relaxed) {
        let n = (SIZE - at).min(piece.len() as u64) as usize;
        for (k, b) in piece[..n].iter_mut().enumerate() {
            *b = byte_at(block, at + k as u64);
        }
        if s.write_all(&piece[..n]).is_err() {
            return;
        }
        at += n as u64;
        sent.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// The one worker of `cdn` (its title is set just after it starts: look
/// up to 10 s).
fn the_worker(cdn: &Nginx) -> u32 {
    let master = cdn.pid().expect("master pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(&w) = workers_of(master).first() {
            return w;
        }
        assert!(Instant::now() < deadline, "no worker under {master}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Sends `GET uri` and reads up to the end of the response header;
/// returns the stream, the header and the body bytes read with it.
fn open_get(port: u16, uri: &str) -> (TcpStream, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(s, "GET {uri} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).expect("read header");
        assert!(n > 0 && raw.len() < 1 << 16, "no header: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = raw[end + 4..].to_vec();
    (s, head, body)
}

/// Reads the rest of the body to EOF, checking every byte against the
/// pattern from offset `at`; returns the body's length (or where the
/// first wrong byte was).
fn read_checked(s: &mut TcpStream, block: &[u8], mut at: u64) -> Result<u64, String> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("read at {at}: {e}"))?;
        if n == 0 {
            return Ok(at);
        }
        for (k, &b) in buf[..n].iter().enumerate() {
            if at + k as u64 >= SIZE || b != byte_at(block, at + k as u64) {
                return Err(format!("wrong byte at {}", at + k as u64));
            }
        }
        at += n as u64;
    }
}

#[test]
fn a_stalled_client_gets_a_large_uncacheable_response_whole_and_memory_stays_bounded() {
    let block = Arc::new(pattern(BLOCK, 77));
    let origin = BigOrigin::start(block.clone());
    let cdn = start_cdn(1, origin.port, "", CAP);
    let worker = the_worker(&cdn);
    for (round, uri) in ["/private", "/closed"].into_iter().enumerate() {
        let before = rss(worker);
        let sent_before = origin.sent();
        let (mut s, head, first) = open_get(cdn.port, uri);
        assert!(head.starts_with("HTTP/1.1 200"), "{uri}: {head}");
        // The client takes nothing more for now: the origin must stop
        // well short of the end (the fill holds 256 KiB for it, the
        // sockets a few MiB), and the worker must not hold the rest.
        let held_back = origin.settled() - sent_before;
        let grown = rss(worker).saturating_sub(before);
        eprintln!("{uri}: origin sent {held_back} bytes while the client stalled; worker RSS grew {grown} bytes");
        assert!(
            held_back < SIZE / 2,
            "{uri}: the origin sent {held_back} of {SIZE} bytes to a stalled client"
        );
        assert!(
            grown < SIZE / 4,
            "{uri}: the worker grew by {grown} bytes while its client stalled"
        );
        for (k, &b) in first.iter().enumerate() {
            assert_eq!(b, byte_at(&block, k as u64), "{uri}: byte {k}");
        }
        let total = read_checked(&mut s, &block, first.len() as u64);
        assert_eq!(total, Ok(SIZE), "{uri}: the body as the client got it");
        assert_eq!(origin.requests(), round + 1, "{uri}: origin requests");
    }
    cdn.check_log();
}

#[test]
fn a_client_that_leaves_while_its_fill_is_held_back_frees_it() {
    let block = Arc::new(pattern(BLOCK, 78));
    let origin = BigOrigin::start(block.clone());
    let cdn = start_cdn(1, origin.port, "", CAP);
    let (s, head, _) = open_get(cdn.port, "/private");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let held_back = origin.settled();
    assert!(held_back < SIZE / 2, "the origin sent {held_back} bytes");
    drop(s);
    // The fill, no longer held back, reads the origin's response to its
    // end (as a fill whose client left does), and the node serves on.
    let end = origin.settled();
    assert_eq!(end, SIZE, "the origin was held back at {held_back}");
    let (mut s, head, first) = open_get(cdn.port, "/private");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let total = read_checked(&mut s, &block, first.len() as u64);
    assert_eq!(total, Ok(SIZE));
    assert_eq!(origin.requests(), 2);
    cdn.check_log();
}

#[test]
fn a_head_miss_of_a_large_uncacheable_response_ends_at_once() {
    let block = Arc::new(pattern(BLOCK, 79));
    let origin = BigOrigin::start(block.clone());
    let cdn = start_cdn(1, origin.port, "", CAP);
    // The fill (a GET) gets the whole body; the HEAD client reads none of
    // it, so the fill must not wait for it to.
    let r = request(cdn.port, "HEAD", "/private", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(origin.requests(), 1);
    assert_eq!(origin.settled(), SIZE, "the fill was held back");
    cdn.check_log();
}

#[test]
fn a_stale_copy_served_instead_of_a_large_error_does_not_wait_for_it() {
    let o = common::scripted::Scripted::start();
    let error = format!(
        "HTTP/1.1 500 Internal Server Error\nContent-Length: {{len}}\nConnection: close\n\n{}",
        "e".repeat(4 << 20)
    );
    o.script(
        "/sie",
        &[
            "HTTP/1.1 200 OK\nDate: {date}\nCache-Control: max-age=1, stale-if-error=60\nContent-Length: {len}\nConnection: close\n\nstale body",
            &error,
        ],
    );
    let cdn = start_cdn(1, o.port, "", CAP);
    assert_eq!(get(cdn.port, "/sie").body, b"stale body");
    std::thread::sleep(Duration::from_millis(2100));
    // The refresh gets a 4 MiB error: its client is served the stale copy
    // instead, and its connection must not stay open until a reader that
    // never comes takes the error's body.
    let r = get(cdn.port, "/sie");
    assert_eq!((r.status, r.cache()), (200, "STALE"));
    assert_eq!(r.body, b"stale body");
    assert_eq!(o.count("/sie"), 2);
    cdn.check_log();
}
