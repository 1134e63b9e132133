//! Starting a fill: a background subrequest to the same URI, which runs the
//! location's `proxy_pass`. Background subrequests outlive their parent's
//! client, so a fill completes and is stored even when the client that
//! triggered it disconnects (a plain proxied response would be cancelled).

use crate::cache::collapse::Outcome;
use crate::cache::ctx::FillCtx;
use crate::cache::slice::fill::SliceJob;
use crate::cluster;
use crate::conf::ClusterConf;
use crate::conf::LocConf;
use crate::{base::guard, cluster::peer};
use cdncore::http::SURROGATE_CAPABILITY;
use cdncore::Object;
use nginx_sys::*;
use ngx::core::Pool;
use ngx::ngx_log_error;
use std::sync::{Arc, OnceLock};

/// Client headers a fill must not forward: it fetches the whole object,
/// unconditionally (or conditionally on the cached copy's validators).
pub(crate) const DROP: &[&[u8]] = &[
    b"range",
    b"if-range",
    b"if-none-match",
    b"if-modified-since",
    b"if-match",
    b"if-unmodified-since",
    b"accept-encoding",
    b"cache-control",
    b"pragma",
    // Sent with this node's device token appended (`surrogate_capability`).
    b"surrogate-capability",
    // Peer protocol headers: a fill sets its own (or none, to the origin).
    b"x-rcdn-hop",
    b"x-rcdn-key",
    b"x-rcdn-slice",
    b"x-rcdn-peer-secret",
];

/// Starts the fill of `base`: from the key's owner peer when another live
/// node owns it (and the request did not come from a peer), else from the
/// origin. Returns `$rcdn_source` for it ("peer" or "origin"), or `None`
/// if nginx refused the subrequest.
///
/// # Safety
/// `r` must be a live main request.
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    lc: &LocConf,
    base: &[u8],
    coding: &'static str,
    stale: Option<Arc<Object>>,
    shared: Option<u64>,
    slice: Option<SliceJob>,
) -> Option<&'static str> {
    // SAFETY: r is live.
    let cc = unsafe { peer::conf(r) }?;
    // SAFETY: r is live.
    let target = unsafe { target_of(r, cc, base, slice.as_ref()) };
    let source = if target.is_some() { "peer" } else { "origin" };
    // SAFETY: forwarded.
    unsafe { subrequest(r, lc, cc, base, coding, stale, shared, target, slice) }.then_some(source)
}

/// Where a fill goes. A slice (of a known manifest) goes to its slice
/// key's owner, even for a peer's whole-object request (the owner of a
/// slice never forwards it: a peer's slice request is filled here). The
/// first slice of a URL (it learns the manifest) and whole objects go to
/// the base key's owner, unless the request came from a peer.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn target_of(
    r: *mut ngx_http_request_t,
    cc: &ClusterConf,
    key: &[u8],
    slice: Option<&SliceJob>,
) -> Option<cluster::Target> {
    // SAFETY: r is live.
    let from_peer = unsafe { peer::from_peer(r) };
    if slice.is_some_and(|j| j.expect.is_some()) {
        // SAFETY: r is a live main request.
        let owner_side =
            unsafe { crate::cache::ReqCtx::get(r) }.is_some_and(|c| c.peer_slice.is_some());
        return cluster::route(cc, key, owner_side);
    }
    cluster::route(cc, key, from_peer)
}

