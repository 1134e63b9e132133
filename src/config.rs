//! The engine's one configuration format, shared by Rust callers, the C ABI
//! and the nginx directives: `key=value` tokens separated by white space,
//! newlines or `;`, with `#` comments — the style of nginx's
//! `proxy_cache_path` arguments.
//!
//! ```text
//! mem=256m shards=8 default_ttl=2m
//! max_key=4k max_object=8m   # per-object cap of the memory tier
//! promote_max=32k             # largest block-tier hit copied into RAM
//! ram_max=256k                # larger objects go to the first disk tier
//! heuristic_max=1d            # cap of Last-Modified heuristic freshness
//! tier=/var/cache/rcdn,size=100g,region=64m   # block tiers, fastest first;
//! tier=/mnt/hdd/rcdn,size=2t                  # `tier` may be repeated
//! ram=/dev/shm/rcdn ram_region=16m            # the shared RAM tier (with tiers)
//! processes=4                 # processes sharing the store (nginx: set for you)
//! ```
//!
//! With block tiers, `mem` is the size of the **RAM tier** that every
//! process of the store shares (a block tier in the tmpfs directory `ram`,
//! whose residency ARC decides), and each process keeps only handles into
//! it; without them, `mem` is this process's heap memory tier. Those
//! handles (key, metadata, where the body lies) take heap in every process:
//! together at most `mem /` [`HANDLE_SHARE`], split between `processes`.
//!
//! Sizes take `k`, `m`, `g`, `t` (powers of 1024); durations `ms`, `s`, `m`,
//! `h`, `d` (a bare number is seconds, as in nginx). Unknown or repeated keys
//! are errors that name the key.

use crate::block::TierSpec;
use crate::error::{Error, Result};
use crate::key::{DEFAULT_MAX_KEY, MAX_KEY_LIMIT};
use std::path::PathBuf;
use std::str::FromStr;

/// Default `promote_max`: the nginx module sends hits of 32 KiB or more
/// with `sendfile`, as cheap from a disk tier's page cache as from tmpfs.
pub const PROMOTE_MAX: u64 = 32 * 1024;

/// Default `ram_max`: above it, the page cache of a disk tier is the
/// object's one copy per node (reclaimable, unlike tmpfs), `sendfile` from
/// it costs no more than from tmpfs, and `mem` is left to small objects.
pub const RAM_MAX: u64 = 256 * 1024;

/// With block tiers, the handles of all `processes` together take at most
/// `mem / HANDLE_SHARE` of heap, so a node's memory does not grow with its
/// worker count (issue 14): about 64k handles of small objects for
/// `mem=256m`. A quarter, not an eighth: with `mem / 8` two workers' handles
/// covered 16k objects each and a uniform sweep over 20k small objects cost
/// 1.06–1.13× the CPU per hit of a quarter (`bench/run.sh`, same run).
pub const HANDLE_SHARE: u64 = 4;

/// Engine configuration. `Config::default()` is a usable small cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Byte budget of the memory tier (bodies, metadata and keys).
    pub mem: u64,
    /// Independent ARC shards; more shards, less lock contention.
    pub shards: usize,
    /// Largest object the memory tier takes; `None`: a quarter of a shard.
    pub max_object: Option<u64>,
    /// Largest block-tier hit copied into memory when it turns hot; `None`:
    /// [`PROMOTE_MAX`] (or `max_object` if smaller). Larger hits stay in
    /// their tier: a caller with `sendfile` serves them from the page cache
    /// at the cost of sending from tmpfs, while copying each hot one in
    /// (and demoting another when the working set exceeds the RAM tier)
    /// costs a copy per hit.
    pub promote_max: Option<u64>,
    /// Largest object the shared RAM tier stores when the first configured
    /// tier is not itself in RAM; larger objects are committed straight to
    /// that tier and served from its page cache. `None`: [`RAM_MAX`].
    pub ram_max: Option<u64>,
    /// Longest key accepted.
    pub max_key: usize,
    /// Freshness of responses that carry no explicit lifetime, in ms.
    pub default_ttl_ms: u64,
    /// Store responses with `Set-Cookie` (the cookie itself is never replayed).
    pub cache_set_cookie: bool,
    /// Cap of heuristic freshness (a tenth of `Date − Last-Modified`, RFC
    /// 9111 §4.2.2), in ms; 0 turns the heuristic off.
    pub heuristic_max_ms: u64,
    /// Slots of the purge generation table (prefix, group, surrogate key).
    pub purge_slots: usize,
    /// Slots of the ban list (regex, mask, non-directory prefix purges).
    pub ban_slots: usize,
    /// Run a background thread that reclaims purged objects; when off, the
    /// embedder calls `Cache::reclaim_now` (e.g. from its own timer).
    pub sweeper: bool,
    /// Block tiers after `mem`, fastest first (`tier=` may be repeated).
    pub tiers: Vec<crate::block::TierSpec>,
    /// Directory of the shared RAM tier (with tiers only); `None`:
    /// `/dev/shm/rcdn-<hash of the first tier's path>`.
    pub ram: Option<PathBuf>,
    /// Region size of the RAM tier; `None`: `mem / 16` within 64k..=32m.
    pub ram_region: Option<u64>,
    /// Processes that open the store at once (nginx: `worker_processes`,
    /// which the module sets); they split the heap for handles.
    pub processes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mem: 256 << 20,
            shards: 8,
            max_object: None,
            promote_max: None,
            ram_max: None,
            max_key: DEFAULT_MAX_KEY,
            default_ttl_ms: 120_000,
            cache_set_cookie: false,
            heuristic_max_ms: 86_400_000,
            purge_slots: 1 << 16,
            ban_slots: 64,
            sweeper: true,
            tiers: Vec::new(),
            ram: None,
            ram_region: None,
            processes: 1,
        }
    }
}

