//! Object metadata: what a cached response needs to be replayed, judged fresh
//! or stale, revalidated, and found by a purge.

use bytes::Bytes;

/// Times are unix milliseconds, the one clock every process and node shares.
pub type UnixMs = u64;

/// The current wall-clock time in unix milliseconds.
pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Metadata stored beside a body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// HTTP status to replay (200, 301, 404, ...).
    pub status: u16,
    /// Response headers to replay, in order (hop-by-hop headers already removed).
    pub headers: Vec<(String, Bytes)>,
    /// When the object was stored.
    pub stored_at: UnixMs,
    /// Fresh until this instant; stale after.
    pub expires_at: UnixMs,
    /// `stale-while-revalidate` window after expiry, in seconds.
    pub stale_while_revalidate: u32,
    /// `stale-if-error` window after expiry, in seconds.
    pub stale_if_error: u32,
    /// `ETag` validator, as sent by the origin (quotes included).
    pub etag: Option<Bytes>,
    /// `Last-Modified` validator, unix seconds.
    pub last_modified: Option<u64>,
    /// Hornet-style integer tags.
    pub tags: Vec<u16>,
    /// String tags from `Surrogate-Key` / `Cache-Tag`.
    pub surrogate_keys: Vec<String>,
    /// Purge group; `None` means the key's first path level.
    pub group: Option<Bytes>,
    /// Bitmap matched by mask purges (`mask & m != 0`).
    pub mask: u64,
    /// Body length, filled in at commit.
    pub size: u64,
    /// xxh3-64 of the body, filled in at commit.
    pub checksum: u64,
    /// The origin's `Date`, unix seconds (the receive time if it sent
    /// none), replayed unchanged; 0 for objects stored before it was kept.
    pub date: u64,
    /// Age in seconds when stored: RFC 9111 §4.2.3 `corrected_initial_age`
    /// (saturating: 136 years).
    pub initial_age: u32,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`,
    /// `s-maxage`, `no-cache`; RFC 9111 §4.2.4): no stale windows apply.
    pub no_stale: bool,
}

/// How a stored object stands at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Expired; the caller may still serve it within the stale windows, or
    /// revalidate it with its validators.
    Stale,
}

impl Meta {
    /// A 200 response fresh for `ttl_ms` from `now`.
    pub fn with_ttl(now: UnixMs, ttl_ms: u64) -> Self {
        Meta {
            status: 200,
            stored_at: now,
            expires_at: now.saturating_add(ttl_ms),
            ..Meta::default()
        }
    }

    pub fn freshness(&self, now: UnixMs) -> Freshness {
        if now < self.expires_at {
            Freshness::Fresh
        } else {
            Freshness::Stale
        }
    }

    /// The `Age` to send at `now`, seconds: the age it had when stored
    /// plus the time it has been resident (RFC 9111 §4.2.3).
    pub fn age_secs(&self, now: UnixMs) -> u64 {
        u64::from(self.initial_age).saturating_add(now.saturating_sub(self.stored_at) / 1000)
    }

    /// The `Date` to replay, unix seconds: the origin's, else when stored.
    pub fn date_secs(&self) -> u64 {
        match self.date {
            0 => self.stored_at / 1000,
            d => d,
        }
    }

    /// May an expired copy be served within `window_ms` after expiry (an
    /// operator's stale window)? Never when the response forbids it.
    pub fn within_stale_window(&self, now: UnixMs, window_ms: u64) -> bool {
        !self.no_stale && now < self.expires_at.saturating_add(window_ms)
    }

    /// May an expired copy be served while it is refreshed in the background?
    pub fn within_stale_while_revalidate(&self, now: UnixMs) -> bool {
        self.within_stale_window(now, u64::from(self.stale_while_revalidate) * 1000)
    }

    /// May an expired copy be served because the origin failed?
    pub fn within_stale_if_error(&self, now: UnixMs) -> bool {
        self.within_stale_window(now, u64::from(self.stale_if_error) * 1000)
    }

    /// First value of a replayed header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Bytes this metadata costs in memory, for the cache's byte budget.
    pub fn footprint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 48)
            .sum();
        let skeys: usize = self.surrogate_keys.iter().map(|s| s.len() + 24).sum();
        std::mem::size_of::<Meta>()
            + headers
            + skeys
            + self.tags.len() * 2
            + self.etag.as_ref().map_or(0, |e| e.len())
            + self.group.as_ref().map_or(0, |g| g.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_stale_with_windows() {
        let mut m = Meta::with_ttl(1_000, 10_000);
        m.stale_while_revalidate = 5;
        m.stale_if_error = 60;
        assert_eq!(m.freshness(10_999), Freshness::Fresh);
        assert_eq!(m.freshness(11_000), Freshness::Stale);
        assert!(m.within_stale_while_revalidate(15_999));
        assert!(!m.within_stale_while_revalidate(16_000));
        assert!(m.within_stale_if_error(70_999));
        assert!(!m.within_stale_if_error(71_000));
        assert_eq!(m.age_secs(4_500), 3);
    }

    #[test]
    fn age_grows_from_the_initial_age_rfc9111_4_2_3() {
        let mut m = Meta::with_ttl(10_000, 60_000);
        m.initial_age = 30;
        assert_eq!(m.age_secs(10_000), 30);
        assert_eq!(m.age_secs(12_999), 32);
        assert_eq!(m.age_secs(5_000), 30, "clock went back");
        m.initial_age = u32::MAX;
        assert_eq!(m.age_secs(99_000), u64::from(u32::MAX) + 89);
    }

    #[test]
    fn date_is_the_origins_or_the_store_time() {
        let mut m = Meta::with_ttl(1_700_000_000_900, 0);
        assert_eq!(m.date_secs(), 1_700_000_000);
        m.date = 42;
        assert_eq!(m.date_secs(), 42);
    }

    #[test]
    fn no_stale_closes_every_stale_window_rfc9111_4_2_4() {
        let mut m = Meta::with_ttl(1_000, 10_000);
        m.stale_while_revalidate = 5;
        m.stale_if_error = 60;
        assert!(m.within_stale_window(20_000, 10_000));
        m.no_stale = true;
        assert!(!m.within_stale_while_revalidate(11_000));
        assert!(!m.within_stale_if_error(11_000));
        assert!(!m.within_stale_window(11_000, 10_000));
        assert_eq!(
            m.freshness(10_999),
            Freshness::Fresh,
            "fresh is still fresh"
        );
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let m = Meta {
            headers: vec![("Content-Type".into(), Bytes::from_static(b"text/plain"))],
            ..Meta::default()
        };
        assert_eq!(
            m.header("content-type").map(|b| &b[..]),
            Some(&b"text/plain"[..])
        );
        assert!(m.header("etag").is_none());
    }
}
