//! Anti-attack guard (`rcdn_guard challenge=<rps> block=<rps>
//! [window=<time>] [ip_challenge=<rps> ip_block=<rps>]`): an access-phase
//! check of each URL's request rate, and optionally each client address's
//! rate over all URLs, with the engine's `cdncore::policy::rates` in the
//! shared `rcdn_guard_zone` (exact counts across workers). Above
//! `challenge` a URL's requests get a 302 to the same URL with
//! `rcdn_challenge=<token>` appended (the token binds URL and client
//! address); a request with a valid token passes, a bad one gets 403; above
//! `block` every request gets 403. Likewise per client address with the
//! `ip_` thresholds. Each item's window is re-examined when it ends and the
//! flag lifted when the rate is back down.

use crate::base::guard;
use crate::conf::{args, bad, lossy, parse_time, GuardSpec, LocConf};
use cdncore::policy::guard::Verdict;
use cdncore::policy::rates::{item_id, Item, Limits};
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::{Status, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use ngx::ngx_log_error;
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parses the directive's `key=value` arguments.
fn parse(a: &[String]) -> Result<GuardSpec, (String, String)> {
    let mut window_ms = 300_000;
    let (mut challenge, mut block, mut ip_c, mut ip_b) = (None, None, None, None);
    for t in a {
        let err = |why: &str| (t.clone(), why.to_string());
        let (k, v) = t.split_once('=').ok_or_else(|| err("expected key=value"))?;
        let rps = || {
            v.parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0 && r.is_finite())
                .ok_or_else(|| err("not a positive rate (requests per second)"))
        };
        match k {
            "challenge" => challenge = Some(rps()?),
            "block" => block = Some(rps()?),
            "ip_challenge" => ip_c = Some(rps()?),
            "ip_block" => ip_b = Some(rps()?),
            "window" => window_ms = parse_time(v.as_bytes()).ok_or_else(|| err("not a time"))?,
            "capacity" => {
                return Err(err(
                    "capacity= is gone: rcdn_guard_zone <size> bounds the memory",
                ))
            }
            _ => {
                return Err(err(
                    "expected challenge=, block=, window=, ip_challenge= or ip_block=",
                ))
            }
        }
    }
    let joined = a.join(" ");
    let need = |v: Option<f64>, what: &str| {
        v.ok_or_else(|| (joined.clone(), format!("{what}= is required")))
    };
    let url = Limits {
        challenge_rps: need(challenge, "challenge")?,
        block_rps: need(block, "block")?,
        window_ms,
    };
    url.validate("rcdn_guard")
        .map_err(|e| (joined.clone(), e.reason))?;
    let client = match (ip_c, ip_b) {
        (None, None) => None,
        (Some(c), Some(b)) => Some(Limits {
            challenge_rps: c,
            block_rps: b,
            window_ms,
        }),
        _ => return Err((joined, "ip_challenge= and ip_block= go together".into())),
    };
    if let Some(c) = &client {
        c.validate("rcdn_guard")
            .map_err(|e| (joined.clone(), format!("ip_: {}", e.reason)))?;
    }
    Ok(GuardSpec { url, client })
}

/// `rcdn_guard challenge=<rps> block=<rps> [window=<time>] [ip_challenge=<rps> ip_block=<rps>];`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_guard(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_guard", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if lc.attack.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let a: Vec<String> = unsafe { args(cf) }.iter().map(lossy).collect();
        match parse(&a) {
            Ok(spec) => {
                lc.attack = Some(Arc::new(spec));
                // SAFETY: cf is the conf being parsed, inside http{}.
                if let Some(mc) = crate::conf::Module::main_conf_mut(unsafe { &*cf }) {
                    mc.guard.used = true;
                }
                NGX_CONF_OK
            }
            Err((v, why)) => bad(cf, "rcdn_guard", &v, &why),
        }
    })
}