const KEYS: &[&str] = &[
    "mem",
    "shards",
    "max_object",
    "promote_max",
    "ram_max",
    "max_key",
    "default_ttl",
    "cache_set_cookie",
    "heuristic_max",
    "purge_slots",
    "ban_slots",
    "sweeper",
    "tier",
    "ram",
    "ram_region",
    "processes",
];

impl Config {
    /// Parses the textual format; see the module docs.
    pub fn parse(text: &str) -> Result<Config> {
        let mut cfg = Config::default();
        let mut seen: Vec<&str> = Vec::new();
        for token in tokens(text) {
            let (key, value) = token
                .split_once('=')
                .ok_or_else(|| Error::config(token, "expected key=value"))?;
            let Some(&known) = KEYS.iter().find(|k| **k == key) else {
                return Err(Error::config(
                    key,
                    format!("unknown key (known: {})", KEYS.join(", ")),
                ));
            };
            if known == "tier" {
                cfg.tiers.push(crate::block::TierSpec::parse(value)?);
                continue;
            }
            if seen.contains(&known) {
                return Err(Error::config(key, "given twice"));
            }
            seen.push(known);
            cfg.set(known, value)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn set(&mut self, key: &str, v: &str) -> Result<()> {
        match key {
            "mem" => self.mem = parse_size(key, v)?,
            "shards" => self.shards = parse_count(key, v)?,
            "max_object" => self.max_object = Some(parse_size(key, v)?),
            "promote_max" => self.promote_max = Some(parse_size(key, v)?),
            "ram_max" => self.ram_max = Some(parse_size(key, v)?),
            "max_key" => self.max_key = parse_size(key, v)? as usize,
            "default_ttl" => self.default_ttl_ms = parse_duration_ms(key, v)?,
            "cache_set_cookie" => self.cache_set_cookie = parse_bool(key, v)?,
            "heuristic_max" => self.heuristic_max_ms = parse_duration_ms(key, v)?,
            "purge_slots" => self.purge_slots = parse_count(key, v)?,
            "ban_slots" => self.ban_slots = parse_count(key, v)?,
            "sweeper" => self.sweeper = parse_bool(key, v)?,
            "ram" if v.is_empty() => return Err(Error::config(key, "expected a directory")),
            "ram" => self.ram = Some(PathBuf::from(v)),
            "ram_region" => self.ram_region = Some(parse_size(key, v)?),
            // Out of u32: 0, which `validate` refuses with the range.
            "processes" => self.processes = u32::try_from(parse_count(key, v)?).unwrap_or(0),
            _ => return Err(Error::config(key, "unknown key")),
        }
        Ok(())
    }

    /// Checks ranges and relations between fields.
    pub fn validate(&self) -> Result<()> {
        if self.shards == 0 || self.shards > 1024 {
            return Err(Error::config("shards", "must be 1..=1024"));
        }
        if self.mem < (self.shards as u64) * 64 * 1024 {
            return Err(Error::config(
                "mem",
                format!("must be at least 64k per shard ({} shards)", self.shards),
            ));
        }
        if self.max_key == 0 || self.max_key > MAX_KEY_LIMIT {
            return Err(Error::config(
                "max_key",
                format!("must be 1..={MAX_KEY_LIMIT}"),
            ));
        }
        if let Some(m) = self.max_object {
            if m == 0 || m > self.shard_bytes() {
                return Err(Error::config(
                    "max_object",
                    format!(
                        "must be 1..={} (one shard: mem / shards)",
                        self.shard_bytes()
                    ),
                ));
            }
        }
        if self
            .promote_max
            .is_some_and(|p| p > self.max_object_bytes())
        {
            return Err(Error::config(
                "promote_max",
                format!("must be 0..={} (max_object)", self.max_object_bytes()),
            ));
        }
        if !(64..=1 << 24).contains(&self.purge_slots) {
            return Err(Error::config("purge_slots", "must be 64..=16777216"));
        }
        if !(1..=1024).contains(&self.processes) {
            return Err(Error::config("processes", "must be 1..=1024"));
        }
        if !(1..=4096).contains(&self.ban_slots) {
            return Err(Error::config("ban_slots", "must be 1..=4096"));
        }
        for (i, t) in self.tiers.iter().enumerate() {
            t.validate()?;
            if self.tiers[..i].iter().any(|o| o.path == t.path) {
                let path = t.path.display();
                return Err(Error::config("tier", format!("{path} is given twice")));
            }
        }
        self.validate_ram()
    }

    fn validate_ram(&self) -> Result<()> {
        let Some(ram) = self.ram_spec() else {
            if self.ram.is_some() || self.ram_region.is_some() {
                return Err(Error::config("ram", "a RAM tier needs a tier= to back it"));
            }
            return Ok(());
        };
        if self.tiers.iter().any(|t| t.path == ram.path) {
            let path = ram.path.display();
            return Err(Error::config("ram", format!("{path} is also a tier")));
        }
        ram.validate().map_err(|e| match e {
            Error::Config { reason, .. } => Error::config("ram_region", reason),
            e => e,
        })
    }

    /// The shared RAM tier: a block tier of `mem` bytes in `ram` (with
    /// block tiers only).
    pub fn ram_spec(&self) -> Option<TierSpec> {
        let first = self.tiers.first()?;
        let path = self
            .ram
            .clone()
            .unwrap_or_else(|| default_ram_dir(&first.path));
        let region = self
            .ram_region
            .unwrap_or_else(|| default_ram_region(self.mem));
        Some(TierSpec {
            path,
            size: self.mem,
            region,
            slice: crate::block::DEFAULT_SLICE.min(region / 4),
            slots: None,
        })
    }

    /// Every directory the store uses: the RAM tier's, then the tiers'.
    pub fn store_dirs(&self) -> Vec<PathBuf> {
        let ram = self.ram_spec().map(|r| r.path);
        ram.into_iter()
            .chain(self.tiers.iter().map(|t| t.path.clone()))
            .collect()
    }

    /// Byte budget of one shard.
    pub fn shard_bytes(&self) -> u64 {
        self.mem / self.shards as u64
    }

    /// Heap for this process's handles into the block tiers.
    pub fn handle_bytes(&self) -> u64 {
        self.mem / HANDLE_SHARE / self.processes.max(1) as u64
    }

    /// Largest object the memory tier stores.
    pub fn max_object_bytes(&self) -> u64 {
        self.max_object.unwrap_or(self.shard_bytes() / 4)
    }

    /// Largest block-tier hit copied into memory.
    pub fn promote_max_bytes(&self) -> u64 {
        self.promote_max
            .unwrap_or_else(|| PROMOTE_MAX.min(self.max_object_bytes()))
    }

    /// Largest object committed into the RAM tier when the first
    /// configured tier is on a disk.
    pub fn ram_max_bytes(&self) -> u64 {
        self.ram_max.unwrap_or(RAM_MAX)
    }
}

/// `/dev/shm/rcdn-<16 hex digits of xxh3-64 of the first tier's absolute path>`:
/// one RAM tier per store, found again by every process and every restart.
pub fn default_ram_dir(first_tier: &std::path::Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(first_tier).unwrap_or_else(|_| first_tier.to_path_buf());
    let h = xxhash_rust::xxh3::xxh3_64(abs.as_os_str().as_bytes());
    PathBuf::from(format!("/dev/shm/rcdn-{h:016x}"))
}

/// `mem / 16`, a multiple of 64k within 64k..=32m: 16 regions or more, so
/// one recycling turns over at most a sixteenth of the RAM tier.
pub fn default_ram_region(mem: u64) -> u64 {
    (mem / 16 / (64 << 10) * (64 << 10)).clamp(64 << 10, 32 << 20)
}

/// ARC capacity of a RAM tier of `size` bytes in regions of `region` bytes:
/// `size` minus an eighth and two regions. The slack lets recycling free
/// space while it keeps what ARC holds; with less, the oldest region is
/// too often all resident and recycling must evict residents anyway
/// (`benches/README.md`, "RAM tier": hit ratio and copies per insert for
/// other choices).
pub fn ram_capacity(size: u64, region: u64) -> u64 {
    size.saturating_sub(size / 8 + 2 * region).max(region)
}

/// Bytes of ARC-resident records a recycled RAM region copies back to the
/// head: three quarters of it. Residents beyond it are evicted (and
/// demoted), so each recycling frees at least a quarter of a region.
pub fn ram_compaction_budget(region: u64) -> u64 {
    region / 4 * 3
}

impl FromStr for Config {
    type Err = Error;
    fn from_str(s: &str) -> Result<Config> {
        Config::parse(s)
    }
}

/// Splits on white space and `;`, dropping `#` comments.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(a, _)| a))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ';'))
        .filter(|t| !t.is_empty())
}

fn bad(field: &str, value: &str, expected: &str) -> Error {
    Error::config(
        field,
        format!("invalid value {value:?} (expected {expected})"),
    )
}

/// `512`, `4k`, `256m`, `10g`, `1t` (powers of 1024).
pub fn parse_size(field: &str, v: &str) -> Result<u64> {
    let expected = "a size such as 4096, 64k, 256m, 10g";
    let lower = v.to_ascii_lowercase();
    let (digits, shift) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 10),
        Some(b'm') => (&lower[..lower.len() - 1], 20),
        Some(b'g') => (&lower[..lower.len() - 1], 30),
        Some(b't') => (&lower[..lower.len() - 1], 40),
        _ => (lower.as_str(), 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad(field, v, expected))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| bad(field, v, "a size below 16 exbibytes"))
}

