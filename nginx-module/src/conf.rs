//! Configuration structs, their merging, and the directive setters.
//!
//! Every setter checks its arguments and fails `nginx -t` with a message
//! that names the directive and the offending value.

use crate::guard;
use core::ffi::{c_char, c_void};
use core::ptr;
use nginx_sys::*;
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{
    HttpModuleLocationConf, HttpModuleMainConf, Merge, MergeConfigError, NgxHttpCoreModule,
};
use ngx::ngx_conf_log_error;

/// `ngx_conf_set_msec_slot`'s "unset" value (a C cast, not in the bindings).
pub const MSEC_UNSET: ngx_msec_t = ngx_msec_t::MAX;
/// Key used when a location sets none: host, path and query, the shape the
/// engine's groups and directory purges expect.
pub const DEFAULT_KEY: &str = "$host$request_uri";
/// Statuses cached when a location lists none (as `proxy_cache_valid`).
pub const DEFAULT_VALID: &[u16] = &[200, 301, 302];

/// `http{}` level.
#[derive(Default)]
pub struct MainConf {
    /// Engine config tokens from `rcdn_store`, already validated.
    pub store: Option<String>,
    /// The default cache key, compiled once.
    pub default_key: *mut ngx_http_complex_value_t,
    /// `rcdn_stats_zone`.
    pub stats: crate::stats::StatsConf,
    /// `rcdn_node_name` (for `$rcdn_log_json`).
    pub node_name: Option<String>,
    /// `rcdn_node`, `rcdn_peer`, `rcdn_origin`... (a cluster of nodes).
    pub cluster: crate::cluster::ClusterConf,
    /// The largest `rcdn_slice` of any location (bytes, as written), checked
    /// against the store's `max_object` once the whole config is read.
    pub slice_max: Option<(u64, String)>,
    /// `rcdn_guard_zone`.
    pub guard: crate::attack_zone::GuardZone,
    /// `rcdn_io_threads on | off | auto`.
    pub io_threads: crate::iothread::Mode,
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
    /// Bit set of `NGX_HTTP_GET`, `NGX_HTTP_HEAD`; 0 = unset.
    pub methods: ngx_uint_t,
    pub stale_if_error: ngx_msec_t,
    pub lock_timeout: ngx_msec_t,
    pub purge_secret: Option<String>,
    /// This location answers purge requests (`cdn_purge`); not inherited.
    pub purge: bool,
    /// `rcdn_hotlink`, `rcdn_hotlink_unknown`.
    pub hotlink: crate::hotlink::HotlinkConf,
    /// `rcdn_guard`.
    pub attack: Option<std::sync::Arc<crate::attack::GuardSpec>>,
    /// `rcdn_scheduler`.
    pub sched: Option<std::sync::Arc<crate::schedule::SchedConf>>,
    /// `rcdn_slice`: slice size in bytes, 0 = off; `SLICE_UNSET` until merged.
    pub slice: u64,
}

/// `rcdn_slice` not set at this level.
pub const SLICE_UNSET: u64 = u64::MAX;

impl Default for LocConf {
    fn default() -> Self {
        LocConf {
            cache: NGX_CONF_UNSET as ngx_flag_t,
            key: ptr::null_mut(),
            valid: None,
            methods: 0,
            stale_if_error: MSEC_UNSET,
            lock_timeout: MSEC_UNSET,
            purge_secret: None,
            purge: false,
            hotlink: Default::default(),
            attack: None,
            sched: None,
            slice: SLICE_UNSET,
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
        Ok(())
    }
}

fn merge_msec(v: &mut ngx_msec_t, prev: ngx_msec_t, default: ngx_msec_t) {
    if *v == MSEC_UNSET {
        *v = if prev == MSEC_UNSET { default } else { prev };
    }
}

impl LocConf {
    /// Freshness for a status without an explicit lifetime, or `None` if the
    /// status is not cached here.
    pub fn ttl_for(&self, status: u16, default_ttl_ms: u64) -> Option<u64> {
        match &self.valid {
            Some(rules) => rules
                .iter()
                .find(|v| v.code == status)
                .or_else(|| rules.iter().find(|v| v.code == 0))
                .map(|v| v.ttl_ms),
            None => DEFAULT_VALID.contains(&status).then_some(default_ttl_ms),
        }
    }
}

/// The directive's arguments after its name.
///
/// # Safety
/// `cf` is the conf being parsed, so `cf->args` is an array of `ngx_str_t`.
pub(crate) unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: nginx fills cf->args with the directive name and its arguments.
    let all = unsafe { (*(*cf).args).as_slice::<ngx_str_t>() };
    &all[1..]
}

