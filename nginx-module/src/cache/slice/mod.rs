//! Large objects by slices (`rcdn_slice <size>`): the pure parts — slice
//! keys, the object's identity, the manifest stored at the base key, and
//! the client's `Range`.
//!
//! A sliced object is a small *manifest* object at the base key (the
//! response headers of the first slice fetched, with the total length, the
//! slice size and the identity in the [`MARKER`] meta header, empty body)
//! plus one ordinary cache object per slice under [`key`]:
//! `<base> slice=<size>:<identity>:<index>`. The identity is a hash of the
//! origin's validators and total length, so any node computes the same
//! slice keys from the base key, the index and the validators, and a new
//! version on the origin gets new keys (old and new slices never mix).
//!
//! Here: those pure parts; `fill`: judging a slice fill's 206; `serve`:
//! sending a sliced object slice by slice; `block`: reading a slice from
//! the block tiers; `peer`: the owner's answer to a peer's slice request.

pub mod block;
pub mod fill;
pub mod peer;
pub mod serve;

/// Meta header marking a manifest (never sent to clients).
pub const MARKER: &str = "x-rcdn-slice";
/// Slice fills kept in flight ahead of the one being sent.
pub const WINDOW: u64 = 2;

/// What binds the slices of one version of an object together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Slice size in bytes.
    pub size: u64,
    /// Total object length.
    pub total: u64,
    /// Hash of the validators and the total length.
    pub ident: u64,
}

/// FNV-1a 64: stable across processes, nodes and builds.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff; // separator, so ("ab","c") != ("a","bc")
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The identity of one version: ETag, Last-Modified (as sent) and length.
pub fn ident(etag: Option<&[u8]>, last_modified: Option<&[u8]>, total: u64) -> u64 {
    fnv(&[
        etag.unwrap_or_default(),
        last_modified.unwrap_or_default(),
        total.to_string().as_bytes(),
    ])
}

impl Manifest {
    /// Number of slices.
    pub fn count(&self) -> u64 {
        self.total.div_ceil(self.size)
    }

    /// Byte range `[start, end)` of slice `i`.
    pub fn bounds(&self, i: u64) -> (u64, u64) {
        let start = i.saturating_mul(self.size);
        (start, start.saturating_add(self.size).min(self.total))
    }

    /// The marker header value: `<size> <total> <ident hex>`.
    pub fn encode(&self) -> String {
        format!("{} {} {:016x}", self.size, self.total, self.ident)
    }

    pub fn decode(v: &[u8]) -> Option<Manifest> {
        let s = std::str::from_utf8(v).ok()?;
        let mut it = s.split(' ');
        let size = it.next()?.parse().ok().filter(|&n: &u64| n > 0)?;
        let total = it.next()?.parse().ok()?;
        let ident = u64::from_str_radix(it.next()?, 16).ok()?;
        it.next()
            .is_none()
            .then_some(Manifest { size, total, ident })
    }
}

/// The cache key of slice `i`.
pub fn key(base: &[u8], size: u64, ident: u64, i: u64) -> Vec<u8> {
    let mut k = prefix(base);
    k.extend_from_slice(format!("{size}:{ident:016x}:{i}").as_bytes());
    k
}

/// What every slice key of `base` starts with (a URL purge bans it).
pub fn prefix(base: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(base.len() + 48);
    k.extend_from_slice(base);
    k.extend_from_slice(b" slice=");
    k
}

/// `Content-Range: bytes a-b/T` of a 206 → (a, b inclusive, T).
pub fn content_range(v: &[u8]) -> Option<(u64, u64, u64)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let rest = s.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, t): (u64, u64, u64) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (a <= b && b < t).then_some((a, b, t))
}

/// What a client's `Range` asks of an object of `total` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The whole object (no Range, one we ignore, or several ranges).
    Full,
    /// `[start, end)`.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Parses one `bytes=` range; several ranges or bad syntax give `Full`
/// (a server may ignore Range).
pub fn want(range: Option<&[u8]>, total: u64) -> Want {
    let Some(v) = range.and_then(|v| std::str::from_utf8(v).ok()) else {
        return Want::Full;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Want::Full;
    };
    if spec.contains(',') {
        return Want::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Want::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if a.is_empty() {
        return match num(b) {
            Some(0) => Want::Unsatisfiable,
            Some(_) if total == 0 => Want::Unsatisfiable,
            Some(n) => Want::Part(total.saturating_sub(n), total),
            None => Want::Full,
        };
    }
    let Some(start) = num(a) else {
        return Want::Full;
    };
    let end = if b.is_empty() {
        total
    } else {
        match num(b) {
            Some(e) if e >= start => e.saturating_add(1).min(total),
            _ => return Want::Full,
        }
    };
    if start >= total {
        return Want::Unsatisfiable;
    }
    Want::Part(start, end)
}

/// The slice a fill should start with for a client asking `range` (the
/// total is not known yet; a suffix range starts at slice 0).
pub fn first_slice(range: Option<&[u8]>, size: u64) -> u64 {
    let Some(v) = range.and_then(|v| std::str::from_utf8(v).ok()) else {
        return 0;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return 0;
    };
    if spec.contains(',') || size == 0 {
        return 0;
    }
    spec.split_once('-')
        .and_then(|(a, _)| a.trim().parse::<u64>().ok())
        .map_or(0, |a| a / size)
}

/// Every slice key of the sliced object at `base` in this store (none if
/// `base` holds no manifest): a URL purge names them all.
pub fn stored_keys(cache: &cdncore::Cache, base: &[u8]) -> Vec<Vec<u8>> {
    let Ok(found) = cache.get(base) else {
        return Vec::new();
    };
    let Some(m) = found
        .object()
        .and_then(|o| o.meta().header(MARKER))
        .and_then(|v| Manifest::decode(v))
    else {
        return Vec::new();
    };
    (0..m.count())
        .map(|i| key(base, m.size, m.ident, i))
        .collect()
}

/// A peer's request for one slice, verified against the owner's own base
/// key, the request's `Range` and the manifest the peer sent
/// (`X-Rcdn-Slice`). The identity itself is checked against the origin's
/// answer when the owner fills the slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSlice {
    pub base: Vec<u8>,
    pub m: Manifest,
    pub index: u64,
}

impl PeerSlice {
    /// Checks a peer's slice key `given` against `base` (the key this node
    /// computes for the request), `manifest` (`X-Rcdn-Slice`) and `range`
    /// (the request's `Range`, which must be exactly the slice).
    pub fn verify(
        base: &[u8],
        given: &[u8],
        manifest: Option<&[u8]>,
        range: Option<&[u8]>,
    ) -> Option<PeerSlice> {
        let rest = given.strip_prefix(prefix(base).as_slice())?;
        let mut it = std::str::from_utf8(rest).ok()?.split(':');
        let size: u64 = it.next()?.parse().ok()?;
        let ident = it.next().filter(|s| s.len() == 16)?;
        let ident = u64::from_str_radix(ident, 16).ok()?;
        let index: u64 = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        let m = Manifest::decode(manifest?)?;
        if m.size != size || m.ident != ident || index >= m.count() {
            return None;
        }
        let (s, e) = m.bounds(index);
        let want = format!("bytes={s}-{}", e - 1);
        if range? != want.as_bytes() || key(base, size, ident, index) != given {
            return None;
        }
        Some(PeerSlice {
            base: base.to_vec(),
            m,
            index,
        })
    }

    /// The slice key.
    pub fn key(&self) -> Vec<u8> {
        key(&self.base, self.m.size, self.m.ident, self.index)
    }
}
