//! The purge endpoint (`cdn_purge`). One purge per request, named by a
//! query parameter; the answer is JSON. See docs/nginx.md for the format.
//!
//! `?url=/a/b.jpg` (all variants), `?url=/news/*` or `?prefix=/news/`,
//! `?tag=news` (Surrogate-Key / Cache-Tag), `?itag=42`, `?mask=0x10`,
//! `?group=example.com`, `?regex=\.jpg$`, `?all=1`, `?key=<raw key>`;
//! `host=` picks the host part of URL keys (default: the request's Host).

use crate::base::request::{header_in, same};
use crate::conf::LocConf;
use crate::http::reply::respond;
use crate::{base::guard, cache::variant, conf::Module, engine::store};
use cdncore::Purge;
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
use serde_json::{json, Value};

/// Header carrying the shared secret of `rcdn_purge_secret`.
const SECRET_HEADER: &[u8] = b"x-rcdn-purge-secret";

/// A parsed purge request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Url(Vec<u8>),
    Prefix(Vec<u8>),
    Tag(String),
    ITag(u16),
    Mask(u64),
    Group(Vec<u8>),
    Regex(String),
    All,
    Key(Vec<u8>),
}

/// Decimal or `0x` hexadecimal.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn unhex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes a query component (`+` stays `+`).
fn percent_decode(s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = s.get(i + 1).copied().and_then(unhex);
            let lo = s.get(i + 2).copied().and_then(unhex);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err("bad percent-encoding in the query".into()),
            }
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn text(v: Vec<u8>, what: &str) -> Result<String, String> {
    String::from_utf8(v).map_err(|_| format!("{what} is not UTF-8"))
}

fn path(v: Vec<u8>, what: &str) -> Result<Vec<u8>, String> {
    if v.first() != Some(&b'/') {
        return Err(format!("{what} must start with '/'"));
    }
    plain(v, what)
}

/// A value that becomes part of a key: a control byte (NUL, CR, LF, DEL,
/// ...) cannot be in a key nginx evaluates, and would reach logs and peers
/// as is, so it is refused like any other malformed purge.
fn plain(v: Vec<u8>, what: &str) -> Result<Vec<u8>, String> {
    match v.iter().find(|&&b| b < 0x20 || b == 0x7f) {
        Some(b) => Err(format!("{what} contains the control byte {b:#04x}")),
        None => Ok(v),
    }
}

/// Parses the query string into (target, host override).
pub fn parse(query: &[u8]) -> Result<(Target, Option<Vec<u8>>), String> {
    let mut target = None;
    let mut host = None;
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, raw) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let v = percent_decode(raw)?;
        let t = match name {
            b"host" => {
                host = Some(plain(v, "host")?);
                continue;
            }
            b"url" => match v.strip_suffix(b"*") {
                Some(p) => Target::Prefix(path(p.to_vec(), "url")?),
                None => Target::Url(path(v, "url")?),
            },
            b"prefix" => Target::Prefix(path(v, "prefix")?),
            b"tag" if !v.is_empty() => Target::Tag(text(v, "tag")?),
            b"itag" => Target::ITag(
                text(v, "itag")?
                    .parse()
                    .map_err(|_| "itag must be an integer 0..65535".to_string())?,
            ),
            b"mask" => match parse_u64(&text(v, "mask")?) {
                Some(m) if m != 0 => Target::Mask(m),
                _ => return Err("mask must be a non-zero integer (decimal or 0x hex)".into()),
            },
            b"group" if !v.is_empty() => Target::Group(plain(v, "group")?),
            b"regex" if !v.is_empty() => Target::Regex(text(v, "regex")?),
            b"key" if !v.is_empty() => Target::Key(plain(v, "key")?),
            b"all" if matches!(v.as_slice(), b"" | b"1" | b"true") => Target::All,
            _ => {
                return Err(format!(
                    "unknown or empty parameter \"{}\"",
                    String::from_utf8_lossy(name)
                ))
            }
        };
        if target.replace(t).is_some() {
            return Err(
                "give exactly one of url, prefix, tag, itag, mask, group, regex, key, all".into(),
            );
        }
    }
    let target = target.ok_or(
        "nothing to purge: give one of url, prefix, tag, itag, mask, group, regex, key, all",
    )?;
    Ok((target, host))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn joined(host: &[u8], path: &[u8]) -> Vec<u8> {
    [host, path].concat()
}

