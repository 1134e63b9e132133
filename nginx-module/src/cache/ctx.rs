//! Per-request state, kept in `r->ctx[module]` and owned by the request
//! pool: its `Drop` runs when the request is freed, so nothing that can fire
//! later (timer, posted event, waiter entry) outlives the request.

use crate::cache::collapse::{self, Outcome};
use crate::cache::CacheStatus;
use crate::conf::Module;
use cdncore::{Object, Writer};
use core::ffi::c_void;
use nginx_sys::*;
use ngx::core::Pool;
use ngx::http::HttpModule;
use std::sync::Arc;

/// How often a request waiting for another worker's fill looks again.
pub const POLL_MS: u64 = 10;

fn slot(r: *mut ngx_http_request_t) -> *mut *mut c_void {
    // SAFETY: r->ctx has one slot per HTTP module; ctx_index is ours.
    unsafe { (*r).ctx.add(Module::module().ctx_index) }
}

/// Stores `value` in the request pool (dropped with the pool) and in the
/// module's ctx slot of `r`.
///
/// # Safety
/// `r` must be a live request whose pool outlives every use of the pointer.
unsafe fn attach<T>(r: *mut ngx_http_request_t, value: T) -> Option<&'static mut T> {
    // The value lives on the Rust heap (properly aligned even if an engine
    // type gains a u128; pool memory is only 8-aligned); the pool owns it
    // through `Owned`, so it is dropped with the request.
    let p = Box::into_raw(Box::new(value));
    // SAFETY: r is live; its pool is valid; Owned is pointer-sized.
    let owner = unsafe { Pool::from_ngx_pool((*r).pool) }.allocate(Owned(p));
    if owner.is_null() {
        // SAFETY: p came from Box::into_raw and was not handed out.
        drop(unsafe { Box::from_raw(p) });
        return None;
    }
    // SAFETY: the slot belongs to this module.
    unsafe { *slot(r) = p.cast() };
    // SAFETY: p is valid until the pool drops its Owned, i.e. past the
    // request.
    Some(unsafe { &mut *p })
}

/// A heap value owned by a request pool.
struct Owned<T>(*mut T);

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from Box::into_raw in `attach` and is
        // dropped exactly once, here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// State of a main request in a caching location.
#[derive(Default)]
pub struct ReqCtx {
    pub status: CacheStatus,
    /// The base cache key (evaluated once).
    pub key: Vec<u8>,
    /// The object a hit serves.
    pub hit: Option<Arc<Object>>,
    /// How a hit's body went out (`$rcdn_body`): "memory" or "sendfile".
    pub body: &'static str,
    /// Registered as a waiter on a fill of `key`.
    wait: Option<Box<ngx_event_t>>,
    /// The manifest of a sliced hit, and the run that sends its slices.
    pub manifest: Option<crate::cache::slice::Manifest>,
    pub slices: Option<Box<crate::cache::slice::serve::Run>>,
    /// Reading a fill's body as it arrives (read-while-writer).
    pub stream: Option<Box<crate::cache::stream::Reader>>,
    /// The response of this request's own fill, not stored, to stream to
    /// it (`crate::cache::pass`).
    pub pass: Option<crate::cache::stream::Shared>,
    /// Set by the wake-up: the fill ended (or the wait timed out).
    pub woken: bool,
    pub timed_out: bool,
    /// Lookups after a wake-up, to bound retries.
    pub rounds: u8,
    /// This request started the fill it waits for.
    pub initiator: bool,
    /// A stale copy existed when the fill started.
    pub had_stale: bool,
    /// What the awaited fill did.
    pub outcome: Option<Outcome>,
    /// Waiting by polling the store for another worker's fill.
    polling: bool,
    /// When a wait for a fill (local or another worker's) gives up, ms.
    pub wait_until: Option<u64>,
    /// Looked once more after taking a fill that another worker's marker
    /// had kept it from (see `lookup::miss`).
    pub rechecked: bool,
    /// `$rcdn_source`: where this request's object came from (`cache`,
    /// `peer`, `origin`).
    pub source: &'static str,
    /// A peer's request for one slice (the owner side): `key` is its
    /// slice key.
    pub peer_slice: Option<crate::cache::slice::PeerSlice>,
    /// A block-tier lookup running on an io thread (`crate::engine::iothread`).
    io: Option<IoWait>,
    /// Its result, taken by the lookup when the phases re-run.
    pub io_result: Option<cdncore::Lookup>,
    /// The upstream handlers that skip interim 1xx responses wrap (a pass).
    pub interim: crate::cache::interim::Hook,
}

