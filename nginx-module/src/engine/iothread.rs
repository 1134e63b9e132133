//! Disk work off the event loop: a few std threads per worker and an
//! eventfd that wakes the loop when a job is done (notes §4 (b)).
//!
//! Threads see a job id and a closure, never a request. The loop keeps
//! `id -> request` in a thread-local table; a request's context removes its
//! id when it is freed, so a result for a gone request is dropped unread.

use crate::conf::IoMode;
use core::ffi::c_void;
use nginx_sys::*;
use ngx::ngx_log_error;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex};

/// Lookup threads per worker (started on the first job).
const READERS: usize = 4;
/// How long a worker's exit waits for queued write-throughs.
const DRAIN_SECS: u64 = 30;

/// What a job returns to the loop.
pub type Done = Box<dyn Any + Send>;
type Job = Box<dyn FnOnce() -> Done + Send>;

/// Queued jobs, and whether the threads must stop.
type Work = (VecDeque<(u64, Job)>, bool);

/// Finished jobs, and the eventfd to signal.
type Finished = (Vec<(u64, Done)>, Option<RawFd>);

/// A job queue and the threads that take from it.
#[derive(Default)]
struct Queue {
    work: Mutex<Work>,
    ready: Condvar,
}

/// State the threads share with the loop.
struct Shared {
    /// Block-tier lookups: several threads, any order.
    reads: Queue,
    /// Write-throughs: one thread, in commit order (a slice manifest lands
    /// before its slices), drained when the worker exits.
    writes: Queue,
    /// Finished jobs, and the eventfd to signal (`None` once closed, so a
    /// late thread never writes to a reused descriptor).
    done: Mutex<Finished>,
    /// Threads still running, for the exit drain.
    live: Mutex<usize>,
    exited: Condvar,
}

struct Bridge {
    shared: Arc<Shared>,
    conn: *mut ngx_connection_t,
    /// Threads running per queue (lookups, writes); `None` until the
    /// first job starts them.
    threads: Option<(usize, usize)>,
}

thread_local! {
    static BRIDGE: RefCell<Option<Bridge>> = const { RefCell::new(None) };
    static JOBS: RefCell<HashMap<u64, (*mut ngx_http_request_t, Resume)>> =
        RefCell::new(HashMap::new());
    static NEXT: Cell<u64> = const { Cell::new(1) };
}

/// Whether a tier directory is memory (tmpfs, ramfs): no need for threads.
fn on_memory(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path; st is writable.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    const TMPFS: i64 = 0x0102_1994;
    const RAMFS: i64 = 0x8584_58f6;
    matches!(st.f_type as i64, TMPFS | RAMFS)
}

/// Whether `mode` wants threads for these tier directories.
pub fn wanted(mode: IoMode, tiers: &[std::path::PathBuf]) -> bool {
    match mode {
        IoMode::Off => false,
        IoMode::On => !tiers.is_empty(),
        IoMode::Auto => tiers.iter().any(|t| !on_memory(t)),
    }
}

pub fn enabled() -> bool {
    BRIDGE.with(|b| b.borrow().is_some())
}

/// Opens the eventfd and its connection (worker `init_process`).
///
/// # Safety
/// `cycle` must be the live cycle of a worker process.
pub unsafe fn open(cycle: *mut ngx_cycle_t) -> Result<(), String> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: cycle is live; fd is ours and now owned by the connection.
    let c = unsafe { ngx_get_connection(fd, (*cycle).log) };
    if c.is_null() {
        // SAFETY: fd is ours and unused.
        unsafe { libc::close(fd) };
        return Err("no free connection for the io eventfd".into());
    }
    // SAFETY: c is a fresh connection with read/write events.
    unsafe {
        (*(*c).read).handler = Some(notified);
        (*(*c).read).log = (*cycle).log;
        if ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
            ngx_close_connection(c);
            return Err("cannot watch the io eventfd".into());
        }
    }
    let shared = Arc::new(Shared {
        reads: Queue::default(),
        writes: Queue::default(),
        done: Mutex::new((Vec::new(), Some(fd))),
        live: Mutex::new(0),
        exited: Condvar::new(),
    });
    BRIDGE.with(|b| {
        *b.borrow_mut() = Some(Bridge {
            shared,
            conn: c,
            threads: None,
        })
    });
    Ok(())
}

