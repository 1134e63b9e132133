//! The HTTP caching rules of a shared cache (RFC 9111, RFC 9110 §13,
//! RFC 9213) as pure functions over header lists:
//!
//! - [`verdict`]: may a response be stored, and its [`Meta`] (freshness,
//!   age, validators, the headers to replay);
//! - [`conditional::answer`]: a client's conditional request against a
//!   stored response (full response, 304 or 412);
//! - [`revalidate`]: the validators of a revalidation request, and a stored
//!   response updated by a 304 or a HEAD response;
//! - [`invalidate::invalidated_paths`]: what an unsafe request invalidates;
//! - [`date`]: HTTP-date in its three formats.

pub mod conditional;
pub mod date;
mod directives;
mod freshness;
pub mod invalidate;
pub mod revalidate;

pub use directives::{SURROGATE_CAPABILITY, SURROGATE_DEVICE};
pub use freshness::HEURISTICALLY_CACHEABLE;

use crate::meta::{Meta, UnixMs};
use bytes::Bytes;
use directives::Directives;

/// Header fields as `(name, value)` in the order received.
pub type Headers<'a> = &'a [(&'a str, &'a [u8])];

/// Fields of one connection (RFC 9110 §7.6.1): never stored, never forwarded.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields never stored (RFC 9111 §3.1) besides [`HOP_BY_HOP`]: the proxy's own
/// fields, `Set-Cookie` (one client's), `Age` and `Date` (kept in [`Meta`]
/// and regenerated).
const NOT_STORED: &[&str] = &[
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "set-cookie",
    "set-cookie2",
    "age",
    "date",
];

/// A targeted field this cache consumes rather than forwards, when it is on
/// the target list (Edge Architecture 1.0 §3: a surrogate removes it).
/// `CDN-Cache-Control` is forwarded (RFC 9213 §3), as is any field off the
/// list (§2.2).
const CONSUMED_TARGET: &str = "surrogate-control";

/// The target list when none is configured (RFC 9213 §2.2, §3).
pub const DEFAULT_TARGETS: &[&str] = &["CDN-Cache-Control", "Surrogate-Control"];

/// Statuses stored without any freshness information when the operator
/// lists none (`rcdn_cache_valid` without codes): the heuristically
/// cacheable ones (RFC 9111 §4.2.2) that are not errors.
pub const DEFAULT_FALLBACK_STATUSES: &[u16] = &[200, 203, 204, 300, 301, 308];

/// One rule of the operator's fallback table: freshness for a status
/// (`None`: any status) when the response has none of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackTtl {
    pub status: Option<u16>,
    pub ttl_ms: u64,
}

impl FallbackTtl {
    /// The rule for every status (`rcdn_cache_valid any <time>`).
    pub fn any(ttl_ms: u64) -> Self {
        FallbackTtl {
            status: None,
            ttl_ms,
        }
    }

    /// [`DEFAULT_FALLBACK_STATUSES`], each for `ttl_ms`.
    pub fn defaults(ttl_ms: u64) -> Vec<Self> {
        DEFAULT_FALLBACK_STATUSES
            .iter()
            .map(|&s| FallbackTtl {
                status: Some(s),
                ttl_ms,
            })
            .collect()
    }
}

/// What the response alone does not settle: the operator's choices and
/// facts about the request it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Freshness for responses with no explicit freshness and no usable
    /// heuristic, by status: an exact status first, then an `any` rule. A
    /// status that matches no rule is not stored without freshness.
    pub fallback: Vec<FallbackTtl>,
    /// Cap of the `Last-Modified` heuristic; 0 turns it off.
    pub heuristic_max_ms: u64,
    /// Targeted cache-control fields, most applicable first (RFC 9213).
    pub targets: Vec<String>,
    /// Store responses carrying `Set-Cookie` (the cookie is never replayed).
    pub cache_set_cookie: bool,
    /// The request carried `Authorization` (RFC 9111 §3.5).
    pub authorization: bool,
    /// When the request was sent upstream, for the response delay of the
    /// age calculation; `None`: the response time.
    pub request_time: Option<UnixMs>,
}

impl HttpPolicy {
    /// The policy of an engine configuration: its `default_ttl` for
    /// [`DEFAULT_FALLBACK_STATUSES`], its `heuristic_max`, its
    /// `cache_set_cookie`, and the default targets.
    pub fn from_config(cfg: &crate::Config) -> Self {
        HttpPolicy {
            fallback: FallbackTtl::defaults(cfg.default_ttl_ms),
            heuristic_max_ms: cfg.heuristic_max_ms,
            targets: DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect(),
            cache_set_cookie: cfg.cache_set_cookie,
            authorization: false,
            request_time: None,
        }
    }

    /// The fallback freshness of `status`, if the table covers it.
    pub fn fallback_ms(&self, status: u16) -> Option<u64> {
        let rule = |want: Option<u16>| self.fallback.iter().find(|r| r.status == want);
        rule(Some(status)).or_else(|| rule(None)).map(|r| r.ttl_ms)
    }
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy::from_config(&crate::Config::default())
    }
}

/// The verdict on one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Store(Meta),
    /// Not storable, and why (for logs and `$rcdn_cache_status`).
    Skip(&'static str),
}

/// First value of a header, by case-insensitive name.
pub(crate) fn header<'a>(headers: Headers<'a>, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Every line of a header, as text (invalid UTF-8 replaced).
pub(crate) fn lines<'a>(
    headers: Headers<'a>,
    name: &'a str,
) -> impl Iterator<Item = std::borrow::Cow<'a, str>> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v))
}

