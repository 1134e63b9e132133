//! Keys and their stable hashes.
//!
//! A key is a byte string (for HTTP, a normalised `host + path + query`). Its
//! 128-bit xxh3 hash is the same in every process, on every node and in every
//! run, so it can address a shared index and a peer ring.

use crate::error::{Error, Result};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64_with_seed};

/// Default and hard upper bound of the key length (config `max_key`).
pub const DEFAULT_MAX_KEY: usize = 4096;
pub const MAX_KEY_LIMIT: usize = 64 * 1024;

/// Directory levels of a key that prefix purges can address in O(1). A purge
/// of a deeper directory still works, through the bounded ban list.
pub const MAX_DIR_DEPTH: usize = 16;

/// Stable 128-bit hash of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub u128);

impl KeyHash {
    pub fn of(key: &[u8]) -> Self {
        KeyHash(xxh3_128(key))
    }

    /// The low 64 bits, for tables that want a machine word.
    pub fn low64(self) -> u64 {
        self.0 as u64
    }
}

/// Checks a key against the configured maximum length.
pub fn validate(key: &[u8], max: usize) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > max {
        return Err(Error::KeyTooLong {
            len: key.len(),
            max,
        });
    }
    Ok(())
}

/// What a purge name refers to; part of the hash so a tag and a group with the
/// same spelling do not collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum NameKind {
    Key = 1,
    Dir = 2,
    Group = 3,
    Surrogate = 4,
}

/// 64-bit hash of a purge name (never 0: 0 marks an empty table slot).
pub fn name_hash(kind: NameKind, name: &[u8]) -> u64 {
    xxh3_64_with_seed(name, kind as u64).max(1)
}

/// The part of a key before any `scheme://`, so `https://a.com/x` and
/// `a.com/x` both have the path `a.com/x`.
fn without_scheme(key: &[u8]) -> &[u8] {
    let head = &key[..key.len().min(16)];
    match head.windows(3).position(|w| w == b"://") {
        Some(i) => &key[i + 3..],
        None => key,
    }
}

/// Default group of a key: its first path level (for HTTP keys, the host).
pub fn default_group(key: &[u8]) -> &[u8] {
    let k = without_scheme(key);
    match k.iter().position(|&b| b == b'/') {
        Some(i) => &k[..i],
        None => k,
    }
}

/// Directory prefixes of a key, shortest first: for `a.com/news/x.jpg?q=1`,
/// `a.com/` and `a.com/news/`. The query string is not part of the path.
pub fn dir_prefixes(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let k = without_scheme(key);
    let path_end = k.iter().position(|&b| b == b'?').unwrap_or(k.len());
    k[..path_end]
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &k[..=i])
        .take(MAX_DIR_DEPTH)
}

/// Depth of a directory prefix (number of `/`), if it is one (ends in `/`,
/// no query). `None` means it is not addressable by the directory table.
pub fn dir_depth(prefix: &[u8]) -> Option<usize> {
    let p = without_scheme(prefix);
    if p.last() != Some(&b'/') || p.contains(&b'?') {
        return None;
    }
    Some(p.iter().filter(|&&b| b == b'/').count())
}

/// Strips `scheme://` the same way lookups do, for purge names.
pub fn normalise_prefix(prefix: &[u8]) -> &[u8] {
    without_scheme(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_runs() {
        // Pinned value: if this changes, every shared index and ring breaks.
        assert_eq!(
            KeyHash::of(b"example.com/a.jpg").0,
            xxh3_128(b"example.com/a.jpg")
        );
        assert_eq!(
            format!("{:032x}", KeyHash::of(b"").0),
            "99aa06d3014798d86001c324468d497f"
        );
    }

    #[test]
    fn validate_rejects_empty_and_long() {
        assert_eq!(validate(b"", 10), Err(Error::EmptyKey));
        assert_eq!(
            validate(b"0123456789x", 10),
            Err(Error::KeyTooLong { len: 11, max: 10 })
        );
        assert!(validate(b"0123456789", 10).is_ok());
    }

    #[test]
    fn groups_and_prefixes() {
        assert_eq!(default_group(b"a.com/news/x.jpg"), b"a.com");
        assert_eq!(default_group(b"https://a.com/x"), b"a.com");
        assert_eq!(default_group(b"plainkey"), b"plainkey");
        let p: Vec<&[u8]> = dir_prefixes(b"a.com/news/x.jpg?q=/z/").collect();
        assert_eq!(p, vec![&b"a.com/"[..], &b"a.com/news/"[..]]);
        assert_eq!(dir_depth(b"a.com/news/"), Some(2));
        assert_eq!(dir_depth(b"a.com/ne"), None);
        assert_eq!(dir_depth(b"a.com/?x/"), None);
    }

    #[test]
    fn name_hash_separates_kinds_and_is_never_zero() {
        assert_ne!(
            name_hash(NameKind::Group, b"x"),
            name_hash(NameKind::Surrogate, b"x")
        );
        assert_ne!(name_hash(NameKind::Dir, b""), 0);
    }
}
