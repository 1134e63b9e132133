//! Read-while-writer inside one worker: the body of a cacheable fill is
//! shared with this worker's requests for the key as it arrives.
//!
//! When a fill's response is judged storable (and its length is known and
//! fits the store), the filter opens a [`Stream`] under the fill key and
//! wakes the key's waiters: the request that started the fill and the
//! collapsed ones. Each becomes a reader: it sends the stored headers at
//! once, then every chunk the filter appends (a memory buf into the
//! chunk's `Bytes`, which the reader's `Rc` keeps alive until the request
//! is freed). The fill's end completes the readers; a failed fill closes
//! their connections (a short body, never wrong bytes). Other workers'
//! waiters are served once the object is stored, as before.

use crate::cache::slice::serve::{arm_write, pending};
use crate::cache::ReqCtx;
use crate::{base::guard, cache::serve};
use bytes::Bytes;
use cdncore::Meta;
use nginx_sys::*;
use ngx::core::{Pool, Status};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// A fill's response as far as it has arrived.
pub struct Stream {
    meta: Meta,
    pub(crate) len: u64,
    /// `len` is the body's length (else unknown: a pass response without
    /// `Content-Length`).
    known: bool,
    /// A response that is not stored, for the one client whose fill
    /// fetched it (`crate::cache::pass`): never in [`OPEN`], and the chunks
    /// that client has sent are dropped.
    pass: bool,
    /// Bytes pushed and not yet dropped, and bytes pushed (pass streams).
    held: u64,
    pushed: u64,
    /// Its reader is done with it (a pass stream keeps no more chunks).
    gone: bool,
    /// Pass streams: the bytes held before the fill stops reading its
    /// origin (`rcdn_pass_buffer`), the fill subrequest that does (null:
    /// one that cannot be paused, cut past `cap`), and whether it stopped.
    cap: u64,
    fill: *mut ngx_http_request_t,
    paused: bool,
    /// The coding the fill asked for, and whether the response varies on it.
    coding: &'static str,
    varies: bool,
    pub(crate) chunks: Vec<Bytes>,
    /// `Some(true)`: complete and stored; `Some(false)`: the fill failed.
    pub(crate) done: Option<bool>,
    /// Events posted on every change.
    pub(crate) readers: Vec<*mut ngx_event_t>,
}

pub type Shared = Rc<RefCell<Stream>>;

thread_local! {
    static OPEN: RefCell<HashMap<Vec<u8>, Shared>> = RefCell::new(HashMap::new());
}

fn notify(s: &Stream) {
    for &ev in &s.readers {
        // SAFETY: a registered reader's live event (Reader::drop removes
        // it first); we run on the event loop.
        unsafe { ngx_post_event(ev, core::ptr::addr_of_mut!(ngx_posted_events)) };
    }
}

/// Opens the stream of the fill of `key` (storable, `len` bytes).
pub fn open(key: &[u8], meta: Meta, len: u64, coding: &'static str, varies: bool) {
    let s = Stream {
        meta,
        len,
        known: true,
        pass: false,
        held: 0,
        pushed: 0,
        gone: false,
        cap: 0,
        fill: core::ptr::null_mut(),
        paused: false,
        coding,
        varies,
        chunks: Vec::new(),
        done: None,
        readers: Vec::new(),
    };
    OPEN.with(|o| {
        o.borrow_mut()
            .insert(key.to_vec(), Rc::new(RefCell::new(s)))
    });
}

/// A stream for one client only, of a response that is not stored
/// (`len`: its `Content-Length`, if any), holding up to `cap` bytes the
/// client has not taken; `fill`: the subrequest to pause beyond that, if
/// it can be (else the stream is cut).
pub fn open_pass(meta: Meta, len: Option<u64>, cap: u64, fill: *mut ngx_http_request_t) -> Shared {
    Rc::new(RefCell::new(Stream {
        meta,
        len: len.unwrap_or(0),
        known: len.is_some(),
        pass: true,
        held: 0,
        pushed: 0,
        gone: false,
        cap,
        fill,
        paused: false,
        coding: "identity",
        varies: false,
        chunks: Vec::new(),
        done: None,
        readers: Vec::new(),
    }))
}

