//! One block tier: appends, lookups, region turnover and relocation of the
//! records a recycled region still holds.

use super::index::{state_word, Found, Geometry, Index, Loc, CLOSED, WAYS};
use super::record::{self, Head, Kind, RegionHead, HEAD_LEN, REGION_DATA, UNIT};
use super::region::{DirLock, RegionMap, Regions};
use super::relocate::Residency;
use super::{resident, scan, slice, TierSpec};
use crate::error::{Error, Result};
use crate::key::KeyHash;
use crate::meta::{now_ms, Meta};
use bytes::Bytes;
use parking_lot::RwLock;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

/// Where log lines go (progress of index rebuilds, degraded tiers).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;
/// Decides whether a record found at recycling time was purged.
pub type PurgedFn = Arc<dyn Fn(&[u8], &Meta, u64) -> bool + Send + Sync>;

/// How long a tier refuses writes after an I/O error before trying again.
const DEGRADED_MS: u64 = 10_000;
/// At most this share of a region is refilled with hot records when it is
/// recycled, so a lap always frees space.
pub(crate) const HOT_SHARE: u64 = 2;

/// Counters of one tier in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub bytes_written: u64,
    /// Records that failed verification (checksum, key, truncation).
    pub corrupt: u64,
    /// Hot records re-inserted when their region was recycled.
    pub reinserted: u64,
    /// Records moved down to the next tier when their region was recycled.
    pub demoted: u64,
    /// Purged records dropped when their region was recycled.
    pub purged_reclaimed: u64,
    /// Regions recycled by this process.
    pub recycled: u64,
    /// Write failures (I/O errors, disk full).
    pub errors: u64,
    /// Body checksums computed on reads (a large body's only on its first
    /// read in this process: see [`Tier::body_ok`]).
    pub body_checks: u64,
    /// Resident objects (RAM tier: by its ARC) moved down at recycling
    /// because keeping them all would not have freed enough space.
    pub forced_evictions: u64,
}

#[derive(Default)]
pub(super) struct Ctr {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) inserts: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    pub(super) corrupt: AtomicU64,
    pub(super) reinserted: AtomicU64,
    pub(super) demoted: AtomicU64,
    pub(super) purged_reclaimed: AtomicU64,
    pub(super) recycled: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) body_checks: AtomicU64,
    pub(super) forced: AtomicU64,
}

/// Counters striped over cache lines by thread, so that threads hitting the
/// same tier do not bounce one line between cores on every get.
pub(super) struct Striped(Box<[PaddedCtr]>);

#[repr(align(128))]
#[derive(Default)]
pub(super) struct PaddedCtr(Ctr);

const STRIPES: usize = 16;

impl Striped {
    fn new() -> Striped {
        Striped((0..STRIPES).map(|_| PaddedCtr::default()).collect())
    }

    pub(super) fn get(&self) -> &Ctr {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        thread_local! {
            static STRIPE: usize = NEXT.fetch_add(1, Relaxed) as usize % STRIPES;
        }
        &self.0[STRIPE.with(|s| *s)].0
    }
}

/// A verified record found by a lookup.
pub struct Hit {
    pub kind: Kind,
    pub meta: Meta,
    pub born: u64,
    /// Body, mapped (no copy); empty for manifests.
    pub body: Bytes,
    /// Slice count and slice size (manifests; 0 otherwise).
    pub parts: u64,
    pub slice: u64,
    pub version: u64,
    /// Where `body` lies in its region file (whole objects only), so a hit
    /// can be sent with `sendfile` without a second lookup.
    pub at: Option<BodyAt>,
    /// The verified checksum of `body` (`xxh3_64`, as `Meta::checksum`);
    /// whole objects only.
    pub body_sum: Option<u64>,
    /// A sliced object's slices, in order, verified (filled in by
    /// [`Tier::slices`]; empty otherwise).
    pub slices: Vec<Extent>,
}

/// The region file and offset of a verified body.
#[derive(Clone)]
pub struct BodyAt {
    map: Arc<RegionMap>,
    offset: u64,
}

