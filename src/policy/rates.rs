//! The anti-attack guard over words shared by processes (nginx workers):
//! exact per-item request counts (a URL, or a client address) in a bounded
//! open-addressing table of `AtomicU64` words, so a burst spread over
//! several workers is seen as one burst; the same escalation as
//! [`super::guard`]: a 302 challenge above the first rate, a block above the
//! second (or on a failed challenge), re-examined every window.
//!
//! Each item keeps its own window, started by its first request: the rate
//! is the window's count over the time since it started (at least 1 s), so
//! a burst of N requests within a second is N req/s whichever worker saw
//! them. When a window ends, the item's level for the next window is set
//! from the rate of the one that ended (lifted when it fell below the
//! challenge rate; an item idle for a whole window is lifted).
//!
//! Memory is bounded by the table: an item takes a free slot or recycles
//! one that no longer tells anything (idle for a window, or a single
//! request in an ended window, unflagged). When neither is found within
//! [`PROBE`] slots the request passes uncounted and `full` says so.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering::*};

use super::guard::Verdict;
use super::PolicyError;
use crate::purge::Words;

const HEADER: usize = 4;
const H_FULL: usize = 0;
const H_LIFTED: usize = 1;
const SLOT: usize = 4;
const KEY: usize = 0;
/// Window start in ms + 1 (0: none yet), or `BUSY` while rolled over.
const START: usize = 1;
const COUNT: usize = 2;
const LEVEL: usize = 3;
const BUSY: u64 = u64::MAX;
/// Slots looked at for an item before the table counts as full.
pub const PROBE: usize = 32;
const SPINS: u32 = 1 << 20;

const NONE: u64 = 0;
const CHALLENGE: u64 = 1;
const BLOCK: u64 = 2;

/// Thresholds of one kind of item, in requests per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub challenge_rps: f64,
    pub block_rps: f64,
    pub window_ms: u64,
}

impl Limits {
    pub fn validate(&self, what: &str) -> Result<(), PolicyError> {
        let bad = |r: &str| Err(PolicyError::new(what, r.to_string()));
        if !(self.challenge_rps > 0.0 && self.challenge_rps.is_finite()) {
            return bad("challenge threshold must be a positive number");
        }
        if !(self.block_rps >= self.challenge_rps && self.block_rps.is_finite()) {
            return bad("block threshold must be at least the challenge threshold");
        }
        if self.window_ms < 1000 {
            return bad("window must be at least 1s");
        }
        Ok(())
    }

    fn level(&self, rate: f64) -> u64 {
        if rate >= self.block_rps {
            BLOCK
        } else if rate >= self.challenge_rps {
            CHALLENGE
        } else {
            NONE
        }
    }
}

/// The table is full: the request was not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Per-item windowed counters in (shared) words.
pub struct Rates {
    store: Box<dyn Words>,
    slots: usize,
}

impl Rates {
    /// Words a table of `slots` items needs.
    pub fn words_needed(slots: usize) -> usize {
        HEADER + slots * SLOT
    }

    /// The most slots that fit in `words` words.
    pub fn slots_for(words: usize) -> usize {
        words.saturating_sub(HEADER) / SLOT
    }

    /// A table on the process heap.
    pub fn new(slots: usize) -> Self {
        let words: Box<[AtomicU64]> = (0..Self::words_needed(slots.max(1)))
            .map(|_| AtomicU64::new(0))
            .collect();
        Rates {
            store: Box::new(words),
            slots: slots.max(1),
        }
    }

