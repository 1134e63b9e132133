//! The peer protocol on top of plain HTTP and nginx's upstream machinery.
//!
//! Asking node: a fill whose key another live node owns is sent there by
//! the location's own `proxy_pass http://$rcdn_upstream;` with
//! `X-Rcdn-Hop: <this node>` and `X-Rcdn-Key: <base64url key>`.
//!
//! Owner: a request carrying `X-Rcdn-Hop` is looked up under the key the
//! owner computes itself; `X-Rcdn-Key` is only compared with it (a mismatch
//! is refused with 400, so nothing is ever stored under a key a client
//! chose). It is never forwarded again (a miss fills from the origin), and
//! a hit goes out with `X-Rcdn-Meta` (`cdncore::fill::wire`: TTL,
//! validators, tags) so the asking node stores it exactly as the owner
//! does. A draining node answers peers 503 with `X-Rcdn-Draining: 1`.
//!
//! Slices: `X-Rcdn-Key` may also name one slice of the owner's key
//! (`<key> slice=<size>:<ident>:<index>`, with the asking node's manifest in
//! `X-Rcdn-Slice` and exactly that slice's `Range`); the owner then serves
//! or fills that slice alone (see the cache's `lookup::peer_slice` and
//! `slice::peer`). The identity is checked against the origin's 206 when
//! the owner fills it.

use crate::base::request::header_in;
use crate::cluster;
use crate::conf::ClusterConf;
use crate::conf::MainConf;
use crate::{base::guard, conf::Module};
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::{ngx_log_error, ngx_string};
use serde_json::json;

/// Request header of a peer fill (lower case, for lookups).
const HOP: &[u8] = b"x-rcdn-hop";
/// Request header with the asking node's key, base64url.
const KEY: &[u8] = b"x-rcdn-key";
/// Request header with `rcdn_peer_secret`.
const SECRET: &[u8] = b"x-rcdn-peer-secret";
/// Request header of a slice request: the asking node's manifest
/// (`<size> <total> <ident>`).
const SLICE: &[u8] = b"x-rcdn-slice";
/// Response header with the owner's metadata.
pub const META: &str = cdncore::fill::wire::META_HEADER;
/// Response header of a draining node's 503.
const DRAINING: &[u8] = b"X-Rcdn-Draining";
/// Response header naming why a peer request was refused.
const ERROR: &[u8] = b"X-Rcdn-Error";

/// The cluster configuration of the request's http block.
///
/// # Safety
/// `r` must be live.
pub unsafe fn conf<'a>(r: *mut ngx_http_request_t) -> Option<&'a ClusterConf> {
    // SAFETY: r is live; our main conf exists while it runs.
    Module::main_conf(unsafe { &*r }).map(|m: &MainConf| &m.cluster)
}

/// Whether the (main) request came from a peer: it carries the hop header
/// (and, with `rcdn_peer_secret`, the secret).
///
/// # Safety
/// `r` must be live.
pub unsafe fn from_peer(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: r is live; the peer headers are on the main request.
    let main = unsafe { (*r).main };
    // SAFETY: as above.
    if unsafe { header_in(main, HOP) }.is_none() {
        return false;
    }
    // SAFETY: r is live.
    match unsafe { conf(r) }.and_then(|c| c.secret.as_deref()) {
        None => true,
        // SAFETY: as above.
        Some(s) => unsafe { header_in(main, SECRET) }
            .is_some_and(|given| crate::base::request::same(given, s.as_bytes())),
    }
}

