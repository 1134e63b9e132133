//! Large objects: fixed-size slices, each its own record findable by
//! (key, slice number), plus a manifest record under the key itself, written
//! last so that a manifest is only ever visible once all its slices are. A
//! version id in the manifest and its slices keeps two fills of one key from
//! mixing.

use super::record::{self, Head, Kind};
use super::tier::{Extent, Rec, Tier};
use crate::error::{Error, Result};
use crate::key::KeyHash;
use crate::meta::Meta;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use xxhash_rust::xxh3::{xxh3_128_with_seed, Xxh3};

const SLICE_SEED: u64 = 0x736c_6963_6500_0000;

/// Index hash of slice `part` of `key`.
pub fn slice_hash(key: &[u8], part: u64) -> u128 {
    xxh3_128_with_seed(key, SLICE_SEED ^ part)
}

fn new_version() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = crate::meta::now_ms();
    let n = N.fetch_add(1, Relaxed);
    xxhash_rust::xxh3::xxh3_64(format!("{t}/{}/{n}", std::process::id()).as_bytes()) | 1
}

/// Streaming insert into one tier holding at most one slice in memory.
pub struct TierWriter {
    tier: Tier,
    key: Box<[u8]>,
    meta: Meta,
    born: u64,
    buf: Vec<u8>,
    parts: u64,
    version: u64,
    total: u64,
    sum: Xxh3,
}

impl TierWriter {
    pub(crate) fn new(tier: Tier, key: &[u8], meta: Meta, born: u64) -> Self {
        TierWriter {
            tier,
            key: key.into(),
            meta,
            born,
            buf: Vec::new(),
            parts: 0,
            version: new_version(),
            total: 0,
            sum: Xxh3::new(),
        }
    }

    fn slice_len(&self) -> usize {
        self.tier.spec().slice as usize
    }

    /// Appends body bytes. A full slice is written out when more bytes
    /// follow it, so an object of exactly one slice stays one record.
    pub fn write(&mut self, mut chunk: &[u8]) -> Result<()> {
        self.sum.update(chunk);
        self.total += chunk.len() as u64;
        while !chunk.is_empty() {
            if self.buf.len() == self.slice_len() {
                self.flush_slice()?;
            }
            let room = self.slice_len() - self.buf.len();
            let (now, rest) = chunk.split_at(room.min(chunk.len()));
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.slice_len());
            }
            self.buf.extend_from_slice(now);
            chunk = rest;
        }
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.total
    }

    fn flush_slice(&mut self) -> Result<()> {
        let head = Head {
            kind: Kind::Slice,
            key_len: 0,
            meta_len: 0,
            body_len: self.buf.len() as u64,
            born: self.born,
            part: self.parts,
            version: self.version,
            body_sum: record::body_sum(&self.buf),
        };
        let h = slice_hash(&self.key, self.parts);
        self.tier.write_record(h, head, &self.key, &[], &self.buf)?;
        self.parts += 1;
        self.buf.clear();
        Ok(())
    }

    /// Makes the object visible: one record if it fit in a slice, else the
    /// last slice and then the manifest.
    pub fn commit(mut self) -> Result<()> {
        let mut meta = std::mem::take(&mut self.meta);
        meta.size = self.total;
        meta.checksum = self.sum.digest();
        if self.parts == 0 {
            let body = std::mem::take(&mut self.buf);
            return self.tier.put(&self.key, &meta, self.born, &body);
        }
        if !self.buf.is_empty() {
            self.flush_slice()?;
        }
        let body = (self.slice_len() as u64).to_le_bytes();
        let head = Head {
            kind: Kind::Manifest,
            key_len: 0,
            meta_len: 0,
            body_len: body.len() as u64,
            born: self.born,
            part: self.parts,
            version: self.version,
            body_sum: record::body_sum(&body),
        };
        let h = KeyHash::of(&self.key).0;
        self.tier
            .write_record(h, head, &self.key, &record::encode_meta(&meta), &body)
            .map(|_| ())
    }
}

impl Tier {
    /// Reads body bytes `start..end` of `key` (whole or sliced object),
    /// handing verified pieces to `out` in order. Sliced objects are read with
    /// `pread` into one slice buffer, so memory stays bounded whatever the
    /// size. Returns the metadata, or `None` on a miss (including a sliced
    /// object missing a slice, checked before any byte is handed out).
    pub fn read_range(
        &self,
        key: &[u8],
        start: u64,
        end: u64,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Option<Meta>> {
        let h = KeyHash::of(key).0;
        let is_top = |hd: &Head| matches!(hd.kind, Kind::Object | Kind::Manifest);
        let Some(top) = self.find(h, key, is_top, true) else {
            self.count_hit(false);
            return Ok(None);
        };
        let meta = match record::decode_meta(top.meta_bytes()) {
            Ok(m) => m,
            Err(_) => {
                self.note_corrupt(&top);
                return Ok(None);
            }
        };
        self.mark_hit(&top);
        self.count_hit(true);
        let end = end.min(meta.size);
        if start >= end {
            return Ok(Some(meta));
        }
        if top.head.kind == Kind::Object {
            let body = &top.map.map[top.body_range()];
            let end = end.min(body.len() as u64);
            if start < end {
                out(&body[start as usize..end as usize])?;
            }
            return Ok(Some(meta));
        }
        let body = &top.map.map[top.body_range()];
        let slice = u64::from_le_bytes(body.try_into().unwrap_or([0; 8]));
        if !(4096..=self.spec().region).contains(&slice) {
            self.note_corrupt(&top);
            return Ok(None);
        }
        let (first, last) = (start / slice, (end - 1) / slice);
        let mut recs = Vec::new();
        for s in first..=last {
            let want = slice.min(meta.size - s * slice);
            let ok = |hd: &Head| {
                hd.kind == Kind::Slice
                    && hd.part == s
                    && hd.version == top.head.version
                    && hd.body_len == want
            };
            match self.find_slice(slice_hash(key, s), key, ok) {
                Some(r) => recs.push(r),
                None => {
                    // A slice was recycled or damaged: the object is gone.
                    self.note_corrupt(&top);
                    return Ok(None);
                }
            }
        }
        let mut buf = vec![0u8; slice as usize];
        for (s, rec) in (first..=last).zip(recs) {
            self.read_slice(&rec, &mut buf)?;
            self.mark_hit(&rec);
            let base = s * slice;
            let a = start.max(base) - base;
            let b = end.min(base + rec.head.body_len) - base;
            out(&buf[a as usize..b as usize])?;
        }
        Ok(Some(meta))
    }

    /// Slice `part` (`len` bytes) of version `version` of `key` in this
    /// tier, verified (a body of 64 KiB or more on its first read in this
    /// process only), as an extent.
    pub fn slice_extent(&self, key: &[u8], version: u64, part: u64, len: u64) -> Option<Extent> {
        let ok = |hd: &Head| {
            hd.kind == Kind::Slice && hd.part == part && hd.version == version && hd.body_len == len
        };
        let rec = self.find(slice_hash(key, part), key, ok, true)?;
        self.mark_hit(&rec);
        Some(self.extent_of(&rec))
    }

    fn read_slice(&self, rec: &Rec, buf: &mut [u8]) -> Result<()> {
        let body = &mut buf[..rec.head.body_len as usize];
        self.pread(rec, body, 0)?;
        if record::body_sum(body) != rec.head.body_sum {
            self.note_corrupt(rec);
            return Err(Error::Io {
                path: self.spec().path.display().to_string(),
                reason: "slice failed its checksum; object dropped".into(),
            });
        }
        Ok(())
    }
}
