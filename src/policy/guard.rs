//! Anti-attack guard (UpCDN): find the URLs (or client addresses) whose
//! request rate passes a threshold, in bounded memory, and escalate:
//! first a 302 challenge that a browser follows and a bot does not, then a
//! block. Every window the flags are re-examined and lifted when the rate is
//! back to normal.
//!
//! Rates come from a Space-Saving sketch (Metwally et al.): `capacity`
//! counters; an unseen item takes over the smallest counter, inheriting its
//! count as possible over-estimation. Any item more frequent than
//! `total / capacity` is guaranteed to be tracked, so a flood is never missed,
//! and memory does not grow with the number of distinct URLs.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;

use super::PolicyError;

/// Thresholds, in requests per second averaged over the current window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardConfig {
    pub challenge_rps: f64,
    pub block_rps: f64,
    pub window_ms: u64,
    /// Counters in the sketch.
    pub capacity: usize,
    /// How long a challenge token stays valid.
    pub token_ttl_ms: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            challenge_rps: 100.0,
            block_rps: 1000.0,
            window_ms: 300_000,
            capacity: 4096,
            token_ttl_ms: 60_000,
        }
    }
}

impl GuardConfig {
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |r: &str| Err(PolicyError::new("guard", r.to_string()));
        if !(self.challenge_rps > 0.0 && self.challenge_rps.is_finite()) {
            return bad("challenge threshold must be a positive number");
        }
        if !(self.block_rps >= self.challenge_rps && self.block_rps.is_finite()) {
            return bad("block threshold must be at least the challenge threshold");
        }
        if self.window_ms < 1000 {
            return bad("window must be at least 1s");
        }
        if !(16..=1 << 20).contains(&self.capacity) {
            return bad("capacity must be 16..=1048576");
        }
        Ok(())
    }
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Answer 302 to the same URL carrying this token (`rcdn_challenge=`).
    Challenge(String),
    /// Answer 403 (or 429).
    Block,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Challenge,
    Block,
}

/// Counts of decisions, for the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardCounters {
    pub passed: u64,
    pub challenged: u64,
    pub challenge_passed: u64,
    pub challenge_failed: u64,
    pub blocked: u64,
    pub lifted: u64,
}

/// Space-Saving counters plus the escalation state.
pub struct Guard {
    cfg: GuardConfig,
    secret: Vec<u8>,
    window_start: u64,
    /// item -> (count, over-estimation)
    counts: HashMap<u64, (u64, u64)>,
    flags: HashMap<u64, Level>,
    pub counters: GuardCounters,
}

impl Guard {
    pub fn new(cfg: GuardConfig, secret: &[u8], now_ms: u64) -> Result<Self, PolicyError> {
        cfg.validate()?;
        if secret.is_empty() {
            return Err(PolicyError::new("guard", "challenge secret is empty"));
        }
        Ok(Guard {
            cfg,
            secret: secret.to_vec(),
            window_start: now_ms,
            counts: HashMap::with_capacity(cfg.capacity),
            flags: HashMap::new(),
            counters: GuardCounters::default(),
        })
    }

    /// Adds one occurrence of `item` to the sketch; returns its guaranteed
    /// count (the estimate minus what it may have inherited).
    fn count(&mut self, item: u64) -> u64 {
        if let Some(c) = self.counts.get_mut(&item) {
            c.0 += 1;
            return c.0 - c.1;
        }
        if self.counts.len() < self.cfg.capacity {
            self.counts.insert(item, (1, 0));
            return 1;
        }
        // O(capacity) replacement of the minimum; only for unseen items in a
        // full sketch, and capacity is small. A stream-summary list would
        // make it O(1) if profiles ever show it.
        let (&victim, &(min, _)) = self
            .counts
            .iter()
            .min_by_key(|(_, (c, _))| *c)
            .expect("a full sketch has a minimum");
        self.counts.remove(&victim);
        self.counts.insert(item, (min + 1, min));
        1
    }

    /// Closes the window if it is over: flags whose item fell back below
    /// the challenge rate are lifted, others re-levelled.
    fn roll(&mut self, now_ms: u64) {
        let window = self.cfg.window_ms;
        if now_ms < self.window_start + window {
            return;
        }
        // No request at all for a whole window: every rate is zero.
        let idle = now_ms >= self.window_start + 2 * window;
        let secs = window as f64 / 1000.0;
        let counts = std::mem::take(&mut self.counts);
        let cfg = self.cfg;
        let mut lifted = 0;
        self.flags.retain(|item, level| {
            // Guaranteed count: the estimate minus its possible over-estimation.
            let guaranteed = counts.get(item).map_or(0, |(c, e)| c - e);
            let rate = if idle { 0.0 } else { guaranteed as f64 / secs };
            match level_for(&cfg, rate) {
                Some(l) => {
                    *level = l;
                    true
                }
                None => {
                    lifted += 1;
                    false
                }
            }
        });
        self.counters.lifted += lifted;
        self.window_start = if idle {
            now_ms
        } else {
            self.window_start + window
        };
    }