    /// A table in caller-provided (e.g. shared, zeroed) words.
    pub fn attach(store: Box<dyn Words>) -> Result<Self, PolicyError> {
        let slots = Self::slots_for(store.words().len());
        if slots == 0 {
            return Err(PolicyError::new("guard zone", "too small for one item"));
        }
        Ok(Rates { store, slots })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Requests that found no slot (passed uncounted).
    pub fn full(&self) -> u64 {
        self.w()[H_FULL].load(Relaxed)
    }

    /// Flags lifted at a window's end.
    pub fn lifted(&self) -> u64 {
        self.w()[H_LIFTED].load(Relaxed)
    }

    fn w(&self) -> &[AtomicU64] {
        self.store.words()
    }

    fn at(&self, i: usize, f: usize) -> &AtomicU64 {
        &self.w()[HEADER + i * SLOT + f]
    }

    /// Counts one request for `item` at `now_ms`; returns its level:
    /// 0 pass, 1 challenge, 2 block.
    pub fn hit(&self, item: u64, lim: &Limits, now_ms: u64) -> Result<u64, Full> {
        let key = item.max(1);
        for _ in 0..2 {
            let i = self.slot_of(key, lim, now_ms).ok_or_else(|| {
                self.w()[H_FULL].fetch_add(1, Relaxed);
                Full
            })?;
            let Some(start) = self.roll(i, lim, now_ms) else {
                return Ok(self.at(i, LEVEL).load(Acquire));
            };
            if self.at(i, KEY).load(Acquire) != key {
                continue; // recycled for another item meanwhile: look again
            }
            let n = self.at(i, COUNT).fetch_add(1, AcqRel) + 1;
            let secs = now_ms.saturating_sub(start).max(1000) as f64 / 1000.0;
            let level = lim.level(n as f64 / secs);
            // A read when nothing rises: no write to a line other
            // processes read for every request of the item.
            let flag = self.at(i, LEVEL);
            let prev = if level == NONE {
                flag.load(Acquire)
            } else {
                flag.fetch_max(level, AcqRel)
            };
            return Ok(prev.max(level));
        }
        Err(Full)
    }

    /// The item's slot: found, claimed, or recycled.
    fn slot_of(&self, key: u64, lim: &Limits, now_ms: u64) -> Option<usize> {
        let mut spare = None;
        for p in 0..PROBE.min(self.slots) {
            let i = (key as usize).wrapping_add(p) % self.slots;
            match self.at(i, KEY).load(Acquire) {
                k if k == key => return Some(i),
                0 => match self.at(i, KEY).compare_exchange(0, key, AcqRel, Acquire) {
                    Ok(_) => return Some(i),
                    Err(k) if k == key => return Some(i),
                    Err(_) => {}
                },
                _ if spare.is_none() && self.spent(i, lim, now_ms).is_some() => spare = Some(i),
                _ => {}
            }
        }
        let i = spare?;
        self.recycle(i, key, lim, now_ms).then_some(i)
    }

    /// `Some(start word)` when slot `i` tells nothing any more: idle for a
    /// whole window, or one request in an ended window and not flagged.
    fn spent(&self, i: usize, lim: &Limits, now_ms: u64) -> Option<u64> {
        let s = self.at(i, START).load(Acquire);
        if s == BUSY || s == 0 {
            return None;
        }
        let end = (s - 1).saturating_add(lim.window_ms);
        let idle = now_ms >= end.saturating_add(lim.window_ms);
        let single = now_ms >= end
            && self.at(i, COUNT).load(Acquire) <= 1
            && self.at(i, LEVEL).load(Acquire) == NONE;
        (idle || single).then_some(s)
    }

    fn recycle(&self, i: usize, key: u64, lim: &Limits, now_ms: u64) -> bool {
        let Some(s) = self.spent(i, lim, now_ms) else {
            return false;
        };
        if self
            .at(i, START)
            .compare_exchange(s, BUSY, AcqRel, Acquire)
            .is_err()
        {
            return false;
        }
        self.at(i, KEY).store(key, Release);
        self.at(i, COUNT).store(0, Release);
        self.at(i, LEVEL).store(NONE, Release);
        self.at(i, START).store(now_ms + 1, Release);
        true
    }

    /// Starts the slot's next window if its current one is over; returns
    /// the current window's start (`None` if another process holds the
    /// slot far too long, e.g. it died mid-roll: then nothing is counted).
    fn roll(&self, i: usize, lim: &Limits, now_ms: u64) -> Option<u64> {
        let w = lim.window_ms;
        for _ in 0..SPINS {
            let s = self.at(i, START).load(Acquire);
            if s == BUSY {
                std::hint::spin_loop();
                continue;
            }
            if s != 0 && now_ms < (s - 1).saturating_add(w) {
                return Some(s - 1);
            }
            if self
                .at(i, START)
                .compare_exchange(s, BUSY, AcqRel, Acquire)
                .is_err()
            {
                continue;
            }
            let old = self.at(i, LEVEL).load(Acquire);
            let (start, level) = if s == 0 || now_ms >= (s - 1).saturating_add(2 * w) {
                (now_ms, NONE)
            } else {
                let rate = self.at(i, COUNT).load(Acquire) as f64 * 1000.0 / w as f64;
                ((s - 1) + w, lim.level(rate))
            };
            if old != NONE && level == NONE {
                self.w()[H_LIFTED].fetch_add(1, Relaxed);
            }
            self.at(i, COUNT).store(0, Release);
            self.at(i, LEVEL).store(level, Release);
            self.at(i, START).store(start + 1, Release);
            return Some(start);
        }
        None
    }
}

/// An item id for a URL or client address from its parts (xxh3 with a
/// fixed seed: the same item in every process).
pub fn item_id(parts: &[&[u8]]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.digest()
}

/// The guard over a shared [`Rates`] table: per-URL and, optionally,
/// per-client-address limits, and challenge tokens bound to both.
pub struct SharedGuard {
    pub rates: Rates,
    secret: Vec<u8>,
    pub token_ttl_ms: u64,
}

/// An item and the limits it is judged by.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub id: u64,
    pub limits: &'a Limits,
}