/// Owner-side checks of a main request, once its key is known: `Err(rc)`
/// ends the request (503 while draining, 400 on a key mismatch);
/// `Ok(Some(_))` is a peer's request for one slice of the object, as
/// `slice_of(given key, X-Rcdn-Slice, Range)` verified it (the cache's
/// `PeerSlice::verify`, passed in: the protocol knows no slice layout).
///
/// # Safety
/// `r` must be a live main request.
pub unsafe fn owner_checks<T>(
    r: *mut ngx_http_request_t,
    key: &[u8],
    slice_of: impl FnOnce(&[u8], Option<&[u8]>, Option<&[u8]>) -> Option<T>,
) -> Result<Option<T>, ngx_int_t> {
    // SAFETY: r is live.
    let Some(cc) = (unsafe { conf(r) }) else {
        return Ok(None);
    };
    // SAFETY: r and its connection are live.
    let log = unsafe { (*(*r).connection).log };
    // SAFETY: r is live.
    if !unsafe { from_peer(r) } {
        return Ok(None);
    }
    if cc.draining() {
        // SAFETY: r is live.
        unsafe { crate::http::reply::push_header(r, DRAINING, b"1") };
        return Err(NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t);
    }
    // SAFETY: r is live.
    let Some(given) = (unsafe { header_in(r, KEY) }) else {
        return Ok(None);
    };
    let decoded = std::str::from_utf8(given)
        .ok()
        .and_then(cdncore::fill::peer::decode_key);
    if decoded.as_deref() == Some(key) {
        return Ok(None);
    }
    if let Some(d) = &decoded {
        // SAFETY: r is live.
        let (m, range) = unsafe { (header_in(r, SLICE), header_in(r, b"range")) };
        if let Some(ps) = slice_of(d, m, range) {
            return Ok(Some(ps));
        }
    }
    ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "rcdn: peer request refused: X-Rcdn-Key \"{}\" is not this node's key \"{}\" \
         nor a slice of it matching the Range (do the nodes share rcdn_cache_key, \
         and does the location set proxy_set_header Host $host?)",
        String::from_utf8_lossy(given),
        cdncore::fill::peer::encode_key(key)
    );
    // SAFETY: r is live.
    unsafe { crate::http::reply::push_header(r, ERROR, b"key mismatch") };
    Err(NGX_HTTP_BAD_REQUEST as ngx_int_t)
}

/// The headers a fill sent to `target` carries.
pub fn fill_headers(cc: &ClusterConf, key: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
    let mut h = vec![
        (
            &b"X-Rcdn-Hop"[..],
            cc.me.clone().unwrap_or_default().into_bytes(),
        ),
        (
            &b"X-Rcdn-Key"[..],
            cdncore::fill::peer::encode_key(key).into_bytes(),
        ),
    ];
    if let Some(s) = &cc.secret {
        h.push((&b"X-Rcdn-Peer-Secret"[..], s.clone().into_bytes()));
    }
    h
}

/// `rcdn_peer_status;` (location): this worker's view of the cluster, JSON.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_peer_status", || {
        // SAFETY: cf is valid during parsing; the core loc conf exists.
        match NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) {
            Some(clcf) => {
                clcf.handler = Some(status_handler);
                NGX_CONF_OK
            }
            None => NGX_CONF_ERROR,
        }
    })
}

unsafe extern "C" fn status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "rcdn_peer_status",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is live.
            if unsafe { ngx_http_discard_request_body(r) } != NGX_OK as ngx_int_t {
                return Status::NGX_ERROR.into();
            }
            // SAFETY: r is live.
            let Some(cc) = (unsafe { conf(r) }) else {
                return NGX_HTTP_NOT_FOUND as ngx_int_t;
            };
            let down = cluster::down_now(cc);
            let c = cluster::counters(cc);
            let peers: Vec<_> = cc
                .peers
                .iter()
                .map(|(id, addr)| json!({"id": id, "addr": addr, "down": down.contains(id)}))
                .collect();
            let body = json!({
                "node": cc.me, "draining": cc.draining(), "peers": peers,
                // SAFETY: a plain read of nginx's pid global.
                "worker": unsafe { ngx_pid },
                "peer_fills": c.peer_fills, "peer_failures": c.peer_failures,
                "marked_down": c.marked_down, "peers_down": down.len(),
            });
            let text = format!("{body}\n");
            // SAFETY: r is live.
            unsafe {
                crate::http::reply::send(
                    r,
                    NGX_HTTP_OK,
                    text.as_bytes(),
                    ngx_string!("application/json"),
                )
            }
        },
    )
}
