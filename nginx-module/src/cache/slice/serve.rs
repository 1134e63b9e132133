//! Serving a sliced object (see [`crate::cache::slice`]): the content handler
//! sends the header from the manifest (200, 206 for one client range, 416,
//! HEAD, 304 through nginx's not-modified filter), then the body slice by
//! slice. Each slice is a cache hit (memory buf, or sendfile from a block
//! tier) or a fill this request waits for; the next [`slice::WINDOW`]
//! slices are filled ahead. A slice is sent only once the previous one is
//! fully written, and only its object is pinned, so memory per download is
//! bounded by the window, whatever the object's size. A slice that cannot
//! be had (origin down, object changed) closes the connection: the client
//! sees a short body, never wrong bytes.

use crate::base::request::header_in;
use crate::cache::collapse;
use crate::cache::ctx::{ReqCtx, POLL_MS};
use crate::cache::slice::block::{self, Block, Mem};
use crate::cache::slice::fill::SliceJob;
use crate::cache::slice::{self, Manifest, Want};
use crate::engine::iothread::Done;
use crate::{
    base::guard, cache::body, cache::fill, cache::serve, cache::stream, conf::Module, engine::store,
};
use cdncore::{now_ms, Cache};
use nginx_sys::*;
use ngx::core::{Pool, Status};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
use ngx::ngx_log_error;
use std::sync::Arc;

/// Slices sent per event before yielding to other connections.
const STEPS: usize = 16;
/// Fills of one slice a request tries before giving up.
const MAX_FILLS: u8 = 2;

/// What keeps the bytes of the slice being sent alive.
enum Pin {
    Obj(#[allow(dead_code)] Arc<cdncore::Object>),
    Stream(#[allow(dead_code)] stream::Shared),
}

/// The state of one sliced response.
pub struct Run {
    base: Vec<u8>,
    m: Manifest,
    /// Next byte to send, and the end of the response, `[next, end)`.
    next: u64,
    end: u64,
    pin: Option<Pin>,
    ev: Box<ngx_event_t>,
    /// `ev` is armed: a local fill wait (in `collapse` under `wait_key`) or
    /// a poll of another worker's fill.
    waiting: bool,
    wait_key: Vec<u8>,
    /// The slice stream `ev` is registered on (a slice being filled).
    reading: Option<stream::Shared>,
    /// Fills of the current slice waited for; poll deadline of it.
    fills: u8,
    deadline: Option<u64>,
    /// Slices below this were considered for prefetch.
    prefetched: u64,
    lock_timeout: u64,
    /// A block-tier read of slice `.1` on an io thread (job id `.0`);
    /// `ev` is its timeout.
    io: Option<(u64, u64)>,
    /// Block-tier answers not used yet: (slice, the slice or a miss).
    found: Vec<(u64, Option<Block>)>,
    /// Prefetch's look at the block tiers on an io thread (job id).
    ahead: Option<u64>,
}

/// How long a slice waits for its block-tier read before it is refilled.
const IO_TIMEOUT_MS: ngx_msec_t = 30_000;

/// `X-Rcdn-Fault: slow-slice-read` (fault-injection builds): each
/// block-tier read of a slice (and a purge) takes 1 s more (on its io
/// thread, or inline).
pub(crate) const SLOW_READ: &str = "slow-slice-read";

/// Whether `r` asks for [`SLOW_READ`].
///
/// # Safety
/// `r` must be live.
pub(crate) unsafe fn slow_read_asked(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: forwarded.
    unsafe { guard::fault_asked(r, SLOW_READ) }
}

impl Run {
    fn unwait(&mut self) {
        let p: *mut ngx_event_t = &mut *self.ev;
        if self.waiting {
            collapse::unwait(&self.wait_key, p);
            self.waiting = false;
        }
        if let Some(s) = self.reading.take() {
            if let Ok(mut s) = s.try_borrow_mut() {
                s.readers.retain(|&e| e != p);
            }
        }
        // SAFETY: p is our live event; these only unlink it.
        unsafe {
            if self.ev.timer_set() != 0 {
                ngx_del_timer(p);
            }
            if self.ev.posted() != 0 {
                ngx_delete_posted_event(p);
            }
        }
    }

    /// Forgets the io jobs (their results are dropped unread).
    fn stop_io(&mut self) {
        if let Some((id, _)) = self.io.take() {
            crate::engine::iothread::cancel(id);
        }
        if let Some(id) = self.ahead.take() {
            crate::engine::iothread::cancel(id);
        }
    }

    /// Length of slice `i`.
    fn len(&self, i: u64) -> u64 {
        let (s, e) = self.m.bounds(i);
        e - s
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.unwait();
        self.stop_io();
    }
}

/// The content handler of a sliced hit.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "slice serve",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is the live main request whose lookup chose us.
            unsafe { start(r) }
        },
    )
}

