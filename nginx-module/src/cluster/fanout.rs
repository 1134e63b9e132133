//! Purge fan-out (`&peers=1` on a purge request): after purging here, the
//! same purge is sent to every other peer (with `X-Rcdn-Hop`, so they do
//! not fan it out again) and the answer lists what each peer said.
//!
//! The peers are asked from a thread per peer with plain blocking sockets
//! bounded by `rcdn_peer_timeout`; the threads only see addresses and
//! bytes, never nginx. The request waits on a non-cancelable 5 ms poll
//! timer (so a graceful shutdown waits for it, and nothing blocks the event
//! loop), owned by the request pool and removed with it.

use crate::base::guard;
use crate::cluster;
use crate::conf::ClusterConf;
use nginx_sys::*;
use ngx::core::Pool;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLL_MS: ngx_msec_t = 5;
/// Largest peer answer read (a purge answer is a small JSON object).
const MAX_ANSWER: u64 = 64 << 10;

type Results = Arc<Mutex<Vec<Option<(String, Value)>>>>;

/// A purge waiting for its peers; owned by the request pool.
struct Job {
    r: *mut ngx_http_request_t,
    ev: Box<ngx_event_t>,
    results: Results,
    status: u32,
    body: Value,
}

impl Drop for Job {
    fn drop(&mut self) {
        let p: *mut ngx_event_t = &mut *self.ev;
        // SAFETY: our live event; these only unlink it.
        unsafe {
            if self.ev.timer_set() != 0 {
                ngx_del_timer(p);
            }
            if self.ev.posted() != 0 {
                ngx_delete_posted_event(p);
            }
        }
    }
}

/// What to send to each peer.
pub struct Fanout {
    /// Path and query of the purge, without `peers=`.
    pub target: String,
    pub host: Vec<u8>,
    pub secret: Option<Vec<u8>>,
    /// `rcdn_peer_secret`.
    pub peer_secret: Option<String>,
}

/// Starts the fan-out; the request is answered later (`NGX_DONE`).
///
/// # Safety
/// `r` must be a live main request in its content handler.
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    cc: &ClusterConf,
    f: Fanout,
    status: u32,
    body: Value,
) -> ngx_int_t {
    let peers = cluster::others(cc);
    let results: Results = Arc::new(Mutex::new(vec![None; peers.len()]));
    let me = cc.me.clone().unwrap_or_default();
    let request = Arc::new(request_bytes(&f, &me));
    let timeout = Duration::from_millis(cc.timeout_ms());
    for (i, (id, addr)) in peers.into_iter().enumerate() {
        let (res, req) = (results.clone(), request.clone());
        let failed = json!({"ok": false, "error": "cannot start a thread", "addr": addr.clone()});
        let spawned = std::thread::Builder::new()
            .name("rcdn-purge-fanout".into())
            .spawn(move || {
                let v = ask(&addr, &req, timeout);
                if let Ok(mut r) = res.lock() {
                    r[i] = Some((id, v));
                }
            });
        if spawned.is_err() {
            if let Ok(mut r) = results.lock() {
                r[i] = Some((format!("#{i}"), failed));
            }
        }
    }
    // SAFETY: r is live; the pool owns the job (and its timer) until the
    // request is freed.
    unsafe {
        let pool = Pool::from_ngx_pool((*r).pool);
        let ev: Box<ngx_event_t> = Box::new(core::mem::zeroed());
        let job = pool.allocate(Job {
            r,
            ev,
            results,
            status,
            body,
        });
        if job.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*job).ev.data = job.cast();
        (*job).ev.handler = Some(poll);
        (*job).ev.log = (*(*r).connection).log;
        (*job).ev.set_cancelable(0);
        ngx_add_timer(&mut *(*job).ev, POLL_MS);
        (*(*r).main).set_count((*(*r).main).count() + 1);
    }
    NGX_DONE as ngx_int_t
}

fn request_bytes(f: &Fanout, me: &str) -> Vec<u8> {
    let mut req = format!("GET {} HTTP/1.0\r\nHost: ", f.target).into_bytes();
    req.extend_from_slice(&f.host);
    req.extend_from_slice(format!("\r\nX-Rcdn-Hop: {me}\r\n").as_bytes());
    if let Some(s) = &f.secret {
        req.extend_from_slice(b"X-Rcdn-Purge-Secret: ");
        req.extend_from_slice(s);
        req.extend_from_slice(b"\r\n");
    }
    if let Some(s) = &f.peer_secret {
        req.extend_from_slice(format!("X-Rcdn-Peer-Secret: {s}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// Sends the purge to one peer: its JSON answer, or why there is none.
fn ask(addr: &str, req: &[u8], timeout: Duration) -> Value {
    match exchange(addr, req, timeout) {
        Ok((status, body)) => {
            let answer = serde_json::from_slice::<Value>(&body)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
            json!({"status": status, "ok": status == 200, "answer": answer})
        }
        Err(e) => json!({"ok": false, "error": e}),
    }
}

fn exchange(addr: &str, req: &[u8], timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + timeout;
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {addr}"))?;
    let mut s =
        TcpStream::connect_timeout(&sa, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    s.write_all(req)
        .map_err(|e| format!("send to {addr}: {e}"))?;
    s.set_read_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no HTTP answer"))?;
    let status = std::str::from_utf8(&raw[..end])
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{addr}: bad status line"))?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// Timer: answer once every peer has reported, else look again.
unsafe extern "C" fn poll(ev: *mut ngx_event_t) {
    // SAFETY: ev is the timer of a live Job (the pool removes it first).
    let job = unsafe { &mut *(*ev).data.cast::<Job>() };
    let r = job.r;
    // SAFETY: r is live while its pool owns the job.
    let c = unsafe { (*r).connection };
    // SAFETY: c is live.
    let log = unsafe { (*c).log };
    let mut rc: Option<ngx_int_t> = None;
    guard::event(log, "purge fan-out", || {
        let done = job
            .results
            .lock()
            .map(|v| v.iter().all(Option::is_some))
            .unwrap_or(true);
        if !done {
            // SAFETY: the event is ours and not armed.
            unsafe { ngx_add_timer(ev, POLL_MS) };
            return;
        }
        let mut peers = serde_json::Map::new();
        if let Ok(v) = job.results.lock() {
            for (id, answer) in v.iter().flatten() {
                peers.insert(id.clone(), answer.clone());
            }
        }
        job.body["peers"] = Value::Object(peers);
        // SAFETY: r is live.
        rc = Some(unsafe { crate::http::reply::respond(r, job.status, &job.body) });
    });
    let Some(rc) = rc.or_else(|| {
        // A panic above: answer 500 rather than leave the client hanging.
        // SAFETY: a plain read of the event flag.
        (unsafe { (*ev).timer_set() } == 0).then_some(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
    }) else {
        return;
    };
    // SAFETY: r is live; finalizing ends the count we took in `start`.
    unsafe {
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}