impl std::fmt::Debug for BodyAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BodyAt({})", self.offset)
    }
}

impl BodyAt {
    /// The extent of the `len` body bytes found here.
    pub fn extent(&self, len: u64) -> Extent {
        Extent {
            map: self.map.clone(),
            offset: self.offset,
            len,
        }
    }
}

/// Verified body bytes as a file extent (a whole body, or one slice of a
/// sliced one), for `sendfile`. Holding it keeps the region file open and
/// mapped, so the bytes stay valid even if the region is recycled.
#[derive(Clone)]
pub struct Extent {
    map: Arc<RegionMap>,
    pub offset: u64,
    pub len: u64,
}

impl std::fmt::Debug for Extent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Extent({}+{})", self.offset, self.len)
    }
}

impl Extent {
    pub fn fd(&self) -> RawFd {
        self.map.file.as_raw_fd()
    }
    /// The region file (for `pread`, `sendfile`, `splice`).
    pub fn file(&self) -> &std::fs::File {
        &self.map.file
    }
    /// The bytes, from the mapping (touching them maps their pages).
    pub fn bytes(&self) -> &[u8] {
        &self.map.map[self.offset as usize..(self.offset + self.len) as usize]
    }
}

/// Located, header-verified record.
pub(crate) struct Rec {
    pub map: Arc<RegionMap>,
    pub off: u64,
    pub head: Head,
    pub found: Found,
}

impl Rec {
    pub fn bytes(&self) -> &[u8] {
        &self.map.map[self.off as usize..(self.off + self.head.rec_len()) as usize]
    }
    pub fn key(&self) -> &[u8] {
        &self.bytes()[HEAD_LEN..HEAD_LEN + self.head.key_len as usize]
    }
    pub fn meta_bytes(&self) -> &[u8] {
        let k = HEAD_LEN + self.head.key_len as usize;
        &self.bytes()[k..k + self.head.meta_len as usize]
    }
    pub fn body_range(&self) -> std::ops::Range<usize> {
        let s = (self.off + self.head.body_offset()) as usize;
        s..s + self.head.body_len as usize
    }
}

/// Bytes of a record probed for residency at once (larger records take a
/// second `mincore`).
const PROBE: u64 = 64 * 1024;

/// A block tier; clones share it.
#[derive(Clone)]
pub struct Tier {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub spec: TierSpec,
    pub index: Index,
    pub regions: Regions,
    lock: DirLock,
    log: Log,
    degraded_until: AtomicU64,
    seen_lap: AtomicU64,
    pub(super) ctr: Striped,
    pub(super) next: RwLock<Option<Tier>>,
    pub(super) purged: RwLock<Option<PurgedFn>>,
    pub(super) residency: RwLock<Option<Arc<dyn Residency>>>,
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// A per-store random seed (time, pid, stack address) for record checksums.
fn new_salt() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let local = 0u8;
    let seed = format!("{t}/{}/{:p}", std::process::id(), &local);
    xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) | 1
}

fn next_epoch(e: u32) -> u32 {
    let n = e.wrapping_add(1);
    // Index slots hold the low 16 bits; 0 there would read as "empty".
    if n as u16 == 0 {
        n.wrapping_add(1)
    } else {
        n
    }
}