/// What the client gets of the object: `If-Range`, and a conditional
/// request (left to nginx's not-modified filter) disable the Range.
///
/// # Safety
/// `r` must be live.
unsafe fn plan(r: *mut ngx_http_request_t, meta: &cdncore::Meta, total: u64) -> Want {
    // SAFETY: r is live.
    let h = |n: &[u8]| unsafe { header_in(r, n) };
    if h(b"if-none-match").is_some() || h(b"if-modified-since").is_some() {
        return Want::Full;
    }
    if let Some(ir) = h(b"if-range") {
        let etag_ok = meta
            .etag
            .as_deref()
            .is_some_and(|e| e == ir && !e.starts_with(b"W/"));
        let lm_ok = meta
            .header("last-modified")
            .is_some_and(|v| v.as_ref() == ir);
        if !etag_ok && !lm_ok {
            return Want::Full;
        }
    }
    slice::want(h(b"range"), total)
}

/// # Safety
/// `r` must be a live main request with a sliced hit in its context.
unsafe fn start(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: r is a live main request.
    let Some(ctx) = (unsafe { ReqCtx::get(r) }) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let (Some(m), Some(obj)) = (ctx.manifest, ctx.hit.clone()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    ctx.body = "slices";
    // SAFETY: r is live and its header not sent.
    if !unsafe { serve::put_headers(r, obj.meta()) } {
        return Status::NGX_ERROR.into();
    }
    // SAFETY: r is live.
    let want = unsafe { plan(r, obj.meta(), m.total) };
    let (from, to) = match want {
        Want::Full => (0, m.total),
        Want::Part(a, b) => (a, b),
        Want::Unsatisfiable => (0, 0),
    };
    // SAFETY: r is live; header strings are copied into its pool.
    unsafe {
        let out = &mut (*r).headers_out;
        out.content_length_n = (to - from) as off_t;
        let cr = match want {
            Want::Full => None,
            Want::Part(a, b) => {
                out.status = NGX_HTTP_PARTIAL_CONTENT as ngx_uint_t;
                Some(format!("bytes {a}-{}/{}", b - 1, m.total))
            }
            Want::Unsatisfiable => {
                out.status = NGX_HTTP_RANGE_NOT_SATISFIABLE as ngx_uint_t;
                Some(format!("bytes */{}", m.total))
            }
        };
        if let Some(cr) = cr {
            if crate::http::reply::push_header(r, b"Content-Range", cr.as_bytes()).is_none() {
                return Status::NGX_ERROR.into();
            }
        }
        if crate::http::reply::push_header(r, b"Accept-Ranges", b"bytes").is_none() {
            return Status::NGX_ERROR.into();
        }
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        if to == from {
            return ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t);
        }
    }
    // SAFETY: an all-zero ngx_event_t is its documented initial state.
    let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
    ev.data = r.cast();
    ev.handler = Some(wake);
    // SAFETY: r and its connection are live.
    ev.log = unsafe { (*(*r).connection).log };
    ev.set_cancelable(0);
    // SAFETY: r is live.
    let lock_timeout = Module::location_conf(unsafe { &*r }).map_or(5_000, |lc| lc.lock_timeout);
    ctx.slices = Some(Box::new(Run {
        base: ctx.key.clone(),
        m,
        next: from,
        end: to,
        pin: None,
        ev,
        waiting: false,
        wait_key: Vec::new(),
        reading: None,
        fills: 0,
        deadline: None,
        prefetched: 0,
        lock_timeout: lock_timeout as u64,
        io: None,
        found: Vec::new(),
        ahead: None,
    }));
    // SAFETY: r is live; the extra reference keeps it until we finalize.
    unsafe {
        (*r).write_event_handler = Some(write_handler);
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
        if let Some(rc) = drive(r) {
            ngx_http_finalize_request(r, rc);
        }
    }
    Status::NGX_DONE.into()
}