/// The comma-separated members of every line of a header.
pub(crate) fn members(headers: Headers, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines(headers, name) {
        for m in line.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if !out.iter().any(|o: &String| o.eq_ignore_ascii_case(m)) {
                out.push(m.to_string());
            }
        }
    }
    out
}

/// Statuses with caching requirements this cache implements (those of
/// RFC 9110 §15), for `must-understand` (RFC 9111 §5.2.2.3).
fn understood(status: u16) -> bool {
    matches!(status, 100..=101 | 200..=206 | 300..=305 | 307..=308 | 400..=417
        | 421..=422 | 426 | 500..=505)
}

/// Statuses `verdict` never stores as a whole response.
fn unstorable_status(status: u16) -> Option<&'static str> {
    match status {
        100..=199 => Some("interim 1xx response"),
        206 => Some("206 partial content (stored by the slice machinery)"),
        304 => Some("304 updates a stored response (revalidate::freshen_304)"),
        200..=999 => None,
        _ => Some("not an HTTP status"),
    }
}

/// What forbids storing the response, if anything (RFC 9111 §3, §3.5).
fn forbidden(
    status: u16,
    d: &Directives,
    headers: Headers,
    p: &HttpPolicy,
) -> Option<&'static str> {
    if d.must_understand && !understood(status) {
        return Some("must-understand with an unknown status");
    }
    if d.no_store && !d.must_understand {
        return Some("no-store");
    }
    if d.private {
        return Some("private");
    }
    if p.authorization && !(d.public || d.s_maxage.is_some() || d.must_revalidate) {
        return Some("authorization without public, s-maxage or must-revalidate");
    }
    if members(headers, "vary").iter().any(|m| m == "*") {
        return Some("vary: *");
    }
    if !p.cache_set_cookie && header(headers, "set-cookie").is_some() {
        return Some("set-cookie");
    }
    None
}

fn split_tags(v: &[u8], seps: &[char], out: &mut Vec<String>) {
    let s = String::from_utf8_lossy(v);
    for t in s.split(|c: char| seps.contains(&c)).map(str::trim) {
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
}

/// The fields to store and replay: all but [`NOT_STORED`], those named in
/// `Connection`, those named by `no-cache="…"` / `private="…"`, and
/// `Surrogate-Control` when this cache acts on it.
fn stored_fields(headers: Headers, d: &Directives, p: &HttpPolicy) -> Vec<(String, Bytes)> {
    let mut connection = members(headers, "connection");
    if p.targets
        .iter()
        .any(|t| t.eq_ignore_ascii_case(CONSUMED_TARGET))
    {
        connection.push(CONSUMED_TARGET.to_string());
    }
    let named = |n: &str| {
        connection
            .iter()
            .chain(&d.no_cache_fields)
            .chain(&d.private_fields)
            .any(|c| c.eq_ignore_ascii_case(n))
    };
    headers
        .iter()
        .filter(|(n, _)| {
            !HOP_BY_HOP
                .iter()
                .chain(NOT_STORED)
                .any(|x| n.eq_ignore_ascii_case(x))
                && !named(n)
        })
        .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v)))
        .collect()
}

/// Decides whether a response may be stored and builds its metadata.
/// `headers` are the origin's response headers in order; `now` is when the
/// response was received.
pub fn verdict(status: u16, headers: Headers, now: UnixMs, policy: &HttpPolicy) -> Verdict {
    if let Some(why) = unstorable_status(status) {
        return Verdict::Skip(why);
    }
    let (d, targeted) = directives::for_this_cache(headers, &policy.targets);
    if let Some(why) = forbidden(status, &d, headers, policy) {
        return Verdict::Skip(why);
    }
    let origin_date = freshness::date_value(headers, now);
    // A response without Date gets the time it was received (RFC 9110 §6.6.1).
    let date = origin_date.unwrap_or(now / 1000);
    let Some(life) = freshness::lifetime(status, &d, targeted, headers, date, policy) else {
        return Verdict::Skip("no freshness, and the status is not in the fallback table");
    };
    let initial_age = freshness::initial_age(headers, origin_date, now, policy.request_time);
    let initial_age = u32::try_from(initial_age).unwrap_or(u32::MAX);
    // RFC 9111 §4.2.4: these forbid serving the response stale.
    let no_stale = d.must_revalidate || d.proxy_revalidate || d.s_maxage.is_some() || d.no_cache;
    let lifetime = if d.no_cache { 0 } else { life.ms() };
    let window = |w: Option<u64>| match no_stale {
        true => 0,
        false => w.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
    };
    let mut meta = Meta {
        status,
        stored_at: now,
        expires_at: now.saturating_add(lifetime.saturating_sub(u64::from(initial_age) * 1000)),
        stale_while_revalidate: window(d.stale_while_revalidate),
        stale_if_error: window(d.stale_if_error),
        etag: header(headers, "etag").map(Bytes::copy_from_slice),
        last_modified: header(headers, "last-modified")
            .and_then(|v| date::parse_http_date(v, date)),
        date,
        initial_age,
        no_stale,
        headers: stored_fields(headers, &d, policy),
        ..Meta::default()
    };
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("surrogate-key") {
            split_tags(value, &[' ', '\t'], &mut meta.surrogate_keys);
        } else if name.eq_ignore_ascii_case("cache-tag") {
            split_tags(value, &[','], &mut meta.surrogate_keys);
        }
    }
    Verdict::Store(meta)
}

#[cfg(test)]
mod tests;
