//! `rcdn_node_status;` (location): this node's load for other nodes'
//! schedulers (`rcdn_scheduler ... status=<path>`), as JSON:
//! `{"node": "<rcdn_node_name>", "load": 0.004, "connections": 2,
//! "worker_connections": 512}`. The load is the answering worker's share
//! of its connections in use (a sample of one worker when there are
//! several).

use crate::base::guard;
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

/// `rcdn_node_status;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_node_status", || {
        // SAFETY: cf is valid during parsing; the core loc conf exists.
        match NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) {
            Some(clcf) => {
                clcf.handler = Some(handler);
                NGX_CONF_OK
            }
            None => NGX_CONF_ERROR,
        }
    })
}

/// The status document.
fn document(node: &str, used: usize, total: usize) -> String {
    let load = if total == 0 {
        1.0
    } else {
        used as f64 / total as f64
    };
    let mut s = serde_json::json!({
        "node": node,
        "load": load,
        "connections": used,
        "worker_connections": total,
    })
    .to_string();
    s.push('\n');
    s
}

unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "rcdn_node_status",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is live; the cycle is the running one.
            let (mc, total, free) = unsafe {
                (
                    crate::conf::Module::main_conf(&*r),
                    (*ngx_cycle).connection_n,
                    (*ngx_cycle).free_connection_n,
                )
            };
            let name = mc.map(crate::policy::stats::node_name).unwrap_or_default();
            let body = document(&name, total.saturating_sub(free), total);
            // SAFETY: r is live.
            unsafe {
                crate::http::reply::send(
                    r,
                    NGX_HTTP_OK,
                    body.as_bytes(),
                    ngx_string!("application/json"),
                )
            }
        },
    )
}
