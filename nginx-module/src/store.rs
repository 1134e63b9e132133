//! This worker's handle on the engine.
//!
//! Opened in `init_process` (after fork: the engine's sweeper thread must
//! live in the worker). Today the engine is a per-process memory cache; when
//! the shared block tiers land, the same `rcdn_store` tokens select them and
//! nothing here changes.

use cdncore::{Cache, Result};
use std::cell::RefCell;

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// Opens the store from the `rcdn_store` tokens (empty: engine defaults).
pub fn open(text: &str) -> Result<()> {
    let cache = Cache::open_str(text)?;
    CACHE.with(|c| *c.borrow_mut() = Some(cache));
    Ok(())
}

/// The open cache, if any (a clone is a reference-count bump).
pub fn get() -> Option<Cache> {
    CACHE.with(|c| c.borrow().clone())
}

/// Drops this worker's handle (its sweeper stops with it).
pub fn close() {
    CACHE.with(|c| c.borrow_mut().take());
}
