//! The RAM tier's share of the engine: its ARC directory (opened beside
//! its regions), the residency policy its recycling asks, and what an
//! object counts for there.

use super::region::DirLock;
use super::relocate::Residency;
use super::TierSpec;
use crate::error::{Error, Result};
use crate::evict::shared::{Geometry, SharedArc};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

type Log = super::tier::Log;

/// Bytes an object counts for in the ARC directory: body, key and a record
/// header with typical metadata. The same function of (key, body) at every
/// insert and hit, so ARC's accounting is consistent; the RAM tier's slack
/// absorbs the difference to the exact record length.
pub fn ram_charge(key_len: usize, body_len: u64) -> u64 {
    (body_len + key_len as u64 + 256).div_ceil(64) * 64
}

/// The RAM tier's recycling asks the ARC directory which records stay.
pub(super) struct ArcResidency {
    pub dir: Arc<SharedArc>,
    pub budget: u64,
}

impl Residency for ArcResidency {
    fn keep(&self, records: &[(u128, u64)]) -> (Vec<bool>, u64) {
        // One verdict per object: its records in this region stay or go
        // together (a sliced object's slices follow its key).
        let mut order: Vec<(u128, u64)> = Vec::new();
        let mut at: HashMap<u128, usize> = HashMap::new();
        for &(h, len) in records {
            let i = *at.entry(h).or_insert_with(|| {
                order.push((h, 0));
                order.len() - 1
            });
            order[i].1 += len;
        }
        let (keep, forced) = self.dir.keep(&order, self.budget);
        (records.iter().map(|(h, _)| keep[at[h]]).collect(), forced)
    }

    fn dropped(&self, hash: u128) {
        self.dir.remove(hash);
    }
}

/// Maps `<ram dir>/arc`, sized for the RAM tier: one node per 2 KiB of it
/// (residents and ghosts of objects down to about 4 KiB), capacity as
/// [`crate::config::ram_capacity`].
pub(super) fn open_directory(ram: &TierSpec, log: Log) -> Result<SharedArc> {
    let size = ram.size / ram.region * ram.region;
    let geo = Geometry {
        nodes: (size / 2048).clamp(1024, 1 << 26) as u32,
        cap: crate::config::ram_capacity(size, ram.region),
    };
    let dir = &ram.path;
    let lock = DirLock::open(dir).map_err(|e| io(dir, "lock", e))?;
    let _g = lock.lock().map_err(|e| io(dir, "lock", e))?;
    let arc_log = log.clone();
    SharedArc::open(&dir.join("arc"), geo, Arc::new(move |l: &str| arc_log(l)))
}

/// One log line if the RAM tier's directory is not in RAM (tmpfs, ramfs):
/// it works there, it is just not memory.
pub(super) fn warn_unless_ram(dir: &Path, log: &Log) {
    if on_ram_fs(dir) == Some(false) {
        log(&format!(
            "RAM tier {} is not on tmpfs: it works, but its bytes are not in RAM (give ram=/dev/shm/...)",
            dir.display()
        ));
    }
}

/// Whether `dir` is on tmpfs or ramfs; `None` if `statfs` fails.
pub(super) fn on_ram_fs(dir: &Path) -> Option<bool> {
    const TMPFS: i64 = 0x0102_1994;
    const RAMFS: i64 = 0x8584_58f6;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` writable.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let fs = st.f_type as i64;
    Some(fs == TMPFS || fs == RAMFS)
}

fn io(p: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io {
        path: p.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}
