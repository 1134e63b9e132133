//! The engine's HTTP caching rules (`cdncore::http`) as a location
//! configures them: `rcdn_cache_valid` is the fallback table for responses
//! without freshness information (RFC 9111 §4.2.1 comes first, then the
//! `Last-Modified` heuristic of §4.2.2 capped by the store's
//! `heuristic_max`), `rcdn_cdn_cache_control` names the targeted fields
//! (RFC 9213), the store's `cache_set_cookie` decides `Set-Cookie`. Also
//! a hit's answer to a client's conditional request, and the origin's 304
//! for a stale copy.

use crate::conf::LocConf;
use crate::http::reply::push_header;
use cdncore::http::conditional::{answer, ClientAnswer};
use cdncore::http::revalidate::{freshen_304, Freshened};
use cdncore::http::{verdict, FallbackTtl, HttpPolicy, Verdict, DEFAULT_TARGETS};
use cdncore::{now_ms, Meta};
use nginx_sys::*;

/// The policy for a response with `status` in location `lc`.
///
/// Without `rcdn_cache_valid` the table is the engine's default
/// ([`FallbackTtl::defaults`]: 200 203 204 300 301 308 for the store's
/// `default_ttl`). An `any` rule does not cover 5xx: a server error is
/// stored only with its own freshness or when its status is listed, so a
/// stale copy can still be served on an error (`stale-if-error`).
pub fn policy(lc: &LocConf, cfg: &cdncore::Config, status: u16) -> HttpPolicy {
    let mut fallback: Vec<FallbackTtl> = match &lc.valid {
        Some(rules) => rules
            .iter()
            .map(|v| FallbackTtl {
                status: (v.code != 0).then_some(v.code),
                ttl_ms: v.ttl_ms,
            })
            .collect(),
        None => FallbackTtl::defaults(cfg.default_ttl_ms),
    };
    if status >= 500 {
        fallback.retain(|r| r.status.is_some());
    }
    HttpPolicy {
        fallback,
        heuristic_max_ms: cfg.heuristic_max_ms,
        targets: match &lc.targets {
            Some(t) => t.clone(),
            None => DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect(),
        },
        cache_set_cookie: cfg.cache_set_cookie,
        ..HttpPolicy::from_config(cfg)
    }
}

/// A client's conditional request against the stored response a hit would
/// send (RFC 9110 §13.2.2, the engine's `conditional::answer`):
/// `If-None-Match` before `If-Modified-Since`, which a `Last-Modified` (or,
/// without one, the `Date`) not newer than it satisfies. `None`: send the
/// full response. nginx's own not-modified filter is switched off for
/// these requests: it wants `If-Modified-Since` to equal `Last-Modified`
/// (`if_modified_since exact`), both conditionals to agree, and never
/// uses `Date`.
///
/// # Safety
/// `r` must be a live main request whose header was not sent.
pub unsafe fn conditional(r: *mut ngx_http_request_t, meta: &Meta) -> Option<ngx_int_t> {
    // SAFETY: r is live; the headers_in fields are null or list entries.
    unsafe {
        let hin = &(*r).headers_in;
        let fields = [
            ("If-None-Match", hin.if_none_match),
            ("If-Modified-Since", hin.if_modified_since),
            ("If-Match", hin.if_match),
            ("If-Unmodified-Since", hin.if_unmodified_since),
        ];
        if fields.iter().all(|(_, h)| h.is_null()) {
            return None; // the common hit: nothing to judge
        }
        (*r).set_disable_not_modified(1);
        let mut req: Vec<(&str, &[u8])> = Vec::new();
        for (name, mut h) in fields {
            while !h.is_null() {
                req.push((name, (*h).value.as_bytes()));
                h = (*h).next;
            }
        }
        let method = String::from_utf8_lossy((*r).method_name.as_bytes()).into_owned();
        match answer(&method, &req, meta, now_ms()) {
            ClientAnswer::Full => None,
            ClientAnswer::PreconditionFailed => Some(NGX_HTTP_PRECONDITION_FAILED as ngx_int_t),
            ClientAnswer::NotModified(fields) => Some(not_modified(r, meta, &fields)),
        }
    }
}

/// Sends a 304 with `fields` (those of RFC 9110 §15.4.5) and `Age`.
///
/// # Safety
/// `r` must be a live main request whose header was not sent.
unsafe fn not_modified(
    r: *mut ngx_http_request_t,
    meta: &Meta,
    fields: &[(String, bytes::Bytes)],
) -> ngx_int_t {
    // SAFETY: r is live; the values are copied into its pool.
    unsafe {
        let rc = ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        let out = &mut (*r).headers_out;
        out.status = NGX_HTTP_NOT_MODIFIED as ngx_uint_t;
        out.content_length_n = -1;
        out.last_modified_time = -1;
        for (name, value) in fields {
            let Some(h) = push_header(r, name.as_bytes(), value) else {
                return NGX_ERROR as ngx_int_t;
            };
            if name.eq_ignore_ascii_case("date") {
                (*r).headers_out.date = h;
            } else if name.eq_ignore_ascii_case("etag") {
                (*r).headers_out.etag = h;
            }
        }
        let age = meta.age_secs(now_ms()).to_string();
        if push_header(r, b"Age", age.as_bytes()).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
        (*r).set_header_only(1);
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
            return rc;
        }
        ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t)
    }
}

/// May the origin's answer to a request with `Authorization` (`authorized`)
/// update `stored` (a revalidation, a HEAD)? Only when `stored` allows a
/// shared cache to reuse responses to such requests (`public`, `s-maxage`,
/// `must-revalidate`: RFC 9111 §3.5). Else the request is fetched
/// unconditionally, its response judged on its own, and the copy is left
/// to the requests without `Authorization`.
pub fn may_update(lc: &LocConf, cfg: &cdncore::Config, stored: &Meta, authorized: bool) -> bool {
    if !authorized {
        return true;
    }
    let mut p = policy(lc, cfg, stored.status);
    p.authorization = true;
    let h: Vec<(&str, &[u8])> = stored
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), &v[..]))
        .collect();
    matches!(verdict(stored.status, &h, now_ms(), &p), Verdict::Store(_))
}

/// The origin's 304 for a stale copy (RFC 9111 §4.3.4): the stored
/// response with the 304's fields and freshness, or why it cannot be used
/// any more (the 304 selects another response, or forbids storing; after
/// a revalidation with `Authorization`, the updated response must allow a
/// shared cache to reuse it, RFC 9111 §3.5).
pub fn freshened(
    lc: &LocConf,
    cfg: &cdncore::Config,
    stored: &Meta,
    h: &[(String, Vec<u8>)],
    authorized: bool,
) -> Result<Meta, &'static str> {
    let mut p = policy(lc, cfg, stored.status);
    p.authorization = authorized;
    let pairs: Vec<(&str, &[u8])> = h.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    match freshen_304(stored, &pairs, now_ms(), &p) {
        Freshened::Updated(m) => Ok(m),
        Freshened::Mismatch => Err("the 304 does not match the stored validators"),
        Freshened::Uncacheable(why) => Err(why),
    }
}