pub(crate) fn lossy(s: &ngx_str_t) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// Logs `invalid value "v" in "name" directive: why` and fails the config.
pub(crate) fn bad(cf: *mut ngx_conf_t, name: &str, value: &str, why: &str) -> *mut c_char {
    ngx_conf_log_error!(
        NGX_LOG_EMERG,
        cf,
        "invalid value \"{value}\" in \"{name}\" directive: {why}"
    );
    NGX_CONF_ERROR
}

/// `rcdn_store <engine tokens>...;` (http): the engine config, checked now.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_store(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_store", || {
        // SAFETY: conf is our MainConf (NGX_HTTP_MAIN_CONF_OFFSET).
        let mc = unsafe { &mut *conf.cast::<MainConf>() };
        if mc.store.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let tokens: Vec<String> = unsafe { args(cf) }.iter().map(lossy).collect();
        let text = tokens.join(" ");
        if let Err(e) = cdncore::Config::parse(&text) {
            return bad(cf, "rcdn_store", &text, &e.to_string());
        }
        mc.store = Some(text);
        NGX_CONF_OK
    })
}

/// `rcdn_io_threads on | off | auto;` (http): block-tier lookups on
/// threads (`auto`: when a tier is not on tmpfs/ramfs).
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_io_threads(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_io_threads", || {
        // SAFETY: conf is our MainConf (NGX_HTTP_MAIN_CONF_OFFSET).
        let mc = unsafe { &mut *conf.cast::<MainConf>() };
        // SAFETY: called by nginx while parsing this directive.
        let Some(v) = unsafe { args(cf) }.first() else {
            return c"needs a value".as_ptr().cast_mut();
        };
        match crate::iothread::Mode::parse(v.as_bytes()) {
            Some(m) => mc.io_threads = m,
            None => return bad(cf, "rcdn_io_threads", &lossy(v), "use on, off or auto"),
        }
        NGX_CONF_OK
    })
}

/// `rcdn_cache_key <complex value>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_key(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_cache_key", || {
        // SAFETY: conf is our LocConf (NGX_HTTP_LOC_CONF_OFFSET).
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if !lc.key.is_null() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let mut value = unsafe { args(cf) }[0];
        if value.len == 0 {
            return bad(cf, "rcdn_cache_key", "", "the key must not be empty");
        }
        // SAFETY: cf is valid during parsing.
        match unsafe { compile(cf, &mut value) } {
            Some(cv) => {
                lc.key = cv;
                NGX_CONF_OK
            }
            None => NGX_CONF_ERROR,
        }
    })
}

/// Compiles a complex value (`$host$request_uri`) into conf memory.
///
/// # Safety
/// `cf` must be the conf being parsed.
pub unsafe fn compile(
    cf: *mut ngx_conf_t,
    value: &mut ngx_str_t,
) -> Option<*mut ngx_http_complex_value_t> {
    // SAFETY: cf->pool lives as long as the configuration.
    unsafe {
        let cv = ngx_pcalloc((*cf).pool, core::mem::size_of::<ngx_http_complex_value_t>())
            .cast::<ngx_http_complex_value_t>();
        if cv.is_null() {
            return None;
        }
        let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
        ccv.cf = cf;
        ccv.value = value;
        ccv.complex_value = cv;
        (ngx_http_compile_complex_value(&mut ccv) == NGX_OK as ngx_int_t).then_some(cv)
    }
}

/// Parses an nginx time ("10m", "30s", "500ms"; bare numbers are seconds).
pub(crate) fn parse_time(s: &[u8]) -> Option<u64> {
    let mut v = ngx_str_t {
        len: s.len(),
        data: s.as_ptr().cast_mut(),
    };
    // SAFETY: ngx_parse_time only reads `len` bytes from `data`.
    let ms = unsafe { ngx_parse_time(&mut v, 0) };
    (ms >= 0).then_some(ms as u64)
}

