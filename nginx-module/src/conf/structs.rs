//! The configuration structs (`http{}` and `location` levels), their
//! defaults and merging, and the marker type nginx knows the module by.

use super::{ClusterConf, GuardSpec, GuardZone, HotlinkConf, SchedConf, StatsConf};
use core::ptr;
use nginx_sys::*;
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Merge, MergeConfigError};

/// `ngx_conf_set_msec_slot`'s "unset" value (a C cast, not in the bindings).
pub const MSEC_UNSET: ngx_msec_t = ngx_msec_t::MAX;
/// Key used when a location sets none: host, path and query, the shape the
/// engine's groups and directory purges expect.
pub const DEFAULT_KEY: &str = "$host$request_uri";
/// Statuses of `rcdn_cache_valid <time>` without codes, and of the default
/// table: the engine's (heuristically cacheable, not errors).
pub const DEFAULT_VALID: &[u16] = cdncore::http::DEFAULT_FALLBACK_STATUSES;

/// The module's marker type for the `ngx` traits (`Module::main_conf(r)`,
/// `Module::location_conf(r)`); `lib.rs` binds it to the module static.
pub struct Module;

// SAFETY: MainConf is the type create_main_conf allocates for this module.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

// SAFETY: LocConf is the type create_loc_conf allocates for this module.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

/// `http{}` level.
#[derive(Default)]
pub struct MainConf {
    /// Engine config tokens from `rcdn_store`, already validated.
    pub store: Option<String>,
    /// The default cache key, compiled once.
    pub default_key: *mut ngx_http_complex_value_t,
    /// `rcdn_stats_zone`.
    pub stats: StatsConf,
    /// `rcdn_node_name` (for `$rcdn_log_json`).
    pub node_name: Option<String>,
    /// `rcdn_node`, `rcdn_peer`, `rcdn_origin`... (a cluster of nodes).
    pub cluster: ClusterConf,
    /// The largest `rcdn_slice` of any location (bytes, as written), checked
    /// against the store's `max_object` once the whole config is read.
    pub slice_max: Option<(u64, String)>,
    /// `rcdn_guard_zone`.
    pub guard: GuardZone,
    /// `rcdn_io_threads on | off | auto`.
    pub io_threads: IoMode,
}

/// One `rcdn_cache_valid` rule; `code` 0 means any status.
#[derive(Clone, Copy, Debug)]
pub struct Valid {
    pub code: u16,
    pub ttl_ms: u64,
}

/// `location` level (merged down from `http` and `server`).
pub struct LocConf {
    pub cache: ngx_flag_t,
    pub key: *mut ngx_http_complex_value_t,
    pub valid: Option<Vec<Valid>>,
    /// `rcdn_cdn_cache_control`: the targeted cache-control fields, most
    /// applicable first (RFC 9213); `None`: the engine's default list.
    pub targets: Option<Vec<String>>,
    /// Bit set of `NGX_HTTP_GET`, `NGX_HTTP_HEAD`; 0 = unset.
    pub methods: ngx_uint_t,
    pub stale_if_error: ngx_msec_t,
    pub lock_timeout: ngx_msec_t,
    pub purge_secret: Option<String>,
    /// This location answers purge requests (`cdn_purge`); not inherited.
    pub purge: bool,
    /// `rcdn_hotlink`, `rcdn_hotlink_unknown`.
    pub hotlink: HotlinkConf,
    /// `rcdn_guard`.
    pub attack: Option<std::sync::Arc<GuardSpec>>,
    /// `rcdn_scheduler`.
    pub sched: Option<std::sync::Arc<SchedConf>>,
    /// `rcdn_slice`: slice size in bytes, 0 = off; `SLICE_UNSET` until merged.
    pub slice: u64,
    /// `rcdn_pass_buffer`: bytes of a pass response held for a client
    /// slower than the origin before the fill stops reading it;
    /// `SIZE_UNSET` until merged.
    pub pass_buffer: u64,
}

/// `rcdn_slice` not set at this level.
pub const SLICE_UNSET: u64 = u64::MAX;

/// `rcdn_pass_buffer` not set at this level.
pub const SIZE_UNSET: u64 = u64::MAX;

/// `rcdn_pass_buffer` by default.
pub const PASS_BUFFER: u64 = 1 << 20;

impl Default for LocConf {
    fn default() -> Self {
        LocConf {
            cache: NGX_CONF_UNSET as ngx_flag_t,
            key: ptr::null_mut(),
            valid: None,
            targets: None,
            methods: 0,
            stale_if_error: MSEC_UNSET,
            lock_timeout: MSEC_UNSET,
            purge_secret: None,
            purge: false,
            hotlink: Default::default(),
            attack: None,
            sched: None,
            slice: SLICE_UNSET,
            pass_buffer: SIZE_UNSET,
        }
    }
}

impl Merge for LocConf {
    fn merge(&mut self, prev: &Self) -> Result<(), MergeConfigError> {
        if self.cache == NGX_CONF_UNSET as ngx_flag_t {
            self.cache = if prev.cache == NGX_CONF_UNSET as ngx_flag_t {
                0
            } else {
                prev.cache
            };
        }
        if self.key.is_null() {
            self.key = prev.key;
        }
        if self.valid.is_none() {
            self.valid = prev.valid.clone();
        }
        if self.targets.is_none() {
            self.targets = prev.targets.clone();
        }
        if self.methods == 0 {
            self.methods = prev.methods;
        }
        if self.methods == 0 {
            self.methods = (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t;
        }
        merge_msec(&mut self.stale_if_error, prev.stale_if_error, 0);
        merge_msec(&mut self.lock_timeout, prev.lock_timeout, 5_000);
        if self.purge_secret.is_none() {
            self.purge_secret = prev.purge_secret.clone();
        }
        self.hotlink.merge(&prev.hotlink);
        if self.attack.is_none() {
            self.attack = prev.attack.clone();
        }
        if self.sched.is_none() {
            self.sched = prev.sched.clone();
        }
        if self.slice == SLICE_UNSET {
            self.slice = if prev.slice == SLICE_UNSET {
                0
            } else {
                prev.slice
            };
        }
        if self.pass_buffer == SIZE_UNSET {
            self.pass_buffer = if prev.pass_buffer == SIZE_UNSET {
                PASS_BUFFER
            } else {
                prev.pass_buffer
            };
        }
        Ok(())
    }
}

fn merge_msec(v: &mut ngx_msec_t, prev: ngx_msec_t, default: ngx_msec_t) {
    if *v == MSEC_UNSET {
        *v = if prev == MSEC_UNSET { default } else { prev };
    }
}

/// A slice must fit in one cache object: fails the config otherwise.
pub fn check_slice(mc: &MainConf) -> Result<(), String> {
    let Some((size, text)) = &mc.slice_max else {
        return Ok(());
    };
    let store = mc.store.as_deref().unwrap_or_default();
    let cfg = cdncore::Config::parse(store).map_err(|e| e.to_string())?;
    let max = cfg.max_object_bytes();
    if *size > max {
        return Err(format!(
            "invalid value \"{text}\" in \"rcdn_slice\" directive: a slice must fit in one \
             cache object, and the store's max_object is {max} bytes"
        ));
    }
    Ok(())
}

/// `rcdn_io_threads`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    #[default]
    Auto,
    On,
    Off,
}

impl IoMode {
    pub fn parse(s: &[u8]) -> Option<IoMode> {
        match s {
            b"auto" => Some(IoMode::Auto),
            b"on" => Some(IoMode::On),
            b"off" => Some(IoMode::Off),
            _ => None,
        }
    }
}
