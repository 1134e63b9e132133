//! What a response the cache only passes through (a main request that
//! went to `proxy_pass`, not a fill) tells it about what it stores:
//!
//! - a 2xx/3xx to an unsafe method (`POST`, `PUT`, `DELETE`, any unknown
//!   one) invalidates the stored response of its URL, and of its
//!   `Location` / `Content-Location` on the same host (RFC 9111 §4.4);
//! - a `HEAD` response updates the stored `GET` response's headers and
//!   freshness when its validators match, and makes it stale (here:
//!   removes it) when they do not (§4.3.5).
//!
//! The key of the request's own URL is its `rcdn_cache_key`; the other
//! URLs are keyed as the default key (`$host$request_uri`) would key them,
//! so with a custom key only the request's own URL is invalidated.

use crate::base::request::header_in;
use crate::cache::filter::{pairs, response_headers};
use crate::cache::{lookup, variant, ReqCtx};
use crate::{conf::LocConf, conf::Module, engine::store};
use cdncore::http::invalidate::invalidated_paths;
use cdncore::http::revalidate::{freshen_head, Freshened};
use cdncore::{now_ms, Cache, Purge};
use nginx_sys::*;
use ngx::http::HttpModuleLocationConf;
use ngx::ngx_log_error;

/// Methods that never invalidate (RFC 9110 §9.2.1).
const SAFE: ngx_uint_t = (NGX_HTTP_GET | NGX_HTTP_HEAD | NGX_HTTP_OPTIONS | NGX_HTTP_TRACE) as _;

/// Does the response of `r` concern what is stored: a main request with an
/// unsafe method, or a HEAD (the check a hit's header costs).
///
/// # Safety
/// `r` must be live.
pub unsafe fn wants(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: r is live.
    unsafe {
        let m = (*r).method;
        (*r).main == r && (m & SAFE == 0 || m == NGX_HTTP_HEAD as ngx_uint_t)
    }
}

/// The header filter's look at a main request's response.
///
/// # Safety
/// `r` must be a live main request whose header is being sent.
pub unsafe fn on_header(r: *mut ngx_http_request_t) {
    // SAFETY: r is live.
    let method = unsafe { (*r).method };
    let head = method == NGX_HTTP_HEAD as ngx_uint_t;
    if method & SAFE != 0 && !head {
        return; // GET and the like: nothing to learn (the common case)
    }
    // SAFETY: r is live.
    let Some(lc) = Module::location_conf(unsafe { &*r }) else {
        return;
    };
    if lc.cache != 1 || lc.purge {
        return;
    }
    // SAFETY: r is a live main request.
    let Some(ctx) = (unsafe { ReqCtx::get(r) }) else {
        return;
    };
    if ctx.hit.is_some() || ctx.stream.is_some() {
        return; // answered by the cache, not the origin
    }
    let Some(cache) = store::get() else { return };
    // SAFETY: r is live.
    let Some(key) = (unsafe { lookup::eval_key(r, lc) }) else {
        return;
    };
    if key.is_empty() {
        return;
    }
    // SAFETY: r is live.
    unsafe {
        if head {
            freshen(r, lc, &cache, &key);
        } else {
            invalidate(r, lc, &cache, key);
        }
    }
}

/// # Safety
/// `r` must be a live main request.
unsafe fn invalidate(r: *mut ngx_http_request_t, lc: &LocConf, cache: &Cache, own: Vec<u8>) {
    // SAFETY: r is live.
    let (method, status, host, uri, log) = unsafe {
        (
            String::from_utf8_lossy((*r).method_name.as_bytes()).into_owned(),
            (*r).headers_out.status as u16,
            String::from_utf8_lossy((*r).headers_in.server.as_bytes()).to_ascii_lowercase(),
            String::from_utf8_lossy((*r).unparsed_uri.as_bytes()).into_owned(),
            (*(*r).connection).log,
        )
    };
    // SAFETY: r is live.
    let h = unsafe { response_headers(r) };
    let paths = invalidated_paths(&method, status, &host, &uri, &pairs(&h));
    for (i, p) in paths.iter().enumerate() {
        let key = match (i, lc.key.is_null()) {
            (0, _) => own.clone(),
            (_, true) => [host.as_bytes(), p.as_bytes()].concat(),
            (_, false) => continue,
        };
        drop_url(cache, &key);
        ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "rcdn: {method} answered {status}: invalidated \"{}\"",
            String::from_utf8_lossy(&key)
        );
    }
}

/// Removes every stored response of a URL: its variants and slices.
fn drop_url(cache: &Cache, base: &[u8]) {
    let mut keys = crate::cache::slice::stored_keys(cache, base);
    keys.extend(variant::all_keys(base));
    for k in keys {
        let _ = cache.purge(&Purge::Key(k));
    }
    let _ = cache.purge(&Purge::SurrogateKey(variant::url_tag(base)));
}

/// # Safety
/// `r` must be a live main request (a HEAD the origin answered).
unsafe fn freshen(r: *mut ngx_http_request_t, lc: &LocConf, cache: &Cache, key: &[u8]) {
    // SAFETY: r is live.
    let coding = variant::normalise(unsafe { header_in(r, b"accept-encoding") });
    // SAFETY: r is live for this call.
    let fields = unsafe { lookup::live_fields(r) };
    let found = lookup::resolve(cache, key, coding, &fields);
    let Some(o) = found.object() else { return };
    if o.meta().header(crate::cache::slice::MARKER).is_some() {
        return; // a sliced object's manifest: its slices carry the body
    }
    // SAFETY: r is live.
    let (status, length) = unsafe {
        (
            (*r).headers_out.status as u16,
            (*r).headers_out.content_length_n,
        )
    };
    // SAFETY: r is live.
    let mut h = unsafe { response_headers(r) };
    if length >= 0 {
        h.push(("Content-Length".into(), length.to_string().into_bytes()));
    }
    // SAFETY: r is live.
    let authorized = unsafe { header_in(r, b"authorization") }.is_some();
    if !crate::cache::rfc::may_update(lc, cache.config(), o.meta(), authorized) {
        return;
    }
    let mut p = crate::cache::rfc::policy(lc, cache.config(), o.meta().status);
    p.authorization = authorized;
    match freshen_head(o.meta(), status, &pairs(&h), now_ms(), &p) {
        Freshened::Updated(mut meta) => {
            variant::keep_tag(o.meta(), &mut meta);
            if let Ok((_, through)) = cache.insert_deferred(o.key(), meta, o.body().clone()) {
                crate::cache::persist::later(through.into_iter().collect(), || {});
            }
        }
        Freshened::Mismatch | Freshened::Uncacheable(_) => drop_url(cache, key),
    }
}