/// Appends a chunk to a pass stream. A fill that can be paused hands it
/// no more than [`pass_room`]; one that cannot (no upstream to stop) fails
/// it past `cap` bytes waiting for a slow client (its connection is
/// closed: a short body, never unbounded memory).
pub fn push_pass(s: &Shared, data: &[u8]) {
    let mut s = s.borrow_mut();
    if s.done.is_some() || data.is_empty() {
        return;
    }
    s.pushed += data.len() as u64;
    if s.gone {
        return; // nobody will read it (HEAD, an error, a closed client)
    }
    s.held += data.len() as u64;
    if s.held > s.cap {
        // The chunks nginx may still be writing stay until the request ends.
        s.done = Some(false);
        s.fill = core::ptr::null_mut();
    } else {
        s.chunks.push(Bytes::copy_from_slice(data));
    }
    notify(&s);
}

/// How many bytes the fill of a pass stream may push now; `None`: as many
/// as it has (nobody reads them, the stream is over, or the fill cannot be
/// paused).
pub fn pass_room(s: &Shared) -> Option<u64> {
    let s = s.borrow();
    if s.fill.is_null() || s.gone || s.done.is_some() {
        return None;
    }
    Some(s.cap.saturating_sub(s.held))
}

/// The fill stopped taking its upstream's bufs ([`pass_room`] was 0): it
/// is posted again once the reader has sent half of what is held, or is
/// gone.
pub fn pause_pass(s: &Shared) {
    s.borrow_mut().paused = true;
}

/// The request that started the fill will not read its pass stream (the
/// lookup served it otherwise): let the fill run to its end.
pub fn abandon_pass(s: &Shared) {
    let mut s = s.borrow_mut();
    s.gone = true;
    s.resume();
}

impl Stream {
    /// Lets a paused fill read on: its subrequest is posted, and runs when
    /// the caller's event handler runs nginx's posted requests (as every
    /// path into `drive` does).
    fn resume(&mut self) {
        if !self.paused {
            return;
        }
        self.paused = false;
        let sr = self.fill;
        // SAFETY: `fill` is the fill subrequest of this stream, not yet
        // ended (end_pass nulls it), so its memory (the main request's
        // pool) is live; an upstream that was finalized meanwhile has no
        // peer connection, and is not posted.
        unsafe {
            if sr.is_null()
                || (*sr).upstream.is_null()
                || (*(*sr).upstream).peer.connection.is_null()
            {
                return;
            }
            // Its write handler (nginx's non-buffered downstream handler)
            // hands the bufs it holds to the fill's body filter again.
            ngx_http_post_request(sr, core::ptr::null_mut());
        }
    }
}

/// Ends a pass stream: complete (`ok` and all of a known length), or not.
pub fn end_pass(s: &Shared, ok: bool) {
    let mut s = s.borrow_mut();
    s.fill = core::ptr::null_mut();
    s.paused = false;
    if s.done.is_some() {
        return;
    }
    let whole = !s.known || s.pushed == s.len;
    s.done = Some(ok && whole);
    notify(&s);
}

/// Appends a chunk of the fill of `key` and wakes its readers.
pub fn push(key: &[u8], data: &[u8]) {
    if let Some(s) = OPEN.with(|o| o.borrow().get(key).cloned()) {
        let mut s = s.borrow_mut();
        s.chunks.push(Bytes::copy_from_slice(data));
        notify(&s);
    }
}

/// Ends the stream of `key` (stored or failed) and wakes its readers.
pub fn end(key: &[u8], stored: bool) {
    if let Some(s) = OPEN.with(|o| o.borrow_mut().remove(key)) {
        let mut s = s.borrow_mut();
        let sent: u64 = s.chunks.iter().map(|c| c.len() as u64).sum();
        s.done = Some(stored && sent == s.len);
        notify(&s);
    }
}

/// Makes `r` the reader of a pass stream its own fill opened.
///
/// # Safety
/// `r` must be the live main request owning `ctx`.
pub unsafe fn attach_pass(r: *mut ngx_http_request_t, ctx: &mut ReqCtx, s: Shared) {
    // SAFETY: forwarded.
    unsafe { attach_shared(r, ctx, s) };
}

