//! Request scheduler (`rcdn_scheduler <table file>`): the node answers a
//! client with a 302 to the best node for its address (engine
//! `cdncore::policy::sched`: zone by IP range, then the zone's levels, then
//! any healthy node, then any node; random among equals) plus the request
//! URI. With no nodes in the table the request is served here (MiniCDN's
//! manager serving itself).
//!
//! The table is read when the config is parsed (a bad file fails `nginx
//! -t`; a reload re-reads it). With `check=<interval>` each worker probes
//! every node from a thread of its own (a `GET /`, or with
//! `status=<path>` a `GET <node URL><path>`; healthy = any answer below
//! 500 within a second) and skips the unhealthy ones. With `status=` the
//! answer's JSON `"load"` (0.0 idle .. 1.0 full; `rcdn_node_status` serves
//! it) is the node's load, and nodes at 0.9 or more count as overloaded;
//! without it nodes count as idle. Health and load are per worker.

use crate::base::guard;
use crate::conf::{args, bad, lossy, LocConf, SchedConf};
use cdncore::policy::sched::Scheduler;
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::{Status, NGX_CONF_OK};
use ngx::http::HttpModuleLocationConf;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// Reads and parses a table file; the error names the file and problem.
pub fn load(path: &str) -> Result<Scheduler, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    Scheduler::parse(&text)
        .map_err(|e| format!("bad scheduler table \"{path}\": {}: {}", e.what, e.reason))
}

/// `rcdn_scheduler <file>;` (relative paths are under the conf prefix).
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_scheduler(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_scheduler", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if lc.sched.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let a = unsafe { args(cf) };
        let mut name = a[0];
        let mut check_ms = 0;
        let mut status = None;
        for v in &a[1..] {
            let text = lossy(v);
            if let Some(p) = text.strip_prefix("status=") {
                if !p.starts_with('/') || p.contains(char::is_whitespace) {
                    return bad(
                        cf,
                        "rcdn_scheduler",
                        &text,
                        "status= needs a path such as /rcdn-status",
                    );
                }
                status = Some(p.to_string());
                continue;
            }
            match text
                .strip_prefix("check=")
                .map(|t| crate::conf::parse_time(t.as_bytes()))
            {
                Some(Some(ms)) if ms >= 100 => check_ms = ms,
                _ => {
                    return bad(
                        cf,
                        "rcdn_scheduler",
                        &text,
                        "expected check=<time of 100ms or more> or status=<path>",
                    )
                }
            }
        }
        if status.is_some() && check_ms == 0 {
            return bad(
                cf,
                "rcdn_scheduler",
                &lossy(&a[a.len() - 1]),
                "status= needs check=<interval>",
            );
        }
        // SAFETY: cf->cycle is the cycle being configured.
        if unsafe { ngx_conf_full_name((*cf).cycle, &mut name, 1) } != NGX_OK as ngx_int_t {
            return bad(
                cf,
                "rcdn_scheduler",
                &lossy(&name),
                "cannot resolve the path",
            );
        }
        let path = lossy(&name);
        match load(&path) {
            Ok(s) => {
                lc.sched = Some(Arc::new(SchedConf {
                    table: s,
                    check_ms,
                    status,
                }));
                NGX_CONF_OK
            }
            Err(e) => bad(cf, "rcdn_scheduler", &path, &e),
        }
    })
}

thread_local! {
    static RAND: Cell<u64> = Cell::new(
        std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
    );
}

