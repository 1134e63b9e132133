//! groupcache's load path as one engine object: main cache, then the hot
//! cache, then the key's owner peer (if it is another node and up), else the
//! local getter (the origin fetch). Concurrent loads of one key share one
//! fetch. A failed peer fetch (its own timeout included) marks the peer down
//! for a while and the key is loaded locally instead; one that answers but
//! overruns its time limit is used, and the peer marked down all the same.
//!
//! What is loaded here for a key this node owns (or loads because its owner
//! failed) goes to the main cache; what an owner peer sent is only offered to
//! the bounded, admission-filtered hot cache.

use bytes::Bytes;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;

use super::hot::HotCache;
use super::peer::{Peers, Route};
use super::singleflight::Group;
use crate::{now_ms, Cache, Commit, Error, Lookup, Meta, Object, Purge, PurgeReport};

/// A loaded response: metadata and body.
pub type Fetched = (Meta, Bytes);

/// Produces a key this node loads itself (the origin fetch).
pub trait Getter: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Fetched, String>;
}

/// Asks the owner peer for a key (with the hop header set, so the owner
/// never forwards it). Must give up after `timeout_ms` with an error.
pub trait PeerFetcher: Send + Sync {
    fn fetch(&self, peer: &str, addr: &str, key: &[u8], timeout_ms: u64)
        -> Result<Fetched, String>;
}

impl<F: Fn(&[u8]) -> Result<Fetched, String> + Send + Sync> Getter for F {
    fn get(&self, key: &[u8]) -> Result<Fetched, String> {
        self(key)
    }
}

impl<F: Fn(&str, &str, &[u8], u64) -> Result<Fetched, String> + Send + Sync> PeerFetcher for F {
    fn fetch(
        &self,
        peer: &str,
        addr: &str,
        key: &[u8],
        timeout_ms: u64,
    ) -> Result<Fetched, String> {
        self(peer, addr, key, timeout_ms)
    }
}

/// Why a load failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("getter failed: {0}")]
    Getter(String),
    #[error(transparent)]
    Cache(#[from] Error),
    #[error("load of a key from inside its own load (it would wait on itself)")]
    Reentrant,
    #[error("purges dropped the loaded object {0} times in a row")]
    PurgedDuringFill(usize),
}

/// Where a load's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    Hot,
    /// Fetched from this owner peer (by id).
    Peer(String),
    /// The local getter.
    Local,
}

/// The answer to a load.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The object: the cached one on a hit (no copy), else a detached one
    /// holding what was fetched.
    pub object: Arc<Object>,
    pub source: Source,
    /// Another concurrent load ran the fetch; this one waited for it.
    pub shared: bool,
}

/// Tunables of a [`Loader`].
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// How long a failed peer is skipped.
    pub down_ms: u64,
    /// Passed to the peer fetcher as its time limit.
    pub peer_timeout_ms: u64,
    /// Hot cache bytes; 0 means 1/8 of the main cache's memory.
    pub hot_mem: u64,
    /// Hot cache admits 1 in this many offers.
    pub hot_one_in: u64,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            down_ms: 10_000,
            peer_timeout_ms: 2_000,
            hot_mem: 0,
            hot_one_in: 10,
        }
    }
}

/// What the loader did, since it was made. `repr(C)`: the C ABI hands it
/// out as `cdn_loader_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderCounters {
    pub cache_hits: u64,
    pub hot_hits: u64,
    pub peer_loads: u64,
    pub peer_errors: u64,
    pub local_loads: u64,
    pub local_errors: u64,
    /// Loads that waited for another concurrent load of the same key.
    pub shared: u64,
}

#[derive(Default)]
struct Ctr {
    cache_hits: AtomicU64,
    hot_hits: AtomicU64,
    peer_loads: AtomicU64,
    peer_errors: AtomicU64,
    local_loads: AtomicU64,
    local_errors: AtomicU64,
    shared: AtomicU64,
}

