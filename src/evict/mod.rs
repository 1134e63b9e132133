//! Eviction policies. ARC decides what the memory tier keeps (nodes on the
//! heap) and what the shared RAM tier keeps (nodes in a mapped directory
//! every process shares); block tiers recycle whole regions FIFO.

pub mod arc;
pub mod core;
pub mod shared;

pub use arc::{ArcCache, ArcStats, Which};
