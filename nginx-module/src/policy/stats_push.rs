//! `rcdn_stats_push <url>` (http): each closed statistics window's summary
//! (`Traffic::last_closed_summary`, JSON) is POSTed to a collector, once per
//! node: every worker runs a small thread (started with its first request)
//! that wakes a few times per window, and the worker that wins the window
//! in the zone's claim word (a compare-and-swap) sends it. The thread only
//! touches the shared table's atomics, never nginx.

use crate::base::guard;
use crate::conf::{args, bad, lossy, MainConf};
use cdncore::policy::traffic::Traffic;
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::NGX_CONF_OK;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

/// `rcdn_stats_push http://host:port/path;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_push(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_stats_push", || {
        // SAFETY: conf is our MainConf.
        let mc = unsafe { &mut *conf.cast::<MainConf>() };
        if mc.stats.push.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let url = lossy(&unsafe { args(cf) }[0]);
        if !url.starts_with("http://") || crate::policy::schedule::authority(&url).is_none() {
            return bad(
                cf,
                "rcdn_stats_push",
                &url,
                "expected http://host:port/path",
            );
        }
        mc.stats.push = Some(url);
        NGX_CONF_OK
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts this worker's push thread.
pub fn start(
    t: Arc<Traffic>,
    claim: &'static AtomicU64,
    url: String,
    node: String,
    window_ms: u64,
) {
    let nap = Duration::from_millis((window_ms / 4).clamp(25, 1000));
    let spawned = std::thread::Builder::new()
        .name("rcdn-stats-push".into())
        .spawn(move || loop {
            std::thread::sleep(nap);
            let now = now_ms();
            let Some(w) = (now / window_ms).checked_sub(1) else {
                continue;
            };
            let cur = claim.load(Acquire);
            if cur > w || claim.compare_exchange(cur, w + 1, AcqRel, Acquire).is_err() {
                continue; // pushed already, or another worker won it
            }
            if let Some(summary) = t.last_closed_summary(&node, now) {
                post(&url, summary.to_string().as_bytes());
            }
        });
    drop(spawned); // no thread, no pushes: the stats still work
}

/// One POST; failures are dropped (the collector misses that window).
fn post(url: &str, body: &[u8]) {
    let Some((host, port)) = crate::policy::schedule::authority(url) else {
        return;
    };
    let path = url
        .split_once("://")
        .and_then(|(_, r)| r.find('/').map(|i| &r[i..]))
        .unwrap_or("/");
    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return,
    };
    let t = Duration::from_secs(2);
    let Some(mut s) = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, t).ok())
    else {
        return;
    };
    let _ = s.set_read_timeout(Some(t));
    let _ = s.set_write_timeout(Some(t));
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_ok()
    {
        let mut sink = [0u8; 256];
        let _ = s.read(&mut sink);
    }
}
