//! Turning an origin's HTTP response head into [`Meta`]: freshness from
//! `Cache-Control`/`Expires` (shared-cache rules of RFC 9111), validators,
//! stale windows, surrogate keys, and whether to store it at all.

use crate::meta::{Meta, UnixMs};
use bytes::Bytes;

/// Response headers a cache must not replay (RFC 9110 §7.6.1), plus
/// `Set-Cookie`, which belongs to one client.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "age",
    "date",
];

/// Operator choices that the response alone does not settle.
#[derive(Clone, Debug)]
pub struct HttpPolicy {
    /// Freshness when the origin gives none (`max-age`, `s-maxage`, `Expires`).
    pub default_ttl_ms: u64,
    /// Store responses carrying `Set-Cookie` (the cookie is never replayed).
    pub cache_set_cookie: bool,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            default_ttl_ms: 120_000,
            cache_set_cookie: false,
        }
    }
}

/// The verdict on one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Store(Meta),
    /// Not storable, and why (for logs and `$rcdn_cache_status`).
    Skip(&'static str),
}

#[derive(Default)]
struct CacheControl {
    no_store: bool,
    private: bool,
    no_cache: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    swr: Option<u64>,
    sie: Option<u64>,
}

fn parse_cache_control(cc: &mut CacheControl, value: &str) {
    for item in value.split(',') {
        let item = item.trim();
        let (name, arg) = match item.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (item, None),
        };
        let secs = arg.and_then(|a| a.parse::<u64>().ok());
        match name.to_ascii_lowercase().as_str() {
            "no-store" => cc.no_store = true,
            // `private="field"` only hides fields; plain `private` hides the response.
            "private" if arg.is_none() => cc.private = true,
            "no-cache" if arg.is_none() => cc.no_cache = true,
            "max-age" => cc.max_age = cc.max_age.or(secs),
            "s-maxage" => cc.s_maxage = cc.s_maxage.or(secs),
            "stale-while-revalidate" => cc.swr = cc.swr.or(secs),
            "stale-if-error" => cc.sie = cc.sie.or(secs),
            _ => {}
        }
    }
}

