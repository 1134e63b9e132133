//! Per-request policies around the cache: hotlink protection, the rate
//! guard, the scheduler, traffic statistics and their push, the request
//! log, the node status page. They read the cache only through its face.
//!
//! `attack` is `rcdn_guard` (the anti-attack rate guard) and `attack_zone`
//! its shared zone; `base::guard` is something else (the panic walls).

mod attack;
mod attack_zone;
mod hotlink;
mod hotlink_url;
mod http_get;
mod node_status;
mod reqlog;
mod schedule;
mod stats;
mod stats_push;

// The face: what lib.rs wires (phase handlers, directive setters, zones).
pub use attack::{access as guard_access, set_guard};
pub use attack_zone::DEFAULT_SIZE as GUARD_ZONE_SIZE;
pub use attack_zone::{add_zone as add_guard_zone, set_zone as set_guard_zone};
pub use hotlink::{access as hotlink_access, set_hotlink, set_unknown as set_hotlink_unknown};
pub use hotlink_url::set_url as set_hotlink_url;
pub use node_status::set_status as set_node_status;
pub use reqlog::{register as register_reqlog, set_node_name};
pub use schedule::{access as schedule_access, set_scheduler};
pub use stats::{fill_done as count_fill, log_phase as stats_log_phase};
pub use stats::{set_stats, set_zone as set_stats_zone};
pub use stats_push::set_push as set_stats_push;