thread_local! {
    static LAST_FULL_LOG: RefCell<Option<Instant>> = const { RefCell::new(None) };
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The request's URL without our challenge argument (and empty
/// arguments), and that argument; borrowed when there is nothing to drop.
fn split_args(args: &[u8]) -> (Cow<'_, [u8]>, Option<String>) {
    let has = |pat: &[u8]| args.windows(pat.len()).any(|w| w == pat);
    if !(has(b"rcdn_challenge=") || has(b"&&") || args.starts_with(b"&") || args.ends_with(b"&")) {
        return (Cow::Borrowed(args), None);
    }
    let mut rest = Vec::new();
    let mut token = None;
    for kv in args.split(|&b| b == b'&').filter(|kv| !kv.is_empty()) {
        match kv.strip_prefix(b"rcdn_challenge=") {
            Some(t) => token = Some(String::from_utf8_lossy(t).into_owned()),
            None => {
                if !rest.is_empty() {
                    rest.push(b'&');
                }
                rest.extend_from_slice(kv);
            }
        }
    }
    (Cow::Owned(rest), token)
}

fn item(host: &[u8], uri: &[u8], args: &[u8]) -> u64 {
    item_id(&[b"url", host, uri, args])
}

fn client_item(addr: &[u8]) -> u64 {
    item_id(&[b"client", addr])
}

/// Says so when the zone had no slot (at most every 10 s per worker).
fn log_full(log: *mut ngx_log_t, n: u64) {
    let due = LAST_FULL_LOG.with(|l| {
        let mut l = l.borrow_mut();
        let due = l.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            *l = Some(Instant::now());
        }
        due
    });
    if due {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "rcdn: guard zone full: {n} requests passed uncounted (enlarge rcdn_guard_zone)"
        );
    }
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
        "rcdn_guard",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        // SAFETY: r is live for the call.
        || unsafe { check(r, log) },
    )
}

/// # Safety
/// `r` must be live.
unsafe fn check(r: *mut ngx_http_request_t, log: *mut ngx_log_t) -> ngx_int_t {
    let declined = Status::NGX_DECLINED.into();
    // SAFETY: r is live.
    if unsafe { (*r).main } != r {
        return declined;
    }
    // SAFETY: r is live; our loc conf exists for every location.
    let Some(spec) =
        (unsafe { crate::conf::Module::location_conf(&*r) }).and_then(|lc| lc.attack.clone())
    else {
        return declined;
    };
    // SAFETY: r is live; its strings live as long as the request.
    let (host, uri, args) = unsafe {
        (
            (*r).headers_in.server.as_bytes(),
            (*r).uri.as_bytes(),
            (*r).args.as_bytes(),
        )
    };
    let (rest, token) = split_args(args);
    // SAFETY: r is live.
    let Some(shared) =
        crate::conf::Module::main_conf(unsafe { &*r }).and_then(crate::policy::attack_zone::get)
    else {
        return declined;
    };
    // SAFETY: r is live; addr_text is the client address nginx printed.
    let addr = unsafe { (*(*r).connection).addr_text.as_bytes() };
    let url = Item {
        id: item(host, uri, &rest),
        limits: &spec.url,
    };
    let client = spec.client.as_ref().map(|l| Item {
        id: client_item(addr),
        limits: l,
    });
    let full = shared.rates.full();
    let verdict = shared.check(url, client, token.as_deref(), now_ms());
    if shared.rates.full() > full {
        log_full(log, shared.rates.full());
    }
    match verdict {
        Verdict::Pass => declined,
        Verdict::Block => {
            ngx_log_error!(NGX_LOG_INFO, log, "rcdn: guard blocked the request");
            // SAFETY: r is live.
            unsafe { crate::policy::stats::mark(r, crate::policy::stats::Mark::Blocked) };
            NGX_HTTP_FORBIDDEN as ngx_int_t
        }
        Verdict::Challenge(t) => {
            // SAFETY: r is live.
            unsafe { crate::policy::stats::mark(r, crate::policy::stats::Mark::Challenged) };
            // The raw (still encoded) path the client sent.
            // SAFETY: r is live.
            let raw = unsafe { (*r).unparsed_uri.as_bytes() };
            let path = raw.split(|&b| b == b'?').next().unwrap_or(raw);
            let mut url = String::from_utf8_lossy(path).into_owned();
            url.push('?');
            if !rest.is_empty() {
                url.push_str(&String::from_utf8_lossy(&rest));
                url.push('&');
            }
            url.push_str("rcdn_challenge=");
            url.push_str(&t);
            // SAFETY: r is live.
            unsafe { crate::policy::hotlink::redirect(r, &url) }
        }
    }
}
