//! Purge records: every purge costs O(1) at call time, whatever the number of
//! cached objects, and is visible to the very next lookup.
//!
//! Each object remembers `born`, the purge sequence number current when its
//! fill began. A purge bumps the sequence to `r` and records `r` against what
//! it names; an object is dead when a record that names it is newer than its
//! birth. Records live in one flat array of `AtomicU64` words addressed by
//! offsets (no pointers), so a later tier can place the same table in a
//! shared memory mapping used by several processes:
//!
//! | words            | what                                                        |
//! |------------------|-------------------------------------------------------------|
//! | header (16)      | magic, version, seq, floor, active bans, sizes              |
//! | tags (65,536)    | one record per u16 tag                                      |
//! | gens (2 per slot)| (name hash, seq) for keys, directories, groups, surrogate keys |
//! | bans (128 each)  | regex, mask and odd-prefix purges checked at lookup         |
//!
//! The generation table is open-addressed with a bounded probe window and the
//! ban list has a fixed number of slots, so lookups stay bounded. Records are
//! retired once a full sweep has removed every older object they match. When
//! a table is full, its oldest record is folded into `floor` ("everything born
//! before this is dead"): more misses, never a purged object served.

use crate::error::{Error, Result};
use crate::key::{self, NameKind};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

const MAGIC: u64 = u64::from_le_bytes(*b"rcdnprg1");
const VERSION: u64 = 1;
const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_SEQ: usize = 2;
const H_FLOOR: usize = 3;
const H_ACTIVE_BANS: usize = 4;
const H_GEN_SLOTS: usize = 5;
const H_BAN_SLOTS: usize = 6;
const HEADER_WORDS: usize = 16;
const TAG_WORDS: usize = 1 << 16;
/// Probes per generation-table lookup; bounds both lookups and inserts.
const PROBE: usize = 32;
const BAN_WORDS: usize = 128;
const BAN_HEAD: usize = 4;
/// Longest regex or prefix a ban can hold.
pub const BAN_PATTERN_MAX: usize = (BAN_WORDS - BAN_HEAD) * 8;

const BAN_REGEX: u64 = 1;
const BAN_MASK: u64 = 2;
const BAN_PREFIX: u64 = 3;

/// What to purge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purge {
    /// One key (every variant the caller stored under it).
    Key(Vec<u8>),
    /// Every key starting with these bytes; O(1) table entry when the prefix
    /// is a directory (`example.com/news/`), a ban otherwise.
    Prefix(Vec<u8>),
    /// Every object of a group (default: the key's first path level).
    Group(Vec<u8>),
    /// Every object carrying this Hornet-style integer tag.
    Tag(u16),
    /// Every object carrying this `Surrogate-Key`/`Cache-Tag` value.
    SurrogateKey(String),
    /// Every object whose mask shares a bit with this one.
    Mask(u64),
    /// Every object whose raw key matches this regex (`regex` crate syntax).
    Regex(String),
    /// Everything.
    All,
}

impl std::fmt::Display for Purge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Purge::Key(k) => write!(f, "key {}", text(k)),
            Purge::Prefix(p) => write!(f, "prefix {}", text(p)),
            Purge::Group(g) => write!(f, "group {}", text(g)),
            Purge::Tag(t) => write!(f, "tag {t}"),
            Purge::SurrogateKey(s) => write!(f, "surrogate key {s}"),
            Purge::Mask(m) => write!(f, "mask {m:#x}"),
            Purge::Regex(r) => write!(f, "regex {r}"),
            Purge::All => write!(f, "all"),
        }
    }
}

/// What a purge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeReport {
    /// Sequence number of this purge.
    pub seq: u64,
    /// Objects it covers, where that is cheap to know (key, all).
    pub covered: Option<u64>,
}

/// The purge-relevant facts of one object, computed once when it is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub key: u64,
    pub group: u64,
    pub dirs: Vec<u64>,
    pub tags: Vec<u16>,
    pub surrogates: Vec<u64>,
    pub mask: u64,
}