/// `rcdn_cache_valid [code ...|any] <time>;` (repeatable).
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_valid(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_cache_valid", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        // SAFETY: called by nginx while parsing this directive.
        let a = unsafe { args(cf) };
        let (codes, time) = a.split_at(a.len() - 1);
        let Some(ttl_ms) = parse_time(time[0].as_bytes()) else {
            return bad(cf, "rcdn_cache_valid", &lossy(&time[0]), "not a time");
        };
        let rules = lc.valid.get_or_insert_with(Vec::new);
        if codes.is_empty() {
            rules.extend(DEFAULT_VALID.iter().map(|&code| Valid { code, ttl_ms }));
            return NGX_CONF_OK;
        }
        for c in codes {
            let code = match c.as_bytes() {
                b"any" => 0,
                b => match std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                {
                    Some(n) if (200..=599).contains(&n) => n,
                    _ => {
                        return bad(
                            cf,
                            "rcdn_cache_valid",
                            &lossy(c),
                            "expected a status 200..599 or \"any\"",
                        )
                    }
                },
            };
            rules.push(Valid { code, ttl_ms });
        }
        NGX_CONF_OK
    })
}

/// `rcdn_cache_methods GET | HEAD ...;` (GET is always cacheable).
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_methods(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_cache_methods", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        let mut m = NGX_HTTP_GET as ngx_uint_t;
        // SAFETY: called by nginx while parsing this directive.
        for a in unsafe { args(cf) } {
            m |= match a.as_bytes() {
                b"GET" => NGX_HTTP_GET,
                b"HEAD" => NGX_HTTP_HEAD,
                _ => {
                    return bad(
                        cf,
                        "rcdn_cache_methods",
                        &lossy(a),
                        "only GET and HEAD can be cached",
                    )
                }
            } as ngx_uint_t;
        }
        lc.methods = m;
        NGX_CONF_OK
    })
}

/// `rcdn_purge_secret <secret>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_secret(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_purge_secret", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        if v.len == 0 {
            return bad(cf, "rcdn_purge_secret", "", "the secret must not be empty");
        }
        lc.purge_secret = Some(lossy(&v));
        NGX_CONF_OK
    })
}

/// `cdn_purge;` makes the location the purge endpoint.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_purge(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "cdn_purge", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        lc.purge = true;
        // SAFETY: cf is valid during parsing; the core loc conf exists.
        match NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) {
            Some(clcf) => {
                clcf.handler = Some(crate::purge::handler);
                NGX_CONF_OK
            }
            None => NGX_CONF_ERROR,
        }
    })
}

/// A time argument (`10s`, `5m`, `250ms`) stored at the command's offset in
/// `LocConf`; unlike nginx's slot, a bad value is named in the error.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_time(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cmd is the command being parsed.
    let (name, offset) = unsafe { (lossy(&(*cmd).name), (*cmd).offset) };
    guard::conf(cf, &name.clone(), || {
        // SAFETY: offset points at an ngx_msec_t field of our LocConf.
        let field = unsafe { &mut *conf.cast::<u8>().add(offset).cast::<ngx_msec_t>() };
        if *field != MSEC_UNSET {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        match parse_time(v.as_bytes()) {
            Some(ms) if ms < MSEC_UNSET as u64 => {
                *field = ms as ngx_msec_t;
                NGX_CONF_OK
            }
            _ => bad(
                cf,
                &name,
                &lossy(&v),
                "expected a time such as 30s, 5m, 250ms",
            ),
        }
    })
}

/// `rcdn_slice <size> | off;` — fetch and store large objects in slices of
/// `size` bytes (e.g. `1m`); `off` or `0` stores whole objects.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_slice(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_slice", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if lc.slice != SLICE_UNSET {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let mut v = unsafe { args(cf) }[0];
        if v.as_bytes() == b"off" {
            lc.slice = 0;
            return NGX_CONF_OK;
        }
        // SAFETY: ngx_parse_size only reads `len` bytes of the argument.
        let n = unsafe { ngx_parse_size(&mut v) };
        if n < 0 {
            return bad(
                cf,
                "rcdn_slice",
                &lossy(&v),
                "expected a size such as 1m or 512k, or off",
            );
        }
        lc.slice = n as u64;
        if n > 0 {
            // SAFETY: cf is valid during parsing; our main conf exists.
            if let Some(mc) = crate::Module::main_conf_mut(unsafe { &*cf }) {
                if mc.slice_max.as_ref().is_none_or(|(m, _)| *m < n as u64) {
                    mc.slice_max = Some((n as u64, lossy(&v)));
                }
            }
        }
        NGX_CONF_OK
    })
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
