//! `rcdn_hotlink_url <url> [refresh=<time>] [wait=<time>]`: hotlink
//! policies fetched per domain from a policy URL (engine
//! `cdncore::policy::hotlink_url`). The first request for a domain asks
//! this worker's fetch thread for `GET <url>?domain=<host>` and waits for
//! the answer, re-checking every 10 ms on a timer (the event loop is never
//! blocked), at most `wait` (default 1s); past that the request gets the
//! `rcdn_hotlink_unknown` rule. Each domain is then refreshed after a
//! random delay in `0..=refresh` (default 5m). A failed or bad answer is
//! logged and the last good policy kept.
//!
//! Policies are fetched and kept **per worker** (each worker fetches a
//! domain once, then refreshes it on its own schedule), for at most
//! `MAX_DOMAINS` Hosts per worker (later new Hosts: the unknown rule).

use crate::base::guard;
use crate::conf::{args, bad, lossy, parse_time, LocConf, UrlConf};
use cdncore::policy::hotlink_url::{parse_answer, Applied, Lookup, Registry, MAX_DOMAINS};
use cdncore::policy::PolicyError;
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::NGX_CONF_OK;
use ngx::ngx_log_error;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often a waiting request looks again.
const POLL_MS: ngx_msec_t = 10;

/// `rcdn_hotlink_url <url> [refresh=<time>] [wait=<time>];`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_url(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_hotlink_url", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if lc.hotlink.url.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let a: Vec<String> = unsafe { args(cf) }.iter().map(lossy).collect();
        match parse(&a) {
            Ok(u) => {
                lc.hotlink.url = Some(Arc::new(u));
                NGX_CONF_OK
            }
            Err((v, why)) => bad(cf, "rcdn_hotlink_url", &v, &why),
        }
    })
}

fn parse(a: &[String]) -> Result<UrlConf, (String, String)> {
    let url = a[0].clone();
    if !url.starts_with("http://") || crate::policy::schedule::authority(&url).is_none() {
        return Err((url, "expected http://host:port/path".into()));
    }
    let mut u = UrlConf {
        url,
        refresh_ms: 300_000,
        wait_ms: 1000,
    };
    for t in &a[1..] {
        let time = |v: &str| parse_time(v.as_bytes());
        match t.split_once('=') {
            Some(("refresh", v)) => match time(v) {
                Some(ms) if ms >= 100 => u.refresh_ms = ms,
                _ => return Err((t.clone(), "refresh must be a time of 100ms or more".into())),
            },
            Some(("wait", v)) => match time(v) {
                Some(ms) if ms <= 60_000 => u.wait_ms = ms,
                _ => return Err((t.clone(), "wait must be a time up to 60s".into())),
            },
            _ => return Err((t.clone(), "expected refresh=<time> or wait=<time>".into())),
        }
    }
    Ok(u)
}

/// One policy URL's fetched policies in this worker, shared with its
/// fetch thread (which only sees these, never nginx).
struct Fetcher {
    reg: Mutex<Registry>,
    cv: Condvar,
    /// Lines for the error log, written by the event loop.
    logs: Mutex<Vec<(ngx_uint_t, String)>>,
}

thread_local! {
    static FETCHERS: RefCell<HashMap<usize, Arc<Fetcher>>> = RefCell::new(HashMap::new());
    static LOG_TIMER: RefCell<Option<Box<ngx_event_t>>> = const { RefCell::new(None) };
}

fn now_ms() -> u64 {
    cdncore::now_ms()
}

fn fetcher(u: &Arc<UrlConf>) -> Arc<Fetcher> {
    FETCHERS.with(|f| {
        let mut f = f.borrow_mut();
        f.entry(Arc::as_ptr(u) as usize)
            .or_insert_with(|| start(u.clone()))
            .clone()
    })
}

/// Makes the fetcher and its thread (and the log timer, once).
fn start(u: Arc<UrlConf>) -> Arc<Fetcher> {
    let f = Arc::new(Fetcher {
        reg: Mutex::new(Registry::new(u.refresh_ms)),
        cv: Condvar::new(),
        logs: Mutex::new(Vec::new()),
    });
    let t = f.clone();
    let spawned = std::thread::Builder::new()
        .name("rcdn-hotlink-url".into())
        .spawn(move || run(&t, &u.url));
    if spawned.is_err() {
        push_log(
            &f,
            NGX_LOG_ERR as ngx_uint_t,
            "rcdn: cannot start the hotlink policy thread".into(),
        );
    }
    start_log_timer();
    f
}