fn http_date_secs(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn header<'a>(headers: &'a [(&str, &[u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Freshness lifetime in ms, RFC 9111 §4.2.1 order, minus the `Age` already
/// spent upstream.
fn lifetime_ms(
    cc: &CacheControl,
    headers: &[(&str, &[u8])],
    now: UnixMs,
    policy: &HttpPolicy,
) -> u64 {
    let explicit = cc.s_maxage.or(cc.max_age).map(|s| s * 1000).or_else(|| {
        let raw = header(headers, "expires")?;
        // An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
        let Some(expires) = http_date_secs(raw) else {
            return Some(0);
        };
        let date = header(headers, "date")
            .and_then(http_date_secs)
            .unwrap_or(now / 1000);
        Some(expires.saturating_sub(date) * 1000)
    });
    let lifetime = explicit.unwrap_or(policy.default_ttl_ms);
    let age = header(headers, "age")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    lifetime.saturating_sub(age * 1000)
}

fn split_tags(v: &[u8], seps: &[char], out: &mut Vec<String>) {
    let s = String::from_utf8_lossy(v);
    for t in s.split(|c: char| seps.contains(&c)).map(str::trim) {
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
}

/// Decides whether a response may be stored and builds its metadata.
/// `headers` are the origin's response headers in order.
pub fn verdict(
    status: u16,
    headers: &[(&str, &[u8])],
    now: UnixMs,
    policy: &HttpPolicy,
) -> Verdict {
    let mut cc = CacheControl::default();
    let mut connection_named: Vec<String> = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("cache-control") {
            parse_cache_control(&mut cc, &String::from_utf8_lossy(value));
        } else if name.eq_ignore_ascii_case("connection") {
            split_tags(value, &[','], &mut connection_named);
        }
    }
    if cc.no_store {
        return Verdict::Skip("no-store");
    }
    if cc.private {
        return Verdict::Skip("private");
    }
    if !policy.cache_set_cookie && header(headers, "set-cookie").is_some() {
        return Verdict::Skip("set-cookie");
    }
    let ttl = if cc.no_cache {
        0
    } else {
        lifetime_ms(&cc, headers, now, policy)
    };
    let mut meta = Meta {
        status,
        stored_at: now,
        expires_at: now.saturating_add(ttl),
        stale_while_revalidate: cc.swr.unwrap_or(0).min(u32::MAX as u64) as u32,
        stale_if_error: cc.sie.unwrap_or(0).min(u32::MAX as u64) as u32,
        etag: header(headers, "etag").map(Bytes::copy_from_slice),
        last_modified: header(headers, "last-modified").and_then(http_date_secs),
        ..Meta::default()
    };
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("surrogate-key") {
            split_tags(value, &[' ', '\t'], &mut meta.surrogate_keys);
        } else if name.eq_ignore_ascii_case("cache-tag") {
            split_tags(value, &[','], &mut meta.surrogate_keys);
        }
        let lower = name.to_ascii_lowercase();
        if !HOP_BY_HOP.contains(&lower.as_str())
            && !connection_named
                .iter()
                .any(|c| c.eq_ignore_ascii_case(name))
        {
            meta.headers
                .push((name.to_string(), Bytes::copy_from_slice(value)));
        }
    }
    Verdict::Store(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMs = 1_700_000_000_000;

    fn store(status: u16, h: &[(&str, &str)]) -> Meta {
        let h: Vec<(&str, &[u8])> = h.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        match verdict(status, &h, NOW, &HttpPolicy::default()) {
            Verdict::Store(m) => m,
            Verdict::Skip(why) => panic!("skipped: {why}"),
        }
    }

    fn skip(h: &[(&str, &str)]) -> &'static str {
        let h: Vec<(&str, &[u8])> = h.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        match verdict(200, &h, NOW, &HttpPolicy::default()) {
            Verdict::Skip(why) => why,
            Verdict::Store(_) => panic!("stored"),
        }
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let m = store(
            200,
            &[
                ("Cache-Control", "max-age=60, s-maxage=300"),
                ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ],
        );
        assert_eq!(m.expires_at, NOW + 300_000);
        let m = store(200, &[("Cache-Control", "public, max-age=60")]);
        assert_eq!(m.expires_at, NOW + 60_000);
    }

    #[test]
    fn expires_is_relative_to_date() {
        let m = store(
            200,
            &[
                ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Expires", "Sun, 06 Nov 1994 08:59:37 GMT"),
            ],
        );
        assert_eq!(m.expires_at, NOW + 600_000);
        let m = store(200, &[("Expires", "0")]);
        assert_eq!(m.expires_at, NOW);
    }

    #[test]
    fn age_is_subtracted_and_default_applies() {
        let m = store(200, &[("Cache-Control", "max-age=100"), ("Age", "40")]);
        assert_eq!(m.expires_at, NOW + 60_000);
        let m = store(200, &[]);
        assert_eq!(m.expires_at, NOW + 120_000);
    }

    #[test]
    fn no_store_private_and_cookies_are_skipped() {
        assert_eq!(skip(&[("Cache-Control", "no-store")]), "no-store");
        assert_eq!(skip(&[("cache-control", "PRIVATE, max-age=9")]), "private");
        assert_eq!(skip(&[("Set-Cookie", "a=b")]), "set-cookie");
        // private="x" names fields, it does not make the response private.
        store(200, &[("Cache-Control", "private=\"x\", max-age=1")]);
    }

    #[test]
    fn no_cache_is_stored_but_stale_at_once() {
        let m = store(200, &[("Cache-Control", "no-cache, max-age=600")]);
        assert_eq!(m.expires_at, NOW);
    }

    #[test]
    fn validators_windows_tags_and_hop_by_hop() {
        let m = store(
            200,
            &[
                (
                    "Cache-Control",
                    "max-age=10, stale-while-revalidate=30, stale-if-error=86400",
                ),
                ("ETag", "\"v1\""),
                ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Surrogate-Key", "news  sport news"),
                ("Cache-Tag", "a, b"),
                ("Connection", "close, X-Hop"),
                ("X-Hop", "1"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Type", "image/png"),
            ],
        );
        assert_eq!(m.stale_while_revalidate, 30);
        assert_eq!(m.stale_if_error, 86_400);
        assert_eq!(m.etag.as_deref(), Some(&b"\"v1\""[..]));
        assert_eq!(m.last_modified, Some(784_111_777));
        assert_eq!(m.surrogate_keys, vec!["news", "sport", "a", "b"]);
        let names: Vec<&str> = m.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"Content-Type"));
        assert!(!names
            .iter()
            .any(|n| *n == "X-Hop" || *n == "Transfer-Encoding"));
    }
}