    /// Judges one request for `item` (a URL or client address hash).
    /// `token` is the `rcdn_challenge` value the client sent back, if any.
    pub fn check(&mut self, item: u64, token: Option<&str>, now_ms: u64) -> Verdict {
        self.roll(now_ms);
        let n = self.count(item);
        let secs = (now_ms - self.window_start).max(1000) as f64 / 1000.0;
        if let Some(l) = level_for(&self.cfg, n as f64 / secs) {
            let e = self.flags.entry(item).or_insert(l);
            *e = (*e).max(l);
        }
        match self.flags.get(&item) {
            None => {
                self.counters.passed += 1;
                Verdict::Pass
            }
            Some(Level::Block) => {
                self.counters.blocked += 1;
                Verdict::Block
            }
            Some(Level::Challenge) => self.challenge(item, token, now_ms),
        }
    }

    fn challenge(&mut self, item: u64, token: Option<&str>, now_ms: u64) -> Verdict {
        match token {
            None => {
                self.counters.challenged += 1;
                let expires = now_ms + self.cfg.token_ttl_ms;
                Verdict::Challenge(format!("{expires}.{}", self.mac(item, expires)))
            }
            Some(t) if self.token_ok(item, t, now_ms) => {
                self.counters.challenge_passed += 1;
                Verdict::Pass
            }
            Some(_) => {
                self.counters.challenge_failed += 1;
                Verdict::Block
            }
        }
    }

    fn mac(&self, item: u64, expires: u64) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        m.update(&item.to_le_bytes());
        m.update(&expires.to_le_bytes());
        let out = m.finalize().into_bytes();
        out[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn token_ok(&self, item: u64, token: &str, now_ms: u64) -> bool {
        let Some((exp, mac)) = token.split_once('.') else {
            return false;
        };
        let Ok(exp) = exp.parse::<u64>() else {
            return false;
        };
        let want = self.mac(item, exp);
        // Compare without an early exit, so timing does not leak the MAC.
        let same = want.len() == mac.len()
            && want
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
        exp >= now_ms && same
    }

    /// Items currently flagged (for the stats page).
    pub fn flagged(&self) -> usize {
        self.flags.len()
    }
}

fn level_for(cfg: &GuardConfig, rate: f64) -> Option<Level> {
    if rate >= cfg.block_rps {
        Some(Level::Block)
    } else if rate >= cfg.challenge_rps {
        Some(Level::Challenge)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        let cfg = GuardConfig {
            challenge_rps: 10.0,
            block_rps: 50.0,
            window_ms: 10_000,
            capacity: 16,
            token_ttl_ms: 5_000,
        };
        Guard::new(cfg, b"secret", 0).unwrap()
    }

    #[test]
    fn burst_is_challenged_then_blocked_then_lifted() {
        let mut g = guard();
        // 5 requests in the first second: below 10 rps.
        for _ in 0..5 {
            assert_eq!(g.check(1, None, 500), Verdict::Pass);
        }
        // A burst: at 1 s, the 10th request reaches 10 rps.
        let mut first_challenge = None;
        for i in 0..10 {
            if let Verdict::Challenge(t) = g.check(1, None, 1000) {
                first_challenge.get_or_insert((i, t));
            }
        }
        let (_, token) = first_challenge.expect("burst challenged");
        // A browser comes back with the token and passes.
        assert_eq!(g.check(1, Some(&token), 1500), Verdict::Pass);
        // A forged or stale token fails and is blocked.
        assert_eq!(g.check(1, Some("1.deadbeef"), 1500), Verdict::Block);
        assert_eq!(
            g.check(1, Some(&token), 7000),
            Verdict::Block,
            "expired token"
        );
        // Other URLs are untouched.
        assert_eq!(g.check(2, None, 7000), Verdict::Pass);
        // The flood goes on past 50 rps: blocked outright.
        for _ in 0..400 {
            g.check(1, None, 8000);
        }
        assert_eq!(g.check(1, None, 8000), Verdict::Block);
        // Next window, quiet: lifted.
        assert_eq!(g.check(1, None, 25_000), Verdict::Pass);
        let c = g.counters;
        assert!(c.challenged >= 1 && c.challenge_passed == 1 && c.challenge_failed == 2);
        assert!(c.blocked > 0 && c.lifted == 1);
    }

    #[test]
    fn a_flood_is_caught_among_many_distinct_urls() {
        let cfg = GuardConfig {
            capacity: 64,
            ..guard().cfg
        };
        let mut g = Guard::new(cfg, b"k", 0).unwrap();
        // 10,000 distinct one-off URLs (1,000 rps) through a 64-counter
        // sketch, with one URL at 30 rps hidden among them.
        let mut flagged = false;
        for i in 0..10_000u64 {
            let now = i; // 10 s of traffic, 1 request per ms
            g.check(1_000_000 + i, None, now);
            if i % 33 == 0 && g.check(7, None, now) != Verdict::Pass {
                flagged = true;
            }
        }
        assert!(flagged, "heavy hitter was tracked and flagged");
        assert!(g.counts.len() <= 64, "memory stays bounded");
        assert_eq!(g.flagged(), 1, "no one-off URL was flagged");
    }

    #[test]
    fn bad_thresholds_are_errors() {
        let ok = GuardConfig::default();
        let bad = [
            GuardConfig {
                challenge_rps: 0.0,
                ..ok
            },
            GuardConfig {
                challenge_rps: f64::NAN,
                ..ok
            },
            GuardConfig {
                block_rps: 1.0,
                ..ok
            },
            GuardConfig {
                window_ms: 10,
                ..ok
            },
            GuardConfig { capacity: 1, ..ok },
        ];
        for cfg in bad {
            assert!(Guard::new(cfg, b"k", 0).is_err(), "{cfg:?}");
        }
        assert!(Guard::new(ok, b"", 0).is_err());
    }
}