impl Facts {
    pub fn new(
        key: &[u8],
        group: Option<&[u8]>,
        tags: &[u16],
        skeys: &[String],
        mask: u64,
    ) -> Self {
        Facts {
            key: key::name_hash(NameKind::Key, key),
            group: key::name_hash(NameKind::Group, group.unwrap_or(key::default_group(key))),
            dirs: key::dir_prefixes(key)
                .map(|p| key::name_hash(NameKind::Dir, p))
                .collect(),
            tags: tags.to_vec(),
            surrogates: skeys
                .iter()
                .map(|s| key::name_hash(NameKind::Surrogate, s.as_bytes()))
                .collect(),
            mask,
        }
    }
}

/// Word storage of the table: a heap allocation, or a shared mapping.
pub trait Words: Send + Sync {
    fn words(&self) -> &[AtomicU64];
    /// For storage shared between processes: a lock that serialises purge
    /// writers across them, held while a purge is recorded or retired.
    fn lock_writers(&self) -> Option<Box<dyn WriterLock + '_>> {
        None
    }
}

/// Anything held for its `Drop` (a cross-process lock guard).
pub trait WriterLock {}
impl<T> WriterLock for T {}

impl Words for Box<[AtomicU64]> {
    fn words(&self) -> &[AtomicU64] {
        self
    }
}

/// Compiled ban, cached per process by (slot, seq).
enum Matcher {
    Regex(regex::bytes::Regex),
    Mask(u64),
    Prefix(Vec<u8>),
}

impl Matcher {
    fn matches(&self, key: &[u8], facts: &Facts) -> bool {
        match self {
            Matcher::Regex(re) => re.is_match(key),
            Matcher::Mask(m) => facts.mask & m != 0,
            Matcher::Prefix(p) => key::normalise_prefix(key).starts_with(p),
        }
    }
}

/// The purge table plus the per-process state around it.
pub struct PurgeTable {
    store: Box<dyn Words>,
    gen_slots: usize,
    ban_slots: usize,
    /// Serialises purges within this process (lookups take no lock).
    write: Mutex<()>,
    bans: RwLock<HashMap<usize, (u64, Arc<Matcher>)>>,
}

/// Words needed for a table with these slot counts.
pub fn words_needed(gen_slots: usize, ban_slots: usize) -> usize {
    HEADER_WORDS + TAG_WORDS + 2 * gen_slots + BAN_WORDS * ban_slots
}

fn compile_regex(pattern: &str) -> Result<regex::bytes::Regex> {
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::InvalidRegex {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })
}

impl PurgeTable {
    /// A fresh table on the process heap.
    pub fn new(gen_slots: usize, ban_slots: usize) -> Self {
        let words: Box<[AtomicU64]> = (0..words_needed(gen_slots, ban_slots))
            .map(|_| AtomicU64::new(0))
            .collect();
        Self::attach(Box::new(words), gen_slots, ban_slots)
            .unwrap_or_else(|_| unreachable!("a zeroed table of the right size always attaches"))
    }

    /// Uses `store` as the table, formatting it if it is zeroed. Fails if it
    /// holds a table of another format or size.
    pub fn attach(store: Box<dyn Words>, gen_slots: usize, ban_slots: usize) -> Result<Self> {
        let w = store.words();
        if w.len() < words_needed(gen_slots, ban_slots) {
            return Err(Error::InvalidPurge("purge table storage too small".into()));
        }
        if w[H_MAGIC].load(Acquire) == 0 {
            w[H_VERSION].store(VERSION, Relaxed);
            w[H_GEN_SLOTS].store(gen_slots as u64, Relaxed);
            w[H_BAN_SLOTS].store(ban_slots as u64, Relaxed);
            w[H_SEQ].store(1, Relaxed);
            w[H_MAGIC].store(MAGIC, Release);
        }
        let same = w[H_MAGIC].load(Acquire) == MAGIC
            && w[H_VERSION].load(Relaxed) == VERSION
            && w[H_GEN_SLOTS].load(Relaxed) == gen_slots as u64
            && w[H_BAN_SLOTS].load(Relaxed) == ban_slots as u64;
        if !same {
            return Err(Error::InvalidPurge(
                "purge table has another format or size".into(),
            ));
        }
        Ok(PurgeTable {
            store,
            gen_slots,
            ban_slots,
            write: Mutex::new(()),
            bans: RwLock::new(HashMap::new()),
        })
    }

