//! Revalidating a stored response with the origin (RFC 9111 §4.3.1), and
//! updating it from a 304 (§4.3.4) or a HEAD response (§4.3.5).

use super::conditional::parse_tag;
use super::date::{fmt_http_date, parse_http_date};
use super::{header, members, verdict, Headers, HttpPolicy, Verdict};
use crate::meta::{Meta, UnixMs};

/// The request fields that make a revalidation conditional: the stored
/// `ETag` as `If-None-Match` (quoted if the origin sent it bare) and the
/// stored `Last-Modified` as `If-Modified-Since`.
pub fn validator_headers(stored: &Meta) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(e) = stored.etag.as_deref().map(String::from_utf8_lossy) {
        let e = e.trim();
        let quoted = e.starts_with('"') || e.starts_with("W/\"");
        out.push((
            "If-None-Match",
            if quoted {
                e.to_string()
            } else {
                format!("\"{e}\"")
            },
        ));
    }
    if let Some(lm) = stored.last_modified {
        out.push(("If-Modified-Since", fmt_http_date(lm)));
    }
    out
}

/// The request fields the stored response varies on (its `Vary`), which a
/// revalidation sends with the values that selected it (RFC 9111 §4.1).
pub fn vary_fields(stored: &Meta) -> Vec<String> {
    let vary: Vec<(&str, &[u8])> = stored
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), &v[..]))
        .collect();
    members(&vary, "vary")
        .into_iter()
        .filter(|m| m != "*")
        .collect()
}

/// The outcome of a 304 or HEAD response for a stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshened {
    /// The stored response with updated fields, freshness and age: store
    /// it again with the same body.
    Updated(Meta),
    /// The validators do not match: the stored response is not the current
    /// representation. Treat it as stale (RFC 9111 §4.3.5), or fetch it in
    /// full (§4.3.4: the 304 updates nothing).
    Mismatch,
    /// The updated fields forbid storing (e.g. `no-store`): remove it.
    Uncacheable(&'static str),
}

/// Fields a 304 or HEAD response does not update (RFC 9111 §3.2):
/// `Content-Length`, and the fields that describe the stored bytes, which
/// a new value would misdescribe: their framing (`Content-Range`,
/// `Content-Encoding`) and their checksums (`Content-MD5`, RFC 1864;
/// `Content-Digest`, RFC 9530 §2). §3.2 allows such omissions "to assure
/// integrity of the stored response".
const NOT_UPDATED: &[&str] = &[
    "content-length",
    "content-range",
    "content-encoding",
    "content-md5",
    "content-digest",
];

/// A 304 answering a revalidation of `stored`, received at `now`.
///
/// §4.3.4 selects the stored response by the 304's validators: a strong
/// ETag must match strongly, a weak one weakly, else `Last-Modified` must
/// be equal. A 304 with no validator updates `stored`: it answers the
/// conditional request made with `stored`'s validators, and rcdn keeps one
/// response per key.
pub fn freshen_304(stored: &Meta, headers: Headers, now: UnixMs, p: &HttpPolicy) -> Freshened {
    let matches = match header(headers, "etag").and_then(parse_tag) {
        Some(new) => stored
            .etag
            .as_deref()
            .and_then(parse_tag)
            .is_some_and(|old| {
                if new.weak {
                    new.weak_eq(&old)
                } else {
                    new.strong_eq(&old)
                }
            }),
        None => match header(headers, "last-modified") {
            Some(v) => {
                parse_http_date(v, now / 1000).is_some_and(|t| Some(t) == stored.last_modified)
            }
            None => true,
        },
    };
    match matches {
        true => update(stored, headers, now, p),
        false => Freshened::Mismatch,
    }
}

/// A response to a HEAD request for the URI of stored GET response
/// `stored` (§4.3.5): a 200 whose received `ETag` and `Last-Modified`
/// match, and whose `Content-Length` (if any) is the stored size, updates
/// it; anything else makes it stale.
pub fn freshen_head(
    stored: &Meta,
    status: u16,
    headers: Headers,
    now: UnixMs,
    p: &HttpPolicy,
) -> Freshened {
    let etag_ok = header(headers, "etag").is_none_or(|v| {
        let (new, old) = (parse_tag(v), stored.etag.as_deref().and_then(parse_tag));
        new.is_some() && new == old
    });
    let lm_ok = header(headers, "last-modified").is_none_or(|v| {
        parse_http_date(v, now / 1000).is_some_and(|t| Some(t) == stored.last_modified)
    });
    let length_ok = header(headers, "content-length").is_none_or(|v| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            == Some(stored.size)
    });
    if status == 200 && etag_ok && lm_ok && length_ok {
        update(stored, headers, now, p)
    } else {
        Freshened::Mismatch
    }
}