/// Output the socket did not take yet. (`r->out` alone may hold the
/// header, held back by `postpone_output`; slice bufs carry `flush`, so
/// they are written at once or leave the connection `buffered`.)
///
/// # Safety
/// `r` must be live.
pub(crate) unsafe fn pending(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: r and its connection are live.
    unsafe { (*r).buffered() != 0 || (*(*r).connection).buffered() != 0 }
}

/// Waits for the client socket to take more (as `ngx_http_writer`).
///
/// # Safety
/// `r` must be a live main request.
pub(crate) unsafe fn arm_write(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: r, its connection and core loc conf are live.
    unsafe {
        let wev = (*(*r).connection).write;
        let Some(clcf) = NgxHttpCoreModule::location_conf(&*r) else {
            return false;
        };
        if (*wev).delayed() == 0 {
            ngx_add_timer(wev, clcf.send_timeout);
        }
        ngx_handle_write_event(wev, clcf.send_lowat) == NGX_OK as ngx_int_t
    }
}

/// Sends what can be sent now. `Some(rc)`: the response is over; finalize
/// the request with `rc`.
///
/// # Safety
/// `r` must be a live main request with a slice run.
unsafe fn drive(r: *mut ngx_http_request_t) -> Option<ngx_int_t> {
    let err = Some(NGX_ERROR as ngx_int_t);
    // SAFETY: r is a live main request.
    let Some(run) = (unsafe { ReqCtx::get(r) }).and_then(|c| c.slices.as_deref_mut()) else {
        return err;
    };
    if run.waiting || run.reading.is_some() || run.io.is_some() {
        return None; // a write event while we wait for a slice
    }
    for _ in 0..STEPS {
        // SAFETY: r is live.
        if unsafe { pending(r) } {
            // SAFETY: r is live; a null chain flushes what is buffered.
            let rc = unsafe { ngx_http_output_filter(r, core::ptr::null_mut()) };
            if rc == NGX_ERROR as ngx_int_t {
                return err;
            }
            // SAFETY: r is live.
            if unsafe { pending(r) } {
                // SAFETY: r is live.
                return if unsafe { arm_write(r) } { None } else { err };
            }
        }
        run.pin = None; // everything sent so far is in the kernel
        if run.next >= run.end {
            // SAFETY: r is live.
            return Some(unsafe { ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t) });
        }
        let i = run.next / run.m.size;
        // SAFETY: r is live.
        unsafe { prefetch(r, run, i) };
        // SAFETY: r is live.
        match unsafe { fetch(r, run, i) } {
            Fetch::Ready(o) => {
                // SAFETY: r is live, its header sent.
                if unsafe { send(r, run, i, o) } == NGX_ERROR as ngx_int_t {
                    return err;
                }
            }
            Fetch::Stream(s) => {
                // SAFETY: r is live, its header sent.
                match unsafe { send_stream(r, run, i, s) } {
                    Some(rc) if rc == NGX_ERROR as ngx_int_t => return err,
                    Some(_) => {}
                    None => return None,
                }
            }
            Fetch::Wait => return None,
            Fetch::Fail => {
                // SAFETY: r is live.
                let log = unsafe { (*(*r).connection).log };
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "rcdn: slice {i} of a sliced object could not be filled; closing the response"
                );
                return err;
            }
        }
    }
    // Let other connections run; the posted write event brings us back.
    // SAFETY: the connection's write event is live; we run on the loop.
    unsafe {
        ngx_post_event(
            (*(*r).connection).write,
            core::ptr::addr_of_mut!(ngx_posted_events),
        )
    };
    None
}

enum Fetch {
    Ready(Block),
    /// The slice is being filled in this worker: read it as it arrives.
    Stream(stream::Shared),
    Wait,
    Fail,
}

fn job(run: &Run, i: u64) -> SliceJob {
    SliceJob {
        base: run.base.clone(),
        index: i,
        size: run.m.size,
        expect: Some(run.m),
    }
}

/// What the cache has of slice `i` now.
enum Look {
    Hit(Block),
    Miss,
    /// Its block-tier read runs on an io thread; `ev` wakes us.
    Pending,
}

