//! The cluster directives (http): `rcdn_node`, `rcdn_peer`, `rcdn_origin`,
//! `rcdn_peer_timeout`, `rcdn_peer_down`, `rcdn_peer_secret`, `rcdn_drain`.

use crate::base::guard;
use crate::conf::{args, bad, lossy, parse_time, MainConf};
use crate::conf::{check_addr, ClusterConf};
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::NGX_CONF_OK;

fn main_conf<'a>(conf: *mut c_void) -> &'a mut ClusterConf {
    // SAFETY: every setter here is registered with NGX_HTTP_MAIN_CONF_OFFSET,
    // so conf is our MainConf, alive for the whole configuration.
    unsafe { &mut (*conf.cast::<MainConf>()).cluster }
}

/// `rcdn_node <id>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_node(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_node", || {
        let cc = main_conf(conf);
        if cc.me.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let id = lossy(&unsafe { args(cf) }[0]);
        if let Err(why) = check_id(&id) {
            return bad(cf, "rcdn_node", &id, why);
        }
        cc.me = Some(id);
        NGX_CONF_OK
    })
}

fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|c| c.is_ascii_graphic()) {
        return Err("a node id is 1..64 printable characters without spaces");
    }
    Ok(())
}

/// `rcdn_peer <id> <host:port> [upstream=<name>];` (repeated; the ring
/// includes this node).
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_peer(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_peer", || {
        let cc = main_conf(conf);
        // SAFETY: called by nginx while parsing this directive.
        let a = unsafe { args(cf) };
        let (id, addr) = (lossy(&a[0]), lossy(&a[1]));
        if let Err(why) = check_id(&id) {
            return bad(cf, "rcdn_peer", &id, why);
        }
        if cc.peers.iter().any(|(p, _)| *p == id) {
            return bad(cf, "rcdn_peer", &id, "this peer id appears twice");
        }
        if let Err(why) = check_addr(&addr) {
            return bad(cf, "rcdn_peer", &addr, why);
        }
        if cc.peers.iter().any(|(_, a)| *a == addr) {
            return bad(cf, "rcdn_peer", &addr, "two peers have this address");
        }
        if let Some(extra) = a.get(2).map(lossy) {
            match extra.strip_prefix("upstream=") {
                Some(u) if !u.is_empty() && u.bytes().all(|c| c.is_ascii_graphic()) => {
                    cc.upstreams.insert(id.clone(), u.to_string());
                }
                _ => {
                    return bad(
                        cf,
                        "rcdn_peer",
                        &extra,
                        "expected upstream=<name of an upstream block>",
                    )
                }
            }
        }
        cc.peers.push((id, addr));
        NGX_CONF_OK
    })
}

/// `rcdn_origin <upstream name | host[:port]>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_origin(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_origin", || {
        let cc = main_conf(conf);
        if cc.origin.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = lossy(&unsafe { args(cf) }[0]);
        if v.is_empty() || v.contains("://") || v.bytes().any(|c| !c.is_ascii_graphic()) {
            return bad(
                cf,
                "rcdn_origin",
                &v,
                "expected an upstream name or host:port (no scheme)",
            );
        }
        cc.origin = Some(v);
        NGX_CONF_OK
    })
}

/// `rcdn_peer_timeout <time>;` and `rcdn_peer_down <time>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_time(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cmd is the command being parsed.
    let name = lossy(unsafe { &(*cmd).name });
    guard::conf(cf, &name.clone(), || {
        let cc = main_conf(conf);
        let slot = if name == "rcdn_peer_timeout" {
            &mut cc.timeout_ms
        } else {
            &mut cc.down_ms
        };
        if slot.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        match parse_time(v.as_bytes()) {
            Some(ms) if (1..=86_400_000).contains(&ms) => {
                *slot = Some(ms);
                NGX_CONF_OK
            }
            _ => bad(
                cf,
                &name,
                &lossy(&v),
                "expected a time from 1ms to 1d, such as 2s or 500ms",
            ),
        }
    })
}

/// `rcdn_peer_secret <secret>;`: only requests carrying it in
/// `X-Rcdn-Peer-Secret` are peer requests.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_secret(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_peer_secret", || {
        let cc = main_conf(conf);
        if cc.secret.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = lossy(&unsafe { args(cf) }[0]);
        if v.is_empty() || !v.bytes().all(|c| c.is_ascii_graphic()) {
            return bad(
                cf,
                "rcdn_peer_secret",
                &v,
                "the secret is printable characters without spaces",
            );
        }
        cc.secret = Some(v);
        NGX_CONF_OK
    })
}

/// `rcdn_drain on | off;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_drain(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_drain", || {
        let cc = main_conf(conf);
        if cc.drain.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        cc.drain = Some(match v.as_bytes() {
            b"on" => true,
            b"off" => false,
            _ => return bad(cf, "rcdn_drain", &lossy(&v), "expected on or off"),
        });
        NGX_CONF_OK
    })
}
