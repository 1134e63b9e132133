//! HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, and the obsolete RFC 850 and
//! asctime formats every recipient must accept. Names are matched
//! case-insensitively, as RFC 9111 §4.2 asks of caches; the weekday must be
//! a weekday name but is not checked against the date (senders get it
//! wrong, and it carries no information).

/// Unix seconds of an HTTP-date, `None` if `v` is not one. `now_secs` settles
/// the century of an RFC 850 two-digit year. Dates before 1970 are 0.
pub fn parse_http_date(v: &[u8], now_secs: u64) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?.trim_matches([' ', '\t']);
    if !s.is_ascii() {
        return None;
    }
    let s = s.as_bytes();
    let parts = imf_fixdate(s)
        .or_else(|| rfc850(s, now_secs))
        .or_else(|| asctime(s))?;
    parts.unix()
}

/// The IMF-fixdate form of a unix time, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn fmt_http_date(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
}

const MONTHS: [&[u8]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];
const DAYS: [&[u8]; 7] = [
    b"monday",
    b"tuesday",
    b"wednesday",
    b"thursday",
    b"friday",
    b"saturday",
    b"sunday",
];

fn month(s: &[u8]) -> Option<u32> {
    let i = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(s))?;
    Some(i as u32 + 1)
}

fn short_day(s: &[u8]) -> bool {
    DAYS.iter().any(|d| d[..3].eq_ignore_ascii_case(s))
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `08:49:37` → (8, 49, 37).
fn time(s: &[u8]) -> Option<(u32, u32, u32)> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    Some((digits(&s[0..2])?, digits(&s[3..5])?, digits(&s[6..8])?))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(s: &[u8]) -> Option<Parts> {
    if s.len() != 29 || &s[3..5] != b", " || s[7] != b' ' || s[11] != b' ' || s[16] != b' ' {
        return None;
    }
    if !short_day(&s[0..3]) || !s[25..].eq_ignore_ascii_case(b" gmt") {
        return None;
    }
    let (hour, min, sec) = time(&s[17..25])?;
    Parts {
        year: i64::from(digits(&s[12..16])?),
        month: month(&s[8..11])?,
        day: digits(&s[5..7])?,
        hour,
        min,
        sec,
    }
    .valid()
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850(s: &[u8], now_secs: u64) -> Option<Parts> {
    let comma = s.iter().position(|&c| c == b',')?;
    if !DAYS.iter().any(|d| d.eq_ignore_ascii_case(&s[..comma])) {
        return None;
    }
    let s = &s[comma..];
    if s.len() != 24 || &s[..2] != b", " || s[4] != b'-' || s[8] != b'-' || s[11] != b' ' {
        return None;
    }
    if !s[20..].eq_ignore_ascii_case(b" gmt") {
        return None;
    }
    let (hour, min, sec) = time(&s[12..20])?;
    let parts = Parts {
        year: 0,
        month: month(&s[5..8])?,
        day: digits(&s[2..4])?,
        hour,
        min,
        sec,
    };
    with_century(parts, digits(&s[9..11])?, now_secs).valid()
}

/// RFC 9110 §5.6.7: a two-digit year is the latest one with those digits
/// that is not more than 50 years (by the calendar) in the future.
fn with_century(mut p: Parts, yy: u32, now_secs: u64) -> Parts {
    let mut limit = Parts::from_secs(now_secs as i64);
    limit.year += 50;
    p.year = limit.year - limit.year.rem_euclid(100) + 100 + i64::from(yy);
    while p.year > 1900 && p.raw_secs() > limit.raw_secs() {
        p.year -= 100;
    }
    p
}

/// `Sun Nov  6 08:49:37 1994` (the day may also be written `06`).
fn asctime(s: &[u8]) -> Option<Parts> {
    if s.len() != 24 || s[3] != b' ' || s[7] != b' ' || s[10] != b' ' || s[19] != b' ' {
        return None;
    }
    if !short_day(&s[0..3]) {
        return None;
    }
    let day = match s[8] {
        b' ' => digits(&s[9..10])?,
        _ => digits(&s[8..10])?,
    };
    let (hour, min, sec) = time(&s[11..19])?;
    Parts {
        year: i64::from(digits(&s[20..24])?),
        month: month(&s[4..7])?,
        day,
        hour,
        min,
        sec,
    }
    .valid()
}

impl Parts {
    /// Civil time of unix seconds (H. Hinnant's civil_from_days).
    fn from_secs(secs: i64) -> Parts {
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Parts {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day: (doy - (153 * mp + 2) / 5 + 1) as u32,
            hour: rem / 3600,
            min: rem / 60 % 60,
            sec: rem % 60,
        }
    }

    fn valid(self) -> Option<Parts> {
        let leap = self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0);
        let days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let ok = self.day >= 1
            && self.day <= days[self.month as usize - 1]
            && self.hour < 24
            && self.min < 60
            && self.sec <= 60; // a leap second
        ok.then_some(self)
    }

    fn unix(&self) -> Option<u64> {
        Some(self.raw_secs().max(0) as u64)
    }

    /// Seconds since the epoch, negative before it: days from civil
    /// (H. Hinnant's algorithm), then the time of day.
    fn raw_secs(&self) -> i64 {
        let y = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + i64::from(self.hour) * 3600 + i64::from(self.min) * 60 + i64::from(self.sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z, the "now" that settles two-digit years.
    const NOW: u64 = 1_704_067_200;
    const EXAMPLE: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    fn p(s: &str) -> Option<u64> {
        parse_http_date(s.as_bytes(), NOW)
    }

    #[test]
    fn the_three_formats_of_rfc9110_5_6_7() {
        assert_eq!(p("Sun, 06 Nov 1994 08:49:37 GMT"), Some(EXAMPLE));
        assert_eq!(p("Sunday, 06-Nov-94 08:49:37 GMT"), Some(EXAMPLE));
        assert_eq!(p("Sun Nov  6 08:49:37 1994"), Some(EXAMPLE));
        assert_eq!(p("Sun Nov 06 08:49:37 1994"), Some(EXAMPLE));
        assert_eq!(p("  Sun, 06 Nov 1994 08:49:37 GMT\t"), Some(EXAMPLE), "OWS");
    }

    #[test]
    fn names_are_case_insensitive_for_caches_rfc9111_4_2() {
        assert_eq!(p("SUN, 06 NOV 1994 08:49:37 gmt"), Some(EXAMPLE));
        assert_eq!(p("sunday, 06-nov-94 08:49:37 Gmt"), Some(EXAMPLE));
        assert_eq!(p("sUN nOV  6 08:49:37 1994"), Some(EXAMPLE));
    }

    #[test]
    fn weekday_must_be_a_name_but_need_not_match() {
        // 2050-08-08 is a Monday; caches reuse such dates (cache-tests.fyi).
        assert_eq!(
            p("Thu Aug  8 02:01:18 2050"),
            p("Mon, 08 Aug 2050 02:01:18 GMT")
        );
        assert!(p("Mon, 08 Aug 2050 02:01:18 GMT").is_some());
        assert_eq!(p("Xyz, 06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(p("Sundae, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn bad_dates_are_none() {
        for bad in [
            "",
            "0",
            "-1",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 29 Feb 2023 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:01:18 GMT",
            "Thu, 18 Aug 2050 02:60:18 GMT",
            "Thu, 18 Abc 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMT x",
            "Thu, 1a Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMTé",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(parse_http_date(b"\xff\xfe", NOW), None);
    }

    #[test]
    fn leap_days_far_future_and_before_the_epoch() {
        assert_eq!(p("Thu, 29 Feb 2024 00:00:00 GMT"), Some(NOW + 59 * 86_400));
        assert_eq!(p("Tue, 19 Jan 2038 03:14:08 GMT"), Some(1 << 31));
        assert!(p("Sun, 21 Nov 2286 04:46:39 GMT").is_some_and(|t| t > 9_999_000_000));
        assert_eq!(p("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(p("Mon, 01 Jan 1900 00:00:00 GMT"), Some(0), "clamped");
    }

    #[test]
    fn two_digit_years_follow_the_fifty_year_rule_rfc9110_5_6_7() {
        // In 2024: 73 is 2073 (49 years ahead); 75 is 1975 (2075 is 51 ahead).
        let y = |yy: &str| p(&format!("Monday, 01-Jan-{yy} 00:00:00 GMT"));
        assert_eq!(y("24"), Some(NOW));
        assert_eq!(y("73"), p("Mon, 01 Jan 2073 00:00:00 GMT"));
        assert_eq!(y("74"), p("Mon, 01 Jan 2074 00:00:00 GMT"));
        assert_eq!(y("75"), p("Mon, 01 Jan 1975 00:00:00 GMT"));
        assert_eq!(y("99"), p("Mon, 01 Jan 1999 00:00:00 GMT"));
        assert_eq!(y("00"), p("Mon, 01 Jan 2000 00:00:00 GMT"));
        // The same digits a century later mean 2099, not 1999.
        let later = 4_102_444_800; // 2100-01-01
        let v = b"Monday, 01-Jan-99 00:00:00 GMT";
        assert_eq!(
            parse_http_date(v, later),
            p("Mon, 01 Jan 2099 00:00:00 GMT")
        );
    }

    #[test]
    fn civil_time_round_trips() {
        for t in [
            0,
            59,
            951_782_400,
            1_709_164_800,
            4_102_444_800,
            9_999_999_999,
        ] {
            assert_eq!(Parts::from_secs(t).raw_secs(), t, "{t}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        assert_eq!(fmt_http_date(EXAMPLE), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(p(&fmt_http_date(NOW)), Some(NOW));
    }
}
