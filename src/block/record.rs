//! On-disk formats: the region file header and object records.
//!
//! A record is a 64-byte header, the key, the encoded metadata and the body,
//! padded to a 64-byte unit. The header checksum (seeded with the store's
//! salt) covers header, key and metadata; a second checksum covers the body.
//! Seeding with a per-store salt means bytes inside a cached body can never
//! pass as a record header during a recovery scan.

use crate::error::{Error, Result};
use crate::meta::Meta;
use bytes::Bytes;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Records start on multiples of this.
pub const UNIT: u64 = 64;
pub const HEAD_LEN: usize = 64;
/// Region data starts after a page holding the region header.
pub const REGION_DATA: u64 = 4096;
const REC_MAGIC: u32 = u32::from_le_bytes(*b"RCB1");
const REGION_MAGIC: u64 = u64::from_le_bytes(*b"RCRGN001");

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole object.
    Object = 1,
    /// One slice of a large object (`part` = slice number).
    Slice = 2,
    /// The entry record of a large object: metadata, no body.
    Manifest = 3,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Object),
            2 => Some(Kind::Slice),
            3 => Some(Kind::Manifest),
            _ => None,
        }
    }
}

/// Fixed fields of a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub kind: Kind,
    pub key_len: u32,
    pub meta_len: u32,
    pub body_len: u64,
    /// Purge sequence at which the fill began.
    pub born: u64,
    /// Slice number (slices) or slice count (manifests).
    pub part: u64,
    /// Version id tying a manifest to its slices; 0 for plain objects.
    pub version: u64,
    pub body_sum: u64,
}

impl Head {
    /// Total length of the record, unpadded.
    pub fn rec_len(&self) -> u64 {
        HEAD_LEN as u64 + self.key_len as u64 + self.meta_len as u64 + self.body_len
    }
    /// Length rounded up to whole units.
    pub fn units(&self) -> u64 {
        self.rec_len().div_ceil(UNIT)
    }
    pub fn body_offset(&self) -> u64 {
        HEAD_LEN as u64 + self.key_len as u64 + self.meta_len as u64
    }
}

/// Header, key and metadata of a record, ready to be written before the body.
pub fn encode_head(h: &Head, key: &[u8], meta: &[u8], salt: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD_LEN + key.len() + meta.len());
    b.extend_from_slice(&REC_MAGIC.to_le_bytes());
    b.push(h.kind as u8);
    b.extend_from_slice(&[0; 3]);
    b.extend_from_slice(&h.key_len.to_le_bytes());
    b.extend_from_slice(&h.meta_len.to_le_bytes());
    for v in [h.body_len, h.born, h.part, h.version, h.body_sum] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[0; 8]); // header checksum, filled below
    b.extend_from_slice(key);
    b.extend_from_slice(meta);
    let sum = head_sum(&b, salt);
    b[56..64].copy_from_slice(&sum.to_le_bytes());
    b
}

