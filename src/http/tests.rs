//! `verdict`: storability, freshness, age and stored fields.

use super::date::fmt_http_date;
use super::*;

const NOW: UnixMs = 1_700_000_000_000;
const NOW_S: u64 = NOW / 1000;

fn heads(h: &[(&str, String)]) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(n, v)| (n.to_string(), v.clone().into_bytes()))
        .collect()
}

fn judge(status: u16, h: &[(&str, String)], p: &HttpPolicy) -> Verdict {
    let owned = heads(h);
    let refs: Vec<(&str, &[u8])> = owned.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
    verdict(status, &refs, NOW, p)
}

fn store_with(status: u16, h: &[(&str, String)], p: &HttpPolicy) -> Meta {
    match judge(status, h, p) {
        Verdict::Store(m) => m,
        Verdict::Skip(why) => panic!("skipped: {why}"),
    }
}

fn store(status: u16, h: &[(&str, &str)]) -> Meta {
    let h: Vec<(&str, String)> = h.iter().map(|(n, v)| (*n, v.to_string())).collect();
    store_with(status, &h, &HttpPolicy::default())
}

fn skip_with(status: u16, h: &[(&str, &str)], p: &HttpPolicy) -> &'static str {
    let h: Vec<(&str, String)> = h.iter().map(|(n, v)| (*n, v.to_string())).collect();
    match judge(status, &h, p) {
        Verdict::Skip(why) => why,
        Verdict::Store(_) => panic!("stored"),
    }
}

fn skip(h: &[(&str, &str)]) -> &'static str {
    skip_with(200, h, &HttpPolicy::default())
}

/// `Date` `secs` from now (negative: in the past).
fn date(secs: i64) -> String {
    fmt_http_date(NOW_S.saturating_add_signed(secs))
}

fn ttl(m: &Meta) -> u64 {
    m.expires_at - NOW
}

