//! Registering phase handlers (access, precontent, log) in postconfiguration.

use nginx_sys::*;
use ngx::core::Status;
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};

/// A phase handler.
pub type Handler = unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t;

/// Appends `handler` to `phase`'s handler list.
///
/// # Safety
/// `cf` is the http block's conf, in postconfiguration.
pub unsafe fn push(cf: *mut ngx_conf_t, phase: ngx_http_phases, handler: Handler) -> ngx_int_t {
    // SAFETY: cf is the http block's conf; the core main conf exists.
    let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(unsafe { &*cf }) else {
        return Status::NGX_ERROR.into();
    };
    // SAFETY: the phase array holds ngx_http_handler_pt elements.
    let h = unsafe { ngx_array_push(&mut cmcf.phases[phase as usize].handlers) }
        .cast::<ngx_http_handler_pt>();
    if h.is_null() {
        return Status::NGX_ERROR.into();
    }
    // SAFETY: h points at a fresh slot of the handlers array.
    unsafe { *h = Some(handler) };
    Status::NGX_OK.into()
}