impl SharedGuard {
    pub fn new(rates: Rates, secret: &[u8], token_ttl_ms: u64) -> Result<Self, PolicyError> {
        if secret.is_empty() {
            return Err(PolicyError::new("guard", "challenge secret is empty"));
        }
        Ok(SharedGuard {
            rates,
            secret: secret.to_vec(),
            token_ttl_ms,
        })
    }

    /// Judges one request for `url` from `client` (if client limits are
    /// set). `token` is the `rcdn_challenge` value sent back, if any. A
    /// full table passes the request (and counts it in `full`).
    pub fn check(
        &self,
        url: Item,
        client: Option<Item>,
        token: Option<&str>,
        now_ms: u64,
    ) -> Verdict {
        let lu = self.rates.hit(url.id, url.limits, now_ms).unwrap_or(NONE);
        let lc = client.map_or(NONE, |c| {
            self.rates.hit(c.id, c.limits, now_ms).unwrap_or(NONE)
        });
        let bind = client.map_or(0, |c| c.id);
        match lu.max(lc) {
            NONE => Verdict::Pass,
            BLOCK => Verdict::Block,
            _ => match token {
                None => {
                    let exp = now_ms + self.token_ttl_ms;
                    Verdict::Challenge(format!("{exp}.{}", self.mac(url.id, bind, exp)))
                }
                Some(t) if self.token_ok(url.id, bind, t, now_ms) => Verdict::Pass,
                Some(_) => Verdict::Block,
            },
        }
    }

