//! Filling the cache on a miss. `singleflight` makes concurrent fills of one
//! key share a single call of the (possibly slow, possibly remote) getter, as
//! groupcache does.

pub mod singleflight;

pub use singleflight::{Group, Reentrant};