/// Replaces the stored fields named in `headers` (RFC 9111 §3.2) and
/// judges the result as a response received at `now` (its `Date` and `Age`
/// are the new response's).
fn update(stored: &Meta, headers: Headers, now: UnixMs, p: &HttpPolicy) -> Freshened {
    let updating = |n: &str| !NOT_UPDATED.iter().any(|x| n.eq_ignore_ascii_case(x));
    let new: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(n, _)| updating(n))
        .copied()
        .collect();
    let replaced = |n: &str| new.iter().any(|(m, _)| m.eq_ignore_ascii_case(n));
    let mut merged: Vec<(&str, &[u8])> = stored
        .headers
        .iter()
        .filter(|(n, _)| !replaced(n))
        .map(|(n, v)| (n.as_str(), &v[..]))
        .collect();
    merged.extend(new.iter().copied());
    match verdict(stored.status, &merged, now, p) {
        Verdict::Store(mut m) => {
            // The body, and what was attached to it, stay the same.
            m.size = stored.size;
            m.checksum = stored.checksum;
            m.tags = stored.tags.clone();
            m.group = stored.group.clone();
            m.mask = stored.mask;
            Freshened::Updated(m)
        }
        Verdict::Skip(why) => Freshened::Uncacheable(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const T0: UnixMs = 1_700_000_000_000;
    const NOW: UnixMs = T0 + 100_000;

    fn h(v: &[(&'static str, String)]) -> Vec<(&'static str, Vec<u8>)> {
        v.iter()
            .map(|(n, x)| (*n, x.clone().into_bytes()))
            .collect()
    }

    fn refs<'a>(v: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'a str, &'a [u8])> {
        v.iter().map(|(n, x)| (*n, &x[..])).collect()
    }

    /// A stored 200 that went stale after 10 s.
    fn stored(etag: &str) -> Meta {
        let date = fmt_http_date(T0 / 1000);
        let lm = fmt_http_date(T0 / 1000 - 3600);
        let resp = h(&[
            ("Date", date),
            ("Cache-Control", "max-age=10".into()),
            ("ETag", etag.into()),
            ("Last-Modified", lm),
            ("Content-Type", "text/plain".into()),
            ("Content-Encoding", "gzip".into()),
            ("X-Kept", "old".into()),
            ("X-Updated", "old".into()),
        ]);
        let Verdict::Store(mut m) = verdict(200, &refs(&resp), T0, &HttpPolicy::default()) else {
            panic!("not stored");
        };
        (m.size, m.checksum, m.tags, m.mask) = (11, 99, vec![4], 8);
        m
    }

    fn value<'a>(m: &'a Meta, name: &str) -> Option<&'a [u8]> {
        m.header(name).map(|b| &b[..])
    }

    #[test]
    fn revalidation_sends_the_stored_validators_rfc9111_4_3_1() {
        let m = stored("\"v1\"");
        let v = validator_headers(&m);
        assert_eq!(v[0], ("If-None-Match", "\"v1\"".to_string()));
        assert_eq!(v[1], ("If-Modified-Since", fmt_http_date(T0 / 1000 - 3600)));
        let mut bare = m.clone();
        bare.etag = Some(Bytes::from_static(b"v1"));
        assert_eq!(validator_headers(&bare)[0].1, "\"v1\"");
        bare.etag = Some(Bytes::from_static(b"W/\"v1\""));
        assert_eq!(validator_headers(&bare)[0].1, "W/\"v1\"");
        assert!(validator_headers(&Meta::default()).is_empty());
    }

    #[test]
    fn vary_fields_are_listed_for_the_conditional_request() {
        let mut m = stored("\"v1\"");
        m.headers
            .push(("Vary".into(), Bytes::from_static(b"Accept-Encoding, Abc")));
        m.headers
            .push(("vary".into(), Bytes::from_static(b"abc, *")));
        assert_eq!(vary_fields(&m), ["Accept-Encoding", "Abc"]);
    }

    #[test]
    fn a_304_replaces_named_fields_and_refreshes_rfc9111_4_3_4() {
        let old = stored("\"v1\"");
        assert!(old.freshness(NOW) == crate::meta::Freshness::Stale);
        let r = h(&[
            ("Date", fmt_http_date(NOW / 1000)),
            ("ETag", "\"v1\"".into()),
            ("Cache-Control", "max-age=3600".into()),
            ("X-Updated", "new".into()),
            ("Content-Length", "0".into()),
            ("Content-Encoding", "br".into()),
            ("Connection", "X-Hop".into()),
            ("X-Hop", "1".into()),
        ]);
        let Freshened::Updated(m) = freshen_304(&old, &refs(&r), NOW, &HttpPolicy::default())
        else {
            panic!("not updated");
        };
        assert_eq!(m.expires_at, NOW + 3_600_000);
        assert_eq!(m.date, NOW / 1000);
        assert_eq!(m.age_secs(NOW), 0);
        assert_eq!(value(&m, "x-updated"), Some(&b"new"[..]));
        assert_eq!(value(&m, "x-kept"), Some(&b"old"[..]));
        assert_eq!(value(&m, "cache-control"), Some(&b"max-age=3600"[..]));
        assert_eq!(
            value(&m, "content-encoding"),
            Some(&b"gzip"[..]),
            "body framing kept"
        );
        assert_eq!(value(&m, "content-length"), None);
        assert_eq!(value(&m, "x-hop"), None);
        assert_eq!(
            (m.size, m.checksum, m.tags.clone(), m.mask),
            (11, 99, vec![4], 8)
        );
        assert_eq!(
            m.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("etag"))
                .count(),
            1
        );
    }

    #[test]
    fn a_304_keeps_its_own_age_and_date_rfc9111_4_2_3() {
        let old = stored("\"v1\"");
        let r = h(&[
            ("Date", fmt_http_date(NOW / 1000 - 20)),
            ("Age", "5".into()),
        ]);
        let Freshened::Updated(m) = freshen_304(&old, &refs(&r), NOW, &HttpPolicy::default())
        else {
            panic!("not updated");
        };
        assert_eq!(m.initial_age, 20, "apparent age beats Age");
        // max-age=10 from the stored response, already 20 s old: stale.
        assert_eq!(m.expires_at, NOW);
        // No Date: the receive time is the Date.
        let Freshened::Updated(m) = freshen_304(&old, &[], NOW, &HttpPolicy::default()) else {
            panic!("not updated");
        };
        assert_eq!((m.date, m.expires_at), (NOW / 1000, NOW + 10_000));
    }

    #[test]
    fn a_304_for_another_representation_updates_nothing() {
        let old = stored("\"v1\"");
        let p = HttpPolicy::default();
        let e = |t: &str| h(&[("ETag", t.to_string())]);
        assert_eq!(
            freshen_304(&old, &refs(&e("\"v2\"")), NOW, &p),
            Freshened::Mismatch
        );
        assert!(matches!(
            freshen_304(&old, &refs(&e("W/\"v1\"")), NOW, &p),
            Freshened::Updated(_)
        ));
        let weak = stored("W/\"v1\"");
        assert_eq!(
            freshen_304(&weak, &refs(&e("\"v1\"")), NOW, &p),
            Freshened::Mismatch
        );
        let lm = |t: u64| h(&[("Last-Modified", fmt_http_date(t))]);
        let same = lm(T0 / 1000 - 3600);
        assert!(matches!(
            freshen_304(&old, &refs(&same), NOW, &p),
            Freshened::Updated(_)
        ));
        assert_eq!(
            freshen_304(&old, &refs(&lm(T0 / 1000)), NOW, &p),
            Freshened::Mismatch
        );
        let mut none = old.clone();
        none.etag = None;
        assert_eq!(
            freshen_304(&none, &refs(&e("\"v1\"")), NOW, &p),
            Freshened::Mismatch
        );
    }

    #[test]
    fn a_304_that_forbids_storing_removes_it() {
        let old = stored("\"v1\"");
        let r = h(&[("Cache-Control", "no-store".into())]);
        let got = freshen_304(&old, &refs(&r), NOW, &HttpPolicy::default());
        assert_eq!(got, Freshened::Uncacheable("no-store"));
    }

    #[test]
    fn a_head_200_with_matching_validators_updates_rfc9111_4_3_5() {
        let old = stored("\"v1\"");
        let p = HttpPolicy::default();
        let r = h(&[
            ("ETag", "\"v1\"".into()),
            ("Content-Length", "11".into()),
            ("Cache-Control", "max-age=1000".into()),
            ("X-Updated", "head".into()),
        ]);
        let Freshened::Updated(m) = freshen_head(&old, 200, &refs(&r), NOW, &p) else {
            panic!("not updated");
        };
        assert_eq!(m.expires_at, NOW + 1_000_000);
        assert_eq!(value(&m, "x-updated"), Some(&b"head"[..]));
        // No validators received: nothing contradicts the stored response.
        assert!(matches!(
            freshen_head(&old, 200, &[], NOW, &p),
            Freshened::Updated(_)
        ));
        // A different ETag, Last-Modified or length, or a non-200: stale.
        let bad = [
            h(&[("ETag", "\"v2\"".into())]),
            h(&[("ETag", "W/\"v1\"".into())]),
            h(&[("Last-Modified", fmt_http_date(T0 / 1000))]),
            h(&[("Content-Length", "12".into())]),
            h(&[("Content-Length", "eleven".into())]),
        ];
        for r in &bad {
            assert_eq!(
                freshen_head(&old, 200, &refs(r), NOW, &p),
                Freshened::Mismatch,
                "{r:?}"
            );
        }
        assert_eq!(freshen_head(&old, 410, &[], NOW, &p), Freshened::Mismatch);
    }
}