fn push_log(f: &Fetcher, level: ngx_uint_t, line: String) {
    if let Ok(mut l) = f.logs.lock() {
        l.push((level, line));
    }
}

/// The fetch thread: first fetches as asked, refreshes when due.
fn run(f: &Fetcher, base: &str) {
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    loop {
        let domain = {
            let Ok(mut reg) = f.reg.lock() else { return };
            loop {
                match reg.next_due(now_ms()) {
                    Ok(d) => break d,
                    Err(next) => {
                        let nap = next.map_or(1000, |n| n.saturating_sub(now_ms()).clamp(1, 1000));
                        reg = match f.cv.wait_timeout(reg, Duration::from_millis(nap)) {
                            Ok((g, _)) => g,
                            Err(_) => return,
                        };
                    }
                }
            }
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}domain={}", encode(&domain));
        let result = crate::policy::http_get::get(&url, Duration::from_secs(2))
            .map_err(|e| PolicyError::new(format!("policy for {domain:?}"), e))
            .and_then(|(status, body)| parse_answer(&domain, status, &body));
        let mut h = std::hash::DefaultHasher::new();
        (seed, &domain, now_ms()).hash(&mut h);
        let Ok(mut reg) = f.reg.lock() else { return };
        match reg.apply(&domain, result, now_ms(), h.finish()) {
            Applied::Updated => {}
            Applied::Kept(why) => push_log(
                f,
                NGX_LOG_WARN as ngx_uint_t,
                format!("rcdn: hotlink policy from {url} rejected, the last good one stays: {why}"),
            ),
        }
    }
}

/// Percent-encodes all but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A cancelable 200 ms timer that writes the fetch threads' log lines.
fn start_log_timer() {
    LOG_TIMER.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_some() {
            return;
        }
        // SAFETY: an all-zero ngx_event_t is its documented initial state.
        let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
        ev.handler = Some(drain_logs);
        // SAFETY: the running cycle's log lives as long as the worker.
        ev.log = unsafe { (*ngx_cycle).log };
        ev.set_cancelable(1);
        let p: *mut ngx_event_t = &mut *ev;
        // SAFETY: the boxed event lives in this thread-local until exit.
        unsafe { ngx_add_timer(p, 200) };
        *t = Some(ev);
    });
}

unsafe extern "C" fn drain_logs(ev: *mut ngx_event_t) {
    // SAFETY: ev is our timer event.
    let log = unsafe { (*ev).log };
    guard::event(log, "hotlink log", || {
        let all: Vec<Arc<Fetcher>> = FETCHERS.with(|f| f.borrow().values().cloned().collect());
        for f in all {
            let lines = f
                .logs
                .lock()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default();
            for (level, line) in lines {
                ngx_log_error!(level, log, "{line}");
            }
        }
    });
    // SAFETY: ev is our live timer event, off the timer tree now.
    unsafe { ngx_add_timer(ev, 200) };
}

/// What the access phase does for a domain not in the policy file.
pub enum Answer {
    Policy(Arc<cdncore::policy::hotlink::Hotlink>),
    /// The unknown-domain rule applies.
    Unknown,
    /// Return NGX_AGAIN: the request is resumed by a timer.
    Wait,
}

/// The fetched policy of `host`, or a wait for it.
///
/// # Safety
/// `r` must be a live main request in the access phase.
pub unsafe fn lookup(r: *mut ngx_http_request_t, u: &Arc<UrlConf>, host: &str) -> Answer {
    let f = fetcher(u);
    let (l, asked) = match f.reg.lock() {
        Ok(mut reg) => {
            let before = reg.overflow;
            let out = reg.lookup(host);
            if reg.overflow > before && reg.overflow % 1000 == 1 {
                let n = reg.overflow;
                drop(reg);
                push_log(
                    &f,
                    NGX_LOG_WARN as ngx_uint_t,
                    format!("rcdn: hotlink policy URL: {n} requests for new Hosts past {MAX_DOMAINS} domains got the unknown-domain rule"),
                );
            }
            out
        }
        Err(_) => return Answer::Unknown,
    };
    if asked {
        f.cv.notify_all();
    }
    match l {
        Lookup::Policy(p) => Answer::Policy(p),
        Lookup::NoPolicy => Answer::Unknown,
        // SAFETY: forwarded.
        Lookup::Pending => unsafe { wait(r, u.wait_ms) },
    }
}

