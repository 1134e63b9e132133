//! Collapsed misses inside one worker: one fill per key at a time; other
//! requests for the key wait for it and are served from the cache after it
//! is stored. Also remembers recent outcomes ("hit-for-pass" for
//! uncacheable responses, recent origin errors for stale-if-error).
//!
//! Across workers: with a block tier, a claim also takes the store's shared
//! "fill in progress" marker (`cdncore::fill::lock`); a request that finds
//! another worker's marker polls the shared store instead of filling.

use cdncore::fill::lock::Claim;
use cdncore::{now_ms, KeyHash, UnixMs};
use nginx_sys::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// How long an uncacheable response sends its key straight to the origin.
pub const PASS_MS: u64 = 10_000;
/// How long a failed fill lets requests use a stale copy without retrying.
pub const ERROR_MS: u64 = 1_000;
/// Bound on remembered outcomes (oldest are dropped first).
const MAX_OUTCOMES: usize = 10_000;

/// What a finished fill did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A full response was stored.
    Stored,
    /// The origin answered 304 and the stale copy was refreshed.
    Refreshed,
    /// The response may not be cached (status, Cache-Control, size...).
    Uncacheable,
    /// Not stored, answering a request with `Authorization`: it may be
    /// that client's alone, so it says nothing of the URL's other
    /// requests (no hit-for-pass): an anonymous waiter fills on its own.
    Personal,
    /// The origin failed (5xx, unreachable) or the fill was torn down.
    Error,
    /// The owner peer failed or was too slow; it is marked down, and the
    /// waiters start a new fill (to the next live node, or the origin).
    PeerFailed,
}

#[derive(Default)]
struct Table {
    fills: HashMap<Vec<u8>, Vec<*mut ngx_event_t>>,
    outcomes: HashMap<Vec<u8>, (Outcome, UnixMs)>,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

/// What claiming a key's fill gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Fill it (holding the shared marker's token, if one was taken).
    Fill(Option<u64>),
    /// This worker already fills it: wait for that fill.
    Local,
    /// Another worker fills it: poll the shared store.
    OtherWorker,
}

/// Claims the fill of `key` in this worker and, with a block tier, across
/// workers; the shared marker lives at most `ttl_ms` (a killed worker's
/// marker dies with it, or then).
pub fn claim(key: &[u8], ttl_ms: u64) -> Start {
    if !try_start(key) {
        return Start::Local;
    }
    let Some(locks) = crate::engine::store::locks() else {
        return Start::Fill(None);
    };
    match locks.claim(KeyHash::of(key).0, ttl_ms) {
        Claim::Mine(t) => Start::Fill(Some(t)),
        Claim::Collision => Start::Fill(None),
        Claim::Busy => {
            abandon(key);
            Start::OtherWorker
        }
    }
}

/// Releases the shared marker of a fill (if it held one).
pub fn release_shared(key: &[u8], token: Option<u64>) {
    if let (Some(t), Some(locks)) = (token, crate::engine::store::locks()) {
        locks.release(KeyHash::of(key).0, t);
    }
}

/// Claims the fill of `key` in this worker; false if one is already running.
pub fn try_start(key: &[u8]) -> bool {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        if t.fills.contains_key(key) {
            return false;
        }
        t.fills.insert(key.to_vec(), Vec::new());
        true
    })
}

/// Registers a waiter; with no fill running it is woken at once.
pub fn wait(key: &[u8], ev: *mut ngx_event_t) {
    let queued = TABLE.with(|t| match t.borrow_mut().fills.get_mut(key) {
        Some(w) => {
            w.push(ev);
            true
        }
        None => false,
    });
    if !queued {
        post(ev);
    }
}

pub fn unwait(key: &[u8], ev: *mut ngx_event_t) {
    TABLE.with(|t| {
        if let Some(w) = t.borrow_mut().fills.get_mut(key) {
            w.retain(|&e| e != ev);
        }
    });
}

/// Ends the fill of `key`, records its outcome and wakes its waiters.
pub fn finish(key: &[u8], outcome: Outcome) {
    let waiters = TABLE.with(|t| {
        let mut t = t.borrow_mut();
        if t.outcomes.len() >= MAX_OUTCOMES {
            let now = now_ms();
            t.outcomes
                .retain(|_, (_, at)| now.saturating_sub(*at) < PASS_MS);
            if t.outcomes.len() >= MAX_OUTCOMES {
                t.outcomes.clear();
            }
        }
        t.outcomes.insert(key.to_vec(), (outcome, now_ms()));
        t.fills.remove(key).unwrap_or_default()
    });
    for ev in waiters {
        post(ev);
    }
}

/// Wakes the waiters of `key`'s running fill without ending it (its body
/// has started to stream); each unregisters itself when it runs.
pub fn notify(key: &[u8]) {
    let waiters = TABLE.with(|t| t.borrow().fills.get(key).cloned().unwrap_or_default());
    for ev in waiters {
        post(ev);
    }
}

/// Gives up a claimed fill that never started; waiters retry.
pub fn abandon(key: &[u8]) {
    let waiters = TABLE.with(|t| t.borrow_mut().fills.remove(key).unwrap_or_default());
    for ev in waiters {
        post(ev);
    }
}

/// The outcome of the last fill of `key`, if it finished within `max_age_ms`.
pub fn recent(key: &[u8], max_age_ms: u64) -> Option<Outcome> {
    TABLE.with(|t| {
        let t = t.borrow();
        let (o, at) = t.outcomes.get(key)?;
        (now_ms().saturating_sub(*at) < max_age_ms).then_some(*o)
    })
}

fn post(ev: *mut ngx_event_t) {
    // SAFETY: ev is a registered waiter's live event (ReqCtx::drop removes
    // it from the table before freeing it); we run on the event loop.
    unsafe { ngx_post_event(ev, core::ptr::addr_of_mut!(ngx_posted_events)) };
}