    fn w(&self) -> &[AtomicU64] {
        self.store.words()
    }

    /// The current sequence: a fill that begins now is born at this value.
    pub fn seq(&self) -> u64 {
        self.w()[H_SEQ].load(Acquire)
    }

    fn tag(&self, t: u16) -> &AtomicU64 {
        &self.w()[HEADER_WORDS + t as usize]
    }

    fn gen(&self, slot: usize) -> (&AtomicU64, &AtomicU64) {
        let base = HEADER_WORDS + TAG_WORDS + 2 * slot;
        (&self.w()[base], &self.w()[base + 1])
    }

    fn ban(&self, slot: usize) -> &[AtomicU64] {
        let base = HEADER_WORDS + TAG_WORDS + 2 * self.gen_slots + BAN_WORDS * slot;
        &self.w()[base..base + BAN_WORDS]
    }

    /// The record for a name hash, 0 if none.
    fn gen_lookup(&self, h: u64) -> u64 {
        let start = h as usize % self.gen_slots;
        for i in 0..PROBE {
            let (hash, seq) = self.gen((start + i) % self.gen_slots);
            match hash.load(Acquire) {
                0 => return 0,
                x if x == h => return seq.load(Acquire),
                _ => {}
            }
        }
        0
    }

    /// Is an object with these facts, born at `born`, purged?
    pub fn is_purged(&self, key: &[u8], facts: &Facts, born: u64) -> bool {
        let w = self.w();
        if w[H_FLOOR].load(Acquire) > born {
            return true;
        }
        let dead = |h: u64| self.gen_lookup(h) > born;
        if dead(facts.key) || dead(facts.group) {
            return true;
        }
        if facts.dirs.iter().any(|&h| dead(h)) || facts.surrogates.iter().any(|&h| dead(h)) {
            return true;
        }
        if facts.tags.iter().any(|&t| self.tag(t).load(Acquire) > born) {
            return true;
        }
        w[H_ACTIVE_BANS].load(Acquire) != 0 && self.banned(key, facts, born)
    }

    fn banned(&self, key: &[u8], facts: &Facts, born: u64) -> bool {
        (0..self.ban_slots).any(|slot| {
            let seq = self.ban(slot)[0].load(Acquire);
            seq > born
                && self
                    .matcher(slot, seq)
                    .is_some_and(|m| m.matches(key, facts))
        })
    }

    /// The compiled ban in `slot` at `seq`, compiling it on first use in this
    /// process. `None` if the slot changed under us (then it is newer than
    /// any object we could be checking against it, or retired).
    fn matcher(&self, slot: usize, seq: u64) -> Option<Arc<Matcher>> {
        if let Some((s, m)) = self.bans.read().get(&slot) {
            if *s == seq {
                return Some(m.clone());
            }
        }
        let b = self.ban(slot);
        let kind = b[1].load(Acquire);
        let mask = b[2].load(Acquire);
        let len = (b[3].load(Acquire) as usize).min(BAN_PATTERN_MAX);
        let mut bytes = Vec::with_capacity(len);
        for word in &b[BAN_HEAD..BAN_HEAD + len.div_ceil(8)] {
            bytes.extend_from_slice(&word.load(Acquire).to_le_bytes());
        }
        bytes.truncate(len);
        if b[0].load(Acquire) != seq {
            return None;
        }
        let m = match kind {
            BAN_REGEX => Matcher::Regex(compile_regex(std::str::from_utf8(&bytes).ok()?).ok()?),
            BAN_MASK => Matcher::Mask(mask),
            BAN_PREFIX => Matcher::Prefix(bytes),
            _ => return None,
        };
        let m = Arc::new(m);
        self.bans.write().insert(slot, (seq, m.clone()));
        Some(m)
    }