/// Turns a target into engine purges and a JSON description.
pub fn plan(target: Target, host: &[u8]) -> (Vec<Purge>, Value) {
    match target {
        Target::Url(p) => url_plan("url", joined(host, &p)),
        Target::Key(k) => url_plan("key", k),
        Target::Prefix(p) => {
            let k = joined(host, &p);
            let j = json!({"purge": "prefix", "prefix": lossy(&k)});
            (vec![Purge::Prefix(k)], j)
        }
        Target::Tag(t) => (
            vec![Purge::SurrogateKey(t.clone())],
            json!({"purge": "tag", "tag": t}),
        ),
        Target::ITag(t) => (vec![Purge::Tag(t)], json!({"purge": "itag", "itag": t})),
        Target::Mask(m) => (
            vec![Purge::Mask(m)],
            json!({"purge": "mask", "mask": format!("{m:#x}")}),
        ),
        Target::Group(g) => {
            let j = json!({"purge": "group", "group": lossy(&g)});
            (vec![Purge::Group(g)], j)
        }
        Target::Regex(r) => (
            vec![Purge::Regex(r.clone())],
            json!({"purge": "regex", "regex": r}),
        ),
        Target::All => (vec![Purge::All], json!({"purge": "all"})),
    }
}

fn url_plan(kind: &str, base: Vec<u8>) -> (Vec<Purge>, Value) {
    let keys = variant::all_keys(&base).into_iter().map(Purge::Key);
    let fields = Purge::SurrogateKey(variant::url_tag(&base));
    let j = json!({"purge": kind, "key": lossy(&base)});
    (keys.chain([fields]).collect(), j)
}

/// The content handler of a `cdn_purge` location.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "purge",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is live for the handler.
            unsafe { purge(r) }
        },
    )
}

/// `cdn_purge;` makes the location the purge endpoint.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_purge(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "cdn_purge", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        lc.purge = true;
        // SAFETY: cf is valid during parsing; the core loc conf exists.
        match NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) {
            Some(clcf) => {
                clcf.handler = Some(handler);
                NGX_CONF_OK
            }
            None => NGX_CONF_ERROR,
        }
    })
}

/// # Safety
/// `r` must be live.
unsafe fn purge(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    unsafe { guard::fault(r, "purge") };
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: r is live.
    let lc: Option<&LocConf> = Module::location_conf(unsafe { &*r });
    if let Some(secret) = lc.and_then(|c| c.purge_secret.as_deref()) {
        // SAFETY: r is live.
        let given = unsafe { header_in(r, SECRET_HEADER) }.unwrap_or_default();
        if !same(given, secret.as_bytes()) {
            let body =
                json!({"ok": false, "error": "forbidden: missing or wrong X-Rcdn-Purge-Secret"});
            // SAFETY: r is live.
            return unsafe { respond(r, NGX_HTTP_FORBIDDEN, &body) };
        }
    }
    // SAFETY: r is live.
    let (args, server) = unsafe { ((*r).args.as_bytes(), (*r).headers_in.server.as_bytes()) };
    let (args, peers) = match split_peers(args) {
        Ok(v) => v,
        Err(e) => {
            let body = json!({"ok": false, "error": e});
            // SAFETY: r is live.
            return unsafe { respond(r, NGX_HTTP_BAD_REQUEST, &body) };
        }
    };
    let (status, body) = match parse(&args) {
        Err(e) => (NGX_HTTP_BAD_REQUEST, json!({"ok": false, "error": e})),
        Ok((target, host)) if crate::engine::iothread::enabled() => {
            let host = host.unwrap_or_else(|| server.to_vec());
            // SAFETY: r is live.
            return unsafe { run_off_loop(r, target, host, peers, args) };
        }
        Ok((target, host)) => {
            // SAFETY: r is live.
            guard::injected_delay(unsafe { crate::cache::slice::serve::slow_read_asked(r) });
            run(store::get(), target, host.as_deref().unwrap_or(server))
        }
    };
    // SAFETY: r is live.
    unsafe { answer(r, status, body, peers, &args) }
}

/// Runs the purge on an io thread (a URL purge reads the manifest of a
/// sliced object, which may be on disk), then answers.
///
/// # Safety
/// `r` must be a live main request in its content handler.
unsafe fn run_off_loop(
    r: *mut ngx_http_request_t,
    target: Target,
    host: Vec<u8>,
    peers: bool,
    args: Vec<u8>,
) -> ngx_int_t {
    let cache = store::get();
    let (t, h, c, a) = (target.clone(), host.clone(), cache.clone(), args.clone());
    // SAFETY: r is live.
    let slow = unsafe { crate::cache::slice::serve::slow_read_asked(r) };
    let job = move || {
        guard::injected_delay(slow);
        Box::new(run(c, t, &h)) as crate::engine::iothread::Done
    };
    // SAFETY: `then` runs only while the job is registered, i.e. before
    // r's pool is freed (its cleanup cancels the job).
    let then = move |out: crate::engine::iothread::Done| unsafe { purged(r, out, peers, &a) };
    // SAFETY: r is live.
    let cln = unsafe { ngx_pool_cleanup_add((*r).pool, core::mem::size_of::<u64>()) };
    if cln.is_null() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    let Some(id) = crate::engine::iothread::call(Box::new(job), Box::new(then)) else {
        // No thread after all: purge here (the cleanup stays unset).
        let (status, body) = run(cache, target, &host);
        // SAFETY: r is live.
        return unsafe { answer(r, status, body, peers, &args) };
    };
    // SAFETY: r is live; the cleanup's data is 8 writable bytes; the extra
    // reference keeps r until `purged` finalizes it.
    unsafe {
        (*cln).data.cast::<u64>().write_unaligned(id);
        (*cln).handler = Some(cancel_job);
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
    }
    NGX_DONE as ngx_int_t
}

