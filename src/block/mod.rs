//! Block tiers: large region files written append-only and recycled FIFO,
//! behind a shared, persistent, crash-safe index (see `docs/block-tiers.md`).
//!
//! A [`Tier`] is one directory: `index` (the shared index, mapped by every
//! process that opens the tier), `lock` (a `flock` file serialising region
//! turnover between processes) and `region.NNNNN` files. Objects up to the
//! slice size are one record; larger ones are slices plus a manifest.

pub(crate) mod engine;
pub mod index;
mod ram;
pub mod record;
pub mod region;
mod relocate;
mod resident;
mod scan;
pub mod slice;
mod tier;

pub use engine::{BlockCounters, PROMOTE_HITS};
pub use record::Kind;
pub use slice::TierWriter;
pub use tier::{BodyAt, Extent, Hit, Log, Tier, TierStats};

use crate::config::parse_size;
use crate::error::{Error, Result};
use std::path::PathBuf;

/// One block tier as configured: `tier=/path,size=1g,region=32m,slice=4m`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierSpec {
    pub path: PathBuf,
    /// Capacity in bytes (a whole number of regions is used).
    pub size: u64,
    /// Region file size.
    pub region: u64,
    /// Objects larger than this are stored as slices of this size (one of
    /// exactly this size is one record).
    pub slice: u64,
    /// Index slots; default: one per 2 KiB of capacity (at least 4096).
    pub slots: Option<u64>,
}

pub const DEFAULT_REGION: u64 = 32 << 20;
/// 4 MiB: common large objects (1-4 MiB) are one record, so a hit is one
/// extent; an object of exactly the slice size is one record too.
pub const DEFAULT_SLICE: u64 = 4 << 20;

impl TierSpec {
    pub fn new(path: impl Into<PathBuf>, size: u64) -> TierSpec {
        TierSpec {
            path: path.into(),
            size,
            region: DEFAULT_REGION,
            slice: DEFAULT_SLICE,
            slots: None,
        }
    }

    /// Parses `/path,size=1g[,region=32m][,slice=4m][,slots=N]`.
    pub fn parse(v: &str) -> Result<TierSpec> {
        let mut parts = v.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(Error::config("tier", "expected a directory path first"));
        }
        let mut spec = TierSpec::new(path, 0);
        let mut slice = None;
        for p in parts {
            let (k, val) = p
                .split_once('=')
                .ok_or_else(|| Error::config("tier", format!("{p:?}: expected key=value")))?;
            let field = format!("tier {k}");
            match k {
                "size" => spec.size = parse_size(&field, val)?,
                "region" => spec.region = parse_size(&field, val)?,
                "slice" => slice = Some(parse_size(&field, val)?),
                "slots" => spec.slots = Some(parse_size(&field, val)?),
                _ => {
                    return Err(Error::config(
                        "tier",
                        format!("unknown option {k:?} (known: size, region, slice, slots)"),
                    ))
                }
            }
        }
        // Unless given, slices are 4 MiB, or a quarter of a smaller region.
        spec.slice = slice.unwrap_or(DEFAULT_SLICE.min(spec.region / 4));
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<()> {
        let e = |r: String| Err(Error::config(format!("tier {}", self.path.display()), r));
        if !(64 << 10..=1 << 30).contains(&self.region) || self.region % 4096 != 0 {
            return e("region must be a multiple of 4k in 64k..=1g".into());
        }
        let regions = self.size / self.region;
        if !(2..=65535).contains(&regions) {
            return e(format!(
                "size must hold 2..=65535 regions of {} bytes",
                self.region
            ));
        }
        if self.slice < 4096 || self.slice > self.region / 4 {
            return e("slice must be 4k..=region/4".into());
        }
        if self.slots.is_some_and(|s| !(64..=1 << 32).contains(&s)) {
            return e("slots must be 64..=4294967296".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_names_bad_options() {
        let s = TierSpec::parse("/dev/shm/x,size=1g,region=16m,slice=512k").unwrap();
        assert_eq!(s.path, PathBuf::from("/dev/shm/x"));
        assert_eq!((s.size, s.region, s.slice), (1 << 30, 16 << 20, 512 << 10));
        let e = |t: &str| TierSpec::parse(t).unwrap_err().to_string();
        assert!(e(",size=1g").contains("path"));
        assert!(e("/x,size=1g,colour=red").contains("colour"));
        assert!(e("/x,size=1q").contains("tier size"));
        assert!(e("/x,size=32m").contains("2..=65535 regions"));
        assert!(e("/x,size=1g,region=100000").contains("region"));
        assert!(e("/x,size=1g,slice=16m").contains("slice"));
    }
}