/// Local stores attempted when purges keep dropping the loaded body.
const ATTEMPTS: usize = 3;

type Flight = Result<(Arc<Object>, Source), LoadError>;

/// The load path of one node.
pub struct Loader {
    cache: Cache,
    hot: HotCache,
    peers: RwLock<Option<Peers>>,
    getter: Box<dyn Getter>,
    fetcher: Option<Box<dyn PeerFetcher>>,
    flights: Group<Box<[u8]>, Flight>,
    opts: LoaderOptions,
    ctr: Ctr,
    /// Purges made through [`Loader::purge`]: a peer answer that a purge
    /// overtook is served but not mirrored in the hot cache.
    purges: AtomicU64,
}

impl Loader {
    /// A loader over `cache`; with `peers` and a `fetcher`, keys owned by
    /// other nodes are asked of them.
    pub fn new(
        cache: Cache,
        peers: Option<Peers>,
        getter: Box<dyn Getter>,
        fetcher: Option<Box<dyn PeerFetcher>>,
        opts: LoaderOptions,
    ) -> Result<Loader, Error> {
        let hot_mem = match opts.hot_mem {
            0 => (cache.config().mem / 8).max(1 << 16),
            n => n,
        };
        let hot = HotCache::new(hot_mem, opts.hot_one_in, now_ms() ^ 0x9E37_79B9_7F4A_7C15)?;
        Ok(Loader {
            cache,
            hot,
            peers: RwLock::new(peers),
            getter,
            fetcher,
            flights: Group::new(),
            opts,
            ctr: Ctr::default(),
            purges: AtomicU64::new(0),
        })
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn hot(&self) -> &HotCache {
        &self.hot
    }

    /// Replaces the peer set (a reload); down marks start afresh.
    pub fn set_peers(&self, peers: Option<Peers>) {
        *self.peers.write() = peers;
    }

    /// Is this peer marked down at `now`?
    pub fn is_down(&self, id: &str, now: u64) -> bool {
        self.peers
            .read()
            .as_ref()
            .is_some_and(|p| p.is_down(id, now))
    }

    /// The owner of a key on the current ring (None without peers).
    pub fn owner(&self, key: &[u8]) -> Option<String> {
        self.peers.read().as_ref()?.owner(key).map(str::to_string)
    }

    /// Loads `key`. `from_peer`: the request came from another node (hop
    /// header), so it is never forwarded again.
    pub fn load(&self, key: &[u8], from_peer: bool) -> Result<Loaded, LoadError> {
        if let Some(hit) = self.lookup(key)? {
            return Ok(hit);
        }
        let run = self
            .flights
            .run(key.into(), || self.lead(key, from_peer))
            .map_err(|_| LoadError::Reentrant)?;
        if run.shared {
            self.ctr.shared.fetch_add(1, Relaxed);
        }
        let (object, source) = run.value?;
        Ok(Loaded {
            object,
            source,
            shared: run.shared,
        })
    }

    /// A fresh copy in the main or the hot cache.
    fn lookup(&self, key: &[u8]) -> Result<Option<Loaded>, LoadError> {
        let hit = |object, source| Loaded {
            object,
            source,
            shared: false,
        };
        if let Lookup::Fresh(o) = self.cache.get(key)? {
            self.ctr.cache_hits.fetch_add(1, Relaxed);
            return Ok(Some(hit(o, Source::Cache)));
        }
        if let Lookup::Fresh(o) = self.hot.get(key)? {
            self.ctr.hot_hits.fetch_add(1, Relaxed);
            return Ok(Some(hit(o, Source::Hot)));
        }
        Ok(None)
    }

    /// Runs the one fetch of a flight.
    fn lead(&self, key: &[u8], from_peer: bool) -> Flight {
        // A flight that just ended may have stored it.
        if let Some(hit) = self.lookup(key)? {
            return Ok((hit.object, hit.source));
        }
        if let Some((id, addr)) = self.peer_route(key, from_peer) {
            if let Some(f) = self.ask_owner(key, &id, &addr) {
                return Ok(f);
            }
        }
        self.local(key)
    }

    /// The owner to ask, if it is another node, up, and a fetcher exists.
    fn peer_route(&self, key: &[u8], from_peer: bool) -> Option<(String, String)> {
        self.fetcher.as_ref()?;
        let peers = self.peers.read();
        match peers.as_ref()?.route(key, from_peer, now_ms()) {
            Route::Peer(id, addr) => Some((id.to_string(), addr.to_string())),
            Route::Local => None,
        }
    }

    /// Fetches from the owner; on failure marks it down and returns None.
    fn ask_owner(&self, key: &[u8], id: &str, addr: &str) -> Option<(Arc<Object>, Source)> {
        let fetcher = self.fetcher.as_ref()?;
        let started = std::time::Instant::now();
        let epoch = self.purges.load(SeqCst);
        let got = fetcher.fetch(id, addr, key, self.opts.peer_timeout_ms);
        // A fetcher that overran its time limit still answered: use the
        // answer, but skip the slow peer for a while.
        if started.elapsed().as_millis() > u128::from(self.opts.peer_timeout_ms) {
            self.mark_down(id);
        }
        match got {
            Ok((meta, body)) => {
                self.ctr.peer_loads.fetch_add(1, Relaxed);
                // Offered only: a refused or failed offer still serves the value.
                if self.purges.load(SeqCst) == epoch {
                    let _ = self.hot.offer(key, meta.clone(), body.clone());
                }
                let obj = Arc::new(Object::detached(key, meta, body));
                Some((obj, Source::Peer(id.to_string())))
            }
            Err(_) => {
                self.ctr.peer_errors.fetch_add(1, Relaxed);
                self.mark_down(id);
                None
            }
        }
    }

    fn mark_down(&self, id: &str) {
        if let Some(p) = self.peers.write().as_mut() {
            p.mark_down(id, now_ms(), self.opts.down_ms);
        }
    }

    /// Calls the getter and stores its value in the main cache. The writer
    /// is opened before the getter runs, so a purge landing during the
    /// fetch drops the (possibly outdated) body and the getter runs again.
    fn local(&self, key: &[u8]) -> Flight {
        for _ in 0..ATTEMPTS {
            let mut w = self.cache.writer(key, Meta::default())?;
            let (meta, body) = self.getter.get(key).map_err(|e| {
                self.ctr.local_errors.fetch_add(1, Relaxed);
                LoadError::Getter(e)
            })?;
            self.ctr.local_loads.fetch_add(1, Relaxed);
            *w.meta_mut() = meta.clone();
            if body.len() as u64 > self.cache.max_object() {
                // Too large for the cache: serve it uncached.
                w.abort();
                return Ok((Arc::new(Object::detached(key, meta, body)), Source::Local));
            }
            w.write(&body)?;
            if w.commit()? == Commit::Stored {
                return Ok((Arc::new(Object::detached(key, meta, body)), Source::Local));
            }
        }
        Err(LoadError::PurgedDuringFill(ATTEMPTS))
    }

    /// Purges both the main and the hot cache; reports the main cache's.
    pub fn purge(&self, p: &Purge) -> Result<PurgeReport, Error> {
        self.purges.fetch_add(1, SeqCst);
        self.hot.purge(p)?;
        self.cache.purge(p)
    }

    pub fn counters(&self) -> LoaderCounters {
        let c = &self.ctr;
        LoaderCounters {
            cache_hits: c.cache_hits.load(Relaxed),
            hot_hits: c.hot_hits.load(Relaxed),
            peer_loads: c.peer_loads.load(Relaxed),
            peer_errors: c.peer_errors.load(Relaxed),
            local_loads: c.local_loads.load(Relaxed),
            local_errors: c.local_errors.load(Relaxed),
            shared: c.shared.load(Relaxed),
        }
    }
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
