//! Page-cache residency of mapped records (`mincore`): lets an event-loop
//! caller read a block-tier hit inline when no page would come from disk,
//! and hand it to a thread otherwise.

use std::sync::OnceLock;

fn page() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory effects.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    })
}

/// Whether every page of `map[off..off + len]` is in memory. False for a
/// range outside the mapping, or if the kernel cannot tell.
pub fn in_core(map: &[u8], off: u64, len: u64) -> bool {
    Probe::new(map, off, len).is_some_and(|p| p.covers(off, len) == Some(true))
}

/// The residency of a range of pages, asked once (one `mincore`), then
/// checked for sub-ranges: a record's header and body with one call.
pub struct Probe {
    start: u64,
    pages: Vec<u8>,
}

impl Probe {
    /// Probes `map[off..off + len]` (clamped to the mapping); `None` if
    /// `off` is outside it or the kernel cannot tell.
    pub fn new(map: &[u8], off: u64, len: u64) -> Option<Probe> {
        let end = off.checked_add(len)?.min(map.len() as u64);
        if off > end {
            return None;
        }
        let p = page() as u64;
        let start = off / p * p;
        let mut pages = vec![0u8; (end - start).div_ceil(p) as usize];
        if pages.is_empty() {
            return Some(Probe { start, pages });
        }
        // SAFETY: `map` is a live mapping (its base is page-aligned, so
        // `start` is too) and `start..end` lies inside it; `pages` has one
        // byte per page of that range, as mincore writes.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr().add(start as usize) as *mut libc::c_void,
                (end - start) as usize,
                pages.as_mut_ptr(),
            )
        };
        (rc == 0).then_some(Probe { start, pages })
    }

    /// Whether `off..off + len` is all in memory; `None` if the probe did
    /// not cover it.
    pub fn covers(&self, off: u64, len: u64) -> Option<bool> {
        if len == 0 {
            return Some(true);
        }
        let p = page() as u64;
        let first = off.checked_sub(self.start)? / p;
        let last = (off.checked_add(len)? - 1 - self.start) / p;
        let span = self.pages.get(first as usize..=last as usize)?;
        Some(span.iter().all(|b| b & 1 == 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_anonymous_pages_are_in_core_and_ranges_are_checked() {
        let mut m = memmap2::MmapMut::map_anon(4 * page()).unwrap();
        m.iter_mut().for_each(|b| *b = 1);
        assert!(in_core(&m, 10, 3 * page() as u64));
        assert!(in_core(&m, 0, 0));
        let probe = Probe::new(&m, 10, 2 * page() as u64).unwrap();
        assert_eq!(probe.covers(100, 10), Some(true));
        assert_eq!(probe.covers(10, 4 * page() as u64), None, "not probed");
        assert!(!in_core(&m, 1, 4 * page() as u64), "past the end");
        assert!(!in_core(&m, u64::MAX, 2), "overflow");
    }

    #[test]
    fn untouched_file_pages_are_not_in_core() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("sparse"))
            .unwrap();
        // A hole: nothing cached.
        f.set_len(64 * page() as u64).unwrap();
        // SAFETY: the file is ours and not resized while mapped.
        let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        let cold = Probe::new(&m, 0, 64 * page() as u64).unwrap();
        assert_eq!(cold.covers(5 * page() as u64, 10), Some(false));
        assert!(!in_core(&m, 0, 64 * page() as u64));
        // A read fault brings it in (readahead may bring any of the rest
        // in too: not asserted).
        std::hint::black_box(m[5 * page()]);
        assert!(in_core(&m, 5 * page() as u64, 10));
        let warm = Probe::new(&m, 0, 64 * page() as u64).unwrap();
        assert_eq!(warm.covers(5 * page() as u64, page() as u64), Some(true));
    }
}