/// The request's pool is freed: a purge job still running is forgotten.
unsafe extern "C" fn cancel_job(data: *mut core::ffi::c_void) {
    // SAFETY: data is the 8 bytes `run_off_loop` wrote the job id into.
    let id = unsafe { data.cast::<u64>().read_unaligned() };
    crate::engine::iothread::cancel(id);
}

/// The purge job is done: answer (or fan out) and finalize.
///
/// # Safety
/// `r` must be the live request whose job this was.
unsafe fn purged(
    r: *mut ngx_http_request_t,
    out: crate::engine::iothread::Done,
    peers: bool,
    args: &[u8],
) {
    let (status, body) = match out.downcast::<(u32, Value)>() {
        Ok(b) => *b,
        Err(_) => (
            NGX_HTTP_INTERNAL_SERVER_ERROR,
            json!({"ok": false, "error": "the purge failed"}),
        ),
    };
    // SAFETY: r is live.
    let log = unsafe { (*(*r).connection).log };
    let rc = guard::request(log, "purge", NGX_ERROR as ngx_int_t, || {
        // SAFETY: r is live.
        unsafe { answer(r, status, body, peers, args) }
    });
    // SAFETY: r is live; this ends the reference taken in `run_off_loop`.
    unsafe {
        let c = (*r).connection;
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}

/// Answers a purge that ran: fans it out to the peers if asked, or
/// responds.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn answer(
    r: *mut ngx_http_request_t,
    status: u32,
    body: Value,
    peers: bool,
    args: &[u8],
) -> ngx_int_t {
    // SAFETY: r is live.
    let server = unsafe { (*r).headers_in.server.as_bytes() };
    // SAFETY: r is live.
    let cc = unsafe { crate::cluster::peer::conf(r) };
    // A purge that came from a peer is never fanned out again.
    // SAFETY: r is live.
    if peers && status == NGX_HTTP_OK && !unsafe { crate::cluster::peer::from_peer(r) } {
        if let Some(cc) = cc.filter(|c| c.enabled()) {
            // SAFETY: r is live.
            let path = unsafe { (*r).uri.as_bytes() };
            let f = crate::cluster::fanout::Fanout {
                target: format!(
                    "{}?{}",
                    String::from_utf8_lossy(path),
                    String::from_utf8_lossy(args)
                ),
                host: server.to_vec(),
                // SAFETY: r is live.
                secret: unsafe { header_in(r, SECRET_HEADER) }.map(<[u8]>::to_vec),
                peer_secret: cc.secret.clone(),
            };
            // SAFETY: r is a live main request in its content handler.
            return unsafe { crate::cluster::fanout::start(r, cc, f, status, body) };
        }
    }
    // SAFETY: r is live.
    unsafe { respond(r, status, &body) }
}

/// Takes `peers=1|0` out of a purge query: (the rest, fan out?).
fn split_peers(query: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut rest: Vec<&[u8]> = Vec::new();
    let mut peers = false;
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix(b"peers=") {
            Some(b"1") | Some(b"true") => peers = true,
            Some(b"0") | Some(b"false") => peers = false,
            Some(_) => return Err("peers must be 1 or 0".into()),
            None => rest.push(pair),
        }
    }
    Ok((rest.join(&b'&'), peers))
}

fn run(cache: Option<cdncore::Cache>, target: Target, host: &[u8]) -> (u32, Value) {
    let Some(cache) = cache else {
        return (
            NGX_HTTP_SERVICE_UNAVAILABLE,
            json!({"ok": false, "error": "no cache is open in this worker"}),
        );
    };
    let (mut purges, mut body) = plan(target, host);
    // A sliced object: its slices go with the URL (looked up before the
    // manifest is purged).
    let slices: Vec<Purge> = purges
        .iter()
        .filter_map(|p| match p {
            Purge::Key(k) => Some(crate::cache::slice::stored_keys(&cache, k)),
            _ => None,
        })
        .flatten()
        .map(Purge::Key)
        .collect();
    if !slices.is_empty() {
        body["slices"] = json!(slices.len());
    }
    purges.extend(slices);
    let mut removed = 0u64;
    let mut seq = 0u64;
    for p in &purges {
        match cache.purge(p) {
            Ok(rep) => {
                removed += rep.covered.unwrap_or(0);
                seq = rep.seq;
            }
            Err(e) => {
                return (
                    NGX_HTTP_BAD_REQUEST,
                    json!({"ok": false, "error": e.to_string()}),
                )
            }
        }
    }
    body["ok"] = json!(true);
    body["seq"] = json!(seq);
    if matches!(purges.first(), Some(Purge::Key(_))) {
        body["removed"] = json!(removed);
    }
    (NGX_HTTP_OK, body)
}
