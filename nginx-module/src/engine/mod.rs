//! The one adapter to the `cdncore` engine: this worker's store handle,
//! and the io threads that take block-tier work off the event loop.

pub mod iothread;
pub mod store;