/// xorshift64: picks among equal nodes.
fn rand() -> u64 {
    RAND.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

/// Health and load of each node (by index), written by the worker's probe
/// thread.
type Health = Arc<Mutex<Vec<(bool, f64)>>>;

thread_local! {
    /// Per directive (by address): this worker's table copy and its health.
    static CHECKED: RefCell<HashMap<usize, (Scheduler, Health)>> = RefCell::new(HashMap::new());
}

/// The picked node's URL, with health applied when checks are on.
fn pick(sc: &Arc<SchedConf>, ip: IpAddr) -> Option<String> {
    if sc.check_ms == 0 {
        return sc.table.pick(ip, rand()).map(|n| n.url.clone());
    }
    CHECKED.with(|c| {
        let mut c = c.borrow_mut();
        let (table, health) = c
            .entry(Arc::as_ptr(sc) as usize)
            .or_insert_with(|| (sc.table.clone(), start_checks(sc)));
        let states: Vec<(bool, f64)> = health.lock().map(|h| h.clone()).unwrap_or_default();
        let ids: Vec<String> = table.nodes().iter().map(|n| n.id.clone()).collect();
        for (id, (ok, load)) in ids.iter().zip(states) {
            table.set_state(id, ok, load);
        }
        table.pick(ip, rand()).map(|n| n.url.clone())
    })
}

/// Starts this worker's probe thread (it only ever sees URLs and the
/// health vector, never nginx).
fn start_checks(sc: &SchedConf) -> Health {
    let urls: Vec<String> = sc.table.nodes().iter().map(|n| n.url.clone()).collect();
    let health: Health = Arc::new(Mutex::new(vec![(true, 0.0); urls.len()]));
    let h = health.clone();
    let (every_ms, status) = (sc.check_ms, sc.status.clone());
    let spawned = std::thread::Builder::new()
        .name("rcdn-sched-check".into())
        .spawn(move || loop {
            let states: Vec<(bool, f64)> = urls
                .iter()
                .map(|u| match &status {
                    Some(path) => probe_status(&format!("{u}{path}")),
                    None => (probe(u), 0.0),
                })
                .collect();
            if let Ok(mut v) = h.lock() {
                *v = states;
            }
            std::thread::sleep(Duration::from_millis(every_ms));
        });
    drop(spawned); // if the thread cannot start, nodes stay "healthy"
    health
}

/// `host:port` of an http(s) URL (`[v6]:port` too).
pub(crate) fn authority(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let auth = rest.split('/').next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match auth.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((host.to_string(), port))
}

/// A status probe: healthy on any answer below 500 within a second; the
/// load is the JSON body's `"load"` (0.0 when absent or unreadable).
fn probe_status(url: &str) -> (bool, f64) {
    match crate::policy::http_get::get(url, Duration::from_secs(1)) {
        Ok((status, body)) if status < 500 => (true, load_of(&body)),
        _ => (false, 0.0),
    }
}

/// `{"load": 0.42, ...}` -> 0.42 (clamped to 0..1 by the engine).
fn load_of(body: &[u8]) -> f64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("load").and_then(|l| l.as_f64()))
        .unwrap_or(0.0)
}

/// One health probe: any HTTP answer below 500 within a second.
fn probe(url: &str) -> bool {
    let Some((host, port)) = authority(url) else {
        return false;
    };
    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return false,
    };
    let t = Duration::from_secs(1);
    let Some(mut s) = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, t).ok())
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(t));
    let _ = s.set_write_timeout(Some(t));
    let req = format!("GET / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: rcdn-check\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.starts_with("HTTP/")
        && line
            .split(' ')
            .nth(1)
            .and_then(|c| c.trim().parse::<u16>().ok())
            .is_some_and(|c| c < 500)
}

/// Access phase.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn access(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "rcdn_scheduler",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        // SAFETY: r is live for the call.
        || unsafe { schedule(r) },
    )
}

/// # Safety
/// `r` must be live.
unsafe fn schedule(r: *mut ngx_http_request_t) -> ngx_int_t {
    let declined = Status::NGX_DECLINED.into();
    // SAFETY: r is live.
    if unsafe { (*r).main } != r {
        return declined;
    }
    // SAFETY: r is live; our loc conf exists for every location.
    let Some(sched) =
        (unsafe { crate::conf::Module::location_conf(&*r) }).and_then(|lc| lc.sched.clone())
    else {
        return declined;
    };
    // SAFETY: r is live; addr_text is the client address nginx printed.
    let addr = unsafe { (*(*r).connection).addr_text.as_bytes() };
    let Some(ip) = core::str::from_utf8(addr)
        .ok()
        .and_then(|a| a.parse::<IpAddr>().ok())
    else {
        return declined; // e.g. a unix socket client: serve here
    };
    let Some(url) = pick(&sched, ip) else {
        return declined; // no nodes: serve here
    };
    // SAFETY: r is live.
    let uri = unsafe { (*r).unparsed_uri.as_bytes() };
    let url = format!(
        "{}{}",
        url.trim_end_matches('/'),
        String::from_utf8_lossy(uri)
    );
    // SAFETY: r is live.
    unsafe { crate::policy::hotlink::redirect(r, &url) }
}
