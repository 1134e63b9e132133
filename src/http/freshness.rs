//! Freshness lifetime (RFC 9111 §4.2.1, §4.2.2) and the age a response
//! already has when it is received (§4.2.3).

use super::date::parse_http_date;
use super::directives::Directives;
use super::{header, lines, Headers, HttpPolicy};
use crate::meta::UnixMs;

/// Statuses whose responses may get heuristic freshness (RFC 9110 §15.1).
pub const HEURISTICALLY_CACHEABLE: &[u16] =
    &[200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Freshness lifetime in ms and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// `s-maxage`, `max-age` or `Expires`.
    Explicit(u64),
    /// A tenth of `Date − Last-Modified`, capped.
    Heuristic(u64),
    /// The operator's per-status table (`rcdn_cache_valid`).
    Fallback(u64),
}

impl Lifetime {
    pub fn ms(self) -> u64 {
        match self {
            Lifetime::Explicit(v) | Lifetime::Heuristic(v) | Lifetime::Fallback(v) => v,
        }
    }
}

/// The origin's `Date` in unix seconds (first line only).
pub(crate) fn date_value(headers: Headers, now: UnixMs) -> Option<u64> {
    header(headers, "date").and_then(|v| parse_http_date(v, now / 1000))
}

/// RFC 9111 §4.2.1 order: `s-maxage`, `max-age`, then `Expires − Date`
/// (not when a targeted field decided: RFC 9213 §2.2). More than one
/// `Expires`, or one that is not a date, means already expired (§5.3).
fn explicit_secs(d: &Directives, targeted: bool, headers: Headers, date: u64) -> Option<u64> {
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Some(s);
    }
    if targeted {
        return None;
    }
    let mut expires = lines(headers, "expires");
    let first = expires.next()?;
    if expires.next().is_some() {
        return Some(0);
    }
    let at = parse_http_date(first.as_bytes(), date).unwrap_or(0);
    Some(at.saturating_sub(date))
}

/// The lifetime of a response, or `None` if nothing allows storing it.
pub(crate) fn lifetime(
    status: u16,
    d: &Directives,
    targeted: bool,
    headers: Headers,
    date: u64,
    policy: &HttpPolicy,
) -> Option<Lifetime> {
    if let Some(s) = explicit_secs(d, targeted, headers, date) {
        return Some(Lifetime::Explicit(s.saturating_mul(1000)));
    }
    heuristic_ms(status, d, headers, date, policy)
        .map(Lifetime::Heuristic)
        .or_else(|| policy.fallback_ms(status).map(Lifetime::Fallback))
}

/// RFC 9111 §4.2.2: for heuristically cacheable statuses (or `public`)
/// with a `Last-Modified`, 10 % of the time since, at most `heuristic_max_ms`.
fn heuristic_ms(
    status: u16,
    d: &Directives,
    headers: Headers,
    date: u64,
    policy: &HttpPolicy,
) -> Option<u64> {
    if policy.heuristic_max_ms == 0 || !(HEURISTICALLY_CACHEABLE.contains(&status) || d.public) {
        return None;
    }
    let lm = parse_http_date(header(headers, "last-modified")?, date)?;
    let tenth = date.saturating_sub(lm).saturating_mul(100); // secs → ms / 10
    Some(tenth.min(policy.heuristic_max_ms))
}

/// The first `Age` value (first line, first member), seconds; anything but
/// digits is ignored (cache-tests.fyi age-parse).
fn age_value(headers: Headers) -> u64 {
    let Some(first) = lines(headers, "age").next() else {
        return 0;
    };
    let member = first.split(',').next().unwrap_or("").trim();
    if member.is_empty() || !member.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    member.parse::<u64>().unwrap_or(u64::MAX)
}