fn names(m: &Meta) -> Vec<&str> {
    m.headers.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn s_maxage_beats_max_age_beats_expires_rfc9111_4_2_1() {
    let exp = date(99_999);
    let m = store(
        200,
        &[
            ("Cache-Control", "max-age=60, s-maxage=300"),
            ("Expires", &exp),
        ],
    );
    assert_eq!(ttl(&m), 300_000);
    let m = store(
        200,
        &[("Cache-Control", "public, max-age=60"), ("Expires", &exp)],
    );
    assert_eq!(ttl(&m), 60_000);
    let m = store(200, &[("Cache-Control", "max-age=1, s-maxage=3600")]);
    assert_eq!(ttl(&m), 3_600_000, "shared cache takes the longer s-maxage");
    let m = store(
        200,
        &[
            ("Cache-Control", "max-age=0, s-maxage=3600"),
            ("Expires", &date(-10)),
        ],
    );
    assert_eq!(ttl(&m), 3_600_000);
    let m = store(
        200,
        &[("Cache-Control", "max-age=0"), ("Expires", &date(3600))],
    );
    assert_eq!(ttl(&m), 0);
    let m = store(200, &[("Cache-Control", "max-age=99999999999")]);
    assert_eq!(ttl(&m), 99_999_999_999_000);
}

#[test]
fn expires_is_relative_to_date_and_bad_or_past_means_stale_rfc9111_5_3() {
    // The origin's clock is an hour behind ours: Expires − Date counts.
    let m = store(200, &[("Date", &date(-3600)), ("Expires", &date(-3000))]);
    assert_eq!(
        ttl(&m),
        0,
        "the apparent age (3600 s) exceeds the 600 s lifetime"
    );
    let m = store(200, &[("Date", &date(0)), ("Expires", &date(600))]);
    assert_eq!(ttl(&m), 600_000);
    let m = store(200, &[("Expires", &date(600))]);
    assert_eq!(ttl(&m), 600_000, "no Date: the receive time");
    for bad in ["0", "-1", "Thu, 18 Aug 2050 02:01:18 UTC", "tomorrow"] {
        let m = store(200, &[("Date", &date(0)), ("Expires", bad)]);
        assert_eq!(ttl(&m), 0, "{bad}");
    }
    let m = store(200, &[("Date", &date(0)), ("Expires", &date(-1))]);
    assert_eq!(ttl(&m), 0, "Expires before Date");
    let m = store(
        200,
        &[
            ("Date", &date(0)),
            ("Expires", &date(60)),
            ("Expires", &date(90)),
        ],
    );
    assert_eq!(ttl(&m), 0, "two Expires lines");
    // Wrong case and the obsolete formats are dates (RFC 9110 §5.6.7).
    let m = store(200, &[("Expires", "THU, 18 AUG 2050 02:01:18 gMT")]);
    assert!(ttl(&m) > 0);
    let m = store(200, &[("Expires", "Thursday, 18-Aug-50 02:01:18 GMT")]);
    assert!(ttl(&m) > 0);
    let m = store(200, &[("Expires", "Thu Aug 18 02:01:18 2050")]);
    assert!(ttl(&m) > 0);
    let m = store(200, &[("Cache-Control", "max-age=3600"), ("Expires", "0")]);
    assert_eq!(ttl(&m), 3_600_000, "max-age overrides a bad Expires");
}

#[test]
fn age_and_date_are_kept_and_count_against_freshness_rfc9111_4_2_3() {
    let m = store(
        200,
        &[
            ("Cache-Control", "max-age=100"),
            ("Age", "40"),
            ("Date", &date(0)),
        ],
    );
    assert_eq!((ttl(&m), m.initial_age, m.date), (60_000, 40, NOW_S));
    assert_eq!(m.age_secs(NOW + 5_000), 45, "Age grows while resident");
    let m = store(
        200,
        &[
            ("Cache-Control", "max-age=3600"),
            ("Age", "7200"),
            ("Date", &date(0)),
        ],
    );
    assert_eq!(ttl(&m), 0, "Age beyond the lifetime");
    let m = store(
        200,
        &[("Cache-Control", "max-age=3600"), ("Date", &date(-7200))],
    );
    assert_eq!((ttl(&m), m.initial_age), (0, 7200), "apparent age");
    let m = store(200, &[("Cache-Control", "max-age=3600"), ("Age", "abc")]);
    assert_eq!(ttl(&m), 3_600_000);
    let m = store(
        200,
        &[("Cache-Control", "max-age=3600"), ("Age", "2147483648")],
    );
    assert_eq!(ttl(&m), 0);
    // Neither Date nor Age is a stored field: they are regenerated.
    let m = store(
        200,
        &[
            ("Cache-Control", "max-age=1"),
            ("Age", "0"),
            ("Date", &date(0)),
        ],
    );
    assert_eq!(names(&m), ["Cache-Control"]);
    // Without Date, the receive time is the Date.
    assert_eq!(store(200, &[]).date, NOW_S);
}

#[test]
fn response_delay_adds_to_age() {
    let p = HttpPolicy {
        request_time: Some(NOW - 3000),
        ..HttpPolicy::default()
    };
    let h = [
        ("Cache-Control", "max-age=100".to_string()),
        ("Age", "10".to_string()),
    ];
    let m = store_with(200, &h, &p);
    assert_eq!((m.initial_age, ttl(&m)), (13, 87_000));
}

#[test]
fn explicit_freshness_makes_any_final_status_storable_rfc9111_3() {
    for s in [
        200, 203, 204, 299, 300, 301, 302, 303, 307, 308, 400, 404, 405, 410, 414, 499, 500, 501,
        502, 503, 504, 599,
    ] {
        let m = store(s, &[("Cache-Control", "max-age=60")]);
        assert_eq!((m.status, ttl(&m)), (s, 60_000), "{s}");
        let m = store(s, &[("Date", &date(0)), ("Expires", &date(30))]);
        assert_eq!(ttl(&m), 30_000, "{s}");
    }
}

#[test]
fn interim_partial_and_not_modified_are_never_stored_whole() {
    let p = HttpPolicy::default();
    for s in [100, 102, 103, 199] {
        assert_eq!(
            skip_with(s, &[("Cache-Control", "max-age=60")], &p),
            "interim 1xx response"
        );
    }
    assert!(skip_with(206, &[("Cache-Control", "max-age=60")], &p).contains("slice machinery"));
    assert!(skip_with(304, &[("Cache-Control", "max-age=60")], &p).contains("304"));
    assert_eq!(skip_with(0, &[], &p), "not an HTTP status");
    assert_eq!(
        skip_with(1000, &[("Cache-Control", "max-age=60")], &p),
        "not an HTTP status"
    );
}

#[test]
fn heuristic_freshness_only_for_heuristically_cacheable_statuses_rfc9111_4_2_2() {
    let p = HttpPolicy {
        fallback: vec![],
        ..HttpPolicy::default()
    };
    let lm = date(-86_400);
    let h = [("Last-Modified", lm.clone()), ("Date", date(0))];
    for s in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        assert_eq!(
            ttl(&store_with(s, &h, &p)),
            8_640_000,
            "{s}: a tenth of a day"
        );
    }
    for s in [201, 202, 302, 303, 307, 403, 500, 502, 503, 504, 599] {
        assert!(matches!(judge(s, &h, &p), Verdict::Skip(_)), "{s}");
    }
    let public = [
        ("Last-Modified", lm.clone()),
        ("Date", date(0)),
        ("Cache-Control", "public".into()),
    ];
    assert_eq!(
        ttl(&store_with(599, &public, &p)),
        8_640_000,
        "public allows it"
    );
    // Capped, and never without Last-Modified.
    let old = [("Last-Modified", date(-100 * 86_400)), ("Date", date(0))];
    assert_eq!(
        ttl(&store_with(200, &old, &p)),
        86_400_000,
        "heuristic_max, a day"
    );
    assert!(matches!(
        judge(200, &[("Date", date(0))], &p),
        Verdict::Skip(_)
    ));
    // An explicit lifetime, even an expired one, is never replaced by it.
    let stale = [
        ("Expires", date(-5000)),
        ("Last-Modified", date(-100_000)),
        ("Date", date(0)),
    ];
    assert_eq!(ttl(&store_with(200, &stale, &p)), 0);
}