/// A waiting request's timer, owned by its pool (the cleanup frees it).
struct Wait {
    ev: ngx_event_t,
    until_ms: u64,
}

static WAIT_CLEANUP: unsafe extern "C" fn(*mut c_void) = drop_wait;

unsafe extern "C" fn drop_wait(data: *mut c_void) {
    // SAFETY: data is the Box<Wait> registered in `wait`, freed only here.
    let mut w = unsafe { Box::from_raw(data.cast::<Wait>()) };
    let p: *mut ngx_event_t = &mut w.ev;
    // SAFETY: p is our event; these only unlink it.
    unsafe {
        if w.ev.timer_set() != 0 {
            ngx_del_timer(p);
        }
        if w.ev.posted() != 0 {
            ngx_delete_posted_event(p);
        }
    }
}

/// The request's wait record, if it has one.
///
/// # Safety
/// `r` must be live.
#[allow(unpredictable_function_pointer_comparisons)] // one static, both sides
unsafe fn find_wait(r: *mut ngx_http_request_t) -> Option<&'static mut Wait> {
    // SAFETY: r is live; the cleanup list is null-terminated.
    let mut c = unsafe { (*(*r).pool).cleanup };
    while !c.is_null() {
        // SAFETY: c is a live cleanup record; ours hold a Wait.
        unsafe {
            if (*c).handler == Some(WAIT_CLEANUP) && (*(*c).data.cast::<Wait>()).ev.data == r.cast()
            {
                return Some(&mut *(*c).data.cast::<Wait>());
            }
            c = (*c).next;
        }
    }
    None
}

/// Waits (a 10 ms non-cancelable timer re-runs the phases) until `wait_ms`
/// after the first try, then gives up.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn wait(r: *mut ngx_http_request_t, wait_ms: u64) -> Answer {
    let now = now_ms();
    // SAFETY: r is live.
    let w = match unsafe { find_wait(r) } {
        Some(w) => w,
        None => {
            // SAFETY: r is live; a 0-byte cleanup only links a record.
            let c = unsafe { ngx_pool_cleanup_add((*r).pool, 0) };
            if c.is_null() {
                return Answer::Unknown;
            }
            // SAFETY: an all-zero event is its initial state.
            let mut w = Box::new(Wait {
                ev: unsafe { core::mem::zeroed() },
                until_ms: now + wait_ms,
            });
            w.ev.data = r.cast();
            w.ev.handler = Some(resume);
            // SAFETY: r and its connection are live.
            w.ev.log = unsafe { (*(*r).connection).log };
            w.ev.set_cancelable(0);
            let p = Box::into_raw(w);
            // SAFETY: c is the fresh cleanup record; it now owns p.
            unsafe {
                (*c).handler = Some(WAIT_CLEANUP);
                (*c).data = p.cast();
                &mut *p
            }
        }
    };
    if now >= w.until_ms {
        // SAFETY: r is live.
        let log = unsafe { (*(*r).connection).log };
        ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "rcdn: hotlink policy not fetched yet; the unknown-domain rule applies"
        );
        return Answer::Unknown;
    }
    // SAFETY: the event lives in the request pool's cleanup until then.
    unsafe { ngx_add_timer(&mut w.ev, POLL_MS) };
    Answer::Wait
}

/// Timer: run the request's phases again (the access check re-runs).
unsafe extern "C" fn resume(ev: *mut ngx_event_t) {
    // SAFETY: ev is a live Wait event; data is its live request (the
    // pool cleanup unlinks the event before the request is freed).
    unsafe {
        let r = (*ev).data.cast::<ngx_http_request_t>();
        let c = (*r).connection;
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(c);
    }
}
