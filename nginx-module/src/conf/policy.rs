//! What the policy directives (`rcdn_hotlink*`, `rcdn_guard*`,
//! `rcdn_scheduler`, `rcdn_stats*`) store in the configuration; their
//! setters live with each policy in `crate::policy`.

use cdncore::policy::hotlink::{Hotlink, Unknown};
use cdncore::policy::rates::Limits;
use cdncore::policy::sched::Scheduler;
use core::ptr;
use nginx_sys::ngx_shm_zone_t;
use std::sync::Arc;

/// The hotlink part of a location's configuration.
#[derive(Default)]
pub struct HotlinkConf {
    /// Compiled policies; `None` = no check here.
    pub policy: Option<Arc<Hotlink>>,
    /// `rcdn_hotlink_unknown`: `None` = unset (inherit; default allow).
    pub unknown: Option<Unknown>,
    /// `rcdn_hotlink_url`: policies of domains not in the file.
    pub url: Option<Arc<UrlConf>>,
}

impl HotlinkConf {
    pub fn merge(&mut self, prev: &HotlinkConf) {
        if self.policy.is_none() {
            self.policy = prev.policy.clone();
        }
        if self.unknown.is_none() {
            self.unknown = prev.unknown;
        }
        if self.url.is_none() {
            self.url = prev.url.clone();
        }
    }
}

/// One `rcdn_hotlink_url` directive.
pub struct UrlConf {
    pub url: String,
    pub refresh_ms: u64,
    pub wait_ms: u64,
}

/// One `rcdn_guard` directive: per-URL and optional per-client limits.
pub struct GuardSpec {
    pub url: Limits,
    pub client: Option<Limits>,
}

/// `rcdn_guard_zone` as configured (in the http main conf).
pub struct GuardZone {
    pub zone: *mut ngx_shm_zone_t,
    /// Some location has `rcdn_guard`.
    pub used: bool,
}

impl Default for GuardZone {
    fn default() -> Self {
        GuardZone {
            zone: ptr::null_mut(),
            used: false,
        }
    }
}

/// One `rcdn_scheduler` directive.
pub struct SchedConf {
    pub table: Scheduler,
    /// Health check interval; 0 = no checks.
    pub check_ms: u64,
    /// `status=<path>`: probe this path and read the node's load there.
    pub status: Option<String>,
}

/// `rcdn_stats_zone` as configured.
pub struct StatsConf {
    pub zone: *mut ngx_shm_zone_t,
    pub windows: usize,
    pub window_ms: u64,
    /// `rcdn_stats_push <url>`: where closed windows are POSTed.
    pub push: Option<String>,
}

impl Default for StatsConf {
    fn default() -> Self {
        StatsConf {
            zone: ptr::null_mut(),
            windows: 12,
            window_ms: 300_000,
            push: None,
        }
    }
}