#[test]
fn fallback_table_applies_only_without_freshness() {
    // The default: default_ttl for the non-error heuristically cacheable statuses.
    for s in DEFAULT_FALLBACK_STATUSES {
        assert_eq!(ttl(&store(*s, &[])), 120_000, "{s}");
    }
    for s in [302, 307, 404, 500, 503] {
        assert_eq!(
            skip_with(s, &[], &HttpPolicy::default()),
            "no freshness, and the status is not in the fallback table"
        );
    }
    let p = HttpPolicy {
        fallback: vec![
            FallbackTtl {
                status: Some(404),
                ttl_ms: 10_000,
            },
            FallbackTtl::any(1_000),
        ],
        ..HttpPolicy::default()
    };
    assert_eq!(ttl(&store_with(404, &[], &p)), 10_000);
    assert_eq!(
        ttl(&store_with(302, &[], &p)),
        1_000,
        "`any` is the operator's choice"
    );
    assert_eq!(p.fallback_ms(500), Some(1_000));
    let h = [("Cache-Control", "max-age=5".to_string())];
    assert_eq!(ttl(&store_with(404, &h, &p)), 5_000, "explicit first");
    let h = [("Last-Modified", date(-1000)), ("Date", date(0))];
    assert_eq!(
        ttl(&store_with(404, &h, &p)),
        100_000,
        "heuristic before the table"
    );
    let off = HttpPolicy {
        heuristic_max_ms: 0,
        ..p.clone()
    };
    assert_eq!(ttl(&store_with(404, &h, &off)), 10_000, "heuristic off");
    let cfg = crate::Config::parse("default_ttl=0").unwrap();
    assert_eq!(
        ttl(&store_with(200, &[], &HttpPolicy::from_config(&cfg))),
        0
    );
}

#[test]
fn no_store_private_vary_star_and_cookies_are_skipped_rfc9111_3() {
    assert_eq!(skip(&[("Cache-Control", "no-store")]), "no-store");
    assert_eq!(
        skip(&[("Cache-Control", "max-age=10000, No-StOrE")]),
        "no-store"
    );
    assert_eq!(skip(&[("cache-control", "PRIVATE, max-age=9")]), "private");
    assert_eq!(skip(&[("Set-Cookie", "a=b")]), "set-cookie");
    assert_eq!(
        skip(&[
            ("Vary", "Accept-Encoding, *"),
            ("Cache-Control", "max-age=9")
        ]),
        "vary: *"
    );
    assert_eq!(skip(&[("Vary", "a"), ("vary", " * ")]), "vary: *");
    // private="x" names fields, it does not make the response private.
    store(200, &[("Cache-Control", "private=\"x\", max-age=1")]);
    let p = HttpPolicy {
        cache_set_cookie: true,
        ..HttpPolicy::default()
    };
    let h = [
        ("Set-Cookie", "a=b".to_string()),
        ("Set-Cookie2", "c=d".to_string()),
    ];
    assert!(
        names(&store_with(200, &h, &p)).is_empty(),
        "cookie never replayed"
    );
}

#[test]
fn must_understand_ignores_no_store_for_known_statuses_rfc9111_5_2_2_3() {
    let h = [("Cache-Control", "max-age=3600, no-store, must-understand")];
    assert_eq!(ttl(&store(200, &h)), 3_600_000);
    let p = HttpPolicy::default();
    assert_eq!(
        skip_with(599, &h, &p),
        "must-understand with an unknown status"
    );
    assert_eq!(
        skip_with(599, &[("Cache-Control", "max-age=9, must-understand")], &p),
        "must-understand with an unknown status"
    );
}