/// Stops the threads and closes the eventfd (worker `exit_process`).
/// Queued lookups are dropped; queued write-throughs are written first (for
/// at most `DRAIN_SECS`), so an object committed before a reload or a
/// graceful stop still reaches the block tier.
pub fn close(log: *mut ngx_log_t) {
    let Some(b) = BRIDGE.with(|b| b.borrow_mut().take()) else {
        return;
    };
    let s = &b.shared;
    for (q, drop_queued) in [(&s.reads, true), (&s.writes, false)] {
        if let Ok(mut w) = q.work.lock() {
            w.1 = true;
            if drop_queued {
                w.0.clear();
            }
        }
        q.ready.notify_all();
    }
    if !drain(s) {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "rcdn: io threads still busy after {DRAIN_SECS}s at exit; pending write-throughs are lost (the objects were in memory only)"
        );
    }
    if let Ok(mut d) = s.done.lock() {
        d.1 = None;
        d.0.clear();
    }
    // SAFETY: our live connection; this closes the eventfd too.
    unsafe { ngx_close_connection(b.conn) };
    JOBS.with(|j| j.borrow_mut().clear());
    CALLS.with(|c| c.borrow_mut().clear());
}

/// Waits (bounded) for every thread to exit; false on timeout.
fn drain(s: &Shared) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(DRAIN_SECS);
    let Ok(mut live) = s.live.lock() else {
        return false;
    };
    while *live > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        live = match s.exited.wait_timeout(live, left) {
            Ok((l, _)) => l,
            Err(_) => return false,
        };
    }
    true
}

/// How a request whose job is done is resumed (the cache's
/// `ctx::io_done`): passed in, so the engine does not depend on the cache.
pub type Resume = unsafe fn(*mut ngx_http_request_t, Done);

/// Runs `job` on a thread; `r` is resumed through `resume` when it is
/// done. `None`: no bridge (the caller does the work inline).
pub fn submit(r: *mut ngx_http_request_t, resume: Resume, job: Job) -> Option<u64> {
    let id = enqueue(false, job).ok()?;
    JOBS.with(|j| j.borrow_mut().insert(id, (r, resume)));
    Some(id)
}

/// Runs `job` on the write thread (in submission order, not tied to a
/// request), then `then` on the loop; both inline, at once, when there is
/// no write thread (io threads off, or the thread could not start).
pub fn spawn(job: Box<dyn FnOnce() + Send>, then: Box<dyn FnOnce()>) {
    let job: Job = Box::new(move || {
        job();
        Box::new(()) as Done
    });
    match enqueue(true, job) {
        Ok(id) => {
            CALLS.with(|c| c.borrow_mut().insert(id, Box::new(move |_| then())));
        }
        Err(job) => {
            job();
            then();
        }
    }
}

/// Queues a job (starting the threads on first use); its id. `Err` gives
/// the job back when no thread would take it.
fn enqueue(write: bool, job: Job) -> Result<u64, Job> {
    BRIDGE.with(|b| {
        let mut b = b.borrow_mut();
        let Some(b) = b.as_mut() else {
            return Err(job);
        };
        let (readers, writers) = *b.threads.get_or_insert_with(|| start(&b.shared));
        let (q, up) = if write {
            (&b.shared.writes, writers)
        } else {
            (&b.shared.reads, readers)
        };
        if up == 0 {
            return Err(job);
        }
        let id = NEXT.with(|n| {
            let id = n.get();
            n.set(id + 1);
            id
        });
        match q.work.lock() {
            Ok(mut w) => w.0.push_back((id, job)),
            Err(_) => return Err(job),
        }
        q.ready.notify_one();
        Ok(id)
    })
}

