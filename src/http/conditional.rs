//! A client's conditional request against a stored response (RFC 9110
//! §13.2.2 order; RFC 9111 §4.3.2).

use super::date::{fmt_http_date, parse_http_date};
use super::{lines, Headers};
use crate::meta::{Meta, UnixMs};
use bytes::Bytes;

/// How to answer a request from a stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAnswer {
    /// The stored response in full (no precondition, or one that passed).
    Full,
    /// `304 Not Modified`, with the fields a 304 carries (RFC 9110 §15.4.5)
    /// taken from the stored response; the caller adds `Age`.
    NotModified(Vec<(String, Bytes)>),
    /// `412 Precondition Failed`.
    PreconditionFailed,
}

/// An entity-tag: `W/"x"` or `"x"` (unquoted tags are read leniently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    pub weak: bool,
    pub opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// RFC 9110 §8.8.3.2: strong comparison.
    pub fn strong_eq(&self, o: &EntityTag) -> bool {
        !self.weak && !o.weak && self.opaque == o.opaque
    }
    /// Weak comparison: the opaque tags match.
    pub fn weak_eq(&self, o: &EntityTag) -> bool {
        self.opaque == o.opaque
    }
}

/// Parses one entity-tag from the start of `v`; returns it and the rest.
fn next_tag(v: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, v) = match v {
        [b'W' | b'w', b'/', rest @ ..] => (true, rest),
        _ => (false, v),
    };
    if let Some(rest) = v.strip_prefix(b"\"") {
        let end = rest.iter().position(|&c| c == b'"')?;
        return Some((
            EntityTag {
                weak,
                opaque: &rest[..end],
            },
            &rest[end + 1..],
        ));
    }
    let end = v
        .iter()
        .position(|&c| matches!(c, b',' | b' ' | b'\t'))
        .unwrap_or(v.len());
    (end > 0).then(|| {
        (
            EntityTag {
                weak,
                opaque: &v[..end],
            },
            &v[end..],
        )
    })
}

/// The stored response's `ETag`.
pub(crate) fn parse_tag(v: &[u8]) -> Option<EntityTag<'_>> {
    let v = v.trim_ascii();
    next_tag(v)
        .filter(|(_, rest)| rest.trim_ascii().is_empty())
        .map(|(t, _)| t)
}

/// A request's `If-Match` / `If-None-Match` across its lines: `*`, or tags.
enum TagList<'a> {
    Any,
    Tags(Vec<EntityTag<'a>>),
}

fn tag_list<'a>(request: Headers<'a>, name: &str) -> Option<TagList<'a>> {
    let mut tags = Vec::new();
    let mut seen = false;
    for (_, v) in request.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
        seen = true;
        let mut rest: &[u8] = v;
        loop {
            rest = rest.trim_ascii_start();
            while let [b',', r @ ..] = rest {
                rest = r.trim_ascii_start();
            }
            if rest.is_empty() {
                break;
            }
            if let [b'*', r @ ..] = rest {
                if r.trim_ascii_start().first().is_none_or(|&c| c == b',') {
                    return Some(TagList::Any);
                }
            }
            let Some((tag, r)) = next_tag(rest) else {
                break;
            };
            tags.push(tag);
            rest = r;
        }
    }
    seen.then_some(TagList::Tags(tags))
}

