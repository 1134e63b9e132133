//! This worker's handle on the engine.
//!
//! Opened in `init_process` (after fork: the engine's sweeper thread must
//! live in the worker). With a block tier (`tier=` in `rcdn_store`) every
//! worker maps the same store: one index, one purge table, the same region
//! files, and the shared "fill in progress" markers (`<first tier>/fills`).
//! Before that, [`prepare`] runs in the master (as root if nginx starts as
//! root) and hands the tier directories to the worker user.

use cdncore::fill::lock::FillLocks;
use cdncore::{Cache, Config, Result};
use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
    static LOCKS: RefCell<Option<Arc<FillLocks>>> = const { RefCell::new(None) };
}

/// Opens the store from the `rcdn_store` tokens (empty: engine defaults),
/// as one of `workers` processes sharing it (they split the heap the
/// engine keeps handles in, so a node's memory does not grow with
/// `worker_processes`).
pub fn open(text: &str, workers: i64) -> Result<()> {
    let mut cfg = Config::parse(text)?;
    cfg.processes = workers.clamp(1, 1024) as u32;
    let cache = Cache::open(cfg)?;
    let locks = match cache.config().tiers.first() {
        Some(t) => Some(Arc::new(FillLocks::open(&t.path)?)),
        None => None,
    };
    CACHE.with(|c| *c.borrow_mut() = Some(cache));
    LOCKS.with(|l| *l.borrow_mut() = locks);
    Ok(())
}

/// The open cache, if any (a clone is a reference-count bump).
pub fn get() -> Option<Cache> {
    CACHE.with(|c| c.borrow().clone())
}

/// The shared fill markers (only with a block tier).
pub fn locks() -> Option<Arc<FillLocks>> {
    LOCKS.with(|l| l.borrow().clone())
}

/// Drops this worker's handle (its sweeper stops with it).
pub fn close() {
    LOCKS.with(|l| l.borrow_mut().take());
    CACHE.with(|c| c.borrow_mut().take());
}

/// Refuses a store that several worker processes would each keep a private
/// copy of: without a block tier every worker has its own memory cache, so
/// a key is filled once per worker and a purge reaches only the worker that
/// received it. With no `rcdn_store` at all (the module may be loaded but
/// unused) that is only a warning.
pub fn check_workers(
    store: Option<&str>,
    workers: i64,
) -> std::result::Result<Option<String>, String> {
    if workers <= 1 {
        return Ok(None);
    }
    let advice = format!(
        "with {workers} worker processes a store needs a block tier shared by all of them \
         (e.g. tier=/dev/shm/rcdn,size=1g); a memory-only store would give each worker \
         its own cache, and a purge would reach only one of them"
    );
    match store {
        None => Ok(Some(format!("no rcdn_store: {advice}"))),
        Some(text) => {
            let cfg = Config::parse(text).map_err(|e| e.to_string())?;
            if cfg.tiers.is_empty() {
                Err(advice)
            } else {
                Ok(None)
            }
        }
    }
}

/// In the master, before the workers start: creates every directory of the
/// store (the RAM tier's and the tiers') and, when `owner` is given (the
/// master runs as root and the workers as another user), gives the
/// directories and the files already in them to that user, so workers can create, map and recycle region files. Opening
/// the engine here instead would start its threads in the master (they do
/// not survive fork) and still leave later files to the workers.
pub fn prepare(text: &str, owner: Option<(u32, u32)>) -> std::result::Result<(), String> {
    let cfg = Config::parse(text).map_err(|e| e.to_string())?;
    for dir in cfg.store_dirs() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if let Some((uid, gid)) = owner {
            give(&dir, uid, gid)?;
        }
    }
    Ok(())
}

/// Chowns a tier directory and its (flat) contents.
fn give(dir: &Path, uid: u32, gid: u32) -> std::result::Result<(), String> {
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .map_err(|e| format!("cannot chown {} to {uid}:{gid}: {e}", p.display()))
    };
    chown(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        chown(&e.path())?;
    }
    Ok(())
}