/// An io job in flight: its id and a non-cancelable timer (so graceful
/// shutdown waits for it, and a stuck disk cannot hold the request forever).
struct IoWait {
    id: u64,
    ev: Box<ngx_event_t>,
}

/// How long a request waits for its io job before it treats it as a miss.
const IO_TIMEOUT_MS: ngx_msec_t = 30_000;

impl ReqCtx {
    /// The context of a main request, if it has one.
    ///
    /// # Safety
    /// `r` must be a live main request.
    pub unsafe fn get(r: *mut ngx_http_request_t) -> Option<&'static mut ReqCtx> {
        // SAFETY: on main requests our slot only ever holds a ReqCtx.
        unsafe { (*slot(r)).cast::<ReqCtx>().as_mut() }
    }

    /// # Safety
    /// `r` must be a live main request.
    pub unsafe fn get_or_create(r: *mut ngx_http_request_t) -> Option<&'static mut ReqCtx> {
        // SAFETY: forwarded.
        match unsafe { Self::get(r) } {
            Some(c) => Some(c),
            // SAFETY: forwarded.
            None => unsafe { attach(r, ReqCtx::default()) },
        }
    }

    pub fn waiting(&self) -> bool {
        self.wait.is_some()
    }

    pub fn io_pending(&self) -> bool {
        self.io.is_some()
    }

    /// Runs `job` (a block-tier lookup) on an io thread; the phases re-run
    /// when it is done, with its result in `io_result`. False: no io
    /// threads (the caller looks up inline).
    ///
    /// # Safety
    /// `r` must be the live main request owning this context.
    pub unsafe fn start_io(
        &mut self,
        r: *mut ngx_http_request_t,
        job: Box<dyn FnOnce() -> crate::engine::iothread::Done + Send>,
    ) -> bool {
        let Some(id) = crate::engine::iothread::submit(r, io_done, job) else {
            return false;
        };
        // SAFETY: an all-zero ngx_event_t is its documented initial state.
        let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
        ev.data = r.cast();
        ev.handler = Some(io_timeout);
        // SAFETY: r and its connection are live.
        ev.log = unsafe { (*(*r).connection).log };
        ev.set_cancelable(0);
        // SAFETY: the boxed event stays put until io_cancel removes the timer.
        unsafe { ngx_add_timer(&mut *ev, IO_TIMEOUT_MS) };
        self.io = Some(IoWait { id, ev });
        true
    }

    /// Forgets the io job (its result is dropped) and stops its timer.
    fn io_cancel(&mut self) {
        if let Some(mut w) = self.io.take() {
            crate::engine::iothread::forget(w.id);
            // SAFETY: our live timer event; this only unlinks it.
            unsafe {
                if w.ev.timer_set() != 0 {
                    ngx_del_timer(&mut *w.ev);
                }
            }
        }
    }

    /// Waits for the fill of `self.key`: woken by `collapse::finish` or by
    /// a non-cancelable timeout (so graceful shutdown waits for us).
    ///
    /// # Safety
    /// `r` must be the live main request owning this context.
    pub unsafe fn start_wait(&mut self, r: *mut ngx_http_request_t, timeout: ngx_msec_t) {
        // SAFETY: an all-zero ngx_event_t is its documented initial state.
        let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
        ev.data = r.cast();
        ev.handler = Some(wake);
        // SAFETY: r and its connection are live.
        ev.log = unsafe { (*(*r).connection).log };
        ev.set_cancelable(0);
        let p: *mut ngx_event_t = &mut *ev;
        // SAFETY: the boxed event stays put until unwait removes the timer.
        unsafe { ngx_add_timer(p, timeout.max(1)) };
        collapse::wait(&self.key, p);
        self.wait = Some(ev);
        self.polling = false;
        self.woken = false;
        self.timed_out = false;
    }

    /// Waits for another worker's fill of `self.key`: the lookup re-runs
    /// every `POLL_MS` until the object is in the shared store, the fill
    /// marker is gone, or `timeout` (from the first wait) has passed.
    ///
    /// # Safety
    /// `r` must be the live main request owning this context.
    pub unsafe fn start_poll(&mut self, r: *mut ngx_http_request_t, timeout: ngx_msec_t) {
        let now = cdncore::now_ms();
        let until = *self.wait_until.get_or_insert(now + timeout as u64);
        let delay = until.saturating_sub(now).clamp(1, POLL_MS);
        // SAFETY: an all-zero ngx_event_t is its documented initial state.
        let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
        ev.data = r.cast();
        ev.handler = Some(wake);
        // SAFETY: r and its connection are live.
        ev.log = unsafe { (*(*r).connection).log };
        ev.set_cancelable(0);
        let p: *mut ngx_event_t = &mut *ev;
        // SAFETY: the boxed event stays put until unwait removes the timer.
        unsafe { ngx_add_timer(p, delay as ngx_msec_t) };
        self.wait = Some(ev);
        self.polling = true;
        self.woken = false;
        self.timed_out = false;
    }

    /// Deregisters the waiter: timer, posted event and table entry.
    pub fn unwait(&mut self) {
        if let Some(mut ev) = self.wait.take() {
            let p: *mut ngx_event_t = &mut *ev;
            collapse::unwait(&self.key, p);
            // SAFETY: p is our live event; these only unlink it.
            unsafe {
                if ev.timer_set() != 0 {
                    ngx_del_timer(p);
                }
                if ev.posted() != 0 {
                    ngx_delete_posted_event(p);
                }
            }
        }
    }
}