/// A single HTTP-date header; several lines or a bad date: ignored.
fn single_date(request: Headers, name: &str, now: UnixMs) -> Option<u64> {
    let mut it = lines(request, name);
    let first = it.next()?;
    if it.next().is_some() {
        return None;
    }
    parse_http_date(first.as_bytes(), now / 1000)
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and
/// `If-Modified-Since` of a request with `method` against `stored`, in the
/// order of RFC 9110 §13.2.2. The caller has decided the stored response
/// may be used (fresh, or just validated).
///
/// RFC 9111 §4.3.2 says `If-Match` and `If-Unmodified-Since` are not for a
/// cache: a caller that follows it passes requests for which
/// [`has_origin_preconditions`] is true to the origin instead.
pub fn answer(method: &str, request: Headers, stored: &Meta, now: UnixMs) -> ClientAnswer {
    // §13.2.1: preconditions apply only where the answer would be 2xx.
    if !(200..300).contains(&stored.status) {
        return ClientAnswer::Full;
    }
    let etag = stored.etag.as_deref().and_then(parse_tag);
    let safe = method == "GET" || method == "HEAD";
    match tag_list(request, "if-match") {
        Some(TagList::Any) => {}
        Some(TagList::Tags(t)) => {
            if !etag.is_some_and(|e| t.iter().any(|x| x.strong_eq(&e))) {
                return ClientAnswer::PreconditionFailed;
            }
        }
        None => {
            let ius = single_date(request, "if-unmodified-since", now);
            if let (Some(ius), Some(lm)) = (ius, stored.last_modified) {
                if lm > ius {
                    return ClientAnswer::PreconditionFailed;
                }
            }
        }
    }
    let modified_at = stored.last_modified.unwrap_or_else(|| stored.date_secs());
    let not_modified = match tag_list(request, "if-none-match") {
        Some(TagList::Any) => true,
        Some(TagList::Tags(t)) => etag.is_some_and(|e| t.iter().any(|x| x.weak_eq(&e))),
        None => {
            let ims = safe
                .then(|| single_date(request, "if-modified-since", now))
                .flatten();
            ims.is_some_and(|ims| modified_at <= ims)
        }
    };
    match (not_modified, safe) {
        (false, _) => ClientAnswer::Full,
        (true, true) => ClientAnswer::NotModified(not_modified_fields(stored)),
        (true, false) => ClientAnswer::PreconditionFailed,
    }
}

/// Does the request carry a precondition only the origin can judge?
pub fn has_origin_preconditions(request: Headers) -> bool {
    request.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("if-match") || n.eq_ignore_ascii_case("if-unmodified-since")
    })
}

