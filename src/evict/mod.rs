//! Eviction policies. The memory tier uses ARC; block tiers (later) recycle
//! whole regions FIFO.

pub mod arc;

pub use arc::{ArcCache, ArcStats, Which};