/// # Safety
/// `r` must be a live main request.
#[allow(clippy::too_many_arguments)]
unsafe fn subrequest(
    r: *mut ngx_http_request_t,
    lc: &LocConf,
    cc: &ClusterConf,
    base: &[u8],
    coding: &'static str,
    stale: Option<Arc<Object>>,
    shared: Option<u64>,
    target: Option<cluster::Target>,
    slice: Option<SliceJob>,
) -> bool {
    // SAFETY: r is live; its pool outlives the subrequest.
    unsafe {
        let log = (*(*r).connection).log;
        let pool = Pool::from_ngx_pool((*r).pool);
        let ps = pool.calloc_type::<ngx_http_post_subrequest_t>();
        if ps.is_null() {
            return false;
        }
        (*ps).handler = Some(done);
        let mut uri = (*r).uri;
        let mut args = (*r).args;
        let mut sr: *mut ngx_http_request_t = core::ptr::null_mut();
        let rc = ngx_http_subrequest(
            r,
            &mut uri,
            &mut args,
            &mut sr,
            ps,
            NGX_HTTP_SUBREQUEST_BACKGROUND as ngx_uint_t,
        );
        if rc != NGX_OK as ngx_int_t || sr.is_null() {
            ngx_log_error!(NGX_LOG_ERR, log, "rcdn: cannot start a fill subrequest");
            return false;
        }
        let mut extra = stale.as_ref().map(|o| validators(o)).unwrap_or_default();
        extra.extend(surrogate_capability(r, lc, target.is_some()));
        if target.is_some() {
            extra.extend(peer::fill_headers(cc, base));
            if let Some(m) = slice.as_ref().and_then(|j| j.expect) {
                extra.push((&b"X-Rcdn-Slice"[..], m.encode().into_bytes()));
            }
        }
        // A slice is fetched in the identity coding: a byte range of one
        // encoding would not mix with another.
        let coding = if slice.is_some() { "identity" } else { coding };
        if let Some(job) = &slice {
            extra.push((&b"Range"[..], job.range_header().into_bytes()));
        }
        if !rebuild_headers(sr, coding, &extra) {
            return false;
        }
        let timeout = target.as_ref().map(|_| cc.timeout_ms());
        let fill = FillCtx {
            base: base.to_vec(),
            coding,
            stale,
            authorized: crate::base::request::header_in(r, b"authorization").is_some(),
            writer: None,
            marker: None,
            outcome: None,
            finished: false,
            log,
            shared,
            peer: target,
            timer: None,
            slice,
            stream_key: None,
            also: None,
            slow_write: crate::base::guard::fault_asked(r, "slow-write"),
            pass: None,
            interim: Default::default(),
            unread: Default::default(),
        };
        let Some(f) = FillCtx::attach(sr, fill) else {
            return false;
        };
        if let Some(ms) = timeout {
            start_timer(sr, f, ms);
        }
        true
    }
}

/// Arms the peer timeout of a fill.
///
/// # Safety
/// `sr` must be the live fill subrequest owning `f`.
unsafe fn start_timer(sr: *mut ngx_http_request_t, f: &mut FillCtx, ms: u64) {
    // SAFETY: an all-zero ngx_event_t is its documented initial state.
    let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
    ev.data = sr.cast();
    ev.handler = Some(peer_timeout);
    ev.log = f.log;
    // Cancelable: a graceful shutdown need not wait for it (the
    // subrequest's own upstream timers hold the worker).
    ev.set_cancelable(1);
    let p: *mut ngx_event_t = &mut *ev;
    // SAFETY: the boxed event stays put until FillCtx::finish removes it.
    unsafe { ngx_add_timer(p, ms as ngx_msec_t) };
    f.timer = Some(ev);
}

/// The owner has not answered in time: mark it down and release the
/// waiters, who start a new fill elsewhere. The subrequest runs on (it is
/// stored if it ever completes).
unsafe extern "C" fn peer_timeout(ev: *mut ngx_event_t) {
    // SAFETY: ev is our fill timer; data is the subrequest whose pool-owned
    // FillCtx removes the timer before it is freed.
    let (sr, timed_out, log) = unsafe { ((*ev).data.cast(), (*ev).timedout() != 0, (*ev).log) };
    if !timed_out {
        return; // cancelled by a shutdown
    }
    guard::event(log, "peer timeout", || {
        // SAFETY: sr is one of our fills (see above).
        let Some(f) = (unsafe { FillCtx::get(sr) }) else {
            return;
        };
        f.timer = None; // fired: nothing to delete
        if f.outcome.is_some() || f.finished {
            return; // the header arrived
        }
        // SAFETY: sr owns f and is live.
        unsafe { peer_failed(sr, f, "timed out") };
        // SAFETY: sr is live (its upstream is still running).
        unsafe { time_out_upstream(sr) };
    });
}