/// Slice `i`: an answer of a block-tier read, or the memory tier, or a
/// block-tier read on an io thread (inline without io threads).
///
/// # Safety
/// `r` must be a live main request owning `run`.
unsafe fn look(r: *mut ngx_http_request_t, run: &mut Run, key: &[u8], i: u64) -> Look {
    run.found.retain(|(j, _)| *j >= i);
    let cache = store::get();
    if let Some(at) = run.found.iter().position(|(j, _)| *j == i) {
        if let Some(b) = run.found.swap_remove(at).1 {
            return Look::Hit(b);
        }
        // A miss seen on a thread may be out of date: a fill may have
        // stored the slice since (in memory or, another worker's, in a
        // block tier).
        return cache
            .as_ref()
            .and_then(|c| block::resident(c, key, run.len(i)))
            .map_or(Look::Miss, Look::Hit);
    }
    let Some(cache) = cache else {
        return Look::Miss;
    };
    let threads = crate::engine::iothread::enabled();
    match block::in_memory(&cache, key, run.len(i)) {
        Mem::Hit(b) => Look::Hit(b),
        Mem::Miss => Look::Miss,
        // Being filled here: not in a block tier yet, read the fill.
        Mem::AskBlocks if threads && stream::find(key, "identity").is_some() => Look::Miss,
        // SAFETY: forwarded.
        Mem::AskBlocks if threads && unsafe { read_block(r, run, &cache, key, i) } => Look::Pending,
        // No io thread: read it here.
        Mem::AskBlocks => {
            // SAFETY: r is live.
            block::in_blocks(&cache, key, run.len(i), unsafe { slow_read_asked(r) })
                .map_or(Look::Miss, Look::Hit)
        }
    }
}

/// Reads slice `i` from the block tiers on an io thread; its answer goes
/// to `run.found` and the response goes on. False: no io thread.
///
/// # Safety
/// `r` must be a live main request owning `run`.
unsafe fn read_block(
    r: *mut ngx_http_request_t,
    run: &mut Run,
    cache: &Cache,
    key: &[u8],
    i: u64,
) -> bool {
    let (cache, key, len) = (cache.clone(), key.to_vec(), run.len(i));
    // SAFETY: r is live.
    let slow = unsafe { slow_read_asked(r) };
    let job = move || Box::new(block::in_blocks(&cache, &key, len, slow)) as Done;
    // SAFETY: `then` runs only while the job is registered, i.e. while
    // the run (and so its request) lives: Run::drop cancels it.
    let then = move |out: Done| unsafe { block_read(r, i, out) };
    let Some(id) = crate::engine::iothread::call(Box::new(job), Box::new(then)) else {
        return false;
    };
    let p: *mut ngx_event_t = &mut *run.ev;
    // SAFETY: the boxed event stays put until unwait removes the timer.
    unsafe { ngx_add_timer(p, IO_TIMEOUT_MS) };
    run.io = Some((id, i));
    true
}

/// The block-tier read of slice `i` is done: go on sending.
///
/// # Safety
/// `r` must be a live main request whose run started the read.
unsafe fn block_read(r: *mut ngx_http_request_t, i: u64, out: Done) {
    // SAFETY: r is live.
    let Some(run) = (unsafe { ReqCtx::get(r) }).and_then(|c| c.slices.as_deref_mut()) else {
        return;
    };
    run.io = None;
    run.unwait(); // its timeout
                  // A job that panicked returns `()`: a miss.
    let b = out.downcast::<Option<Block>>().ok().and_then(|b| *b);
    run.found.push((i, b));
    // SAFETY: r is live; its connection too.
    unsafe {
        let c = (*r).connection;
        step(r);
        ngx_http_run_posted_requests(c);
    }
}