/// `250ms`, `30s`, `5m`, `1h30m`, `7d`; a bare number is seconds.
pub fn parse_duration_ms(field: &str, v: &str) -> Result<u64> {
    let expected = "a duration such as 250ms, 30s, 5m, 1h30m, 7d";
    if v.is_empty() {
        return Err(bad(field, v, expected));
    }
    let mut total: u64 = 0;
    let mut rest = v;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits_end]
            .parse()
            .map_err(|_| bad(field, v, expected))?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_end] {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad(field, v, expected)),
        };
        rest = &rest[unit_end..];
        total = n
            .checked_mul(ms)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| bad(field, v, "a shorter duration"))?;
    }
    Ok(total)
}

fn parse_count(field: &str, v: &str) -> Result<usize> {
    v.parse().map_err(|_| bad(field, v, "a whole number"))
}

fn parse_bool(field: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(bad(field, v, "on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_with_comments_and_separators() {
        let c = Config::parse(
            "mem=64m shards=4 # comment\n max_object=1m;max_key=8k\n\
             default_ttl=1h30m cache_set_cookie=on purge_slots=1024 ban_slots=8 sweeper=off\n\
             promote_max=32k heuristic_max=1h",
        )
        .unwrap();
        assert_eq!(c.mem, 64 << 20);
        assert_eq!(c.shards, 4);
        assert_eq!(c.max_object, Some(1 << 20));
        assert_eq!(c.promote_max_bytes(), 32 << 10);
        assert_eq!(Config::default().promote_max_bytes(), PROMOTE_MAX);
        let tiny = Config::parse("mem=1m max_object=4k").unwrap();
        assert_eq!(tiny.promote_max_bytes(), 4 << 10, "at most max_object");
        assert_eq!(c.max_key, 8192);
        assert_eq!(c.default_ttl_ms, 5_400_000);
        assert!(c.cache_set_cookie);
        assert_eq!(c.heuristic_max_ms, 3_600_000);
        assert_eq!(
            Config::default().heuristic_max_ms,
            86_400_000,
            "a day, as ATS"
        );
        assert_eq!((c.purge_slots, c.ban_slots), (1024, 8));
        assert!(!c.sweeper);
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_field() {
        let e = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert!(e("mem=12q").contains("mem: invalid value \"12q\""));
        assert!(e("colour=blue").contains("colour: unknown key"));
        assert!(e("mem").contains("expected key=value"));
        assert!(e("mem=1m mem=2m").contains("mem: given twice"));
        assert!(e("default_ttl=5x").contains("default_ttl"));
        assert!(e("shards=0").contains("shards"));
        assert!(e("mem=1m shards=8 max_object=1g").contains("max_object"));
        assert!(e("mem=99999999999999999999").contains("mem"));
        assert!(e("mem=16777216t").contains("mem"));
        assert!(e("cache_set_cookie=maybe").contains("on or off"));
        assert!(e("max_key=1m").contains("max_key"));
        assert!(e("max_object=1m promote_max=2m").contains("promote_max: must be 0..=1048576"));
    }

    #[test]
    fn tiers_repeat_in_order() {
        let c =
            Config::parse("mem=8m tier=/dev/shm/a,size=64m,region=1m tier=/var/b,size=1g").unwrap();
        assert_eq!(c.tiers.len(), 2);
        assert_eq!(c.tiers[0].path, std::path::PathBuf::from("/dev/shm/a"));
        assert_eq!((c.tiers[0].size, c.tiers[0].region), (64 << 20, 1 << 20));
        assert_eq!(c.tiers[1].region, crate::block::DEFAULT_REGION);
        let e = Config::parse("tier=/x,size=1g,bogus=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn a_ram_tier_backs_the_tiers_with_mem_bytes() {
        let c = Config::parse("mem=256m tier=/var/cache/x,size=2g").unwrap();
        let r = c.ram_spec().unwrap();
        let default = default_ram_dir(std::path::Path::new("/var/cache/x"));
        assert_eq!(r.path, default);
        assert!(default.to_string_lossy().starts_with("/dev/shm/rcdn-"));
        assert_eq!(default.to_string_lossy().len(), "/dev/shm/rcdn-".len() + 16);
        assert_eq!((r.size, r.region, r.slice), (256 << 20, 16 << 20, 4 << 20));
        assert_eq!(c.store_dirs(), vec![default, "/var/cache/x".into()]);
        let c = Config::parse("mem=1m tier=/a,size=1g ram=/tmp/r ram_region=128k").unwrap();
        let r = c.ram_spec().unwrap();
        assert_eq!(
            (r.path.to_str(), r.region, r.slice),
            (Some("/tmp/r"), 128 << 10, 32 << 10)
        );
        assert!(Config::parse("mem=64m").unwrap().ram_spec().is_none());
        assert_eq!(default_ram_region(1 << 20), 64 << 10);
        assert_eq!(default_ram_region(16 << 30), 32 << 20);
        let e = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert!(e("ram=/tmp/r").contains("ram: a RAM tier needs a tier="));
        assert!(e("tier=/a,size=1g ram=/a").contains("also a tier"));
        assert!(e("mem=1m tier=/a,size=1g ram_region=1m").contains("ram_region"));
        assert!(e("tier=/a,size=1g ram=").contains("ram: expected a directory"));
        // Slack for recycling: an eighth and two regions.
        assert_eq!(ram_capacity(16 << 20, 1 << 20), 12 << 20);
        assert_eq!(ram_compaction_budget(8 << 20), 6 << 20);
    }

    #[test]
    fn processes_split_the_handle_heap() {
        let c = Config::parse("mem=256m tier=/a,size=1g").unwrap();
        assert_eq!((c.processes, c.handle_bytes()), (1, 64 << 20));
        let c = Config::parse("mem=256m processes=4 tier=/a,size=1g").unwrap();
        assert_eq!(c.handle_bytes(), 16 << 20);
        let e = |t: &str| Config::parse(t).unwrap_err().to_string();
        assert!(e("processes=0").contains("processes"));
        assert!(e("processes=1025").contains("1..=1024"));
        assert!(e("processes=4294967297").contains("1..=1024"));
        assert!(e("processes=x").contains("whole number"));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("x", "4K").unwrap(), 4096);
        assert_eq!(parse_size("x", "7").unwrap(), 7);
        assert!(parse_size("x", "").is_err());
        assert!(parse_size("x", "-1m").is_err());
        assert_eq!(parse_duration_ms("x", "250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("x", "90").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("x", "2d").unwrap(), 172_800_000);
        assert!(parse_duration_ms("x", "ms").is_err());
        assert!(parse_duration_ms("x", "").is_err());
    }
}