/// Ends the fill's upstream as nginx's own read timeout does (504), so the
/// connection to the slow peer closes now; the client's connection stays
/// open until every subrequest of its request has ended.
///
/// # Safety
/// `sr` must be a live subrequest.
unsafe fn time_out_upstream(sr: *mut ngx_http_request_t) {
    // SAFETY: sr is live; an upstream connection's events carry nginx's
    // upstream handler, which on `timedout` finalizes the upstream as a
    // timeout (ngx_http_upstream_process_header / send_request_handler).
    unsafe {
        let u = (*sr).upstream;
        if u.is_null() || (*u).peer.connection.is_null() {
            return;
        }
        let rev = (*(*u).peer.connection).read;
        if rev.is_null() {
            return;
        }
        if (*rev).timer_set() != 0 {
            ngx_del_timer(rev);
        }
        (*rev).set_timedout(1);
        if let Some(h) = (*rev).handler {
            h(rev);
        }
    }
}

/// Marks the fill's peer down and ends the fill as `PeerFailed`.
///
/// # Safety
/// `sr` must be the live fill subrequest owning `f`.
pub unsafe fn peer_failed(sr: *mut ngx_http_request_t, f: &mut FillCtx, why: &str) {
    let Some(t) = f.peer.clone() else { return };
    // SAFETY: sr is a live fill subrequest.
    if let Some(cc) = unsafe { peer::conf(sr) } {
        ngx_log_error!(
            NGX_LOG_WARN,
            f.log,
            "rcdn: peer \"{}\" ({}) {why}: marked down for {} ms, filling elsewhere",
            t.id,
            t.addr,
            cc.down_ms()
        );
        cluster::mark_down(cc, &t.id);
    }
    if let Some(w) = f.writer.take() {
        w.abort();
    }
    f.outcome = Some(Outcome::PeerFailed);
    f.finish();
}

/// Conditional headers that revalidate a stale copy (RFC 9111 §4.3.1: its
/// `ETag`, quoted, and its `Last-Modified`). The request fields its `Vary`
/// names go as the client sent them (the fill forwards the client's
/// headers; `Accept-Encoding` normalised, the only one a stored response
/// can vary on here).
fn validators(o: &Object) -> Vec<(&'static [u8], Vec<u8>)> {
    cdncore::http::revalidate::validator_headers(o.meta())
        .into_iter()
        .map(|(n, v)| (n.as_bytes(), v.into_bytes()))
        .collect()
}

/// The `Surrogate-Capability` of a fill (Edge Architecture 1.0 §2.2): the
/// client's (a surrogate in front of this one), this node's device token
/// appended, so the origin can target `Surrogate-Control` at it. Sent when
/// this cache obeys `Surrogate-Control` (`rcdn_cdn_cache_control` lists
/// it, as by default). A fill to the owner peer forwards the client's
/// field as it is: the owner, the node that asks the origin, appends.
///
/// # Safety
/// `r` must be live.
unsafe fn surrogate_capability(
    r: *mut ngx_http_request_t,
    lc: &LocConf,
    to_peer: bool,
) -> Option<(&'static [u8], Vec<u8>)> {
    let obeyed = match &lc.targets {
        Some(t) => t
            .iter()
            .any(|n| n.eq_ignore_ascii_case("surrogate-control")),
        None => true, // DEFAULT_TARGETS
    };
    // SAFETY: r is live.
    let sent = unsafe { crate::base::request::header_lines(r, b"surrogate-capability") };
    let mut value = sent.unwrap_or_default();
    let ours = SURROGATE_CAPABILITY.as_bytes();
    let listed = value.split(|&b| b == b',').any(|m| m.trim_ascii() == ours);
    if obeyed && !to_peer && !listed {
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(ours);
    }
    (!value.is_empty()).then_some((&b"Surrogate-Capability"[..], value))
}

