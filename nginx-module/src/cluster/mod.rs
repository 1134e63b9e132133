//! A cluster of nodes (issue 6): which node fills a key, by the engine's
//! consistent-hash ring over node ids (`cdncore::fill::Ring`).
//!
//! Directives (http): `rcdn_node <id>`, `rcdn_peer <id> <host:port>`
//! (repeated, this node included), `rcdn_origin <upstream | host:port>`,
//! `rcdn_peer_timeout <time>`, `rcdn_peer_down <time>`, `rcdn_drain on|off`.
//! A reload changes them (new workers build a new ring).
//!
//! Each worker keeps its own view of the ring; the peers found down, and
//! until when, are shared by the node's workers (`shm`). A down peer's keys go to their next live node on the ring
//! (every node that saw it down computes the same successor), so a dead
//! node costs the origin one fetch per key, not one per asking node.
//!
//! Here: `directives`: the setters (the configuration and its checks are
//! `crate::conf::ClusterConf`); `view`: each worker's ring view, routing
//! and down marks; `shm`: the peer-health zone; `peer`: the peer protocol
//! (headers, owner checks, `rcdn_peer_status`); `fanout`: purges sent on
//! to every peer.

mod directives;
pub mod fanout;
pub mod peer;
mod shm;
mod view;

pub use directives::*;
pub use shm::add_zone;
pub use view::*;
