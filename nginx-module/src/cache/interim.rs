//! Interim (1xx) responses before the origin's final one (RFC 9110 §15.2,
//! RFC 9111 §3: never stored). nginx 1.28's proxy takes the first status
//! line it reads as the response's, so a `100 Continue`, `102 Processing`
//! or `103 Early Hints` became the status the fill saw, its fields the
//! response's, and the final response (status line included) its body.
//!
//! The fill's upstream header parser is wrapped instead: once the proxy has
//! parsed a whole 1xx header block, the block is dropped (status and
//! fields) and the proxy parses the bytes after it from the status line
//! again, reset by the upstream's own `reinit_request` (what nginx runs
//! before it retries a request on the next server). The final response's
//! framing (`Content-Length`, chunked, close) is then the proxy's as usual.
//! Fills are wrapped, and the requests of a caching location that go to
//! the origin themselves (a pass): nginx 1.28 cannot forward a 1xx, and
//! the final response is the one the client must get. Other locations
//! keep nginx's behaviour.

use crate::base::guard;
use crate::cache::ctx::{FillCtx, ReqCtx};
use core::ffi::CStr;
use nginx_sys::*;
use ngx::ngx_log_error;
use std::sync::OnceLock;

/// Interim responses a fill skips before it gives up on the upstream (an
/// endless 1xx stream would hold the fill forever).
const MAX_INTERIM: u32 = 16;

type Handler = unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t;

/// The handlers ours wrap, in a request's (or fill's) context.
#[derive(Default)]
pub struct Hook {
    /// The location's content handler (`proxy_pass`).
    content: Option<Handler>,
    /// The proxy's current header parser (status line, then fields).
    parse: Option<Handler>,
    /// The proxy's reset of its parser.
    reinit: Option<Handler>,
    /// Interim responses skipped so far.
    skipped: u32,
}

/// Runs the content handler of `r` (a fill, or a main request of a
/// caching location) through [`content`], which wraps the upstream it
/// creates. Called in the precontent phase (the location's handler is set
/// by then); a handler set later (a hit's) replaces ours.
///
/// # Safety
/// `r` must be live and own the context `hook` is part of.
pub unsafe fn install(r: *mut ngx_http_request_t, hook: &mut Hook) {
    // SAFETY: r is live.
    let current = unsafe { (*r).content_handler };
    let Some(h) = current else { return };
    if h as usize == content as Handler as usize {
        return; // the phases ran again
    }
    hook.content = Some(h);
    // SAFETY: r is live.
    unsafe { (*r).content_handler = Some(content) };
}

/// The hook in the context of `r`: its fill's, or its own.
///
/// # Safety
/// `r` must be live.
unsafe fn hook_of(r: *mut ngx_http_request_t) -> Option<&'static mut Hook> {
    // SAFETY: r is live; our slot holds a ReqCtx on main requests, a
    // FillCtx (or nothing) on subrequests.
    unsafe {
        if (*r).main == r {
            ReqCtx::get(r).map(|c| &mut c.interim)
        } else {
            FillCtx::get(r).map(|f| &mut f.interim)
        }
    }
}

/// The content handler install() gave: the location's, then its upstream
/// wrapped. Without our context (a clone subrequest copied the handler),
/// the location's handler runs alone.
unsafe extern "C" fn content(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    let error = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    // SAFETY: r is live for the whole handler.
    guard::request(log, "interim content", error, || unsafe { run_content(r) })
}

/// # Safety
/// `r` must be live.
unsafe fn run_content(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    let h = match unsafe { hook_of(r) }.and_then(|k| k.content) {
        Some(h) => Some(h),
        // SAFETY: r is live; its core location conf is set.
        None => unsafe { location_handler(r) },
    };
    let Some(h) = h else {
        return NGX_DECLINED as ngx_int_t;
    };
    // SAFETY: the location's own content handler, on its request.
    let rc = unsafe { h(r) };
    // SAFETY: r is live (a request outlives its content handler's return);
    // the context is looked up again (the handler may have run our filters).
    unsafe {
        if let Some(hook) = hook_of(r) {
            wrap(r, hook);
        }
    }
    rc
}

