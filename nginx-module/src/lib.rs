//! `ngx_http_rcdn_module`: turns a stock nginx into an rcdn CDN node.
//!
//! A thin adapter over the `cdncore` engine: nginx parses directives, runs
//! the request phases and talks to the origin (`proxy_pass`); the engine
//! stores, looks up, judges freshness and purges. See `docs/nginx.md`
//! ("Code map") for the folders and the one direction of their imports.
//!
//! This file only wires the module together: the module static, the
//! directive table, the phase handlers and filters, the process hooks.

mod base;
mod cache;
mod cluster;
mod conf;
mod engine;
mod http;
mod policy;

use base::guard;
use conf::{LocConf, MainConf, Module};
use core::ffi::{c_char, c_void};
use core::ptr::{self, addr_of, addr_of_mut};
use engine::{iothread, store};
use http::phase;
use nginx_sys::*;
use ngx::core::Status;
use ngx::http::{HttpModule, HttpModuleMainConf};
use ngx::{ngx_log_error, ngx_string};

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is initialised before nginx calls us and
        // only nginx writes its index fields, during configuration.
        unsafe { &*addr_of!(ngx_http_rcdn_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes the http block's conf.
        if unsafe { cache::register_variables(cf) } != NGX_OK as ngx_int_t {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: as above.
        if unsafe { cache::register_peer_variables(cf) } != NGX_OK as ngx_int_t {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: as above.
        unsafe { policy::register_reqlog(cf) }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        let handlers: [(ngx_http_phases, phase::Handler); 5] = [
            (ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, cache::precontent),
            (
                ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
                policy::hotlink_access,
            ),
            (ngx_http_phases_NGX_HTTP_ACCESS_PHASE, policy::guard_access),
            (
                ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
                policy::schedule_access,
            ),
            (ngx_http_phases_NGX_HTTP_LOG_PHASE, policy::stats_log_phase),
        ];
        for (p, h) in handlers {
            // SAFETY: cf is the http block's conf, in postconfiguration.
            if unsafe { phase::push(cf, p, h) } != NGX_OK as ngx_int_t {
                return Status::NGX_ERROR.into();
            }
        }
        // SAFETY: called once per configuration, single-threaded.
        unsafe { cache::install_filters() };
        // The statistics count each fill's origin fetch.
        cache::on_fill_done(policy::count_fill);
        Status::NGX_OK.into()
    }

    unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char
    where
        Self: HttpModuleMainConf,
    {
        // SAFETY: conf is our MainConf, created by create_main_conf.
        let mc = unsafe { &mut *conf.cast::<MainConf>() };
        let mut v = ngx_str_t {
            len: conf::DEFAULT_KEY.len(),
            data: conf::DEFAULT_KEY.as_ptr().cast_mut(),
        };
        if let Err((name, value, why)) = mc.cluster.check() {
            return conf::bad(cf, name, &value, &why);
        }
        if mc.cluster.enabled() {
            // SAFETY: cf is the http block's conf being parsed.
            mc.cluster.zone = unsafe { cluster::add_zone(cf) };
            if mc.cluster.zone == 0 {
                return ngx::core::NGX_CONF_ERROR;
            }
        }
        // SAFETY: cf is valid during configuration.
        match unsafe { conf::compile(cf, &mut v) } {
            Some(cv) => mc.default_key = cv,
            None => return ngx::core::NGX_CONF_ERROR,
        }
        if mc.guard.used && mc.guard.zone.is_null() {
            // SAFETY: cf is the http block's conf, still being configured.
            return unsafe { policy::add_guard_zone(cf, mc, policy::GUARD_ZONE_SIZE) };
        }
        ptr::null_mut()
    }
}

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: Some(Module::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(Module::merge_loc_conf),
};

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

const fn command(
    name: ngx_str_t,
    type_: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
    conf: usize,
    offset: usize,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf: conf as ngx_uint_t,
        offset: offset as ngx_uint_t,
        post: ptr::null_mut(),
    }
}

const LOC: usize = NGX_HTTP_LOC_CONF_OFFSET;

static mut COMMANDS: [ngx_command_t; 33] = [
    command(
        ngx_string!("rcdn_io_threads"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        conf::set_io_threads,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_store"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
        conf::set_store,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_cache"),
        ANY_LEVEL | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        LOC,
        core::mem::offset_of!(LocConf, cache),
    ),
    command(
        ngx_string!("rcdn_cache_key"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        conf::set_key,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_cache_valid"),
        ANY_LEVEL | NGX_CONF_1MORE,
        conf::set_valid,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_cdn_cache_control"),
        ANY_LEVEL | NGX_CONF_1MORE,
        conf::set_cdn_cache_control,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_cache_methods"),
        ANY_LEVEL | NGX_CONF_1MORE,
        conf::set_methods,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_stale_if_error"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        conf::set_time,
        LOC,
        core::mem::offset_of!(LocConf, stale_if_error),
    ),
    command(
        ngx_string!("rcdn_cache_lock_timeout"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        conf::set_time,
        LOC,
        core::mem::offset_of!(LocConf, lock_timeout),
    ),
    command(
        ngx_string!("rcdn_purge_secret"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        conf::set_secret,
        LOC,
        0,
    ),
    command(
        ngx_string!("cdn_purge"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        cache::set_purge,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_hotlink"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        policy::set_hotlink,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_hotlink_unknown"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        policy::set_hotlink_unknown,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_stats_zone"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE123,
        policy::set_stats_zone,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_stats"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        policy::set_stats,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_node_name"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        policy::set_node_name,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_guard"),
        ANY_LEVEL | NGX_CONF_1MORE,
        policy::set_guard,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_scheduler"),
        ANY_LEVEL | NGX_CONF_TAKE123,
        policy::set_scheduler,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_stats_push"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        policy::set_stats_push,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_slice"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        conf::set_slice,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_pass_buffer"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        conf::set_pass_buffer,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_guard_zone"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        policy::set_guard_zone,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_hotlink_url"),
        ANY_LEVEL | NGX_CONF_TAKE123,
        policy::set_hotlink_url,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_node"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        cluster::set_node,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_peer"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE23,
        cluster::set_peer,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_origin"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        cluster::set_origin,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_peer_timeout"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        cluster::set_time,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_peer_down"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        cluster::set_time,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_peer_secret"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        cluster::set_secret,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_drain"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        cluster::set_drain,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
    ),
    command(
        ngx_string!("rcdn_peer_status"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        cluster::peer::set_status,
        LOC,
        0,
    ),
    command(
        ngx_string!("rcdn_node_status"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        policy::set_node_status,
        LOC,
        0,
    ),
    ngx_command_t::empty(),
];

#[cfg(feature = "export-modules")]
ngx::ngx_modules!(ngx_http_rcdn_module);

#[used]
#[allow(non_upper_case_globals)]
#[cfg_attr(not(feature = "export-modules"), no_mangle)]
pub static mut ngx_http_rcdn_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(CTX) as _,
    // SAFETY: COMMANDS is a static that outlives the module.
    commands: unsafe { addr_of_mut!(COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as _,
    init_module: Some(init_module),
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};

/// nginx's parsed core configuration (`user`, `worker_processes`, ...).
///
/// # Safety
/// `cycle` must be the live cycle, with its core configuration parsed.
unsafe fn core_conf<'a>(cycle: *mut ngx_cycle_t) -> Option<&'a ngx_core_conf_t> {
    // SAFETY: conf_ctx has one slot per core module; the core module's is
    // an ngx_core_conf_t once configuration is parsed (caller's contract).
    unsafe {
        let idx = (*addr_of!(ngx_core_module)).index;
        (*(*cycle).conf_ctx.add(idx))
            .cast::<ngx_core_conf_t>()
            .as_ref()
    }
}

/// The worker user, when the master runs as root and workers as another
/// user (nginx's `user` directive; `nobody` by default).
///
/// # Safety
/// As [`core_conf`].
unsafe fn worker_owner(cycle: *mut ngx_cycle_t) -> Option<(u32, u32)> {
    // SAFETY: forwarded caller contract.
    let ccf = unsafe { core_conf(cycle)? };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { geteuid() } == 0;
    let (uid, gid): (u32, u32) = (ccf.user, ccf.group);
    (root && uid != u32::MAX && uid != 0).then_some((uid, gid))
}

/// How many worker processes will share the store (1 without a master).
///
/// # Safety
/// As [`core_conf`].
unsafe fn workers(cycle: *mut ngx_cycle_t) -> i64 {
    // SAFETY: forwarded caller contract.
    match unsafe { core_conf(cycle) } {
        Some(c) if c.master != 0 => c.worker_processes as i64,
        _ => 1,
    }
}

/// In the master, at every configuration load: create the block tier
/// directories and give them to the worker user (`store::prepare`).
extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the live cycle.
    let log = unsafe { (*cycle).log };
    guard::request(log, "init_module", Status::NGX_ERROR.into(), || {
        // SAFETY: the cycle is valid; the http main conf exists if http{} does.
        let Some(mc) = Module::main_conf(unsafe { &*cycle }) else {
            return Status::NGX_OK.into();
        };
        // SAFETY: the cycle's configuration is parsed.
        let workers = unsafe { workers(cycle) };
        // Checked under `nginx -t` too: a config that would split the cache.
        match store::check_workers(mc.store.as_deref(), workers) {
            Err(e) => {
                ngx_log_error!(NGX_LOG_EMERG, log, "rcdn: rcdn_store: {e}");
                return Status::NGX_ERROR.into();
            }
            Ok(Some(warning)) => {
                ngx_log_error!(NGX_LOG_WARN, log, "rcdn: {warning}");
            }
            Ok(None) => {}
        }
        if let Err(e) = conf::check_slice(mc) {
            ngx_log_error!(NGX_LOG_EMERG, log, "rcdn: {e}");
            return Status::NGX_ERROR.into();
        }
        // SAFETY: a plain read of nginx's flag, set before configuration.
        if unsafe { ngx_test_config } != 0 {
            return Status::NGX_OK.into(); // `nginx -t` changes nothing on disk
        }
        let text = mc.store.clone().unwrap_or_default();
        // SAFETY: the cycle's configuration is parsed.
        let owner = unsafe { worker_owner(cycle) };
        if let Err(e) = store::prepare(&text, owner) {
            ngx_log_error!(NGX_LOG_EMERG, log, "rcdn: rcdn_store: {e}");
            return Status::NGX_ERROR.into();
        }
        Status::NGX_OK.into()
    })
}

/// Opens this worker's cache. Runs after fork, so the engine's threads live
/// in the worker that uses them.
extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the live cycle.
    let log = unsafe { (*cycle).log };
    guard::request(log, "init_process", Status::NGX_OK.into(), || {
        // SAFETY: the cycle is valid; the http main conf exists if http{} does.
        let mc = Module::main_conf(unsafe { &*cycle });
        let Some(mc) = mc else {
            return Status::NGX_OK.into();
        };
        let text = mc.store.clone().unwrap_or_default();
        // SAFETY: the cycle's configuration is parsed.
        let workers = unsafe { workers(cycle) };
        if let Err(e) = store::open(&text, workers) {
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "rcdn: cannot open the store \"{text}\": {e}"
            );
            return Status::NGX_ERROR.into();
        }
        let tiers: Vec<_> = store::get()
            .map(|c| c.config().tiers.iter().map(|t| t.path.clone()).collect())
            .unwrap_or_default();
        if iothread::wanted(mc.io_threads, &tiers) {
            // SAFETY: a worker's live cycle.
            match unsafe { iothread::open(cycle) } {
                Ok(()) => {
                    ngx_log_error!(
                        NGX_LOG_INFO,
                        log,
                        "rcdn: block-tier lookups and write-throughs on io threads"
                    );
                }
                // Not fatal: lookups then run inline, as with `off`.
                Err(e) => {
                    ngx_log_error!(NGX_LOG_ALERT, log, "rcdn: no io threads: {e}");
                }
            }
        }
        Status::NGX_OK.into()
    })
}

extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    // SAFETY: nginx passes the live cycle.
    let log = unsafe { (*cycle).log };
    guard::event(log, "exit_process", || {
        iothread::close(log);
        store::close();
    });
}
