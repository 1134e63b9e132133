//! The cache: lookup, serving hits, fills and their filters, collapsed
//! misses, read-while-writer streams, variants, slices, the purge endpoint.
//!
//! Request flow (main requests in a location with `rcdn_cache on`):
//! - precontent phase (`lookup`): evaluate the key, look it up; a hit swaps
//!   the content handler for `serve`; a miss starts one background fill
//!   subrequest per key (`fill`) and waits for it (`collapse`);
//! - the fill subrequest runs the location's `proxy_pass`; the filters in
//!   `filter` stream its body into an engine `Writer` and commit it;
//! - waiters wake and are served from the cache.
//!
//! Its face (below) is what `lib.rs` wires and what the policies read.

mod body;
mod collapse;
mod ctx;
mod fill;
mod filter;
mod interim;
mod invalidate;
mod lookup;
mod pass;
mod peer_vars;
mod persist;
mod purge;
mod rfc;
mod serve;
mod slice;
mod status;
mod stream;
mod variant;

pub use ctx::ReqCtx;
pub use fill::on_done as on_fill_done;
pub use filter::install as install_filters;
pub use lookup::precontent;
pub use peer_vars::register_variables as register_peer_variables;
pub use purge::set_purge;
pub use status::{register_variables, CacheStatus};
