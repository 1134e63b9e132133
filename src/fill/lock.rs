//! "Fill in progress" markers shared by every process that opens a store,
//! so concurrent misses for one key in different processes (nginx workers)
//! cause one origin request.
//!
//! A flat array of `AtomicU64` words in a mapped file (`<dir>/fills`). A key
//! hashes to one slot of two words: `tag << 32 | deadline` and the owner's
//! pid. A marker is dead once its deadline passed or its owner process is
//! gone, so a killed filler never blocks a key for long. A slot held by
//! another live key is a collision: the caller then fills without a marker
//! (an extra origin request, never a wait on the wrong key).

use crate::error::Result;
use crate::meta::now_ms;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::*};

/// Slots in the file (two words each: 64 KiB).
pub const SLOTS: usize = 4096;
const FILE_LEN: u64 = (SLOTS * 2 * 8) as u64;

/// What `claim` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the marker; release it with [`FillLocks::release`].
    Mine(u64),
    /// Another live process (or this one) is filling the key.
    Busy,
    /// The slot is held for another key: fill without a marker.
    Collision,
}

/// The shared marker table.
pub struct FillLocks {
    map: memmap2::MmapMut,
}

fn tag_of(h: u128) -> u32 {
    ((h >> 96) as u32) | 1
}

fn slot_of(h: u128) -> usize {
    (h as u64 % SLOTS as u64) as usize
}

/// Deadline clock: ms, truncated to 32 bits, compared with wrap-around.
fn clock(ms: u64) -> u32 {
    ms as u32
}

fn alive_until(deadline: u32, now: u32) -> bool {
    (deadline.wrapping_sub(now) as i32) > 0
}

fn pid_alive(pid: u64) -> bool {
    if pid == 0 {
        return true; // the claimer has not written it yet
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn io_err(path: &Path, e: std::io::Error) -> crate::Error {
    crate::Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl FillLocks {
    /// Opens (creating if needed) `<dir>/fills`.
    pub fn open(dir: &Path) -> Result<FillLocks> {
        let path = dir.join("fills");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        if len != FILE_LEN {
            // New (or of another size: stale markers only, safe to reset).
            file.set_len(FILE_LEN).map_err(|e| io_err(&path, e))?;
        }
        // SAFETY: the file is FILE_LEN bytes and is only ever used through
        // atomic word operations, by every process that maps it.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| io_err(&path, e))?;
        Ok(FillLocks { map })
    }

    fn words(&self, slot: usize) -> (&AtomicU64, &AtomicU64) {
        // SAFETY: the mapping is FILE_LEN bytes, page aligned, so it holds
        // SLOTS * 2 aligned u64 words; AtomicU64 has u64's layout.
        let all =
            unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), SLOTS * 2) };
        (&all[slot * 2], &all[slot * 2 + 1])
    }

    /// Claims the fill of the key with hash `h` for `ttl_ms`.
    pub fn claim(&self, h: u128, ttl_ms: u64) -> Claim {
        let (word, owner) = self.words(slot_of(h));
        let now = now_ms();
        let mine = (tag_of(h) as u64) << 32 | clock(now + ttl_ms.max(1)) as u64;
        let mut cur = word.load(Acquire);
        loop {
            let live =
                cur != 0 && alive_until(cur as u32, clock(now)) && pid_alive(owner.load(Acquire));
            if live {
                return if (cur >> 32) as u32 == tag_of(h) {
                    Claim::Busy
                } else {
                    Claim::Collision
                };
            }
            match word.compare_exchange(cur, mine, AcqRel, Acquire) {
                Ok(_) => {
                    owner.store(std::process::id() as u64, Release);
                    return Claim::Mine(mine);
                }
                Err(now_cur) => cur = now_cur,
            }
        }
    }

    /// True while a live marker for `h` exists.
    pub fn busy(&self, h: u128) -> bool {
        let (word, owner) = self.words(slot_of(h));
        let cur = word.load(Acquire);
        cur >> 32 == tag_of(h) as u64
            && alive_until(cur as u32, clock(now_ms()))
            && pid_alive(owner.load(Acquire))
    }

    /// Releases a marker this process claimed (no-op if it was taken over).
    pub fn release(&self, h: u128, token: u64) {
        let (word, owner) = self.words(slot_of(h));
        // Clear the owner first: a claimer that wins the word right after
        // writes its own pid, which must not be erased.
        if word.load(Acquire) == token {
            owner.store(0, Release);
            let _ = word.compare_exchange(token, 0, AcqRel, Acquire);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u128) -> u128 {
        crate::KeyHash::of(format!("k{n}").as_bytes()).0
    }

    #[test]
    fn claim_busy_release_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let a = FillLocks::open(dir.path()).unwrap();
        let b = FillLocks::open(dir.path()).unwrap();
        let Claim::Mine(t) = a.claim(h(1), 10_000) else {
            panic!("first claim must win")
        };
        assert_eq!(b.claim(h(1), 10_000), Claim::Busy);
        assert!(b.busy(h(1)));
        a.release(h(1), t);
        assert!(!b.busy(h(1)));
        assert!(matches!(b.claim(h(1), 10_000), Claim::Mine(_)));
    }

    #[test]
    fn expired_marker_is_taken_over_and_old_release_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let a = FillLocks::open(dir.path()).unwrap();
        let Claim::Mine(old) = a.claim(h(2), 1) else {
            panic!("claim")
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        let Claim::Mine(new) = a.claim(h(2), 10_000) else {
            panic!("expired marker must be taken over")
        };
        a.release(h(2), old);
        assert!(
            a.busy(h(2)),
            "a stale token must not release the new marker"
        );
        a.release(h(2), new);
        assert!(!a.busy(h(2)));
    }

    #[test]
    fn dead_owner_marker_expires_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = FillLocks::open(dir.path()).unwrap();
        let Claim::Mine(_) = a.claim(h(3), 60_000) else {
            panic!("claim")
        };
        // A child that exits at once leaves a pid that no longer exists.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as u64;
        child.wait().unwrap();
        a.words(slot_of(h(3))).1.store(pid, Release);
        assert!(!a.busy(h(3)));
        assert!(matches!(a.claim(h(3), 60_000), Claim::Mine(_)));
    }

    #[test]
    fn another_key_in_the_slot_is_a_collision() {
        let dir = tempfile::tempdir().unwrap();
        let a = FillLocks::open(dir.path()).unwrap();
        let first = h(4);
        let other = (0..100_000u128)
            .map(|n| h(n + 10))
            .find(|x| slot_of(*x) == slot_of(first) && tag_of(*x) != tag_of(first))
            .unwrap();
        assert!(matches!(a.claim(first, 10_000), Claim::Mine(_)));
        assert_eq!(a.claim(other, 10_000), Claim::Collision);
    }
}