/// Prefetch's look at slices `ask` in the block tiers, on an io thread:
/// the ones found are kept for the response, the others are filled.
///
/// # Safety
/// `r` must be a live main request owning `run`.
unsafe fn look_ahead(r: *mut ngx_http_request_t, run: &mut Run, cache: &Cache, ask: Vec<u64>) {
    let keys: Vec<(u64, Vec<u8>, u64)> = ask
        .iter()
        .map(|&j| {
            (
                j,
                slice::key(&run.base, run.m.size, run.m.ident, j),
                run.len(j),
            )
        })
        .collect();
    let cache = cache.clone();
    // SAFETY: r is live.
    let slow = unsafe { slow_read_asked(r) };
    let job = move || {
        let got: Vec<(u64, Option<Block>)> = keys
            .iter()
            .map(|(j, k, len)| (*j, block::in_blocks(&cache, k, *len, slow)))
            .collect();
        Box::new(got) as Done
    };
    // SAFETY: `then` runs only while the job is registered, i.e. while
    // the run (and so its request) lives: Run::drop cancels it.
    let then = move |out: Done| unsafe { looked_ahead(r, out) };
    run.ahead = crate::engine::iothread::call(Box::new(job), Box::new(then));
}

/// Prefetch's look at the block tiers is done.
///
/// # Safety
/// `r` must be a live main request whose run started the look.
unsafe fn looked_ahead(r: *mut ngx_http_request_t, out: Done) {
    // SAFETY: r is live.
    let Some(run) = (unsafe { ReqCtx::get(r) }).and_then(|c| c.slices.as_deref_mut()) else {
        return;
    };
    run.ahead = None;
    let Ok(got) = out.downcast::<Vec<(u64, Option<Block>)>>() else {
        return; // the job panicked: each slice is looked up when it is sent
    };
    let next = run.next / run.m.size;
    let Some(cache) = store::get() else {
        return;
    };
    for (j, b) in *got {
        if j < next || run.found.iter().any(|(k, _)| *k == j) {
            continue;
        }
        if b.is_some() {
            run.found.push((j, b));
            continue;
        }
        if j == next {
            continue; // `fetch` reads or fills the slice being sent
        }
        let key = slice::key(&run.base, run.m.size, run.m.ident, j);
        if block::resident(&cache, &key, run.len(j)).is_some() {
            continue; // filled while we looked
        }
        if let collapse::Start::Fill(token) = collapse::claim(&key, run.lock_timeout) {
            // SAFETY: forwarded.
            unsafe { start_fill(r, run, &key, j, token) };
        }
    }
    // SAFETY: r is live; fills are subrequests posted on its connection.
    unsafe { ngx_http_run_posted_requests((*r).connection) };
}

/// Starts the fill of slice `i` if nobody fills it; true if it runs.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn start_fill(
    r: *mut ngx_http_request_t,
    run: &Run,
    key: &[u8],
    i: u64,
    token: Option<u64>,
) -> bool {
    // SAFETY: r is live.
    let Some(lc) = Module::location_conf(unsafe { &*r }) else {
        return false;
    };
    // SAFETY: forwarded.
    if unsafe { fill::start(r, lc, key, "identity", None, token, Some(job(run, i))) }.is_some() {
        return true;
    }
    collapse::release_shared(key, token);
    collapse::abandon(key);
    false
}

/// Keeps the next `WINDOW` slices (of this response) filling (not for a
/// peer's request).
///
/// # Safety
/// `r` must be a live main request.
unsafe fn prefetch(r: *mut ngx_http_request_t, run: &mut Run, i: u64) {
    // A peer asks for the slices it needs itself (from their owners).
    // SAFETY: r is live.
    if unsafe { crate::cluster::peer::from_peer(r) } {
        return;
    }
    if run.ahead.is_some() {
        return; // the block tiers are being asked: later
    }
    let last = (run.end - 1) / run.m.size;
    let hi = (i + slice::WINDOW).min(last);
    let lo = run.prefetched.max(i + 1);
    let Some(cache) = store::get() else {
        return;
    };
    let threads = crate::engine::iothread::enabled();
    let mut ask = Vec::new();
    for j in lo..=hi {
        let key = slice::key(&run.base, run.m.size, run.m.ident, j);
        let have = match block::in_memory(&cache, &key, run.len(j)) {
            Mem::Hit(_) => true,
            Mem::Miss => false,
            Mem::AskBlocks if threads => {
                ask.push(j);
                continue;
            }
            Mem::AskBlocks => {
                // SAFETY: r is live.
                block::in_blocks(&cache, &key, run.len(j), unsafe { slow_read_asked(r) }).is_some()
            }
        };
        if have {
            continue;
        }
        if let collapse::Start::Fill(token) = collapse::claim(&key, run.lock_timeout) {
            // SAFETY: forwarded.
            unsafe { start_fill(r, run, &key, j, token) };
        }
    }
    run.prefetched = run.prefetched.max(hi + 1);
    if !ask.is_empty() {
        // SAFETY: forwarded.
        unsafe { look_ahead(r, run, &cache, ask) };
    }
}

