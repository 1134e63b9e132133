//! Groupcache-style fill: which peer owns a key, and (later) the load path
//! that asks it, with singleflight and a hot cache.

pub mod hot;
pub mod peer;
pub mod ring;

pub use ring::{NodeId, Ring, RingError};