/// RFC 9111 §4.2.3 `corrected_initial_age`, seconds: the larger of the
/// apparent age (`response_time − Date`) and `Age` plus the response delay.
pub(crate) fn initial_age(
    headers: Headers,
    date: Option<u64>,
    now: UnixMs,
    request_time: Option<UnixMs>,
) -> u64 {
    let apparent = date.map_or(0, |d| (now / 1000).saturating_sub(d));
    let delay = now.saturating_sub(request_time.unwrap_or(now).min(now)) / 1000;
    apparent.max(age_value(headers).saturating_add(delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
        v.iter().map(|(n, x)| (*n, x.as_bytes())).collect()
    }

    #[test]
    fn age_uses_the_first_line_and_member_and_ignores_junk() {
        assert_eq!(age_value(&h(&[("Age", "7200, 0")])), 7200);
        assert_eq!(age_value(&h(&[("Age", "0, 7200")])), 0);
        assert_eq!(age_value(&h(&[("Age", "0"), ("age", "7200")])), 0);
        assert_eq!(age_value(&h(&[("Age", "2147483648")])), 2_147_483_648);
        assert_eq!(
            age_value(&h(&[("Age", "99999999999999999999999")])),
            u64::MAX
        );
        for junk in ["abc", "-7200", "7200.0", "", "7200;foo=bar"] {
            assert_eq!(age_value(&h(&[("Age", junk)])), 0, "{junk}");
        }
    }

    #[test]
    fn corrected_initial_age_rfc9111_4_2_3() {
        let now = 1_000_000_000_000; // ms
        let date = Some(now / 1000 - 100);
        assert_eq!(initial_age(&[], date, now, None), 100, "apparent age");
        assert_eq!(initial_age(&h(&[("Age", "30")]), date, now, None), 100);
        assert_eq!(initial_age(&h(&[("Age", "300")]), date, now, None), 300);
        // The response delay is added to Age (the origin's clock is ahead).
        let ahead = Some(now / 1000 + 50);
        assert_eq!(
            initial_age(&h(&[("Age", "10")]), ahead, now, Some(now - 5000)),
            15
        );
        assert_eq!(
            initial_age(&[], None, now, Some(now + 9000)),
            0,
            "request after response"
        );
    }

    #[test]
    fn heuristic_is_a_tenth_capped_and_needs_last_modified_rfc9111_4_2_2() {
        let date = 1_000_000;
        let p = HttpPolicy::default();
        let lm = super::super::date::fmt_http_date(date - 36_000);
        let with_lm = vec![("Last-Modified", lm.as_bytes())];
        let d = Directives::default();
        assert_eq!(heuristic_ms(200, &d, &with_lm, date, &p), Some(3_600_000));
        assert_eq!(heuristic_ms(404, &d, &with_lm, date, &p), Some(3_600_000));
        for not in [201, 202, 302, 303, 307, 403, 500, 502, 503, 504, 599] {
            assert_eq!(heuristic_ms(not, &d, &with_lm, date, &p), None, "{not}");
        }
        let public = Directives {
            public: true,
            ..Directives::default()
        };
        assert_eq!(
            heuristic_ms(599, &public, &with_lm, date, &p),
            Some(3_600_000)
        );
        assert_eq!(
            heuristic_ms(200, &d, &[], date, &p),
            None,
            "no Last-Modified"
        );
        let capped = HttpPolicy {
            heuristic_max_ms: 60_000,
            ..HttpPolicy::default()
        };
        assert_eq!(heuristic_ms(200, &d, &with_lm, date, &capped), Some(60_000));
        let off = HttpPolicy {
            heuristic_max_ms: 0,
            ..HttpPolicy::default()
        };
        assert_eq!(heuristic_ms(200, &d, &with_lm, date, &off), None);
        let future = super::super::date::fmt_http_date(date + 10);
        let h = vec![("Last-Modified", future.as_bytes())];
        assert_eq!(
            heuristic_ms(200, &d, &h, date, &p),
            Some(0),
            "modified after Date"
        );
    }
}