/// The content handler of the location of `r` (`proxy_pass` sets it).
///
/// # Safety
/// `r` must be live.
unsafe fn location_handler(r: *mut ngx_http_request_t) -> Option<Handler> {
    // SAFETY: r is live; loc_conf has a slot per HTTP module, the core's
    // is always set.
    unsafe {
        let clcf =
            (*(*r).loc_conf.add(ngx_http_core_module.ctx_index)).cast::<ngx_http_core_loc_conf_t>();
        clcf.as_ref().and_then(|c| c.handler)
    }
}

/// Wraps the header parser and the reset of a proxied fill's upstream.
/// The header may not have been read yet (the connection is still being
/// made); if it was, the wrapper is never called.
///
/// # Safety
/// `r` must be live and own the context `hook` is part of.
unsafe fn wrap(r: *mut ngx_http_request_t, hook: &mut Hook) {
    // SAFETY: r is live; its upstream, if any, is live with it.
    unsafe {
        let u = (*r).upstream;
        if u.is_null() || !is_proxied(r) || hook.parse.is_some() {
            return;
        }
        hook.parse = (*u).process_header;
        hook.reinit = (*u).reinit_request;
        (*u).process_header = Some(parse);
        (*u).reinit_request = Some(reinit);
    }
}

/// Whether `r` is proxied by nginx's HTTP proxy (its context is set): the
/// only upstream whose byte stream is HTTP/1 messages. Looked up by name,
/// so a build without the proxy module still loads ours.
///
/// # Safety
/// `r` must be live.
unsafe fn is_proxied(r: *mut ngx_http_request_t) -> bool {
    static PROXY: OnceLock<Option<usize>> = OnceLock::new();
    // SAFETY: ngx_cycle and its module list are live while a request runs;
    // static modules do not move (the address is kept across reloads).
    let proxy = *PROXY.get_or_init(|| unsafe { find_module(c"ngx_http_proxy_module") });
    let Some(m) = proxy else { return false };
    // SAFETY: m is the proxy's ngx_module_t; r->ctx has a slot per module.
    unsafe {
        let index = (*(m as *const ngx_module_t)).ctx_index;
        !(*(*r).ctx.add(index)).is_null()
    }
}

/// The address of the module named `name` in the running cycle.
///
/// # Safety
/// `ngx_cycle` must be live.
unsafe fn find_module(name: &CStr) -> Option<usize> {
    // SAFETY: modules has modules_n entries, each with a C string name.
    unsafe {
        let c = ngx_cycle;
        if c.is_null() || (*c).modules.is_null() {
            return None;
        }
        let all = core::slice::from_raw_parts((*c).modules, (*c).modules_n);
        all.iter()
            .copied()
            .find(|&m| !m.is_null() && !(*m).name.is_null() && CStr::from_ptr((*m).name) == name)
            .map(|m| m as usize)
    }
}

/// The wrapped header parser: the proxy's, skipping interim responses.
unsafe extern "C" fn parse(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    let error = NGX_ERROR as ngx_int_t;
    // SAFETY: r is live while its upstream reads the header.
    guard::request(log, "interim parse", error, || unsafe { run_parse(r) })
}

