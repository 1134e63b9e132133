//! The disk half of a commit (the block-tier write-through) off the event
//! loop: the object is served from memory at once, and the write runs on
//! the io write thread (in commit order) when io threads are on.

use crate::cache::collapse;
use crate::cache::ctx::FillCtx;
use cdncore::WriteThrough;

/// Runs `writes`, then `then` on the loop (inline without io threads).
pub fn later(writes: Vec<WriteThrough>, then: impl FnOnce() + 'static) {
    run(writes, false, then)
}

fn run(writes: Vec<WriteThrough>, slow: bool, then: impl FnOnce() + 'static) {
    if writes.is_empty() {
        return then();
    }
    let job = Box::new(move || {
        crate::base::guard::injected_delay(slow);
        writes.into_iter().for_each(WriteThrough::run)
    });
    crate::engine::iothread::spawn(job, Box::new(then));
}

/// Runs a fill's `writes` and keeps its shared "fill in progress" markers
/// until they are on disk: other workers poll the block tier while a
/// marker is held, so releasing it earlier would send them to the origin.
pub fn fill_writes(f: &mut FillCtx, writes: Vec<WriteThrough>) {
    let base = f.base.clone();
    let token = f.shared.take();
    let also = f
        .also
        .as_mut()
        .and_then(|(k, t)| t.take().map(|t| (k.clone(), t)));
    run(writes, f.slow_write, move || {
        collapse::release_shared(&base, token);
        if let Some((k, t)) = also {
            collapse::release_shared(&k, Some(t));
        }
    });
}