/// Slice `i` from the cache, or a wait for its fill.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn fetch(r: *mut ngx_http_request_t, run: &mut Run, i: u64) -> Fetch {
    let key = slice::key(&run.base, run.m.size, run.m.ident, i);
    // SAFETY: forwarded.
    match unsafe { look(r, run, &key, i) } {
        Look::Hit(b) => {
            run.fills = 0;
            run.deadline = None;
            return Fetch::Ready(b);
        }
        Look::Pending => return Fetch::Wait,
        Look::Miss => {}
    }
    if let Some(s) = stream::find(&key, "identity") {
        return Fetch::Stream(s);
    }
    let now = now_ms();
    let deadline = *run.deadline.get_or_insert(now + run.lock_timeout);
    match collapse::claim(&key, run.lock_timeout) {
        collapse::Start::Fill(token) => {
            // SAFETY: forwarded.
            if run.fills >= MAX_FILLS || !unsafe { start_fill(r, run, &key, i, token) } {
                if run.fills >= MAX_FILLS {
                    collapse::release_shared(&key, token);
                    collapse::abandon(&key);
                }
                return Fetch::Fail;
            }
            run.fills += 1;
            wait_local(run, key);
        }
        collapse::Start::Local => wait_local(run, key),
        collapse::Start::OtherWorker if now >= deadline => {
            // The other worker's fill is late: fill it ourselves.
            // SAFETY: forwarded.
            if run.fills >= MAX_FILLS
                || !collapse::try_start(&key)
                || !unsafe { start_fill(r, run, &key, i, None) }
            {
                return Fetch::Fail;
            }
            run.fills += 1;
            wait_local(run, key);
        }
        collapse::Start::OtherWorker => {
            let p: *mut ngx_event_t = &mut *run.ev;
            // SAFETY: the boxed event stays put until unwait removes the timer.
            unsafe { ngx_add_timer(p, POLL_MS as ngx_msec_t) };
            run.waiting = true;
            run.wait_key.clear();
        }
    }
    Fetch::Wait
}

/// Waits for this worker's fill of `key` (woken by `collapse::finish`).
fn wait_local(run: &mut Run, key: Vec<u8>) {
    let p: *mut ngx_event_t = &mut *run.ev;
    // SAFETY: the boxed event stays put until unwait removes the timer.
    unsafe { ngx_add_timer(p, run.lock_timeout.max(1) as ngx_msec_t) };
    collapse::wait(&key, p);
    run.wait_key = key;
    run.waiting = true;
}