fn head_sum(b: &[u8], salt: u64) -> u64 {
    let mut tmp = [0u8; HEAD_LEN];
    tmp.copy_from_slice(&b[..HEAD_LEN]);
    tmp[56..64].fill(0);
    xxh3_64_with_seed(&tmp, salt) ^ xxh3_64_with_seed(&b[HEAD_LEN..], salt.rotate_left(17))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Parses and verifies the header at the start of `b` (which runs to the end
/// of the region). `None` if it is not a whole, intact record header.
pub fn parse_head(b: &[u8], salt: u64, max_body: u64) -> Option<Head> {
    parse_head_in(b, b.len() as u64, salt, max_body)
}

/// Like `parse_head`, for a buffer `b` holding at least header, key and
/// metadata, with `avail` bytes left in the region from the record start.
pub fn parse_head_in(b: &[u8], avail: u64, salt: u64, max_body: u64) -> Option<Head> {
    if b.len() < HEAD_LEN || u32_at(b, 0) != REC_MAGIC {
        return None;
    }
    let h = Head {
        kind: Kind::from_u8(b[4])?,
        key_len: u32_at(b, 8),
        meta_len: u32_at(b, 12),
        body_len: u64_at(b, 16),
        born: u64_at(b, 24),
        part: u64_at(b, 32),
        version: u64_at(b, 40),
        body_sum: u64_at(b, 48),
    };
    if h.body_len > max_body || h.rec_len() > avail || h.body_offset() > b.len() as u64 {
        return None;
    }
    let end = h.body_offset() as usize;
    (head_sum(&b[..end], salt) == u64_at(b, 56)).then_some(h)
}

/// Checksum of a body.
pub fn body_sum(body: &[u8]) -> u64 {
    xxh3_64(body)
}

/// The region file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionHead {
    pub region: u32,
    pub epoch: u32,
    /// Global order in which regions were (re)opened: FIFO age.
    pub lap: u64,
    pub salt: u64,
    pub region_size: u64,
}

impl RegionHead {
    pub fn encode(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0..8].copy_from_slice(&REGION_MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&self.region.to_le_bytes());
        b[12..16].copy_from_slice(&self.epoch.to_le_bytes());
        b[16..24].copy_from_slice(&self.lap.to_le_bytes());
        b[24..32].copy_from_slice(&self.salt.to_le_bytes());
        b[32..40].copy_from_slice(&self.region_size.to_le_bytes());
        let sum = xxh3_64(&b[..40]);
        b[40..48].copy_from_slice(&sum.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<RegionHead> {
        if b.len() < 48 || u64_at(b, 0) != REGION_MAGIC || xxh3_64(&b[..40]) != u64_at(b, 40) {
            return None;
        }
        Some(RegionHead {
            region: u32_at(b, 8),
            epoch: u32_at(b, 12),
            lap: u64_at(b, 16),
            salt: u64_at(b, 24),
            region_size: u64_at(b, 32),
        })
    }
}

/// Version of the metadata tail written after the version-1 fields.
/// Version 1 had no tail; its records still decode, with the tail's fields
/// at their defaults, and version-1 readers ignore the tail.
const META_VERSION: u8 = 2;
/// `no_stale` in the tail's flag byte.
const FLAG_NO_STALE: u8 = 1;

/// Compact binary metadata: fixed fields, then length-prefixed lists, then
/// (version 2) a tail: version byte, `date`, `initial_age`, flags.
pub fn encode_meta(m: &Meta) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + m.footprint() / 2);
    b.extend_from_slice(&m.status.to_le_bytes());
    for v in [m.stored_at, m.expires_at, m.mask, m.size, m.checksum] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&m.stale_while_revalidate.to_le_bytes());
    b.extend_from_slice(&m.stale_if_error.to_le_bytes());
    b.extend_from_slice(&m.last_modified.map_or(u64::MAX, |v| v).to_le_bytes());
    put_opt(&mut b, m.etag.as_deref());
    put_opt(&mut b, m.group.as_deref());
    b.extend_from_slice(&(m.tags.len() as u32).to_le_bytes());
    for t in &m.tags {
        b.extend_from_slice(&t.to_le_bytes());
    }
    b.extend_from_slice(&(m.surrogate_keys.len() as u32).to_le_bytes());
    for s in &m.surrogate_keys {
        put_opt(&mut b, Some(s.as_bytes()));
    }
    b.extend_from_slice(&(m.headers.len() as u32).to_le_bytes());
    for (n, v) in &m.headers {
        put_opt(&mut b, Some(n.as_bytes()));
        put_opt(&mut b, Some(v));
    }
    b.push(META_VERSION);
    b.extend_from_slice(&m.date.to_le_bytes());
    b.extend_from_slice(&m.initial_age.to_le_bytes());
    b.push(if m.no_stale { FLAG_NO_STALE } else { 0 });
    b
}

fn put_opt(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
        }
        None => b.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// Bounds-checked reader over encoded metadata.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::InvalidMeta("truncated record metadata".into()));
        }
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32_at(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64_at(self.take(8)?, 0))
    }
    fn opt(&mut self) -> Result<Option<&'a [u8]>> {
        match self.u32()? {
            u32::MAX => Ok(None),
            n => self.take(n as usize).map(Some),
        }
    }
    fn string(&mut self) -> Result<String> {
        let b = self.opt()?.unwrap_or_default();
        String::from_utf8(b.to_vec()).map_err(|_| Error::InvalidMeta("non-UTF-8 name".into()))
    }
    /// A count, bounded by what could still fit.
    fn count(&mut self, min_each: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_each) > self.0.len() {
            return Err(Error::InvalidMeta(
                "bad list length in record metadata".into(),
            ));
        }
        Ok(n)
    }
}

pub fn decode_meta(b: &[u8]) -> Result<Meta> {
    let mut r = Rd(b);
    let mut m = Meta {
        status: r.u16()?,
        ..Meta::default()
    };
    m.stored_at = r.u64()?;
    m.expires_at = r.u64()?;
    m.mask = r.u64()?;
    m.size = r.u64()?;
    m.checksum = r.u64()?;
    m.stale_while_revalidate = r.u32()?;
    m.stale_if_error = r.u32()?;
    m.last_modified = Some(r.u64()?).filter(|&v| v != u64::MAX);
    m.etag = r.opt()?.map(Bytes::copy_from_slice);
    m.group = r.opt()?.map(Bytes::copy_from_slice);
    let tags = r.count(2)?;
    for _ in 0..tags {
        let t = r.take(2)?;
        m.tags.push(u16::from_le_bytes([t[0], t[1]]));
    }
    for _ in 0..r.count(4)? {
        m.surrogate_keys.push(r.string()?);
    }
    for _ in 0..r.count(8)? {
        let name = r.string()?;
        let value = Bytes::copy_from_slice(r.opt()?.unwrap_or_default());
        m.headers.push((name, value));
    }
    if !r.0.is_empty() {
        decode_tail(&mut r, &mut m)?;
    }
    Ok(m)
}