/// Starts the lookup threads and the write thread; how many of each run.
fn start(s: &Arc<Shared>) -> (usize, usize) {
    let mut up = (0, 0);
    for i in 0..=READERS {
        let write = i == READERS;
        let name = if write { "rcdn-write" } else { "rcdn-io" };
        if let Ok(mut live) = s.live.lock() {
            *live += 1;
        }
        let spawned = std::thread::Builder::new().name(name.into()).spawn({
            let s = s.clone();
            move || run(s, write)
        });
        match (spawned, write) {
            (Ok(_), false) => up.0 += 1,
            (Ok(_), true) => up.1 += 1,
            (Err(_), _) => {
                if let Ok(mut live) = s.live.lock() {
                    *live -= 1;
                }
            }
        }
    }
    up
}

/// Forgets a job: its result, if it comes, is dropped.
pub fn forget(id: u64) {
    JOBS.with(|j| j.borrow_mut().remove(&id));
}

fn run(s: Arc<Shared>, write: bool) {
    let q = if write { &s.writes } else { &s.reads };
    while let Some((id, f)) = next(q) {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Box::new(()) as Done);
        let Ok(mut d) = s.done.lock() else { break };
        let Some(fd) = d.1 else { continue };
        d.0.push((id, out));
        let one: u64 = 1;
        // SAFETY: fd is our open eventfd (checked under the lock that
        // `close` takes before closing it); 8 bytes from a u64.
        unsafe { libc::write(fd, (&one as *const u64).cast::<c_void>(), 8) };
    }
    if let Ok(mut live) = s.live.lock() {
        *live -= 1;
    }
    s.exited.notify_all();
}

/// The next job, or `None` once stopped and (for writes) drained.
fn next(q: &Queue) -> Option<(u64, Job)> {
    let mut w = q.work.lock().ok()?;
    loop {
        if let Some(j) = w.0.pop_front() {
            return Some(j);
        }
        if w.1 {
            return None;
        }
        w = q.ready.wait(w).ok()?;
    }
}

/// The eventfd is readable: hand each finished job to its request.
unsafe extern "C" fn notified(ev: *mut ngx_event_t) {
    // SAFETY: ev is our eventfd connection's read event.
    let log = unsafe { (*ev).log };
    crate::base::guard::event(log, "io", || {
        let Some(shared) = BRIDGE.with(|b| b.borrow().as_ref().map(|b| b.shared.clone())) else {
            return;
        };
        let fd = shared.done.lock().ok().and_then(|d| d.1);
        if let Some(fd) = fd {
            let mut n: u64 = 0;
            // SAFETY: fd is our nonblocking eventfd; n is 8 writable bytes.
            unsafe { libc::read(fd, (&mut n as *mut u64).cast::<c_void>(), 8) };
        }
        let done = match shared.done.lock() {
            Ok(mut d) => std::mem::take(&mut d.0),
            Err(_) => return,
        };
        for (id, out) in done {
            let Some((r, resume)) = JOBS.with(|j| j.borrow_mut().remove(&id)) else {
                called(id, out); // a `call` job, or a request that is gone
                continue;
            };
            // SAFETY: r is in the table, so it is live (its context removes
            // it when the request's pool is freed).
            unsafe { resume(r, out) };
        }
    });
}

/// What runs on the loop when a [`call`] job is done.
pub type Then = Box<dyn FnOnce(Done)>;

thread_local! {
    /// Jobs of [`call`] whose `then` still waits for them.
    static CALLS: RefCell<HashMap<u64, Then>> = RefCell::new(HashMap::new());
}

/// Runs `job` on a thread, then `then(result)` on the loop, unless the
/// caller [`cancel`]s it first (it must, before whatever `then` touches
/// is freed). `None`: no bridge (the caller does the work inline).
pub fn call(job: Job, then: Then) -> Option<u64> {
    // Results are read on this thread only, so `then` is in place first.
    let id = enqueue(false, job).ok()?;
    CALLS.with(|c| c.borrow_mut().insert(id, then));
    Some(id)
}

/// Forgets a [`call`]: its `then` is dropped unrun.
pub fn cancel(id: u64) {
    let then = CALLS.with(|c| c.borrow_mut().remove(&id));
    drop(then); // outside the borrow
}

/// Runs the `then` of a finished [`call`] job, if it is still wanted.
fn called(id: u64, out: Done) {
    if let Some(then) = CALLS.with(|c| c.borrow_mut().remove(&id)) {
        then(out);
    }
}
