//! The directive setters of the cache itself (`rcdn_store`,
//! `rcdn_cache*`, `rcdn_slice`, ...). Each checks its arguments and fails
//! `nginx -t` with a message that names the directive and the value.

use super::parse::{args, bad, compile, lossy, parse_time};
use super::{
    IoMode, LocConf, MainConf, Module, Valid, DEFAULT_VALID, MSEC_UNSET, SIZE_UNSET, SLICE_UNSET,
};
use crate::base::guard;
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::HttpModuleMainConf;

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
        match IoMode::parse(v.as_bytes()) {
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

/// `rcdn_cdn_cache_control <field> ... | off;`: the targeted cache-control
/// fields this cache obeys before `Cache-Control` (RFC 9213), most
/// applicable first; `off`: none.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_cdn_cache_control(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_cdn_cache_control", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if lc.targets.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let a = unsafe { args(cf) };
        if a.len() == 1 && a[0].as_bytes() == b"off" {
            lc.targets = Some(Vec::new());
            return NGX_CONF_OK;
        }
        let mut names = Vec::new();
        for v in a {
            let b = v.as_bytes();
            let token = !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c));
            if !token {
                return bad(
                    cf,
                    "rcdn_cdn_cache_control",
                    &lossy(v),
                    "expected a header field name or \"off\"",
                );
            }
            names.push(lossy(v));
        }
        lc.targets = Some(names);
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
            if let Some(mc) = Module::main_conf_mut(unsafe { &*cf }) {
                if mc.slice_max.as_ref().is_none_or(|(m, _)| *m < n as u64) {
                    mc.slice_max = Some((n as u64, lossy(&v)));
                }
            }
        }
        NGX_CONF_OK
    })
}

/// The smallest `rcdn_pass_buffer`: one read of the origin (a page).
const PASS_BUFFER_MIN: u64 = 4096;

/// `rcdn_pass_buffer <size>;` — how much of a response that is not stored
/// may wait for a slow client before its fill stops reading the origin.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_pass_buffer(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_pass_buffer", || {
        // SAFETY: conf is our LocConf.
        let lc = unsafe { &mut *conf.cast::<LocConf>() };
        if lc.pass_buffer != SIZE_UNSET {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let mut v = unsafe { args(cf) }[0];
        // SAFETY: ngx_parse_size only reads `len` bytes of the argument.
        let n = unsafe { ngx_parse_size(&mut v) };
        if n < PASS_BUFFER_MIN as isize {
            return bad(
                cf,
                "rcdn_pass_buffer",
                &lossy(&v),
                "expected a size of at least 4k, such as 1m",
            );
        }
        lc.pass_buffer = n as u64;
        NGX_CONF_OK
    })
}
