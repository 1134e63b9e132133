//! Consistent-hash ring of peers (Karger et al.), as groupcache's
//! `consistenthash`, but keyed by node ids rather than URLs and placed with
//! the stable xxh3 hash, so every node computes the same owner for a key.
//!
//! Each peer gets `vnodes` points on a 64-bit circle; a key belongs to the
//! first point at or after its hash. Adding or removing one of N peers moves
//! only about 1/N of the keys.

use crate::key::KeyHash;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Points per peer: enough that peers' shares stay within a few percent.
pub const DEFAULT_VNODES: u32 = 160;

/// A peer's identity: a stable name the operator chooses (`node-a`), not
/// its address, so an address change does not reshuffle keys.
pub type NodeId = String;

/// Errors building a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("peer id is empty")]
    EmptyId,
    #[error("peer id {0:?} appears twice")]
    Duplicate(String),
    #[error("vnodes must be 1..=4096")]
    BadVnodes,
    #[error("this node {0:?} is not in the peer list")]
    NotAPeer(String),
}

/// An immutable ring; build a new one when the peer set changes.
#[derive(Clone, Debug)]
pub struct Ring {
    nodes: Vec<NodeId>,
    /// (point, index into `nodes`), sorted by point.
    points: Vec<(u64, u32)>,
}

fn point(id: &str, replica: u32) -> u64 {
    xxh3_64_with_seed(id.as_bytes(), u64::from(replica))
}

impl Ring {
    pub fn new<I, S>(ids: I, vnodes: u32) -> Result<Ring, RingError>
    where
        I: IntoIterator<Item = S>,
        S: Into<NodeId>,
    {
        if !(1..=4096).contains(&vnodes) {
            return Err(RingError::BadVnodes);
        }
        let mut nodes: Vec<NodeId> = Vec::new();
        for id in ids {
            let id = id.into();
            if id.is_empty() {
                return Err(RingError::EmptyId);
            }
            if nodes.contains(&id) {
                return Err(RingError::Duplicate(id));
            }
            nodes.push(id);
        }
        let mut points: Vec<(u64, u32)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, id)| (0..vnodes).map(move |r| (point(id, r), i as u32)))
            .collect();
        // Ties (astronomically rare) are broken by id order, the same everywhere.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| nodes[a.1 as usize].cmp(&nodes[b.1 as usize]))
        });
        Ok(Ring { nodes, points })
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The peer that owns a key hash; `None` on an empty ring.
    pub fn owner(&self, hash: KeyHash) -> Option<&NodeId> {
        if self.points.is_empty() {
            return None;
        }
        // The high half: the low half addresses index slots and shards.
        let h = (hash.0 >> 64) as u64;
        let i = self.points.partition_point(|&(p, _)| p < h);
        let (_, node) = self.points[i % self.points.len()];
        Some(&self.nodes[node as usize])
    }

    /// Convenience: the owner of a key.
    pub fn owner_of(&self, key: &[u8]) -> Option<&NodeId> {
        self.owner(KeyHash::of(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(r: &Ring, n: u32) -> Vec<String> {
        (0..n)
            .map(|i| {
                r.owner_of(format!("k{i}").as_bytes())
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn same_peers_same_owners_in_any_order() {
        let a = Ring::new(["a", "b", "c"], DEFAULT_VNODES).unwrap();
        let b = Ring::new(["c", "a", "b"], DEFAULT_VNODES).unwrap();
        assert_eq!(owners(&a, 10_000), owners(&b, 10_000));
    }

    #[test]
    fn shares_are_balanced() {
        let r = Ring::new(["a", "b", "c", "d"], DEFAULT_VNODES).unwrap();
        let o = owners(&r, 100_000);
        for id in ["a", "b", "c", "d"] {
            let share = o.iter().filter(|x| *x == id).count() as f64 / 100_000.0;
            assert!((0.18..0.32).contains(&share), "{id}: {share}");
        }
    }

    #[test]
    fn adding_or_removing_a_peer_moves_about_one_nth() {
        let three = Ring::new(["a", "b", "c"], DEFAULT_VNODES).unwrap();
        let four = Ring::new(["a", "b", "c", "d"], DEFAULT_VNODES).unwrap();
        let (o3, o4) = (owners(&three, 100_000), owners(&four, 100_000));
        let moved: Vec<usize> = (0..o3.len()).filter(|&i| o3[i] != o4[i]).collect();
        let frac = moved.len() as f64 / o3.len() as f64;
        assert!((0.18..0.32).contains(&frac), "moved {frac}");
        // Every moved key went to the new peer: nothing shuffled between old ones.
        assert!(moved.iter().all(|&i| o4[i] == "d"));

        let two = Ring::new(["a", "c"], DEFAULT_VNODES).unwrap();
        let o2 = owners(&two, 100_000);
        for i in 0..o3.len() {
            if o3[i] != "b" {
                assert_eq!(o2[i], o3[i], "a key not owned by the removed peer moved");
            }
        }
    }

    #[test]
    fn bad_rings_are_errors() {
        assert_eq!(Ring::new(["a", ""], 10).unwrap_err(), RingError::EmptyId);
        assert_eq!(
            Ring::new(["a", "a"], 10).unwrap_err(),
            RingError::Duplicate("a".into())
        );
        assert_eq!(Ring::new(["a"], 0).unwrap_err(), RingError::BadVnodes);
        let empty = Ring::new(Vec::<String>::new(), 10).unwrap();
        assert!(empty.owner_of(b"k").is_none());
    }
}
