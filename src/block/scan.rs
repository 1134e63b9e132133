//! Rebuilding a missing or damaged index by scanning region files, oldest
//! first, so that newer records of a key replace older ones.

use super::index::{state_word, Geometry, Index, Loc, CLOSED};
use super::record::{self, RegionHead, HEAD_LEN, REGION_DATA, UNIT};
use super::region::Regions;
use super::tier::{record_hash, Log};
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering::*;
use std::time::Instant;

/// The header of region file `r`, if it is one of this geometry.
fn read_head(dir: &Path, r: usize, size: u64) -> Option<RegionHead> {
    let f = File::open(dir.join(format!("region.{r:05}"))).ok()?;
    if f.metadata().ok()?.len() != size {
        return None;
    }
    let mut b = [0u8; 48];
    f.read_exact_at(&mut b, 0).ok()?;
    RegionHead::decode(&b).filter(|h| h.region as usize == r && h.region_size == size)
}

/// Builds a new index from the region files in `dir` and renames it into
/// place. The caller holds the directory lock.
pub fn rebuild(dir: &Path, geo: Geometry, new_salt: u64, log: &Log) -> Result<Index> {
    let n = geo.regions as usize;
    let mut heads: Vec<RegionHead> = (0..n)
        .filter_map(|r| read_head(dir, r, geo.region_size))
        .collect();
    let salt = heads
        .iter()
        .max_by_key(|h| h.lap)
        .map_or(new_salt, |h| h.salt);
    heads.retain(|h| h.salt == salt);
    heads.sort_by_key(|h| h.lap);
    let tmp = dir.join(format!("index.new.{}", std::process::id()));
    let idx = Index::create(&tmp, geo, salt)?;
    let regs = Regions::new(dir, geo.region_size, salt, n);
    let start = Instant::now();
    let (mut objects, mut bytes) = (0u64, 0u64);
    for (i, rh) in heads.iter().enumerate() {
        let r = rh.region as usize;
        idx.state(r).store(state_word(rh.epoch, CLOSED), Release);
        idx.region_lap(r).store(rh.lap, Release);
        idx.lap().store(rh.lap, Release);
        let Some(map) = regs.open(r) else { continue };
        let (count, end) = scan_region(&idx, r, rh.epoch, &map.map, geo.region_size);
        objects += count;
        bytes += geo.region_size;
        if i + 1 == heads.len() {
            idx.state(r)
                .store(state_word(rh.epoch, end / UNIT), Release);
            idx.head().store(r as u64, Release);
        }
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        log(&format!(
            "rebuilding index of {}: region {}/{}, {objects} records, {:.2} GB/s",
            dir.display(),
            i + 1,
            heads.len(),
            bytes as f64 / secs / 1e9
        ));
    }
    idx.flush().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, dir.join("index")).map_err(|e| io(&tmp, e))?;
    Ok(idx)
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: p.display().to_string(),
        reason: format!("index rebuild: {e}"),
    }
}

/// Publishes every intact record of one region; returns (records, end).
fn scan_region(idx: &Index, r: usize, epoch: u32, map: &[u8], size: u64) -> (u64, u64) {
    let (mut count, mut end) = (0, REGION_DATA);
    let mut off = REGION_DATA;
    while off + HEAD_LEN as u64 <= map.len() as u64 {
        let Some(head) = record::parse_head(&map[off as usize..], idx.salt, size) else {
            off += UNIT; // a hole left by a write that never finished
            continue;
        };
        let key_at = off as usize + HEAD_LEN;
        let key = &map[key_at..key_at + head.key_len as usize];
        let loc = Loc {
            region: r as u32,
            epoch16: epoch as u16,
            unit: (off / UNIT) as u32,
        };
        idx.publish(record_hash(&head, key), loc.pack(), |w| {
            let l = Loc::unpack(w);
            let rr = l.region as usize;
            let e = (idx.state(rr).load(Relaxed) >> 32) as u16;
            (e == l.epoch16).then(|| idx.region_lap(rr).load(Relaxed))
        });
        count += 1;
        off += head.units() * UNIT;
        end = off;
    }
    (count, end)
}