impl Tier {
    /// Opens (creating if needed) the tier in `spec.path`. An intact index
    /// is mapped as is (no scan); a missing or damaged one is rebuilt from
    /// the region files, with progress lines sent to `log`.
    pub fn open(spec: &TierSpec, log: Log) -> Result<Tier> {
        spec.validate()?;
        let dir = &spec.path;
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "cannot create tier directory", e))?;
        let lock = DirLock::open(dir).map_err(|e| io_err(dir, "tier directory not writable", e))?;
        let regions = spec.size / spec.region;
        let slots = spec.slots.unwrap_or((spec.size / 2048).max(4096));
        let geo = Geometry {
            region_size: spec.region,
            regions,
            buckets: slots.div_ceil(WAYS as u64),
        };
        let guard = lock.lock().map_err(|e| io_err(dir, "lock", e))?;
        let path = dir.join("index");
        let index = match Index::attach(&path, geo)? {
            Some(i) => i,
            None => scan::rebuild(dir, geo, new_salt(), &log)?,
        };
        let regs = Regions::new(dir, spec.region, index.salt, regions as usize);
        check_regions(&index, &regs);
        drop(guard);
        Ok(Tier {
            inner: Arc::new(Inner {
                spec: spec.clone(),
                index,
                regions: regs,
                lock,
                log,
                degraded_until: AtomicU64::new(0),
                seen_lap: AtomicU64::new(0),
                ctr: Striped::new(),
                next: RwLock::new(None),
                purged: RwLock::new(None),
                residency: RwLock::new(None),
            }),
        })
    }

    /// A log that writes to stderr.
    pub fn stderr_log() -> Log {
        Arc::new(|line: &str| eprintln!("cdncore: {line}"))
    }

    pub fn spec(&self) -> &TierSpec {
        &self.inner.spec
    }

    /// Records that are not hot when their region is recycled move here.
    pub fn set_next(&self, next: Option<Tier>) {
        *self.inner.next.write() = next;
    }

    /// Used at recycling to drop purged records instead of moving them.
    pub fn set_purged(&self, f: Option<PurgedFn>) {
        *self.inner.purged.write() = f;
    }

    /// Used at recycling to decide which live records stay.
    pub(crate) fn set_residency(&self, r: Option<Arc<dyn Residency>>) {
        *self.inner.residency.write() = r;
    }

    /// Region (re)openings so far: changes whenever a region is recycled.
    pub fn lap(&self) -> u64 {
        self.inner.index.lap().load(Relaxed)
    }

    /// Whether the region file `at` lies in is still the tier's current
    /// one (one atomic load): a body held since may be in a recycled file.
    pub fn is_current(&self, at: &BodyAt) -> bool {
        self.map_is_current(&at.map)
    }

    /// [`Tier::is_current`] for a slice.
    pub fn extent_is_current(&self, e: &Extent) -> bool {
        self.map_is_current(&e.map)
    }

    fn map_is_current(&self, map: &RegionMap) -> bool {
        let idx = &self.inner.index;
        let r = map.region as usize;
        (r as u64) < idx.geo.regions && (idx.state(r).load(Relaxed) >> 32) as u32 == map.epoch
    }

    pub fn stats(&self) -> TierStats {
        let mut t = TierStats::default();
        for c in self.inner.ctr.0.iter() {
            let c = &c.0;
            t.hits += c.hits.load(Relaxed);
            t.misses += c.misses.load(Relaxed);
            t.inserts += c.inserts.load(Relaxed);
            t.bytes_written += c.bytes_written.load(Relaxed);
            t.corrupt += c.corrupt.load(Relaxed);
            t.reinserted += c.reinserted.load(Relaxed);
            t.demoted += c.demoted.load(Relaxed);
            t.purged_reclaimed += c.purged_reclaimed.load(Relaxed);
            t.recycled += c.recycled.load(Relaxed);
            t.errors += c.errors.load(Relaxed);
            t.body_checks += c.body_checks.load(Relaxed);
            t.forced_evictions += c.forced.load(Relaxed);
        }
        t
    }

    /// Index slots in use and in total (16 bytes each).
    pub fn index_usage(&self) -> (u64, u64) {
        let i = &self.inner.index;
        (i.occupied(), i.geo.buckets * WAYS as u64)
    }

    /// Bytes of the index file.
    pub fn index_bytes(&self) -> u64 {
        self.inner.index.geo.file_len()
    }

    /// Is the tier refusing writes after an I/O error?
    pub fn degraded(&self) -> bool {
        now_ms() < self.inner.degraded_until.load(Relaxed)
    }

    /// Stores a whole body; bodies over the slice size become slices.
    pub fn put(&self, key: &[u8], meta: &Meta, born: u64, body: &[u8]) -> Result<()> {
        self.put_placed(key, meta, born, body, None).map(|_| ())
    }

    /// [`Tier::put`], returning where a body stored as one record lies
    /// (mapped, and known intact: written from these bytes). `sum`: the
    /// body's checksum if the caller has it (`xxh3_64`).
    pub fn put_placed(
        &self,
        key: &[u8],
        meta: &Meta,
        born: u64,
        body: &[u8],
        sum: Option<u64>,
    ) -> Result<Option<(Bytes, BodyAt)>> {
        if body.len() as u64 > self.inner.spec.slice {
            let mut w = self.writer(key, meta.clone(), born)?;
            w.write(body)?;
            return w.commit().map(|_| None);
        }
        let mut m = meta.clone();
        m.size = body.len() as u64;
        let h = KeyHash::of(key).0;
        let head = Head {
            kind: Kind::Object,
            key_len: key.len() as u32,
            meta_len: 0,
            body_len: body.len() as u64,
            born,
            part: 0,
            version: 0,
            body_sum: sum.unwrap_or_else(|| record::body_sum(body)),
        };
        let meta = record::encode_meta(&m);
        let (_, map, off) = self.write_placed(h, head, key, &meta, body)?;
        let head = Head {
            meta_len: meta.len() as u32,
            key_len: key.len() as u32,
            ..head
        };
        if head.body_len >= RegionMap::MEMO_MIN {
            map.set_verified(off);
        }
        let start = off + head.body_offset();
        let bytes = Bytes::from_owner(MapSlice(map.clone()))
            .slice(start as usize..(start + head.body_len) as usize);
        Ok(Some((bytes, BodyAt { map, offset: start })))
    }

    /// Starts a streaming insert with bounded memory (one slice buffer).
    pub fn writer(&self, key: &[u8], meta: Meta, born: u64) -> Result<slice::TierWriter> {
        crate::key::validate(key, crate::key::MAX_KEY_LIMIT)?;
        Ok(slice::TierWriter::new(self.clone(), key, meta, born))
    }

    /// Looks an object up: a whole object (body mapped, checksum verified)
    /// or the manifest of a sliced one.
    pub fn get(&self, key: &[u8]) -> Result<Option<Hit>> {
        self.maybe_prune();
        let h = KeyHash::of(key).0;
        let found = self.find(
            h,
            key,
            |hd| matches!(hd.kind, Kind::Object | Kind::Manifest),
            true,
        );
        let Some(rec) = found else {
            self.inner.ctr.get().misses.fetch_add(1, Relaxed);
            return Ok(None);
        };
        Ok(self.hit_of(rec))
    }

    /// Like [`Tier::get`] for an object whose pages are all in memory
    /// (`mincore`); `None` when reading it might wait for the disk, or it
    /// is not a whole object here (nothing is counted then: the caller
    /// asks [`Tier::get`] on a thread).
    pub fn get_resident(&self, key: &[u8]) -> Option<Hit> {
        self.maybe_prune();
        let rec = self.resident_rec(key)?;
        if !self.body_ok(&rec) {
            self.drop_corrupt(&rec);
            return None;
        }
        self.hit_of(rec)
    }

    /// [`Tier::get_resident`] for a tier on tmpfs, whose pages are memory:
    /// no `mincore` (a system call per lookup on the small-hit path).
    pub fn get_in_ram(&self, key: &[u8]) -> Option<Hit> {
        self.maybe_prune();
        let h = KeyHash::of(key).0;
        let rec = self.find(h, key, |hd| hd.kind == Kind::Object, true)?;
        self.hit_of(rec)
    }

    /// Whether [`Tier::get_resident`] would find `key` (without the body
    /// checksum).
    pub fn resident(&self, key: &[u8]) -> bool {
        self.resident_rec(key).is_some()
    }

    /// `key`'s object record if all its pages are in memory: the header
    /// page is checked before it is read, then the whole record. A
    /// manifest's slices are found by reading their headers: `None`.
    fn resident_rec(&self, key: &[u8]) -> Option<Rec> {
        let mut cands = Vec::with_capacity(WAYS);
        self.inner.index.lookup(KeyHash::of(key).0, &mut cands);
        for found in cands {
            let Some((map, off)) = self.region_of(found) else {
                continue;
            };
            // One mincore for the header and (usually) the whole record.
            let probe = resident::Probe::new(&map.map, off, PROBE)?;
            if probe.covers(off, (HEAD_LEN + key.len()) as u64) != Some(true) {
                return None;
            }
            let Some(rec) = self.locate(found) else {
                continue;
            };
            if rec.key() == key && matches!(rec.head.kind, Kind::Object | Kind::Manifest) {
                let len = rec.head.rec_len();
                let whole = rec.head.kind == Kind::Object
                    && probe
                        .covers(off, len)
                        .unwrap_or_else(|| resident::in_core(&map.map, off, len));
                return whole.then_some(rec);
            }
        }
        None
    }

    /// The hit of a found record (counted), or `None` if its metadata is
    /// corrupt (then dropped).
    fn hit_of(&self, rec: Rec) -> Option<Hit> {
        let meta = match record::decode_meta(rec.meta_bytes()) {
            Ok(m) => m,
            Err(_) => {
                self.drop_corrupt(&rec);
                return None;
            }
        };
        self.inner.index.mark_hit(&rec.found);
        self.inner.ctr.get().hits.fetch_add(1, Relaxed);
        let slice = match rec.head.kind {
            Kind::Manifest => {
                let b = &rec.map.map[rec.body_range()];
                u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
            }
            _ => 0,
        };
        let (body, at) = if rec.head.kind == Kind::Object {
            let r = rec.body_range();
            let at = BodyAt {
                map: rec.map.clone(),
                offset: r.start as u64,
            };
            (
                Bytes::from_owner(MapSlice(rec.map.clone())).slice(r),
                Some(at),
            )
        } else {
            (Bytes::new(), None)
        };
        Some(Hit {
            kind: rec.head.kind,
            meta,
            born: rec.head.born,
            body,
            parts: rec.head.part,
            slice,
            version: rec.head.version,
            at,
            body_sum: (rec.head.kind == Kind::Object).then_some(rec.head.body_sum),
            slices: Vec::new(),
        })
    }

    /// A verified whole object as (fd, offset, length), for `sendfile`.
    pub fn extent(&self, key: &[u8]) -> Result<Option<Extent>> {
        let h = KeyHash::of(key).0;
        let Some(rec) = self.find(h, key, |hd| hd.kind == Kind::Object, true) else {
            return Ok(None);
        };
        if record::decode_meta(rec.meta_bytes()).is_err() {
            self.drop_corrupt(&rec);
            return Ok(None);
        }
        self.inner.index.mark_hit(&rec.found);
        let r = rec.body_range();
        Ok(Some(Extent {
            map: rec.map.clone(),
            offset: r.start as u64,
            len: r.len() as u64,
        }))
    }

    /// Forgets a key (its bytes go when the region recycles).
    pub fn remove(&self, key: &[u8]) -> bool {
        let h = KeyHash::of(key).0;
        match self.find(h, key, |_| true, false) {
            Some(rec) => self.inner.index.remove(&rec.found),
            None => false,
        }
    }

    /// The newest index entry for `h` whose record is intact and passes `ok`.
    pub(crate) fn find(
        &self,
        h: u128,
        key: &[u8],
        ok: impl Fn(&Head) -> bool,
        verify_body: bool,
    ) -> Option<Rec> {
        let idx = &self.inner.index;
        let mut cands = Vec::with_capacity(WAYS);
        idx.lookup(h, &mut cands);
        for found in cands {
            let Some(rec) = self.locate(found) else {
                continue;
            };
            if rec.key() != key || !ok(&rec.head) {
                continue;
            }
            if verify_body && !self.body_ok(&rec) {
                self.drop_corrupt(&rec);
                continue;
            }
            return Some(rec);
        }
        None
    }

    /// Whether a record's body matches its checksum. A large body is
    /// checked on its first read in this process only: the checksum guards
    /// against torn writes and reused space, which cannot happen to a
    /// published record later (its region file is append-only), and
    /// hashing 1 MiB on every hit costs as much as sending it. A new
    /// process (a restart after a crash) checks again.
    fn body_ok(&self, rec: &Rec) -> bool {
        let memo = rec.head.body_len >= RegionMap::MEMO_MIN;
        if memo && rec.map.verified(rec.off) {
            return true;
        }
        self.inner.ctr.get().body_checks.fetch_add(1, Relaxed);
        let ok = record::body_sum(&rec.map.map[rec.body_range()]) == rec.head.body_sum;
        if ok && memo {
            rec.map.set_verified(rec.off);
        }
        ok
    }

    /// Maps a slot to its record, if the region is still at that epoch and
    /// the header there is intact.
    fn locate(&self, found: Found) -> Option<Rec> {
        let idx = &self.inner.index;
        let (map, off) = self.region_of(found)?;
        let max_body = self.inner.spec.region;
        match record::parse_head(&map.map[off as usize..], idx.salt, max_body) {
            Some(head) => Some(Rec {
                map,
                off,
                head,
                found,
            }),
            None => {
                self.inner.ctr.get().corrupt.fetch_add(1, Relaxed);
                idx.remove(&found);
                None
            }
        }
    }

    /// The mapped region and offset a slot points to, if its epoch is current.
    fn region_of(&self, found: Found) -> Option<(Arc<RegionMap>, u64)> {
        let loc = found.loc();
        let idx = &self.inner.index;
        let r = loc.region as usize;
        if r as u64 >= idx.geo.regions {
            return None;
        }
        let epoch = (idx.state(r).load(Acquire) >> 32) as u32;
        if epoch as u16 != loc.epoch16 {
            return None;
        }
        let map = self.inner.regions.get(r, epoch)?;
        let off = loc.offset();
        if off < REGION_DATA || off >= map.map.len() as u64 {
            return None;
        }
        Some((map, off))
    }

    /// Finds a slice record reading its header with `pread`, so that
    /// streaming a huge object does not map a page per slice into this
    /// process. Its body checksum is checked when the body is read.
    pub(crate) fn find_slice(
        &self,
        h: u128,
        key: &[u8],
        ok: impl Fn(&Head) -> bool,
    ) -> Option<Rec> {
        let mut cands = Vec::with_capacity(WAYS);
        self.inner.index.lookup(h, &mut cands);
        let mut b = vec![0u8; HEAD_LEN + key.len()];
        for found in cands {
            let Some((map, off)) = self.region_of(found) else {
                continue;
            };
            if map.file.read_exact_at(&mut b, off).is_err() {
                continue;
            }
            let avail = map.map.len() as u64 - off;
            let salt = self.inner.index.salt;
            let Some(head) = record::parse_head_in(&b, avail, salt, self.inner.spec.region) else {
                continue;
            };
            if &b[HEAD_LEN..] == key && ok(&head) {
                return Some(Rec {
                    map,
                    off,
                    head,
                    found,
                });
            }
        }
        None
    }

    fn drop_corrupt(&self, rec: &Rec) {
        self.inner.ctr.get().corrupt.fetch_add(1, Relaxed);
        self.inner.index.remove(&rec.found);
    }

    /// Writes a record and publishes it in the index once all its bytes are
    /// written.
    pub(crate) fn write_record(
        &self,
        h: u128,
        head: Head,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
    ) -> Result<Loc> {
        self.write_placed(h, head, key, meta, body).map(|p| p.0)
    }

    /// [`Tier::write_record`], also returning the region file and offset.
    fn write_placed(
        &self,
        h: u128,
        head: Head,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
    ) -> Result<(Loc, Arc<RegionMap>, u64)> {
        let head = Head {
            meta_len: meta.len() as u32,
            key_len: key.len() as u32,
            ..head
        };
        let (loc, map) = self.append(&head, key, meta, body)?;
        let idx = &self.inner.index;
        idx.publish(h, loc.pack(), |w| self.age(w));
        Ok((loc, map, loc.offset()))
    }

    /// FIFO age of an index word when a publish looks for a slot: the lap
    /// of its region, `None` if the slot may be taken.
    ///
    /// An entry of its region's previous epoch is not free: that region was
    /// just turned over and the process recycling it (this one or another)
    /// may still be walking it, looking each record's entry up to keep or
    /// demote the record, and a record whose slot was taken meanwhile would
    /// be lost (the flake of `ram_procs`). Such an entry counts as the
    /// oldest live one (age 1): only a full bucket pair gives it up.
    /// Recycling removes every entry of the old epoch it handled, so what is
    /// left of it is rare (an interrupted recycling) and ages out at the
    /// region's next turnover.
    fn age(&self, w: u64) -> Option<u64> {
        let l = Loc::unpack(w);
        let idx = &self.inner.index;
        let r = l.region as usize;
        if r as u64 >= idx.geo.regions {
            return None;
        }
        let epoch = (idx.state(r).load(Relaxed) >> 32) as u32;
        if epoch as u16 == l.epoch16 {
            return Some(idx.region_lap(r).load(Relaxed).max(1));
        }
        (next_epoch(l.epoch16 as u32) as u16 == epoch as u16).then_some(1)
    }

    fn check_writable(&self) -> Result<()> {
        if self.degraded() {
            return Err(io_err(
                &self.inner.spec.path,
                "tier degraded",
                "refusing writes for a while after an I/O error",
            ));
        }
        Ok(())
    }

    /// Marks the tier degraded (logging once per episode) and returns the error.
    fn degrade(&self, what: &str, e: impl std::fmt::Display) -> Error {
        let i = &self.inner;
        i.ctr.get().errors.fetch_add(1, Relaxed);
        let now = now_ms();
        let err = io_err(&i.spec.path, what, e);
        if i.degraded_until.swap(now + DEGRADED_MS, AcqRel) < now {
            (i.log)(&format!(
                "{err}; tier degraded, serving from the other tiers"
            ));
        }
        err
    }

    /// Reserves space in the head region and writes the record there.
    pub(super) fn append(
        &self,
        head: &Head,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
    ) -> Result<(Loc, Arc<RegionMap>)> {
        self.check_writable()?;
        let units = head.units();
        let region_units = self.inner.spec.region / UNIT;
        if units > region_units - REGION_DATA / UNIT {
            return Err(Error::ObjectTooLarge {
                size: head.rec_len(),
                max: self.inner.spec.region - REGION_DATA,
            });
        }
        let salt = self.inner.index.salt;
        let idx = &self.inner.index;
        for _ in 0..1000 {
            let r = idx.head().load(Acquire) as usize % idx.geo.regions as usize;
            let st = idx.state(r).fetch_add(units, AcqRel);
            let (epoch, cur) = ((st >> 32) as u32, st & 0xffff_ffff);
            if cur >= CLOSED || cur + units > region_units {
                self.advance(r)?;
                continue;
            }
            let Some(map) = self.inner.regions.get(r, epoch) else {
                self.advance(r)?;
                continue;
            };
            let off = cur * UNIT;
            let hdr = record::encode_head(head, key, meta, salt);
            let wrote = map
                .file
                .write_all_at(&hdr, off)
                .and_then(|_| map.file.write_all_at(body, off + hdr.len() as u64));
            if let Err(e) = wrote {
                return Err(self.degrade("write", e));
            }
            let c = self.inner.ctr.get();
            c.inserts.fetch_add(1, Relaxed);
            c.bytes_written.fetch_add(head.rec_len(), Relaxed);
            let loc = Loc {
                region: r as u32,
                epoch16: epoch as u16,
                unit: cur as u32,
            };
            return Ok((loc, map));
        }
        Err(io_err(
            &self.inner.spec.path,
            "append",
            "no region could be opened",
        ))
    }

    /// Opens the next region (FIFO) if `seen` is still the head, then moves
    /// the records worth keeping out of the region it replaced.
    fn advance(&self, seen: usize) -> Result<()> {
        let i = &self.inner;
        let idx = &i.index;
        let old = {
            let _g = i.lock.lock().map_err(|e| self.degrade("lock", e))?;
            if idx.head().load(Acquire) as usize != seen {
                return Ok(());
            }
            let n = idx.geo.regions as usize;
            let next = (seen + 1) % n;
            let old_epoch = (idx.state(next).load(Acquire) >> 32) as u32;
            let old = (old_epoch != 0)
                .then(|| i.regions.get(next, old_epoch))
                .flatten();
            idx.state(next)
                .store(state_word(old_epoch, CLOSED), Release);
            let epoch = next_epoch(old_epoch);
            let lap = idx.lap().load(Acquire) + 1;
            let rh = RegionHead {
                region: next as u32,
                epoch,
                lap,
                salt: idx.salt,
                region_size: i.spec.region,
            };
            if let Err(e) = i.regions.create(&rh) {
                return Err(self.degrade("cannot open a new region", e));
            }
            idx.region_lap(next).store(lap, Release);
            idx.lap().store(lap, Release);
            idx.state(next)
                .store(state_word(epoch, REGION_DATA / UNIT), Release);
            idx.head().store(next as u64, Release);
            i.ctr.get().recycled.fetch_add(1, Relaxed);
            old
        };
        if let Some(old) = old {
            self.relocate(&old);
        }
        Ok(())
    }

    /// Drops this process's mappings of regions recycled since the last
    /// call (one atomic load when none was): an unlinked region file stays
    /// in memory while a process maps it. Lookups call it, and so does the
    /// background sweeper, for a process that only serves handles.
    pub(crate) fn maybe_prune(&self) {
        let i = &self.inner;
        let lap = i.index.lap().load(Relaxed);
        // Load first: a store on every get would bounce the line.
        if i.seen_lap.load(Relaxed) != lap && i.seen_lap.swap(lap, Relaxed) != lap {
            i.regions
                .prune(|r| (i.index.state(r).load(Relaxed) >> 32) as u32);
        }
    }

    /// Reads `len` bytes of a record body at `pos` with pread, into `buf`.
    pub(crate) fn pread(&self, rec: &Rec, buf: &mut [u8], pos: u64) -> Result<()> {
        let at = rec.off + rec.head.body_offset() + pos;
        rec.map
            .file
            .read_exact_at(buf, at)
            .map_err(|e| io_err(&self.inner.spec.path, "read", e))
    }

    pub(crate) fn extent_of(&self, rec: &Rec) -> Extent {
        let r = rec.body_range();
        Extent {
            map: rec.map.clone(),
            offset: r.start as u64,
            len: r.len() as u64,
        }
    }

    pub(crate) fn note_corrupt(&self, rec: &Rec) {
        self.drop_corrupt(rec)
    }

    pub(crate) fn mark_hit(&self, rec: &Rec) {
        self.inner.index.mark_hit(&rec.found)
    }

    pub(crate) fn count_hit(&self, hit: bool) {
        let c = self.inner.ctr.get();
        if hit { &c.hits } else { &c.misses }.fetch_add(1, Relaxed);
    }
}

pub(crate) fn old_region(m: &RegionMap) -> u32 {
    RegionHead::decode(&m.map[..REGION_DATA as usize]).map_or(u32::MAX, |h| h.region)
}

/// The index hash of a record: its key's, or its slice's.
pub(crate) fn record_hash(head: &Head, key: &[u8]) -> u128 {
    match head.kind {
        Kind::Slice => slice::slice_hash(key, head.part),
        _ => KeyHash::of(key).0,
    }
}

/// Drops regions whose file is missing, truncated or of another epoch: their
/// index entries die with the epoch bump, and the region is reopened in turn.
fn check_regions(idx: &Index, regs: &Regions) {
    for r in 0..idx.geo.regions as usize {
        let st = idx.state(r).load(Acquire);
        let epoch = (st >> 32) as u32;
        if epoch == 0 {
            continue;
        }
        if regs.open(r).is_some_and(|m| m.epoch == epoch) {
            continue;
        }
        let _ = idx.state(r).compare_exchange(
            st,
            state_word(next_epoch(epoch), CLOSED),
            AcqRel,
            Acquire,
        );
    }
}

/// Keeps a region mapping alive for as long as a `Bytes` handed out of it.
struct MapSlice(Arc<RegionMap>);

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}
