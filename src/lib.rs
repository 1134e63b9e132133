//! libcdncore: the rcdn cache engine.
//!
//! A [`Cache`] is opened from a [`Config`] (or its textual form). Lookups
//! return a [`Lookup`] that is fresh, stale or a miss; bodies are
//! `bytes::Bytes`, handed out without copying. Inserts stream through a
//! [`Writer`] and become visible only on commit. [`Purge`] by key, prefix,
//! group, tag, surrogate key, mask, regex or everything costs O(1) at call
//! time and is visible to the next lookup.
//!
//! ```
//! use cdncore::{Cache, Meta, Purge, now_ms};
//! let cache = Cache::open_str("mem=64m").unwrap();
//! let mut meta = Meta::with_ttl(now_ms(), 60_000);
//! meta.tags = vec![7];
//! let mut w = cache.writer(b"example.com/a.jpg", meta).unwrap();
//! w.write(b"hello ").unwrap();
//! w.write(b"world").unwrap();
//! w.commit().unwrap();
//! let hit = cache.get(b"example.com/a.jpg").unwrap();
//! assert_eq!(&hit.object().unwrap().body()[..], b"hello world");
//! cache.purge(&Purge::Tag(7)).unwrap();
//! assert!(cache.get(b"example.com/a.jpg").unwrap().object().is_none());
//! ```

pub mod cache;
pub mod config;
pub mod error;
pub mod evict;
pub mod ffi;
pub mod fill;
mod heap;
pub mod http;
pub mod key;
pub mod meta;
mod object;
pub mod policy;
pub mod purge;
pub mod stats;
pub mod through;
pub mod writer;

pub use cache::{Cache, Commit, Lookup, Object};
pub use config::Config;
pub use error::{Error, Result};
pub use key::KeyHash;
pub use meta::{now_ms, Freshness, Meta, UnixMs};
pub use purge::{Purge, PurgeReport};
pub use stats::Counters;
pub use through::WriteThrough;
pub use writer::Writer;
pub mod block;