pub fn exists(key: &[u8]) -> bool {
    OPEN.with(|o| o.borrow().contains_key(key))
}

/// The open stream of `key`, if a reader of `coding` may share it.
pub fn find(key: &[u8], coding: &str) -> Option<Shared> {
    let s = OPEN.with(|o| o.borrow().get(key).cloned())?;
    let ok = {
        let b = s.borrow();
        !b.varies || b.coding == coding
    };
    ok.then_some(s)
}

/// A request reading a stream.
pub struct Reader {
    s: Shared,
    /// Chunks handed to nginx so far.
    next: usize,
    ev: Box<ngx_event_t>,
    /// The client is gone; wait for the fill's end before finalizing (so
    /// the fill this request may own is not torn down under other readers).
    dead: bool,
    /// Pass streams: the bufs handed to nginx over `chunks[..next]`, one a
    /// chunk, and the bufs and chain links to use again (pool memory is
    /// never freed before the request: without this a long pass response
    /// would grow the pool by a buf and a link per chunk).
    sent: VecDeque<*mut ngx_buf_t>,
    spare: Spare,
}

/// Written bufs, and chain links nginx is done with (filters copy the
/// links of a chain they keep: ours are free once the output filter
/// returns), of a pass stream's reader.
#[derive(Default)]
struct Spare {
    bufs: Vec<*mut ngx_buf_t>,
    links: Vec<*mut ngx_chain_t>,
}

impl Reader {
    /// Stops the wake-ups (the response is over); the chunks stay pinned
    /// until the request is freed, as nginx may still be writing them.
    /// `resume`: let a paused pass fill run to its end (not while the
    /// request is being freed: its fill goes with it).
    fn detach(&mut self, resume: bool) {
        let p: *mut ngx_event_t = &mut *self.ev;
        if let Ok(mut s) = self.s.try_borrow_mut() {
            s.readers.retain(|&e| e != p);
            s.gone |= s.pass;
            if resume {
                s.resume();
            }
        }
        // SAFETY: p is our live event; this only unlinks it.
        unsafe {
            if self.ev.posted() != 0 {
                ngx_delete_posted_event(p);
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.detach(false);
    }
}

/// Ends the wake-ups of `r`'s reader.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn detach(r: *mut ngx_http_request_t) {
    // SAFETY: r is a live main request.
    if let Some(reader) = (unsafe { ReqCtx::get(r) }).and_then(|c| c.stream.as_deref_mut()) {
        reader.detach(true);
    }
}

/// Makes `r` a reader of the running fill of `key`, if it can share it;
/// the caller then lets the content phase run [`handler`].
///
/// # Safety
/// `r` must be the live main request owning `ctx`.
pub unsafe fn attach(
    r: *mut ngx_http_request_t,
    ctx: &mut ReqCtx,
    key: &[u8],
    coding: &str,
) -> bool {
    let Some(s) = find(key, coding) else {
        return false;
    };
    // SAFETY: forwarded.
    unsafe { attach_shared(r, ctx, s) };
    true
}

/// # Safety
/// `r` must be the live main request owning `ctx`.
unsafe fn attach_shared(r: *mut ngx_http_request_t, ctx: &mut ReqCtx, s: Shared) {
    // SAFETY: an all-zero ngx_event_t is its documented initial state.
    let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
    ev.data = r.cast();
    ev.handler = Some(wake);
    // SAFETY: r and its connection are live.
    ev.log = unsafe { (*(*r).connection).log };
    let p: *mut ngx_event_t = &mut *ev;
    s.borrow_mut().readers.push(p);
    ctx.stream = Some(Box::new(Reader {
        s,
        next: 0,
        ev,
        dead: false,
        sent: VecDeque::new(),
        spare: Spare::default(),
    }));
    ctx.body = "stream";
    // SAFETY: r is live; the content phase serves it from the stream.
    unsafe { (*r).content_handler = Some(handler) };
}

/// The content handler of a reader: headers now, then the body.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "stream",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is the live main request that attached a reader.
            let rc = unsafe { start(r) };
            if rc != NGX_DONE as ngx_int_t {
                // SAFETY: as above.
                unsafe { detach(r) }; // HEAD, 304, error: no body to follow
            }
            rc
        },
    )
}