#[test]
fn authorization_needs_public_s_maxage_or_must_revalidate_rfc9111_3_5() {
    let p = HttpPolicy {
        authorization: true,
        ..HttpPolicy::default()
    };
    assert!(skip_with(200, &[("Cache-Control", "max-age=3600")], &p).starts_with("authorization"));
    assert!(skip_with(200, &[], &p).starts_with("authorization"));
    for cc in [
        "max-age=3600, public",
        "s-maxage=3600",
        "max-age=3600, must-revalidate",
    ] {
        store_with(200, &[("Cache-Control", cc.to_string())], &p);
    }
}

#[test]
fn no_cache_is_stored_stale_and_never_served_stale_rfc9111_5_2_2_4() {
    let m = store(
        200,
        &[("Cache-Control", "no-cache, max-age=600, stale-if-error=60")],
    );
    assert_eq!(ttl(&m), 0);
    assert!(m.no_stale && m.stale_if_error == 0);
    let m = store(200, &[("Cache-Control", "No-CaChE"), ("ETag", "\"abcd\"")]);
    assert_eq!((ttl(&m), m.etag.as_deref()), (0, Some(&b"\"abcd\""[..])));
}

#[test]
fn qualified_no_cache_and_private_drop_the_named_fields_rfc9111_5_2_2_4() {
    let m = store(
        200,
        &[
            ("Cache-Control", "no-cache=\"a, B\""),
            ("Cache-Control", "private=\"c\", max-age=3600"),
            ("a", "1"),
            ("b", "2"),
            ("C", "3"),
            ("d", "4"),
        ],
    );
    assert_eq!(ttl(&m), 3_600_000, "qualified forms do not make it stale");
    assert!(!m.no_stale);
    assert_eq!(names(&m), ["Cache-Control", "Cache-Control", "d"]);
}

#[test]
fn revalidate_directives_and_s_maxage_forbid_stale_serving_rfc9111_4_2_4() {
    for cc in [
        "max-age=2, must-revalidate",
        "max-age=2, proxy-revalidate",
        "s-maxage=2",
    ] {
        let m = store(
            200,
            &[(
                "Cache-Control",
                &format!("{cc}, stale-while-revalidate=60, stale-if-error=60"),
            )],
        );
        assert!(m.no_stale, "{cc}");
        assert_eq!((m.stale_while_revalidate, m.stale_if_error), (0, 0), "{cc}");
        assert!(
            !m.within_stale_window(NOW + 3000, 60_000),
            "{cc}: operator window too"
        );
    }
    let m = store(
        200,
        &[("Cache-Control", "max-age=2, stale-while-revalidate=60")],
    );
    assert!(!m.no_stale && m.within_stale_while_revalidate(NOW + 3000));
}

#[test]
fn targeted_fields_replace_cache_control_and_expires_rfc9213() {
    let m = store(
        200,
        &[
            ("Cache-Control", "no-store"),
            ("CDN-Cache-Control", "max-age=600"),
        ],
    );
    assert_eq!(ttl(&m), 600_000);
    assert!(
        names(&m).contains(&"CDN-Cache-Control"),
        "forwarded downstream (§3)"
    );
    let m = store(
        200,
        &[
            ("Cache-Control", "max-age=3600"),
            ("CDN-Cache-Control", "max-age=1"),
        ],
    );
    assert_eq!(ttl(&m), 1_000);
    let m = store(
        200,
        &[
            ("CDN-Cache-Control", "max-age=3600"),
            ("Date", &date(0)),
            ("Expires", &date(-10_000)),
        ],
    );
    assert_eq!(ttl(&m), 3_600_000, "Expires ignored");
    let m = store(
        200,
        &[
            ("CDN-Cache-Control", "max-age=0"),
            ("Date", &date(0)),
            ("Expires", &date(10_000)),
        ],
    );
    assert_eq!(ttl(&m), 0);
    for cc in ["private", "no-store"] {
        let h = [
            ("CDN-Cache-Control", cc),
            ("Cache-Control", "max-age=10000"),
        ];
        assert_eq!(skip(&h), cc);
    }
    let m = store(
        200,
        &[
            ("CDN-Cache-Control", "no-cache"),
            ("Cache-Control", "max-age=10000"),
        ],
    );
    assert_eq!(ttl(&m), 0);
    let m = store(
        200,
        &[
            ("CDN-Cache-Control", "max-age=3600"),
            ("Age", "7200"),
            ("Date", &date(0)),
        ],
    );
    assert_eq!(ttl(&m), 0, "Age still counts");
    // Invalid targeted fields are ignored: Cache-Control decides.
    for bad in ["max-age=10000, &&&&&", "max-age=\"10000\""] {
        assert_eq!(
            skip(&[("CDN-Cache-Control", bad), ("Cache-Control", "no-store")]),
            "no-store"
        );
    }
    // Surrogate-Control is next on the list, and consumed here.
    let m = store(
        200,
        &[
            ("Surrogate-Control", "max-age=300+60"),
            ("Cache-Control", "no-store"),
        ],
    );
    assert_eq!(ttl(&m), 300_000);
    assert!(!names(&m).contains(&"Surrogate-Control"));
    // The operator's own field name first.
    let p = HttpPolicy {
        targets: vec!["Acme-Cache-Control".into()],
        ..HttpPolicy::default()
    };
    let h = [
        ("Acme-Cache-Control", "max-age=7".to_string()),
        ("CDN-Cache-Control", "max-age=9".to_string()),
    ];
    assert_eq!(ttl(&store_with(200, &h, &p)), 7_000);
    let h = [
        ("CDN-Cache-Control", "no-store".to_string()),
        ("Surrogate-Control", "no-store".to_string()),
        ("Cache-Control", "max-age=9".to_string()),
    ];
    let m = store_with(200, &h, &p);
    assert_eq!(ttl(&m), 9_000, "off the list: no effect");
    assert!(
        names(&m).contains(&"Surrogate-Control"),
        "off the list: passed through"
    );
}