/// Gives the subrequest its own header list: the client's headers minus
/// [`DROP`], plus the normalised `Accept-Encoding` and `extra`.
///
/// # Safety
/// `sr` must be a fresh subrequest (it shares the parent's list parts).
unsafe fn rebuild_headers(
    sr: *mut ngx_http_request_t,
    coding: &str,
    extra: &[(&'static [u8], Vec<u8>)],
) -> bool {
    // SAFETY: sr is live; the old list is the parent's and stays intact.
    unsafe {
        let hin = &mut (*sr).headers_in;
        let old = hin.headers;
        let mut list: ngx_list_t = core::mem::zeroed();
        let size = core::mem::size_of::<ngx_table_elt_t>();
        if ngx_list_init(&mut list, (*sr).pool, 20, size) != NGX_OK as ngx_int_t {
            return false;
        }
        let mut part: *const ngx_list_part_t = &old.part;
        while !part.is_null() {
            let elts =
                core::slice::from_raw_parts((*part).elts as *const ngx_table_elt_t, (*part).nelts);
            for h in elts {
                let lower = h.key.as_bytes().to_ascii_lowercase();
                if h.hash == 0 || DROP.contains(&lower.as_slice()) {
                    continue;
                }
                let n = ngx_list_push(&mut list).cast::<ngx_table_elt_t>();
                if n.is_null() {
                    return false;
                }
                *n = *h;
                (*n).next = core::ptr::null_mut();
            }
            part = (*part).next;
        }
        // The list struct moves into the request: if its last part is the
        // embedded one, `last` must follow it.
        let last_is_embedded = core::ptr::eq(list.last, &list.part);
        hin.headers = list;
        if last_is_embedded {
            hin.headers.last = &mut hin.headers.part;
        }
        hin.range = core::ptr::null_mut();
        hin.if_range = core::ptr::null_mut();
        hin.if_none_match = core::ptr::null_mut();
        hin.if_modified_since = core::ptr::null_mut();
        hin.if_match = core::ptr::null_mut();
        hin.if_unmodified_since = core::ptr::null_mut();
        let mut add: Vec<(&[u8], &[u8])> = extra.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        if coding != "identity" {
            add.push((b"Accept-Encoding", coding.as_bytes()));
        }
        for (name, value) in add {
            let n = ngx_list_push(&mut hin.headers).cast::<ngx_table_elt_t>();
            if n.is_null() || add_to_ngx_table(n, (*sr).pool, name, value).is_none() {
                return false;
            }
            (*n).next = core::ptr::null_mut();
        }
        true
    }
}

/// What runs first when a fill subrequest ends (the traffic statistics
/// count its origin fetch); set once by `lib.rs`, so the cache does not
/// depend on the policies above it.
static ON_DONE: OnceLock<unsafe fn(*mut ngx_http_request_t)> = OnceLock::new();

/// Sets [`ON_DONE`]; later calls (configuration reloads) keep the first.
pub fn on_done(f: unsafe fn(*mut ngx_http_request_t)) {
    let _ = ON_DONE.set(f);
}

/// Post-subrequest handler: the fill ended (nginx may call it twice).
unsafe extern "C" fn done(
    sr: *mut ngx_http_request_t,
    _data: *mut core::ffi::c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: nginx passes the live subrequest.
    let log = unsafe { (*(*sr).connection).log };
    guard::event(log, "fill done", || {
        if let Some(counted) = ON_DONE.get() {
            // SAFETY: sr is live; its upstream is finalized by now.
            unsafe { counted(sr) };
        }
        // SAFETY: sr is one of our fills.
        if let Some(f) = unsafe { FillCtx::get(sr) } {
            let broken = f.outcome.is_none() || f.writer.is_some();
            if broken && f.peer.is_some() && !f.finished {
                // SAFETY: sr owns f and is live.
                unsafe { peer_failed(sr, f, "failed (no answer or a cut body)") };
                return;
            }
            if broken {
                // No header, or a body that never completed.
                f.outcome = Some(Outcome::Error);
            }
            // A pass stream still open here never got its last buf: cut.
            crate::cache::pass::end(f, false);
            f.finish();
        }
    });
    rc
}
