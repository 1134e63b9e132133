//! A scripted origin for the rules an nginx origin cannot script: raw
//! responses per request target (any status, interim 1xx, `Age`, `Date`
//! and `Expires` relative to now), and a record of every request it got
//! (method, target, headers), to count origin requests and check what the
//! cache sent. One std thread accepts on 127.0.0.1 (a free port); each
//! connection gets its own thread, reads one request and answers it, then
//! closes. Bounded: at most `MAX_CONNS` connections, 5 s socket timeouts;
//! stopped (and joined) on drop.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

const MAX_CONNS: usize = 10_000;

/// In a reply, ends one write: the rest follows 50 ms later, so the cache
/// reads it apart (an interim response before the final one, as origins
/// send them).
const FLUSH: &str = "{flush}";

/// One request the origin received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    /// Replies per target, in order; the last one repeats.
    script: HashMap<String, Vec<String>>,
    served: HashMap<String, usize>,
    log: Vec<Recorded>,
}

pub struct Scripted {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// `{date}` is now as an IMF-fixdate, `{date-N}` / `{date+N}` N seconds
/// before / after; `{len}` is the length of the body (after the blank line);
/// `{flush}` (not counted) ends a write (see [`FLUSH`]).
fn expand(raw: &str) -> Vec<u8> {
    let now = SystemTime::now();
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find("{date") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('}') else { break };
        let spec = &rest[i + 5..i + j];
        let t = match (spec.strip_prefix('-'), spec.strip_prefix('+')) {
            (Some(n), _) => now - Duration::from_secs(n.parse().unwrap_or(0)),
            (_, Some(n)) => now + Duration::from_secs(n.parse().unwrap_or(0)),
            _ => now,
        };
        out.push_str(&httpdate::fmt_http_date(t));
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    let text = out.replace("\n", "\r\n").replace("\r\r\n", "\r\n");
    if let Some(at) = text.find("\r\n\r\n") {
        let len = text.len() - at - 4 - text[at..].matches(FLUSH).count() * FLUSH.len();
        return text.replacen("{len}", &len.to_string(), 1).into_bytes();
    }
    text.into_bytes()
}

fn handle(mut s: TcpStream, state: &Mutex<State>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    // Read (and drop) a request body of Content-Length bytes.
    let want = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut have = buf.len() - head_end - 4;
    while have < want {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    let method_is_head = method == "HEAD";
    let reply = {
        let mut st = match state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.log.push(Recorded {
            method,
            target: target.clone(),
            headers,
        });
        let n = *st.served.get(&target).unwrap_or(&0);
        st.served.insert(target.clone(), n + 1);
        st.script
            .get(&target)
            .map(|v| v[n.min(v.len() - 1)].clone())
    };
    let raw = reply.unwrap_or_else(|| {
        "HTTP/1.1 404 Not Found\nContent-Length: 0\nConnection: close\n\n".to_string()
    });
    let mut out = expand(&raw);
    if method_is_head {
        if let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            out.truncate(at + 4);
        }
    }
    let parts: Vec<&[u8]> = split(&out, FLUSH.as_bytes());
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        if s.write_all(part).and_then(|_| s.flush()).is_err() {
            return;
        }
        if i + 1 < n {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn split<'a>(mut b: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(sep.len()).position(|w| w == sep) {
        out.push(&b[..i]);
        b = &b[i + sep.len()..];
    }
    out.push(b);
    out
}

impl Scripted {
    pub fn start() -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind scripted origin");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let conns = AtomicUsize::new(0);
            let mut workers = Vec::new();
            while !sp.load(Ordering::Relaxed) && conns.load(Ordering::Relaxed) < MAX_CONNS {
                match l.accept() {
                    Ok((s, _)) => {
                        conns.fetch_add(1, Ordering::Relaxed);
                        let _ = s.set_nonblocking(false);
                        let st = st.clone();
                        workers.push(std::thread::spawn(move || handle(s, &st)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
                workers.retain(|w: &JoinHandle<()>| !w.is_finished());
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Scripted {
            port,
            state,
            stop,
            accept: Some(accept),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Answers `target` with `replies` in turn (the last one repeats).
    /// Lines may end in `\n`; `{len}` and `{date±N}` are filled in.
    pub fn script(&self, target: &str, replies: &[&str]) {
        assert!(!replies.is_empty());
        let mut st = self.lock();
        st.script.insert(
            target.to_string(),
            replies.iter().map(|r| r.to_string()).collect(),
        );
        st.served.remove(target);
    }

    /// The requests for `target`, in order.
    pub fn requests(&self, target: &str) -> Vec<Recorded> {
        self.lock()
            .log
            .iter()
            .filter(|r| r.target == target)
            .cloned()
            .collect()
    }

    pub fn count(&self, target: &str) -> usize {
        self.requests(target).len()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