/// Sends the part of slice `i` this response needs.
///
/// # Safety
/// `r` must be a live main request whose header was sent.
unsafe fn send(r: *mut ngx_http_request_t, run: &mut Run, i: u64, blk: Block) -> ngx_int_t {
    let Block { obj: o, ext } = blk;
    let (s, e) = run.m.bounds(i);
    let from = run.next - s;
    let to = run.end.min(e) - s;
    // A block read on an io thread found the extent already. The chain is
    // file bufs (sendfile) for a part of 16 KiB or more in region files,
    // one per engine slice if the slice object is itself stored as slices.
    // SAFETY: r is live; `run.pin` holds the object (and so the region
    // files its extents name) until the output is flushed (`drive`).
    let Some((head, last)) = (unsafe { body::chain(r, &o, ext.as_deref(), from, to) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    run.pin = Some(Pin::Obj(o));
    run.next = s + to;
    // SAFETY: last is the chain's final buf; head is a well-formed chain.
    unsafe {
        (*last).set_flush(1);
        ngx_http_output_filter(r, head)
    }
}

/// Sends what slice `i`'s stream has of the bytes this response needs
/// next; `None`: nothing new yet, wait for the stream to change.
///
/// # Safety
/// `r` must be a live main request whose header was sent.
unsafe fn send_stream(
    r: *mut ngx_http_request_t,
    run: &mut Run,
    i: u64,
    s: stream::Shared,
) -> Option<ngx_int_t> {
    let (start, e) = run.m.bounds(i);
    let (from, to) = (run.next - start, run.end.min(e) - start);
    let st = s.borrow();
    // SAFETY: r is live.
    let pool = unsafe { Pool::from_ngx_pool((*r).pool) };
    let mut head: *mut ngx_chain_t = core::ptr::null_mut();
    let mut tail: *mut *mut ngx_chain_t = &mut head;
    let (mut off, mut upto) = (0u64, from);
    for ch in &st.chunks {
        let (a, b) = (off, off + ch.len() as u64);
        off = b;
        let (lo, hi) = (a.max(upto), b.min(to));
        if lo >= hi {
            continue;
        }
        let buf = pool.calloc_type::<ngx_buf_t>();
        // SAFETY: the pool is live.
        let cl = unsafe { ngx_alloc_chain_link(pool.as_ptr()) };
        if buf.is_null() || cl.is_null() {
            return Some(NGX_ERROR as ngx_int_t);
        }
        // SAFETY: buf points into a chunk the stream keeps; `run.pin`
        // holds the stream until this output is flushed.
        unsafe {
            let p = ch.as_ptr().add((lo - a) as usize).cast_mut();
            (*buf).start = p;
            (*buf).pos = p;
            (*buf).last = p.add((hi - lo) as usize);
            (*buf).end = (*buf).last;
            (*buf).set_memory(1);
            (*cl).buf = buf;
            (*cl).next = core::ptr::null_mut();
            *tail = cl;
            tail = &mut (*cl).next;
            (*buf).set_flush(1);
        }
        upto = hi;
    }
    if head.is_null() {
        if st.done.is_some() {
            return Some(NGX_OK as ngx_int_t); // ended: the cache has it, or a refill
        }
        drop(st);
        let p: *mut ngx_event_t = &mut *run.ev;
        s.borrow_mut().readers.push(p);
        run.reading = Some(s);
        return None;
    }
    drop(st);
    run.next = start + upto;
    run.pin = Some(Pin::Stream(s));
    // SAFETY: r is live; the chain is ours, in its pool.
    Some(unsafe { ngx_http_output_filter(r, head) })
}

/// Drives the response and finalizes it when it is over.
///
/// # Safety
/// `r` must be a live main request with a slice run.
unsafe fn step(r: *mut ngx_http_request_t) {
    // SAFETY: r is live.
    let log = unsafe { (*(*r).connection).log };
    let rc = guard::request(log, "slice send", NGX_ERROR as ngx_int_t, || {
        // SAFETY: forwarded.
        unsafe { drive(r) }.unwrap_or(NGX_DONE as ngx_int_t)
    });
    if rc != NGX_DONE as ngx_int_t {
        // SAFETY: r is a live main request.
        if let Some(run) = (unsafe { ReqCtx::get(r) }).and_then(|c| c.slices.as_deref_mut()) {
            run.unwait(); // the response is over: no more wake-ups
            run.stop_io();
        }
        // SAFETY: r is live; this ends the reference taken in `start`.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
}

/// The client socket can take more.
unsafe extern "C" fn write_handler(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with the live main request.
    unsafe {
        let c = (*r).connection;
        let wev = (*c).write;
        if (*wev).timedout() != 0 {
            (*c).set_timedout(1);
            ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t);
            return;
        }
        if (*wev).delayed() != 0 {
            if !arm_write(r) {
                ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t);
            }
            return;
        }
        if (*wev).timer_set() != 0 {
            ngx_del_timer(wev);
        }
        step(r);
    }
}

/// A slice fill ended, a poll is due, or a wait timed out.
unsafe extern "C" fn wake(ev: *mut ngx_event_t) {
    // SAFETY: ev is a run's event; data is its live request (Run::drop
    // unlinks the event before the request is freed).
    unsafe {
        let r = (*ev).data.cast::<ngx_http_request_t>();
        let c = (*r).connection;
        if let Some(run) = ReqCtx::get(r).and_then(|c| c.slices.as_deref_mut()) {
            if let Some((id, i)) = run.io.take() {
                // The block read is late: treat it as a miss (refill).
                crate::engine::iothread::cancel(id);
                run.found.push((i, None));
            }
            run.unwait();
        }
        step(r);
        ngx_http_run_posted_requests(c);
    }
}
