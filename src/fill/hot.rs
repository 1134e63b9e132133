//! The hot cache: popular keys owned by other peers, mirrored here so a
//! download storm on one key does not all land on its owner. Bounded (its
//! own small byte budget) and admission-filtered: a value fetched from a peer
//! is admitted with probability 1/N (groupcache uses 1 in 10), so only keys
//! fetched again and again end up here, and a scan cannot flush it.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::{Cache, Commit, Config, Lookup, Meta, Purge, PurgeReport, Result};

/// A small cache with probabilistic admission.
pub struct HotCache {
    cache: Cache,
    one_in: u64,
    rng: AtomicU64,
}

impl HotCache {
    /// `mem` bytes (e.g. 1/8 of the main cache), admitting 1 in `one_in`.
    pub fn new(mem: u64, one_in: u64, seed: u64) -> Result<HotCache> {
        let cfg = Config {
            mem,
            shards: 1,
            ..Config::default()
        };
        Ok(HotCache {
            cache: Cache::open(cfg)?,
            one_in: one_in.max(1),
            rng: AtomicU64::new(seed | 1),
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Lookup> {
        self.cache.get(key)
    }

    /// xorshift64; races between threads only make it more random.
    fn roll(&self) -> u64 {
        let mut x = self.rng.load(Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Relaxed);
        x
    }

    /// Offers a value fetched from its owner; returns whether it was stored.
    pub fn offer(&self, key: &[u8], meta: Meta, body: Bytes) -> Result<bool> {
        if self.roll() % self.one_in != 0 || body.len() as u64 > self.cache.max_object() {
            return Ok(false);
        }
        Ok(self.cache.insert(key, meta, body)? == Commit::Stored)
    }

    /// Purges apply here too (the caller purges both caches).
    pub fn purge(&self, p: &Purge) -> Result<PurgeReport> {
        self.cache.purge(p)
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::now_ms;

    #[test]
    fn admits_about_one_in_n_and_stays_bounded() {
        let hot = HotCache::new(1 << 20, 10, 42).unwrap();
        let body = Bytes::from(vec![0u8; 1000]);
        let mut admitted = 0;
        for i in 0..5000 {
            let key = format!("k{i}");
            if hot
                .offer(
                    key.as_bytes(),
                    Meta::with_ttl(now_ms(), 60_000),
                    body.clone(),
                )
                .unwrap()
            {
                admitted += 1;
            }
        }
        assert!((350..650).contains(&admitted), "about 1 in 10: {admitted}");
        assert!(hot.cache().counters().bytes_used <= 1 << 20);
    }

    #[test]
    fn a_key_offered_repeatedly_gets_in_and_purges_apply() {
        let hot = HotCache::new(1 << 20, 10, 7).unwrap();
        let meta = || Meta::with_ttl(now_ms(), 60_000);
        let tries = (0..200)
            .position(|_| {
                hot.offer(b"popular", meta(), Bytes::from_static(b"v"))
                    .unwrap()
            })
            .expect("admitted within 200 offers");
        assert!(tries < 200);
        assert!(hot.get(b"popular").unwrap().is_fresh());
        hot.purge(&Purge::Key(b"popular".to_vec())).unwrap();
        assert!(!hot.get(b"popular").unwrap().is_fresh());
    }
}