/// # Safety
/// `r` must be live, its upstream reading the header.
unsafe fn run_parse(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is the request whose upstream wrap() gave this parser.
    let Some(hook) = (unsafe { hook_of(r) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: r and its upstream are live while it reads the header.
    let (u, log) = unsafe { ((*r).upstream, (*(*r).connection).log) };
    while hook.skipped <= MAX_INTERIM {
        let Some(inner) = hook.parse else {
            return NGX_ERROR as ngx_int_t;
        };
        // SAFETY: the proxy's parser on its own request. It moves on from
        // the status line to the fields by setting process_header itself:
        // that is then the parser to wrap.
        let rc = unsafe {
            (*u).process_header = Some(inner);
            let rc = inner(r);
            hook.parse = (*u).process_header;
            (*u).process_header = Some(parse);
            rc
        };
        // SAFETY: as above.
        let status = unsafe { (*u).headers_in.status_n };
        // 101 is no interim response (the fill never asks to upgrade).
        if rc != NGX_OK as ngx_int_t || !(100..200).contains(&status) || status == 101 {
            return rc;
        }
        hook.skipped += 1;
        ngx_log_error!(
            NGX_LOG_INFO,
            log,
            "rcdn: skipped an interim {status} response from upstream"
        );
        // SAFETY: the header parse of r's upstream just ended.
        if !unsafe { restart(r, hook) } {
            return NGX_ERROR as ngx_int_t;
        }
        // SAFETY: as above.
        if unsafe { (*u).buffer.pos == (*u).buffer.last } {
            return NGX_AGAIN as ngx_int_t; // the upstream reads on
        }
    }
    ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "rcdn: upstream sent more than {MAX_INTERIM} interim responses"
    );
    NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t
}

/// The upstream retries on another server: the proxy resets its parser,
/// which is wrapped again.
unsafe extern "C" fn reinit(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    let error = NGX_ERROR as ngx_int_t;
    // SAFETY: r is live while its upstream is reset.
    guard::request(log, "interim reinit", error, || unsafe { run_reinit(r) })
}

/// # Safety
/// `r` must be live, its upstream being reset.
unsafe fn run_reinit(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is the request whose upstream wrap() gave this handler.
    let Some(hook) = (unsafe { hook_of(r) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    let Some(inner) = hook.reinit else {
        return NGX_OK as ngx_int_t;
    };
    // SAFETY: the proxy's reset on its own request; then its parser.
    unsafe {
        let rc = inner(r);
        let u = (*r).upstream;
        hook.parse = (*u).process_header;
        (*u).process_header = Some(parse);
        hook.skipped = 0;
        rc
    }
}

/// Drops the interim response just parsed: the proxy's parser starts over
/// at the status line (its `reinit_request`), the upstream's view of the
/// header is cleared as before a retry, and the unparsed bytes move to the
/// start of the header buffer (so interim responses do not fill it up;
/// not with `proxy_cache`, which keeps room in front of them).
///
/// # Safety
/// `r` must be live and own `hook`, its upstream just done with a header.
unsafe fn restart(r: *mut ngx_http_request_t, hook: &mut Hook) -> bool {
    let Some(reinit) = hook.reinit else {
        return false;
    };
    // SAFETY: r's upstream is live; these are the fields (and the calls)
    // ngx_http_upstream_reinit resets before a retry; the header strings
    // were copied into the pool by the proxy, nothing points into the
    // buffer's parsed part any more.
    unsafe {
        if reinit(r) != NGX_OK as ngx_int_t {
            return false;
        }
        let u = (*r).upstream;
        hook.parse = (*u).process_header;
        (*u).process_header = Some(parse);
        (*u).set_keepalive(0);
        (*u).headers_in = core::mem::zeroed();
        (*u).headers_in.content_length_n = -1;
        (*u).headers_in.last_modified_time = -1;
        let size = core::mem::size_of::<ngx_table_elt_t>();
        if ngx_list_init(&mut (*u).headers_in.headers, (*r).pool, 8, size) != NGX_OK as ngx_int_t
            || ngx_list_init(&mut (*u).headers_in.trailers, (*r).pool, 2, size)
                != NGX_OK as ngx_int_t
        {
            return false;
        }
        if !(*u).state.is_null() {
            (*(*u).state).status = 0; // the final status is the one logged
        }
        if !(*r).cache.is_null() {
            return true; // proxy_cache keeps its own header room in front
        }
        let b = &mut (*u).buffer;
        let rest = b.last.offset_from(b.pos).max(0) as usize;
        core::ptr::copy(b.pos, b.start, rest);
        b.pos = b.start;
        b.last = b.start.add(rest);
    }
    true
}