/// RFC 9110 §15.4.5: a 304 carries the `Cache-Control`, `Content-Location`,
/// `Date`, `ETag`, `Expires` and `Vary` of the 200, and `Last-Modified`
/// when there is no `ETag`.
pub fn not_modified_fields(stored: &Meta) -> Vec<(String, Bytes)> {
    let mut keep = vec![
        "cache-control",
        "content-location",
        "etag",
        "expires",
        "vary",
    ];
    if stored.etag.is_none() {
        keep.push("last-modified");
    }
    let mut out = vec![(
        "Date".to_string(),
        Bytes::from(fmt_http_date(stored.date_secs())),
    )];
    out.extend(
        stored
            .headers
            .iter()
            .filter(|(n, _)| keep.iter().any(|k| n.eq_ignore_ascii_case(k)))
            .cloned(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientAnswer::*;

    const NOW: UnixMs = 1_700_000_000_000;
    const LM: u64 = 1_699_000_000;

    fn stored(etag: Option<&'static str>, lm: Option<u64>) -> Meta {
        let mut m = Meta::with_ttl(NOW, 60_000);
        m.date = NOW / 1000 - 10;
        m.etag = etag.map(|e| Bytes::from_static(e.as_bytes()));
        m.last_modified = lm;
        m.headers = vec![
            ("Content-Type".into(), Bytes::from_static(b"text/plain")),
            ("Cache-Control".into(), Bytes::from_static(b"max-age=60")),
            ("Vary".into(), Bytes::from_static(b"Accept-Encoding")),
        ];
        if let Some(e) = etag {
            m.headers
                .push(("ETag".into(), Bytes::from_static(e.as_bytes())));
        }
        if let Some(lm) = lm {
            m.headers
                .push(("Last-Modified".into(), Bytes::from(fmt_http_date(lm))));
        }
        m
    }

    fn ask(method: &str, h: &[(&str, String)], m: &Meta) -> ClientAnswer {
        let h: Vec<(&str, &[u8])> = h.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        answer(method, &h, m, NOW)
    }

    fn is_304(a: &ClientAnswer) -> bool {
        matches!(a, NotModified(_))
    }

    #[test]
    fn if_none_match_uses_weak_comparison_lists_and_star_rfc9110_13_1_2() {
        let m = stored(Some("\"abc\""), None);
        for inm in [
            "\"abc\"",
            "W/\"abc\"",
            "\"x\", \"abc\", \"y\"",
            "\"x\",\"abc\"",
            "*",
            "abc",
        ] {
            assert!(
                is_304(&ask("GET", &[("If-None-Match", inm.into())], &m)),
                "{inm}"
            );
        }
        assert_eq!(
            ask("GET", &[("If-None-Match", "\"abcd\"".into())], &m),
            Full
        );
        assert_eq!(
            ask("GET", &[("If-None-Match", "\"x\", \"y\"".into())], &m),
            Full
        );
        // Tags may hold commas; lines add up.
        let m = stored(Some("W/\"a,b\""), None);
        let h = [
            ("If-None-Match", "\"q\"".into()),
            ("if-none-match", "\"a,b\"".into()),
        ];
        assert!(is_304(&ask("HEAD", &h, &m)));
        // No stored ETag: only `*` matches.
        let m = stored(None, Some(LM));
        assert_eq!(ask("GET", &[("If-None-Match", "\"abc\"".into())], &m), Full);
    }

    #[test]
    fn if_none_match_for_other_methods_is_412() {
        let m = stored(Some("\"abc\""), None);
        let h = [("If-None-Match", "\"abc\"".to_string())];
        assert_eq!(ask("POST", &h, &m), PreconditionFailed);
        assert_eq!(ask("POST", &[("If-None-Match", "\"z\"".into())], &m), Full);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since_rfc9110_13_2_2() {
        let m = stored(Some("\"abc\""), Some(LM));
        let old = fmt_http_date(LM - 5000); // IMS alone would say modified
        let h = [
            ("If-None-Match", "\"abc\"".into()),
            ("If-Modified-Since", old.clone()),
        ];
        assert!(is_304(&ask("GET", &h, &m)));
        let new = fmt_http_date(LM + 5000); // IMS alone would say not modified
        let h = [
            ("If-None-Match", "\"zzz\"".into()),
            ("If-Modified-Since", new),
        ];
        assert_eq!(ask("GET", &h, &m), Full);
    }

    #[test]
    fn if_modified_since_uses_last_modified_else_date_rfc9111_4_3_2() {
        let m = stored(None, Some(LM));
        let ims = |t: u64| [("If-Modified-Since", fmt_http_date(t))];
        assert!(is_304(&ask("GET", &ims(LM), &m)), "equal");
        assert!(is_304(&ask("GET", &ims(LM + 1000), &m)), "later");
        assert_eq!(ask("GET", &ims(LM - 1), &m), Full, "modified since");
        // Without Last-Modified, the stored response's Date stands in.
        let m = stored(None, None);
        let date = m.date_secs();
        assert!(is_304(&ask("GET", &ims(date), &m)));
        assert_eq!(ask("GET", &ims(date - 3000), &m), Full);
        // Only for GET and HEAD; bad dates and repeated lines are ignored.
        assert_eq!(ask("POST", &ims(date), &m), Full);
        assert_eq!(
            ask("GET", &[("If-Modified-Since", "yesterday".into())], &m),
            Full
        );
        let two = [
            ("If-Modified-Since", fmt_http_date(date)),
            ("If-Modified-Since", fmt_http_date(date)),
        ];
        assert_eq!(ask("GET", &two, &m), Full);
        // RFC 850 and asctime dates are dates too.
        let rfc850 = "Tuesday, 14-Nov-23 22:13:20 GMT"; // 1_700_000_000
        assert!(is_304(&ask(
            "GET",
            &[("If-Modified-Since", rfc850.into())],
            &m
        )));
    }

    #[test]
    fn if_match_is_strong_and_fails_with_412_rfc9110_13_1_1() {
        let m = stored(Some("\"abc\""), Some(LM));
        assert_eq!(ask("GET", &[("If-Match", "\"abc\"".into())], &m), Full);
        assert_eq!(ask("GET", &[("If-Match", "*".into())], &m), Full);
        assert_eq!(
            ask("GET", &[("If-Match", "\"x\", \"abc\"".into())], &m),
            Full
        );
        assert_eq!(
            ask("GET", &[("If-Match", "W/\"abc\"".into())], &m),
            PreconditionFailed
        );
        assert_eq!(
            ask("GET", &[("If-Match", "\"abd\"".into())], &m),
            PreconditionFailed
        );
        let weak = stored(Some("W/\"abc\""), None);
        assert_eq!(
            ask("GET", &[("If-Match", "W/\"abc\"".into())], &weak),
            PreconditionFailed
        );
        // If-Match passed, If-None-Match then decides.
        let h = [
            ("If-Match", "\"abc\"".into()),
            ("If-None-Match", "\"abc\"".into()),
        ];
        assert!(is_304(&ask("GET", &h, &m)));
    }

    #[test]
    fn if_unmodified_since_only_without_if_match_rfc9110_13_2_2() {
        let m = stored(Some("\"abc\""), Some(LM));
        let ius = |t: u64| ("If-Unmodified-Since", fmt_http_date(t));
        assert_eq!(ask("GET", &[ius(LM)], &m), Full);
        assert_eq!(ask("GET", &[ius(LM - 1)], &m), PreconditionFailed);
        assert_eq!(
            ask("GET", &[("If-Match", "\"abc\"".into()), ius(LM - 1)], &m),
            Full
        );
        // Without Last-Modified there is nothing to compare: ignored.
        let m = stored(Some("\"abc\""), None);
        assert_eq!(ask("GET", &[ius(1)], &m), Full);
        assert!(has_origin_preconditions(&[("if-unmodified-since", b"x")]));
        assert!(!has_origin_preconditions(&[("If-None-Match", b"*")]));
    }

    #[test]
    fn preconditions_apply_only_to_2xx() {
        let mut m = stored(Some("\"abc\""), None);
        m.status = 404;
        assert_eq!(ask("GET", &[("If-None-Match", "\"abc\"".into())], &m), Full);
        assert_eq!(ask("GET", &[("If-Match", "\"x\"".into())], &m), Full);
    }

    #[test]
    fn a_304_carries_the_fields_of_rfc9110_15_4_5() {
        let m = stored(Some("\"abc\""), Some(LM));
        let NotModified(f) = ask("GET", &[("If-None-Match", "\"abc\"".into())], &m) else {
            panic!("not a 304");
        };
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Date", "Cache-Control", "Vary", "ETag"]);
        assert_eq!(&f[0].1[..], fmt_http_date(NOW / 1000 - 10).as_bytes());
        // Without an ETag, Last-Modified identifies the representation.
        let m = stored(None, Some(LM));
        let f = not_modified_fields(&m);
        assert!(f.iter().any(|(n, _)| n == "Last-Modified"));
        assert!(!f.iter().any(|(n, _)| n == "Content-Type"));
    }

    #[test]
    fn entity_tags_parse_leniently_but_safely() {
        assert_eq!(
            parse_tag(b" W/\"x\" "),
            Some(EntityTag {
                weak: true,
                opaque: b"x"
            })
        );
        assert_eq!(parse_tag(b"\"x\" junk"), None);
        assert_eq!(parse_tag(b"\"unterminated"), None);
        assert_eq!(parse_tag(b""), None);
        let m = stored(Some("\"abc\""), None);
        for junk in ["\"", ",,,", "W/", "\"abc", "\u{0}"] {
            assert_eq!(
                ask("GET", &[("If-None-Match", junk.into())], &m),
                Full,
                "{junk:?}"
            );
        }
    }
}