    /// Records a purge. O(1): a few words written, nothing scanned.
    pub fn record(&self, p: &Purge) -> Result<u64> {
        let prepared = Prepared::from(p)?;
        let _g = self.write.lock();
        let _shared = self.store.lock_writers();
        let w = self.w();
        let r = w[H_SEQ].load(Acquire) + 1;
        match prepared {
            Prepared::All => raise(&w[H_FLOOR], r),
            Prepared::Tag(t) => raise(self.tag(t), r),
            Prepared::Name(h) => self.gen_insert(h, r),
            Prepared::Ban(kind, mask, bytes) => self.ban_insert(kind, mask, &bytes, r),
        }
        // Publishing the new sequence is what makes fills that begin from
        // now on immune to this purge.
        w[H_SEQ].store(r, Release);
        Ok(r)
    }

    fn gen_insert(&self, h: u64, r: u64) {
        let start = h as usize % self.gen_slots;
        let mut reuse = None;
        let mut oldest = (u64::MAX, start);
        for i in 0..PROBE {
            let slot = (start + i) % self.gen_slots;
            let (hash, seq) = self.gen(slot);
            let (hv, sv) = (hash.load(Acquire), seq.load(Acquire));
            if hv == h {
                raise(seq, r);
                return;
            }
            if hv == 0 {
                reuse.get_or_insert(slot);
                break;
            }
            if sv == 0 {
                reuse.get_or_insert(slot);
            } else if sv < oldest.0 {
                oldest = (sv, slot);
            }
        }
        let slot = reuse.unwrap_or_else(|| {
            // Window full of live records: fold the oldest into the floor.
            raise(&self.w()[H_FLOOR], oldest.0);
            oldest.1
        });
        let (hash, seq) = self.gen(slot);
        // Sequence before hash: a racing reader may see a too-new record for
        // the old name (a spurious miss), never a missing one for the new.
        seq.store(r, Release);
        hash.store(h, Release);
    }

    fn ban_insert(&self, kind: u64, mask: u64, bytes: &[u8], r: u64) {
        let slots = 0..self.ban_slots;
        let free = slots.clone().find(|&s| self.ban(s)[0].load(Acquire) == 0);
        let slot = free.unwrap_or_else(|| {
            let oldest = slots
                .min_by_key(|&s| self.ban(s)[0].load(Acquire))
                .unwrap_or(0);
            raise(&self.w()[H_FLOOR], self.ban(oldest)[0].load(Acquire));
            self.w()[H_ACTIVE_BANS].fetch_sub(1, AcqRel);
            oldest
        });
        let b = self.ban(slot);
        b[0].store(0, Release);
        b[1].store(kind, Relaxed);
        b[2].store(mask, Relaxed);
        b[3].store(bytes.len() as u64, Relaxed);
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            b[BAN_HEAD + i].store(u64::from_le_bytes(word), Relaxed);
        }
        b[0].store(r, Release);
        self.w()[H_ACTIVE_BANS].fetch_add(1, AcqRel);
    }

    /// Drops records no object born before `safe` can still need: the
    /// caller has swept every object born before `safe` out of the cache.
    pub fn retire(&self, safe: u64) -> usize {
        let _g = self.write.lock();
        let _shared = self.store.lock_writers();
        let mut retired = 0;
        let mut clear = |a: &AtomicU64| {
            let v = a.load(Acquire);
            if v != 0 && v <= safe {
                a.store(0, Release);
                retired += 1;
                true
            } else {
                false
            }
        };
        for t in 0..TAG_WORDS {
            clear(self.tag(t as u16));
        }
        for s in 0..self.gen_slots {
            clear(self.gen(s).1); // a tombstone: the hash stays, the chain holds
        }
        for s in 0..self.ban_slots {
            if clear(&self.ban(s)[0]) {
                self.w()[H_ACTIVE_BANS].fetch_sub(1, AcqRel);
            }
        }
        self.bans
            .write()
            .retain(|&s, (seq, _)| self.ban(s)[0].load(Acquire) == *seq);
        retired
    }

    /// Live bans (bounded by `ban_slots`).
    pub fn active_bans(&self) -> u64 {
        self.w()[H_ACTIVE_BANS].load(Acquire)
    }

    /// Declares every object born before `seq` dead and numbers later purges
    /// from there (a new shared table beside objects born under a lost one).
    pub fn restart_at(&self, seq: u64) {
        let _g = self.write.lock();
        let _shared = self.store.lock_writers();
        raise(&self.w()[H_FLOOR], seq);
        raise(&self.w()[H_SEQ], seq);
    }

    /// Objects born before this are dead.
    pub fn floor(&self) -> u64 {
        self.w()[H_FLOOR].load(Acquire)
    }
}