    fn mac(&self, url: u64, client: u64, expires: u64) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        m.update(&url.to_le_bytes());
        m.update(&client.to_le_bytes());
        m.update(&expires.to_le_bytes());
        let out = m.finalize().into_bytes();
        out[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn token_ok(&self, url: u64, client: u64, token: &str, now_ms: u64) -> bool {
        let Some((exp, mac)) = token.split_once('.') else {
            return false;
        };
        let Ok(exp) = exp.parse::<u64>() else {
            return false;
        };
        let want = self.mac(url, client, exp);
        // No early exit, so timing does not leak the MAC.
        let same = want.len() == mac.len()
            && want
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
        exp >= now_ms && same
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LIM: Limits = Limits {
        challenge_rps: 10.0,
        block_rps: 50.0,
        window_ms: 10_000,
    };

    #[test]
    fn levels_rise_with_the_rate_and_are_lifted_after_the_window() {
        let r = Rates::new(64);
        // 9 requests in the first second: below 10 rps; the 10th is not.
        for _ in 0..9 {
            assert_eq!(r.hit(7, &LIM, 1000), Ok(NONE));
        }
        assert_eq!(r.hit(7, &LIM, 1500), Ok(CHALLENGE));
        // The flag stays for the window even as the rate averages down.
        assert_eq!(r.hit(7, &LIM, 9000), Ok(CHALLENGE));
        for _ in 0..40 {
            r.hit(7, &LIM, 1900).unwrap();
        }
        assert_eq!(r.hit(7, &LIM, 1900), Ok(BLOCK));
        assert_eq!(r.hit(8, &LIM, 1900), Ok(NONE), "other items untouched");
        // Next window: 52 requests in 10 s = 5.2 rps -> lifted.
        assert_eq!(r.hit(7, &LIM, 11_500), Ok(NONE));
        assert_eq!(r.lifted(), 1);
    }

    #[test]
    fn a_hot_window_keeps_the_flag_into_the_next() {
        let r = Rates::new(64);
        for _ in 0..600 {
            r.hit(1, &LIM, 5000).unwrap(); // 600 in 10 s = 60 rps
        }
        assert_eq!(r.hit(1, &LIM, 12_000), Ok(BLOCK), "re-levelled, not lifted");
        // Idle for a whole window: lifted.
        assert_eq!(r.hit(1, &LIM, 45_000), Ok(NONE));
    }

    #[test]
    fn processes_sharing_the_words_count_exactly() {
        let r = Arc::new(Rates::new(256));
        let lim = Limits {
            challenge_rps: 1e9,
            block_rps: 1e9,
            window_ms: 60_000,
        };
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..4000u64 {
                        r.hit(i % 8, &lim, 1000).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let total: u64 = (0..r.slots).map(|i| r.at(i, COUNT).load(Relaxed)).sum();
        assert_eq!(total, 16_000);
        // The 2001st request of an item within 1 s is 2001 rps.
        let tight = Limits {
            challenge_rps: 2001.0,
            ..lim
        };
        assert_eq!(r.hit(3, &tight, 1000), Ok(CHALLENGE));
    }

    #[test]
    fn a_full_table_says_so_and_recycles_spent_slots() {
        let r = Rates::new(16);
        for i in 0..16u64 {
            r.hit(100 + i, &LIM, 0).unwrap();
            r.hit(100 + i, &LIM, 0).unwrap(); // two requests: not recyclable
        }
        assert_eq!(r.hit(999, &LIM, 0), Err(Full));
        assert_eq!(r.full(), 1);
        // After a whole idle window every slot is spent.
        assert_eq!(r.hit(999, &LIM, 20_000), Ok(NONE));
        let one_off = Rates::new(16);
        for i in 0..16u64 {
            one_off.hit(100 + i, &LIM, 0).unwrap();
        }
        assert_eq!(
            one_off.hit(999, &LIM, 10_000),
            Ok(NONE),
            "single hits recycled"
        );
    }

    #[test]
    fn challenge_tokens_bind_url_and_client() {
        let g = SharedGuard::new(Rates::new(64), b"k", 5000).unwrap();
        let ip = Limits {
            challenge_rps: 5.0,
            block_rps: 20.0,
            window_ms: 10_000,
        };
        let url = |id| Item { id, limits: &LIM };
        let client = |id| Some(Item { id, limits: &ip });
        // One client on many URLs: its own rate flags it.
        let mut token = None;
        for u in 0..5 {
            if let Verdict::Challenge(t) = g.check(url(u), client(1), None, 100) {
                token = Some((u, t));
            }
        }
        let (u, t) = token.expect("challenged by the client rate");
        assert_eq!(g.check(url(u), client(1), Some(&t), 200), Verdict::Pass);
        assert_eq!(
            g.check(url(u + 1), client(1), Some(&t), 200),
            Verdict::Block,
            "other URL"
        );
        assert_eq!(
            g.check(url(u), client(2), Some(&t), 200),
            Verdict::Pass,
            "client 2 is not flagged"
        );
        assert_eq!(
            g.check(url(u), client(1), Some(&t), 9000),
            Verdict::Block,
            "expired"
        );
        // Another client is unaffected.
        assert_eq!(g.check(url(50), client(2), None, 300), Verdict::Pass);
        for _ in 0..30 {
            g.check(url(60), client(1), None, 400);
        }
        assert_eq!(g.check(url(61), client(1), None, 400), Verdict::Block);
        assert!(SharedGuard::new(Rates::new(1), b"", 1).is_err());
        assert!(Limits {
            window_ms: 10,
            ..LIM
        }
        .validate("x")
        .is_err());
        assert!(Limits {
            block_rps: 1.0,
            ..LIM
        }
        .validate("x")
        .is_err());
    }
}