impl Drop for ReqCtx {
    fn drop(&mut self) {
        self.unwait();
        self.io_cancel();
    }
}

/// An io job of `r` is done: keep its result and re-run the phases.
///
/// # Safety
/// `r` must be a live main request whose job was still registered.
unsafe fn io_done(r: *mut ngx_http_request_t, out: crate::engine::iothread::Done) {
    // SAFETY: r is live (see above).
    let c = unsafe { (*r).connection };
    // SAFETY: r is a live main request with a ReqCtx (it submitted the job).
    if let Some(ctx) = unsafe { ReqCtx::get(r) } {
        ctx.io_cancel();
        // A job that panicked returns `()`: treat it as a miss.
        let found = out.downcast::<cdncore::Lookup>().map(|b| *b);
        ctx.io_result = Some(found.unwrap_or(cdncore::Lookup::Miss));
    }
    // SAFETY: r and c are live; resumes the phase handler that returned
    // NGX_AGAIN.
    unsafe {
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(c);
    }
}

/// The io job took too long: go on as if the block tiers missed.
unsafe extern "C" fn io_timeout(ev: *mut ngx_event_t) {
    // SAFETY: ev is our io timer; data is its live request (the timer is
    // removed by ReqCtx::drop before the request can be freed).
    let r = unsafe { (*ev).data.cast::<ngx_http_request_t>() };
    // SAFETY: r is live.
    let c = unsafe { (*r).connection };
    // SAFETY: c is live.
    crate::base::guard::event(unsafe { (*c).log }, "io timeout", || {
        // SAFETY: r is a live main request with a ReqCtx.
        if let Some(ctx) = unsafe { ReqCtx::get(r) } {
            ctx.io_cancel();
            ctx.io_result = Some(cdncore::Lookup::Miss);
        }
    });
    // SAFETY: r and c are live.
    unsafe {
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(c);
    }
}

/// Wake-up of a waiting request: re-run its phases (the lookup again).
unsafe extern "C" fn wake(ev: *mut ngx_event_t) {
    // SAFETY: ev is our waiter event; data is its live request (the event
    // is unlinked by ReqCtx::drop before the request can be freed).
    let (r, timed_out) = unsafe {
        (
            (*ev).data.cast::<ngx_http_request_t>(),
            (*ev).timedout() != 0,
        )
    };
    // SAFETY: r is live (see above).
    let c = unsafe { (*r).connection };
    // SAFETY: c is live.
    crate::base::guard::event(unsafe { (*c).log }, "wake", || {
        // SAFETY: r is a live main request with a ReqCtx (it registered ev).
        if let Some(ctx) = unsafe { ReqCtx::get(r) } {
            ctx.unwait();
            if ctx.polling {
                // A poll is not a fill's end: look again, as a new lookup.
                ctx.polling = false;
                ctx.timed_out = ctx.wait_until.is_some_and(|u| cdncore::now_ms() >= u);
                return;
            }
            ctx.woken = true;
            ctx.timed_out = timed_out;
            ctx.outcome = if timed_out || crate::cache::stream::exists(&ctx.key) {
                None
            } else {
                collapse::recent(&ctx.key, collapse::PASS_MS)
            };
        }
    });
    // SAFETY: r and c are live; this is how nginx resumes a phase handler
    // that returned NGX_AGAIN.
    unsafe {
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(c);
    }
}

