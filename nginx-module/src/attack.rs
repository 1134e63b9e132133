//! Anti-attack guard (`rcdn_guard challenge=<rps> block=<rps>
//! [window=<time>] [capacity=<n>]`): an access-phase check of each URL's
//! request rate with the engine's `cdncore::policy::guard` (Space-Saving
//! heavy hitters). Above `challenge` a URL's requests get a 302 to the same
//! URL with `rcdn_challenge=<token>` appended; a request with a valid token
//! passes, a bad one gets 403; above `block` every request gets 403. Each
//! window the flags are re-examined and lifted when the rate is back down.
//!
//! The sketch is **per worker** (rates are what one worker sees); the
//! challenge secret is made when the config is parsed (in the master), so a
//! token from one worker is valid in every worker.

use crate::conf::{args, bad, lossy, parse_time, LocConf};
use crate::guard;
use cdncore::policy::guard::{Guard, GuardConfig, Verdict};
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::{Status, NGX_CONF_OK};
use ngx::http::HttpModuleLocationConf;
use ngx::ngx_log_error;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// One `rcdn_guard` directive: thresholds and the challenge secret.
pub struct GuardSpec {
    pub cfg: GuardConfig,
    pub secret: [u8; 32],
}

fn secret() -> [u8; 32] {
    // RandomState is seeded from the OS; mixing a few gives 32 bytes.
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        i.hash(&mut h);
        std::time::SystemTime::now().hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// Parses the directive's `key=value` arguments.
fn parse(a: &[String]) -> Result<GuardConfig, (String, String)> {
    let mut cfg = GuardConfig::default();
    let (mut challenge, mut block) = (None, None);
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
            "window" => {
                cfg.window_ms = parse_time(v.as_bytes()).ok_or_else(|| err("not a time"))?
            }
            "capacity" => cfg.capacity = v.parse().map_err(|_| err("not a number"))?,
            _ => return Err(err("expected challenge=, block=, window= or capacity=")),
        }
    }
    let joined = a.join(" ");
    cfg.challenge_rps =
        challenge.ok_or_else(|| (joined.clone(), "challenge= is required".into()))?;
    cfg.block_rps = block.ok_or_else(|| (joined.clone(), "block= is required".into()))?;
    cfg.validate().map_err(|e| (joined, e.reason))?;
    Ok(cfg)
}

/// `rcdn_guard challenge=<rps> block=<rps> [window=<time>] [capacity=<n>];`
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
            Ok(cfg) => {
                lc.attack = Some(Arc::new(GuardSpec {
                    cfg,
                    secret: secret(),
                }));
                NGX_CONF_OK
            }
            Err((v, why)) => bad(cf, "rcdn_guard", &v, &why),
        }
    })
}

thread_local! {
    /// This worker's sketches, one per `rcdn_guard` directive (by address).
    static GUARDS: RefCell<HashMap<usize, Guard>> = RefCell::new(HashMap::new());
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The request's URL without our challenge argument, and that argument.
fn split_args(args: &[u8]) -> (Vec<u8>, Option<String>) {
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
    (rest, token)
}

fn item(host: &[u8], uri: &[u8], args: &[u8]) -> u64 {
    // Fixed keys: the same URL is the same item in every worker.
    let mut h = std::hash::DefaultHasher::new();
    (host, uri, args).hash(&mut h);
    h.finish()
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
        (unsafe { crate::Module::location_conf(&*r) }).and_then(|lc| lc.attack.clone())
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
    let id = item(host, uri, &rest);
    let now = now_ms();
    let verdict = GUARDS.with(|g| {
        let mut g = g.borrow_mut();
        let key = Arc::as_ptr(&spec) as usize;
        let gd = match g.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Guard::new(spec.cfg, &spec.secret, now).ok()?),
        };
        Some(gd.check(id, token.as_deref(), now))
    });
    match verdict {
        None | Some(Verdict::Pass) => declined,
        Some(Verdict::Block) => {
            ngx_log_error!(NGX_LOG_INFO, log, "rcdn: guard blocked the request");
            // SAFETY: r is live.
            unsafe { crate::stats::mark(r, crate::stats::Mark::Blocked) };
            NGX_HTTP_FORBIDDEN as ngx_int_t
        }
        Some(Verdict::Challenge(t)) => {
            // SAFETY: r is live.
            unsafe { crate::stats::mark(r, crate::stats::Mark::Challenged) };
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
            unsafe { crate::hotlink::redirect(r, &url) }
        }
    }
}