fn raise(a: &AtomicU64, v: u64) {
    a.fetch_max(v, AcqRel);
}

/// A purge validated and reduced to what the table stores.
enum Prepared {
    All,
    Tag(u16),
    Name(u64),
    Ban(u64, u64, Vec<u8>),
}

impl Prepared {
    fn from(p: &Purge) -> Result<Self> {
        let nonempty = |b: &[u8], what: &str| {
            if b.is_empty() {
                Err(Error::InvalidPurge(format!("empty {what}")))
            } else {
                Ok(())
            }
        };
        let ban_len = |b: &[u8]| {
            if b.len() > BAN_PATTERN_MAX {
                Err(Error::InvalidPurge(format!(
                    "pattern of {} bytes, over the maximum of {BAN_PATTERN_MAX}",
                    b.len()
                )))
            } else {
                Ok(())
            }
        };
        Ok(match p {
            Purge::All => Prepared::All,
            Purge::Tag(t) => Prepared::Tag(*t),
            Purge::Key(k) => {
                nonempty(k, "key")?;
                Prepared::Name(key::name_hash(NameKind::Key, k))
            }
            Purge::Group(g) => {
                nonempty(g, "group")?;
                Prepared::Name(key::name_hash(NameKind::Group, g))
            }
            Purge::SurrogateKey(s) => {
                nonempty(s.as_bytes(), "surrogate key")?;
                Prepared::Name(key::name_hash(NameKind::Surrogate, s.as_bytes()))
            }
            Purge::Prefix(raw) => {
                nonempty(raw, "prefix")?;
                let p = key::normalise_prefix(raw);
                match key::dir_depth(p) {
                    Some(d) if d <= key::MAX_DIR_DEPTH => {
                        Prepared::Name(key::name_hash(NameKind::Dir, p))
                    }
                    _ => {
                        ban_len(p)?;
                        Prepared::Ban(BAN_PREFIX, 0, p.to_vec())
                    }
                }
            }
            Purge::Mask(0) => return Err(Error::InvalidPurge("mask 0 matches nothing".into())),
            Purge::Mask(m) => Prepared::Ban(BAN_MASK, *m, Vec::new()),
            Purge::Regex(re) => {
                nonempty(re.as_bytes(), "regex")?;
                ban_len(re.as_bytes())?;
                compile_regex(re)?;
                Prepared::Ban(BAN_REGEX, 0, re.as_bytes().to_vec())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(key: &str) -> Facts {
        Facts::new(key.as_bytes(), None, &[7], &["news".to_string()], 0b100)
    }

    fn check(t: &PurgeTable, key: &str, born: u64) -> bool {
        t.is_purged(key.as_bytes(), &facts(key), born)
    }

    #[test]
    fn every_kind_kills_older_objects_only() {
        let cases = [
            Purge::Key(b"a.com/x/y.jpg".to_vec()),
            Purge::Prefix(b"a.com/x/".to_vec()),
            Purge::Prefix(b"https://a.com/".to_vec()),
            Purge::Prefix(b"a.com/x/y".to_vec()),
            Purge::Group(b"a.com".to_vec()),
            Purge::Tag(7),
            Purge::SurrogateKey("news".into()),
            Purge::Mask(0b110),
            Purge::Regex(r"\.jpg$".into()),
            Purge::All,
        ];
        for p in cases {
            let t = PurgeTable::new(64, 4);
            let born = t.seq();
            assert!(!check(&t, "a.com/x/y.jpg", born));
            t.record(&p).unwrap();
            assert!(check(&t, "a.com/x/y.jpg", born), "{p:?} missed");
            assert!(
                !check(&t, "a.com/x/y.jpg", t.seq()),
                "{p:?} hit a newer object"
            );
        }
    }

    #[test]
    fn unrelated_objects_survive() {
        let t = PurgeTable::new(64, 4);
        let born = t.seq();
        for p in [
            Purge::Key(b"a.com/x/z.jpg".to_vec()),
            Purge::Prefix(b"a.com/y/".to_vec()),
            Purge::Prefix(b"a.com/x/z".to_vec()),
            Purge::Group(b"b.com".to_vec()),
            Purge::Tag(8),
            Purge::SurrogateKey("sport".into()),
            Purge::Mask(0b011),
            Purge::Regex(r"\.png$".into()),
        ] {
            t.record(&p).unwrap();
        }
        assert!(!check(&t, "a.com/x/y.jpg", born));
    }

    #[test]
    fn bad_purges_are_errors() {
        let t = PurgeTable::new(64, 4);
        assert!(matches!(
            t.record(&Purge::Regex("a(".into())),
            Err(Error::InvalidRegex { .. })
        ));
        assert!(t
            .record(&Purge::Regex("x".repeat(BAN_PATTERN_MAX + 1)))
            .is_err());
        assert!(t.record(&Purge::Key(vec![])).is_err());
        assert!(t.record(&Purge::Mask(0)).is_err());
        assert!(t.record(&Purge::SurrogateKey(String::new())).is_err());
        assert_eq!(t.seq(), 1, "a rejected purge records nothing");
    }

    #[test]
    fn full_ban_list_folds_the_oldest_into_the_floor() {
        let t = PurgeTable::new(64, 2);
        let born = t.seq();
        t.record(&Purge::Regex("^zzz".into())).unwrap();
        let mid = t.seq();
        t.record(&Purge::Regex("^yyy".into())).unwrap();
        t.record(&Purge::Regex("^xxx".into())).unwrap();
        assert_eq!(t.active_bans(), 2);
        // The folded ban over-purges objects older than it, nothing newer.
        assert!(check(&t, "a.com/q", born));
        assert!(!check(&t, "a.com/q", mid));
    }

    #[test]
    fn full_probe_window_folds_and_stays_correct() {
        let t = PurgeTable::new(64, 1);
        let born = t.seq();
        for i in 0..500 {
            t.record(&Purge::SurrogateKey(format!("s{i}"))).unwrap();
        }
        assert!(t.floor() > born, "oldest records folded into the floor");
        let last = Facts::new(b"k", None, &[], &["s499".to_string()], 0);
        assert!(t.is_purged(b"k", &last, t.seq() - 1));
    }

    #[test]
    fn retire_clears_old_records_and_bans() {
        let t = PurgeTable::new(64, 4);
        t.record(&Purge::Regex("^a".into())).unwrap();
        t.record(&Purge::Tag(3)).unwrap();
        t.record(&Purge::Group(b"g".to_vec())).unwrap();
        let safe = t.seq();
        t.record(&Purge::Regex("^b".into())).unwrap();
        assert_eq!(t.retire(safe), 3);
        assert_eq!(t.active_bans(), 1);
        // The newer ban still applies.
        let f = Facts::new(b"bx", None, &[], &[], 0);
        assert!(t.is_purged(b"bx", &f, safe));
        // Retired group slot is a tombstone that a new purge reuses.
        t.record(&Purge::Group(b"g".to_vec())).unwrap();
        let f = Facts::new(b"k", Some(b"g"), &[], &[], 0);
        assert!(t.is_purged(b"k", &f, t.seq() - 1));
    }

    #[test]
    fn attach_checks_format() {
        let words: Box<[AtomicU64]> = (0..words_needed(64, 4))
            .map(|_| AtomicU64::new(0))
            .collect();
        let t = PurgeTable::attach(Box::new(words), 64, 4).unwrap();
        t.record(&Purge::Tag(1)).unwrap();
        let words: Box<[AtomicU64]> = (0..words_needed(64, 4))
            .map(|i| AtomicU64::new(if i == 0 { 42 } else { 0 }))
            .collect();
        assert!(PurgeTable::attach(Box::new(words), 64, 4).is_err());
    }
}