/// # Safety
/// `r` must be a live main request with a reader.
unsafe fn start(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: r is a live main request.
    let Some(reader) = (unsafe { ReqCtx::get(r) }).and_then(|c| c.stream.as_deref_mut()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let (meta, len, known, pass) = {
        let s = reader.s.borrow();
        (s.meta.clone(), s.len, s.known, s.pass)
    };
    // SAFETY: r is live, its header not sent.
    unsafe {
        let put = if pass {
            crate::cache::pass::put_headers(r, &meta)
        } else {
            serve::put_headers(r, &meta)
        };
        if !put {
            return Status::NGX_ERROR.into();
        }
        (*r).headers_out.content_length_n = if known { len as off_t } else { -1 };
        if meta.status == 200 && known {
            // The range filter cuts one range from a streamed body; several
            // would need the whole body in one buffer.
            (*r).set_allow_ranges(1);
            (*r).set_single_range(1);
        }
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        if known && len == 0 {
            return ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t);
        }
        (*r).write_event_handler = Some(write_handler);
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
        if let Some(rc) = drive(r) {
            detach(r);
            ngx_http_finalize_request(r, rc);
        }
    }
    Status::NGX_DONE.into()
}

/// Hands nginx the chunks that arrived. `Some(rc)`: the response is over.
///
/// # Safety
/// `r` must be a live main request with a reader whose header was sent.
unsafe fn drive(r: *mut ngx_http_request_t) -> Option<ngx_int_t> {
    let err = Some(NGX_ERROR as ngx_int_t);
    // SAFETY: r is a live main request.
    let Some(reader) = (unsafe { ReqCtx::get(r) }).and_then(|c| c.stream.as_deref_mut()) else {
        return err;
    };
    let s = reader.s.clone();
    let mut s = s.borrow_mut();
    if reader.dead {
        return s.done.map(|_| NGX_ERROR as ngx_int_t);
    }
    // SAFETY: r is live.
    let c = unsafe { (*r).connection };
    let mut chain = core::ptr::null_mut();
    let mut lent = Vec::new();
    if reader.next < s.chunks.len() {
        let track = s
            .pass
            .then_some((&mut reader.spare, &mut reader.sent, &mut lent));
        // SAFETY: r is live.
        match unsafe { chain_of(r, &s.chunks[reader.next..], track) } {
            Some(cl) => chain = cl,
            None => return err,
        }
        reader.next = s.chunks.len();
    }
    // SAFETY: r is live; the chain's bufs point into chunks our `Rc`
    // keeps until the request is freed (a pass stream's, until nginx has
    // written them: `release`).
    let rc = unsafe { ngx_http_output_filter(r, chain) };
    reader.spare.links.append(&mut lent);
    // SAFETY: c is live.
    if rc == NGX_ERROR as ngx_int_t || unsafe { (*c).error() } != 0 {
        if s.done.is_some() {
            return err;
        }
        reader.dead = true; // keep the request (and its fill) until the end
        s.gone |= s.pass;
        s.resume(); // a paused fill drains its origin, unread
        return None;
    }
    if s.pass {
        release(reader, &mut s);
    }
    match s.done {
        Some(true) => {
            // SAFETY: r is live; finalize writes what is still buffered.
            return Some(unsafe { ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t) });
        }
        Some(false) => return err,
        None => {}
    }
    // SAFETY: r is live.
    if unsafe { pending(r) } && !unsafe { arm_write(r) } {
        return err;
    }
    None
}

/// Drops the chunks of a pass stream that nginx has written (their bufs
/// are empty: nginx's own sign that a buf is free, as its upstream reuses
/// its buffer), keeps their bufs for the next ones, and lets a paused fill
/// read on once half of what it may hold is sent.
fn release(reader: &mut Reader, s: &mut Stream) {
    let written = reader
        .sent
        .iter()
        // SAFETY: a buf we handed nginx, in the request's pool.
        .take_while(|&&b| unsafe { (*b).pos == (*b).last })
        .count();
    if written == 0 {
        return;
    }
    for c in s.chunks.drain(..written) {
        s.held = s.held.saturating_sub(c.len() as u64);
    }
    reader.next -= written;
    reader.spare.bufs.extend(reader.sent.drain(..written));
    if s.held <= s.cap / 2 {
        s.resume();
    }
}