/// State of a background fill subrequest.
pub struct FillCtx {
    /// Base key of the URL (the variant key is derived from it).
    pub base: Vec<u8>,
    /// Normalised coding of the request that started the fill.
    pub coding: &'static str,
    /// The stale copy being revalidated, if any.
    pub stale: Option<Arc<Object>>,
    /// The request carried `Authorization` (RFC 9111 §3.5).
    pub authorized: bool,
    pub writer: Option<Writer>,
    /// Store a variant marker at `base` when the writer commits.
    pub marker: Option<cdncore::Meta>,
    pub outcome: Option<Outcome>,
    pub finished: bool,
    pub log: *mut ngx_log_t,
    /// Token of the shared "fill in progress" marker, if this fill holds it.
    pub shared: Option<u64>,
    /// The owner peer this fill asks (`None`: the origin).
    pub peer: Option<crate::cluster::Target>,
    /// Gives up on a peer that has not answered in `rcdn_peer_timeout`.
    pub timer: Option<Box<ngx_event_t>>,
    /// The slice this fill fetches (`rcdn_slice`); `base` is then the
    /// slice's key, or the URL's base key for the first slice fetched.
    pub slice: Option<crate::cache::slice::fill::SliceJob>,
    /// The key this fill's body streams under (`crate::cache::stream`), if any.
    pub stream_key: Option<Vec<u8>>,
    /// A second key this fill claimed (a first slice's own key), with its
    /// shared marker token: released and finished with the fill.
    pub also: Option<(Vec<u8>, Option<u64>)>,
    /// `X-Rcdn-Fault: slow-write` (fault-injection builds): the write-through
    /// sleeps 1 s first, to show whether it holds up the event loop.
    pub slow_write: bool,
    /// The response, not stored, streaming to the client that started the
    /// fill (`crate::cache::pass`).
    pub pass: Option<crate::cache::stream::Shared>,
    /// The upstream handlers that skip interim 1xx responses wrap.
    pub interim: crate::cache::interim::Hook,
    /// Bufs of the upstream's body not yet consumed, in order: a pass
    /// stream was full (`crate::cache::pass::room`). They stay busy for
    /// nginx, which reads no more into them meanwhile.
    pub unread: std::collections::VecDeque<*mut ngx_buf_t>,
}

impl FillCtx {
    /// # Safety
    /// `sr` must be a live subrequest.
    pub unsafe fn get(sr: *mut ngx_http_request_t) -> Option<&'static mut FillCtx> {
        // SAFETY: on subrequests our slot only ever holds a FillCtx (we set
        // it when we create the fill; other subrequests leave it null).
        unsafe { (*slot(sr)).cast::<FillCtx>().as_mut() }
    }

    /// # Safety
    /// `sr` must be a live subrequest sharing the pool of its main request.
    pub unsafe fn attach(sr: *mut ngx_http_request_t, f: FillCtx) -> Option<&'static mut FillCtx> {
        // SAFETY: forwarded.
        unsafe { attach(sr, f) }
    }

    /// Ends the fill once: records the outcome and wakes every waiter.
    pub fn finish(&mut self) {
        if let Some(mut ev) = self.timer.take() {
            // SAFETY: our live timer event; this only unlinks it.
            unsafe {
                if ev.timer_set() != 0 {
                    ngx_del_timer(&mut *ev);
                }
            }
        }
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(w) = self.writer.take() {
            w.abort();
        }
        let outcome = self.outcome.unwrap_or(Outcome::Error);
        if let Some(k) = self.stream_key.take() {
            crate::cache::stream::end(&k, false);
        }
        if let Some((k, token)) = self.also.take() {
            collapse::release_shared(&k, token);
            collapse::finish(&k, outcome);
        }
        collapse::release_shared(&self.base, self.shared.take());
        collapse::finish(&self.base, outcome);
    }
}

impl Drop for FillCtx {
    fn drop(&mut self) {
        // A fill torn down without its post handler (request terminated)
        // must still release its waiters.
        self.finish();
        crate::cache::pass::end(self, false);
    }
}