#[test]
fn validators_windows_tags_and_unstored_fields_rfc9111_3_1() {
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
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authenticate", "Basic"),
            ("Proxy-Authentication-Info", "x"),
            ("Proxy-Connection", "close"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Content-Type", "image/png"),
            ("Content-Range", "bytes */10"),
            ("Expires", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ],
    );
    assert_eq!(m.stale_while_revalidate, 30);
    assert_eq!(m.stale_if_error, 86_400);
    assert_eq!(m.etag.as_deref(), Some(&b"\"v1\""[..]));
    assert_eq!(m.last_modified, Some(784_111_777));
    assert_eq!(m.surrogate_keys, vec!["news", "sport", "a", "b"]);
    assert_eq!(
        names(&m),
        [
            "Cache-Control",
            "ETag",
            "Last-Modified",
            "Surrogate-Key",
            "Cache-Tag",
            "Content-Type",
            "Content-Range",
            "Expires"
        ]
    );
}

/// Random header values (ASCII with quotes, commas, `=` and some UTF-8)
/// through every function of the module: answers, never panics.
#[test]
fn random_header_values_never_panic() {
    const ALPHABET: &[&str] = &[
        "\"", ",", "=", " ", "\t", "\\", "/", ":", "?", "#", "W/", "*", ";", "+", "-", "0", "9",
        "max-age", "no-cache", "private", "s-maxage", "GMT", "Sun", "Nov", "é", "\u{7f}", "..",
    ];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let names = [
        "Cache-Control",
        "CDN-Cache-Control",
        "Surrogate-Control",
        "Expires",
        "Date",
        "Age",
        "Last-Modified",
        "ETag",
        "Vary",
        "Connection",
        "Location",
        "Content-Location",
        "If-None-Match",
        "If-Match",
        "If-Modified-Since",
        "If-Unmodified-Since",
        "Content-Length",
    ];
    for _ in 0..3000 {
        let h: Vec<(&str, String)> = (0..next(5))
            .map(|_| {
                let v: String = (0..next(12))
                    .map(|_| ALPHABET[next(ALPHABET.len())])
                    .collect();
                (names[next(names.len())], v)
            })
            .collect();
        let owned = heads(&h);
        let refs: Vec<(&str, &[u8])> = owned.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        let status = [200, 206, 304, 404, 599, 0][next(6)];
        let p = HttpPolicy {
            authorization: next(2) == 0,
            ..HttpPolicy::default()
        };
        let meta = match verdict(status, &refs, NOW, &p) {
            Verdict::Store(m) => m,
            Verdict::Skip(_) => store(200, &[("ETag", "\"e\"")]),
        };
        let _ = conditional::answer("GET", &refs, &meta, NOW);
        let _ = revalidate::freshen_304(&meta, &refs, NOW, &p);
        let _ = revalidate::freshen_head(&meta, 200, &refs, NOW, &p);
        let _ = revalidate::validator_headers(&meta);
        let _ = invalidate::invalidated_paths("POST", 201, "h", "/a/b?c", &refs);
        for (_, v) in &refs {
            let _ = date::parse_http_date(v, NOW_S);
        }
    }
}
