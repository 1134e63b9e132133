//! Recycling a region: the records the index still points to are kept
//! (written again at the head), moved down to the next tier, or dropped
//! when purged. Which stay is the tier's residency policy: the hit bit, or
//! for the RAM tier its ARC directory.

use super::index::{Found, Loc};
use super::record::{self, Head, Kind, HEAD_LEN, REGION_DATA, UNIT};
use super::region::RegionMap;
use super::tier::{old_region, record_hash, Tier, HOT_SHARE};
use crate::key::KeyHash;
use std::sync::atomic::Ordering::Relaxed;

/// Decides which live records of a recycled region stay in the tier (the
/// RAM tier asks its ARC directory); without one, the records hit since
/// they were written stay, up to half a region.
pub(crate) trait Residency: Send + Sync {
    /// For each live record (its object's key hash, its bytes), in file
    /// order: keep it here? The others move to the next tier. Also returns
    /// how many resident objects had to go for lack of room.
    fn keep(&self, records: &[(u128, u64)]) -> (Vec<bool>, u64);
    /// A record of this object was dropped (purged) at recycling.
    fn dropped(&self, hash: u128);
}

impl Tier {
    /// Walks a region that was just recycled: the live records the
    /// residency policy keeps are written again here, the others move to
    /// the next tier, purged ones are dropped.
    pub(super) fn relocate(&self, old: &RegionMap) {
        let i = &self.inner;
        let next = i.next.read().clone();
        let live = self.live_records(old);
        let residency = i.residency.read().clone();
        let keep = match &residency {
            Some(r) => {
                let recs: Vec<(u128, u64)> = live.iter().map(|l| (l.object, l.len)).collect();
                let (keep, forced) = r.keep(&recs);
                i.ctr.get().forced.fetch_add(forced, Relaxed);
                keep
            }
            None => hit_policy(&live, i.spec.region / HOT_SHARE),
        };
        for (l, keep) in live.iter().zip(keep) {
            let bytes = &old.map[l.off as usize..(l.off + l.len) as usize];
            let head = &l.head;
            let key = &bytes[HEAD_LEN..HEAD_LEN + head.key_len as usize];
            let meta_b = &bytes[HEAD_LEN + head.key_len as usize..head.body_offset() as usize];
            let body = &bytes[head.body_offset() as usize..];
            // The entry is looked up again by hash, not by slot: another
            // writer's publish may have moved it to its other bucket.
            if keep {
                if let Ok((loc, _)) = self.append(head, key, meta_b, body) {
                    if i.index.replace_entry(l.hash, l.found.word, loc.pack()) {
                        i.ctr.get().reinserted.fetch_add(1, Relaxed);
                    }
                    continue;
                }
                // No room here after all (an I/O error): move it down
                // rather than lose it.
                if let Some(r) = &residency {
                    r.dropped(l.object);
                }
            }
            if let Some(n) = &next {
                if n.write_record(l.hash, *head, key, meta_b, body).is_ok() {
                    i.ctr.get().demoted.fetch_add(1, Relaxed);
                }
            }
            // Kept nowhere here any more: free the slot (an entry of the old
            // epoch is not free for other writers, see `Tier::age`).
            i.index.remove_entry(l.hash, l.found.word);
        }
    }

    /// The records of a recycled region that the index still points to,
    /// after dropping the purged ones.
    fn live_records(&self, old: &RegionMap) -> Vec<Live> {
        let i = &self.inner;
        let purged = i.purged.read().clone();
        let residency = i.residency.read().clone();
        let region = old_region(old);
        let mut live = Vec::new();
        let mut off = REGION_DATA;
        while off + HEAD_LEN as u64 <= old.map.len() as u64 {
            let b = &old.map[off as usize..];
            let Some(head) = record::parse_head(b, i.index.salt, i.spec.region) else {
                off += UNIT;
                continue;
            };
            let here = Loc {
                region,
                epoch16: old.epoch as u16,
                unit: (off / UNIT) as u32,
            };
            let at = off;
            off += head.units() * UNIT;
            let key = &b[HEAD_LEN..HEAD_LEN + head.key_len as usize];
            let h = record_hash(&head, key);
            let mut cands = Vec::new();
            i.index.lookup(h, &mut cands);
            let Some(found) = cands.into_iter().find(|f| f.loc() == here) else {
                continue; // overwritten or removed since
            };
            let object = KeyHash::of(key).0;
            if let Some(p) = &purged {
                let meta_b = &b[HEAD_LEN + head.key_len as usize..head.body_offset() as usize];
                let dead = head.kind != Kind::Slice
                    && record::decode_meta(meta_b).is_ok_and(|m| p(key, &m, head.born));
                if dead {
                    i.index.remove_entry(h, found.word);
                    i.ctr.get().purged_reclaimed.fetch_add(1, Relaxed);
                    if let Some(r) = &residency {
                        r.dropped(object);
                    }
                    continue;
                }
            }
            live.push(Live {
                off: at,
                len: head.rec_len(),
                head,
                found,
                hash: h,
                object,
            });
        }
        live
    }
}

/// A live record of a region being recycled.
struct Live {
    off: u64,
    len: u64,
    head: Head,
    found: Found,
    /// Its index hash (a slice's is not its key's).
    hash: u128,
    /// Its object's key hash.
    object: u128,
}

/// Without a residency policy: records hit since they were written stay,
/// while `budget` bytes last (so a lap always frees space).
fn hit_policy(live: &[Live], budget: u64) -> Vec<bool> {
    let mut used = 0;
    live.iter()
        .map(|l| {
            let keep = l.found.hit() && used + l.len <= budget;
            used += if keep { l.len } else { 0 };
            keep
        })
        .collect()
}
