//! Region files: `region.NNNNN` in the tier directory, each exactly one
//! region long, preallocated so that a full disk fails when a region is
//! opened (a clean error) rather than when a mapped page is first touched.
//! Recycling writes a new file and renames it over the old one: readers in
//! any process that still map the old file keep its inode, and its bytes,
//! alive until they let go.

use super::record::{RegionHead, REGION_DATA};
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One mapped region file at one epoch.
pub struct RegionMap {
    pub region: u32,
    pub epoch: u32,
    pub lap: u64,
    pub map: memmap2::Mmap,
    pub file: File,
    /// Offsets of large records whose body checksum this process has
    /// verified. Sound because a region file is append-only: a published
    /// record's bytes never change at its offset, and a recycled region is
    /// a new file (a new `RegionMap`). Bounded: one entry per record of at
    /// least [`RegionMap::MEMO_MIN`] bytes.
    verified: Mutex<HashSet<u64>>,
}

impl RegionMap {
    /// Bodies below this are checksummed on every read: it costs little,
    /// and the memo stays small.
    pub const MEMO_MIN: u64 = 64 * 1024;

    /// Whether the body of the record at `off` was verified here before.
    pub fn verified(&self, off: u64) -> bool {
        self.verified.lock().contains(&off)
    }

    /// Remembers that the body of the record at `off` is intact.
    pub fn set_verified(&self, off: u64) {
        self.verified.lock().insert(off);
    }
}

pub struct Regions {
    dir: PathBuf,
    size: u64,
    salt: u64,
    /// One lock per region, so readers of different regions share nothing.
    maps: Box<[RwLock<Option<Arc<RegionMap>>>]>,
}

/// Reserves the file's blocks now (ENOSPC here, not on a later page fault).
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an fd we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    match rc {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::ENOSYS => Ok(()), // filesystem cannot; fall back to sparse
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl Regions {
    pub fn new(dir: &Path, size: u64, salt: u64, count: usize) -> Regions {
        Regions {
            dir: dir.to_path_buf(),
            size,
            salt,
            maps: (0..count).map(|_| RwLock::new(None)).collect(),
        }
    }

    pub fn path(&self, r: usize) -> PathBuf {
        self.dir.join(format!("region.{r:05}"))
    }

    /// The mapping of region `r` at `epoch`, opening it if this process has
    /// not yet (or has an older one). `None` if the file on disk is not that
    /// region at that epoch, or is damaged (wrong size, bad header).
    pub fn get(&self, r: usize, epoch: u32) -> Option<Arc<RegionMap>> {
        let slot = self.maps.get(r)?;
        if let Some(m) = &*slot.read() {
            if m.epoch == epoch {
                return Some(m.clone());
            }
        }
        let m = Arc::new(self.open(r)?);
        if m.epoch != epoch {
            return None;
        }
        *slot.write() = Some(m.clone());
        Some(m)
    }

    /// Opens and maps region `r` as it is on disk now.
    pub fn open(&self, r: usize) -> Option<RegionMap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(r))
            .ok()?;
        if file.metadata().ok()?.len() != self.size {
            return None; // truncated or extended by someone else: not ours
        }
        // SAFETY: region files are only ever written with pwrite at offsets
        // that no published index entry points to yet, and never truncated by
        // us; a recycled region is a new inode. Someone else truncating the
        // file while mapped is outside what we can defend against (SIGBUS).
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let h = RegionHead::decode(&map[..REGION_DATA as usize])?;
        let ours = h.region as usize == r && h.salt == self.salt && h.region_size == self.size;
        ours.then_some(RegionMap {
            region: h.region,
            epoch: h.epoch,
            lap: h.lap,
            map,
            file,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Writes a new, empty region file for `head` and renames it into place.
    pub fn create(&self, head: &RegionHead) -> io::Result<()> {
        let r = head.region as usize;
        let tmp = self.dir.join(format!("region.{r:05}.new"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let done = file
            .set_len(self.size)
            .and_then(|_| preallocate(&file, self.size))
            .and_then(|_| file.write_all_at(&head.encode(), 0))
            .and_then(|_| std::fs::rename(&tmp, self.path(r)));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done
    }

    /// Drops this process's mappings of regions whose epoch moved on, so old
    /// inodes are freed.
    pub fn prune(&self, current: impl Fn(usize) -> u32) {
        for (r, slot) in self.maps.iter().enumerate() {
            let stale = slot.read().as_ref().is_some_and(|m| m.epoch != current(r));
            if stale {
                let mut m = slot.write();
                if m.as_ref().is_some_and(|m| m.epoch != current(r)) {
                    *m = None;
                }
            }
        }
    }
}

/// Serialises region opening between threads (the mutex) and processes
/// (`flock` on `<dir>/lock`, released by the kernel if a holder dies, so a
/// kill -9 never leaves the store locked).
pub struct DirLock {
    file: Mutex<File>,
}

pub struct DirGuard<'a> {
    file: MutexGuard<'a, File>,
}

impl DirLock {
    pub fn open(dir: &Path) -> io::Result<DirLock> {
        Self::open_named(dir, "lock")
    }

    pub fn open_named(dir: &Path, name: &str) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(name))?;
        Ok(DirLock {
            file: Mutex::new(file),
        })
    }

    pub fn lock(&self) -> io::Result<DirGuard<'_>> {
        let file = self.file.lock();
        loop {
            // SAFETY: flock on an fd we own, held open by the guard.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(DirGuard { file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for DirGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocking the fd locked in `lock`, still open.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}
