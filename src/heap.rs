//! Giving freed heap memory back to the system.
//!
//! Stores pass bodies through heap buffers (a fill's body, a relocated
//! record, a promotion) that are freed moments later. glibc's malloc
//! serves buffers of up to 32 MiB from the heap once one of that size has
//! been freed (its mmap threshold adapts), and long-lived allocations
//! (handles, metadata) end up between the freed ones, so the heap can
//! only shrink from its top: in an nginx worker it held 20-40 MiB of free
//! but touched pages after a warm-up, in every worker (issue 14). Those
//! pages count in the process's private memory until malloc reuses them.
//! `malloc_trim(0)` hands the whole free pages inside the heap back with
//! `madvise(MADV_DONTNEED)`; the background sweeper calls it after a
//! process has stored [`RELEASE_AFTER`] bytes since the last time, and
//! once more when its stores pause.

/// Bytes stored into the block tiers (by this process) between releases.
pub const RELEASE_AFTER: u64 = 4 << 20;

/// Returns the free pages of the heap to the system (glibc); a no-op with
/// other allocators.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes malloc's own locks; it only releases pages
    // of free chunks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