/// What [`chain_of`] takes bufs and links from, and where it records the
/// bufs and links it hands out.
type Track<'a> = (
    &'a mut Spare,
    &'a mut VecDeque<*mut ngx_buf_t>,
    &'a mut Vec<*mut ngx_chain_t>,
);

/// Memory bufs over `chunks`, flushed at once. `track` (pass streams):
/// bufs and links to use first, and the lists of the ones handed out.
///
/// # Safety
/// `r` must be live.
unsafe fn chain_of(
    r: *mut ngx_http_request_t,
    chunks: &[Bytes],
    mut track: Option<Track>,
) -> Option<*mut ngx_chain_t> {
    // SAFETY: r is live.
    let pool = unsafe { Pool::from_ngx_pool((*r).pool) };
    let mut head: *mut ngx_chain_t = core::ptr::null_mut();
    let mut tail: *mut *mut ngx_chain_t = &mut head;
    for ch in chunks.iter().filter(|c| !c.is_empty()) {
        let b = match track.as_mut().and_then(|(spare, _, _)| spare.bufs.pop()) {
            Some(b) => {
                // SAFETY: a written buf of ours: nothing refers to it now.
                unsafe { core::ptr::write_bytes(b, 0, 1) };
                b
            }
            None => pool.calloc_type::<ngx_buf_t>(),
        };
        let cl = match track.as_mut().and_then(|(spare, _, _)| spare.links.pop()) {
            Some(cl) => cl,
            // SAFETY: the pool is live.
            None => unsafe { ngx_alloc_chain_link(pool.as_ptr()) },
        };
        if b.is_null() || cl.is_null() {
            return None;
        }
        if let Some((_, sent, lent)) = track.as_mut() {
            sent.push_back(b);
            lent.push(cl);
        }
        // SAFETY: b is a zeroed pool buf over immutable pinned bytes; cl is
        // a fresh link; tail points at the last `next` slot.
        unsafe {
            let start = ch.as_ptr().cast_mut();
            (*b).start = start;
            (*b).pos = start;
            (*b).last = start.add(ch.len());
            (*b).end = (*b).last;
            (*b).set_memory(1);
            (*cl).buf = b;
            (*cl).next = core::ptr::null_mut();
            *tail = cl;
            tail = &mut (*cl).next;
        }
    }
    if head.is_null() {
        return None;
    }
    // SAFETY: tail points at the last link's `next`; step back to its buf.
    unsafe {
        let mut last = head;
        while !(*last).next.is_null() {
            last = (*last).next;
        }
        (*(*last).buf).set_flush(1);
    }
    Some(head)
}

/// # Safety
/// `r` must be a live main request with a reader.
unsafe fn step(r: *mut ngx_http_request_t) {
    // SAFETY: r is live.
    let log = unsafe { (*(*r).connection).log };
    let rc = guard::request(log, "stream send", NGX_ERROR as ngx_int_t, || {
        // SAFETY: forwarded.
        unsafe { drive(r) }.unwrap_or(NGX_DONE as ngx_int_t)
    });
    if rc != NGX_DONE as ngx_int_t {
        // SAFETY: r is live; this ends the reference taken in `start`.
        unsafe {
            detach(r);
            ngx_http_finalize_request(r, rc);
        }
    }
}

unsafe extern "C" fn write_handler(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with the live main request.
    unsafe {
        let c = (*r).connection;
        let wev = (*c).write;
        if (*wev).timedout() != 0 {
            (*c).set_timedout(1);
            (*c).set_error(1);
        } else if (*wev).delayed() != 0 {
            if !arm_write(r) {
                (*c).set_error(1);
            }
            return;
        } else if (*wev).timer_set() != 0 {
            ngx_del_timer(wev);
        }
        step(r);
    }
}

unsafe extern "C" fn wake(ev: *mut ngx_event_t) {
    // SAFETY: ev is a reader's event; data is its live request (the
    // reader unlinks the event before the request is freed).
    unsafe {
        let r = (*ev).data.cast::<ngx_http_request_t>();
        let c = (*r).connection;
        step(r);
        ngx_http_run_posted_requests(c);
    }
}