/// The version-2 tail; later versions may append more, which is skipped.
fn decode_tail(r: &mut Rd, m: &mut Meta) -> Result<()> {
    if r.take(1)?[0] < META_VERSION {
        return Err(Error::InvalidMeta("bad record metadata version".into()));
    }
    m.date = r.u64()?;
    m.initial_age = r.u32()?;
    m.no_stale = r.take(1)?[0] & FLAG_NO_STALE != 0;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_garbage_is_an_error() {
        let mut m = Meta::with_ttl(1000, 5000);
        m.headers = vec![("Content-Type".into(), Bytes::from_static(b"text/x"))];
        m.etag = Some(Bytes::from_static(b"\"e\""));
        m.last_modified = Some(77);
        m.tags = vec![1, 65535];
        m.surrogate_keys = vec!["a".into(), "bb".into()];
        m.group = Some(Bytes::from_static(b"g"));
        m.mask = 9;
        m.date = 1_600_000_000;
        m.initial_age = 42;
        m.no_stale = true;
        let enc = encode_meta(&m);
        assert_eq!(decode_meta(&enc).unwrap(), m);
        // Cut exactly before the tail, it is a valid version-1 encoding
        // (the record checksum, not the codec, catches such a cut).
        let v1_len = enc.len() - 14;
        for cut in (0..enc.len()).filter(|&c| c != v1_len) {
            assert!(decode_meta(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut v1 = m.clone();
        (v1.date, v1.initial_age, v1.no_stale) = (0, 0, false);
        assert_eq!(decode_meta(&enc[..v1_len]).unwrap(), v1);
        let mut old_tail = enc.clone();
        old_tail[v1_len] = 1;
        assert!(
            decode_meta(&old_tail).is_err(),
            "a tail must be version 2 or later"
        );
        let mut newer = enc.clone();
        newer[v1_len] = 3;
        newer.extend_from_slice(b"future fields");
        assert_eq!(decode_meta(&newer).unwrap(), m, "later tails are skipped");
        let mut bad = enc.clone();
        bad[63..67].copy_from_slice(&u32::MAX.to_le_bytes()[..4]);
        let _ = decode_meta(&bad); // must not panic
    }

    /// Bytes of the version-1 encoder (before `date`, `initial_age` and
    /// `no_stale` were kept), captured from it: old records still decode.
    pub(crate) const V1_META: &str =
        "94010068e5cf8b0100006052e6cf8b01000005000000000000000b0000000000\
        0000efcdab00000000001e0000005802000000105e5f000000000400000022763122010000006701000000\
        070001000000010000006b010000000c000000436f6e74656e742d547970650a000000746578742f706c61696e";

    /// The metadata `V1_META` encodes.
    pub(crate) fn v1_sample() -> Meta {
        let mut m = Meta::with_ttl(1_700_000_000_000, 60_000);
        m.status = 404;
        m.headers = vec![("Content-Type".into(), Bytes::from_static(b"text/plain"))];
        m.etag = Some(Bytes::from_static(b"\"v1\""));
        m.last_modified = Some(1_600_000_000);
        m.stale_while_revalidate = 30;
        m.stale_if_error = 600;
        m.tags = vec![7];
        m.surrogate_keys = vec!["k".into()];
        m.group = Some(Bytes::from_static(b"g"));
        m.mask = 5;
        m.size = 11;
        m.checksum = 0xabcdef;
        m
    }

    #[test]
    fn version_1_records_still_decode_with_defaults() {
        let hex: String = V1_META.split_whitespace().collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let m = decode_meta(&bytes).unwrap();
        assert_eq!(m, v1_sample());
        assert_eq!((m.date, m.initial_age, m.no_stale), (0, 0, false));
        // And a version-1 reader (which stops after the headers) reads a
        // version-2 encoding: the old fields come first, unchanged.
        let v2 = encode_meta(&v1_sample());
        assert_eq!(&v2[..bytes.len()], &bytes[..]);
    }

    #[test]
    fn head_checks_magic_sum_and_bounds() {
        let h = Head {
            kind: Kind::Object,
            key_len: 3,
            meta_len: 2,
            body_len: 4,
            born: 5,
            part: 0,
            version: 0,
            body_sum: body_sum(b"body"),
        };
        let mut rec = encode_head(&h, b"key", b"mm", 42);
        rec.extend_from_slice(b"body");
        assert_eq!(parse_head(&rec, 42, 100), Some(h));
        assert_eq!(parse_head(&rec, 43, 100), None, "other salt");
        assert_eq!(parse_head(&rec[..rec.len() - 1], 42, 100), None, "cut");
        assert_eq!(parse_head(&rec, 42, 3), None, "body over limit");
        rec[66] ^= 1;
        assert_eq!(parse_head(&rec, 42, 100), None, "key scribbled");
    }
}
