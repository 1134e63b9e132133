//! Groupcache-style fill: which peer owns a key (`ring`, `peer`), concurrent
//! fills of one key sharing a single getter call (`singleflight`), and a hot
//! cache for popular keys owned elsewhere (`hot`), and "fill in progress"
//! markers shared between processes (`lock`).

pub mod hot;
pub mod lock;
pub mod peer;
pub mod ring;
pub mod singleflight;

pub use ring::{NodeId, Ring, RingError};
pub use singleflight::{Group, Reentrant};
pub mod group;
pub use group::{Fetched, LoadError, Loaded, Loader, LoaderCounters, LoaderOptions, Source};
pub mod wire;
