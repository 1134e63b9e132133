//! Each worker's view of the ring: who owns a key, which peers are down
//! (marks shared by the node's workers through `shm`), and the peer
//! counters.

use super::shm;
use crate::conf::{ClusterConf, VNODES};
use cdncore::fill::{NodeId, Ring};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

/// Where a fill goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub addr: String,
    /// What `$rcdn_upstream` is: the `upstream=` name, else `addr`.
    pub via: String,
}

/// What this node did with peers (all workers, since the zone was made).
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerCounters {
    pub peer_fills: u64,
    pub peer_failures: u64,
    pub marked_down: u64,
}

/// This worker's view of the cluster. Down marks live in the node's shared
/// zone (so one worker's failed attempt spares the others); the local map
/// mirrors them and is the fallback without a zone.
struct View {
    me: NodeId,
    /// id -> (address, what `$rcdn_upstream` names).
    addrs: HashMap<NodeId, (String, String)>,
    full: Ring,
    /// The ring without the peers in `down` (rebuilt when that set changes).
    live: Ring,
    down: HashMap<NodeId, u64>,
    shared: Option<&'static [AtomicU64]>,
    local: PeerCounters,
}

impl View {
    fn new(cc: &ClusterConf) -> Option<View> {
        let me = cc.me.clone()?;
        let full = Ring::new(cc.peers.iter().map(|(id, _)| id.clone()), VNODES).ok()?;
        Some(View {
            me,
            addrs: cc
                .peers
                .iter()
                .map(|(id, a)| {
                    let via = cc.upstreams.get(id).unwrap_or(a).clone();
                    (id.clone(), (a.clone(), via))
                })
                .collect(),
            live: full.clone(),
            full,
            down: HashMap::new(),
            shared: shm::table(cc.zone),
            local: PeerCounters::default(),
        })
    }

    /// Reads the down marks at `now`; rebuilds the live ring on a change.
    fn refresh(&mut self, now: u64) {
        let mut down = HashMap::new();
        for id in self.full.nodes() {
            let until = match self.shared {
                Some(t) => shm::down_until(t, id),
                None => self.down.get(id).copied().unwrap_or(0),
            };
            if now < until && *id != self.me {
                down.insert(id.clone(), until);
            }
        }
        let changed =
            down.len() != self.down.len() || down.keys().any(|k| !self.down.contains_key(k));
        self.down = down;
        if changed {
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        let live = self
            .full
            .nodes()
            .iter()
            .filter(|id| !self.down.contains_key(*id))
            .cloned();
        if let Ok(r) = Ring::new(live.collect::<Vec<_>>(), VNODES) {
            self.live = r;
        }
    }

    fn count(&mut self, which: usize) {
        match self.shared {
            Some(t) => shm::add(t, which),
            None => match which {
                shm::PEER_FILLS => self.local.peer_fills += 1,
                shm::PEER_FAILURES => self.local.peer_failures += 1,
                _ => self.local.marked_down += 1,
            },
        }
    }
}

thread_local! {
    /// Built on first use in each worker (a reload starts new workers).
    static VIEW: RefCell<Option<View>> = const { RefCell::new(None) };
}

fn with_view<T>(cc: &ClusterConf, f: impl FnOnce(&mut View) -> T) -> Option<T> {
    if !cc.enabled() {
        return None;
    }
    VIEW.with(|v| {
        let mut v = v.borrow_mut();
        if v.is_none() {
            *v = View::new(cc);
        }
        v.as_mut().map(f)
    })
}

/// The peer to fill `key` from, or `None` to load it here. A request that
/// came from a peer is never forwarded again (no loops, no A<->B waits).
pub fn route(cc: &ClusterConf, key: &[u8], from_peer: bool) -> Option<Target> {
    if from_peer {
        return None;
    }
    let now = cdncore::now_ms();
    with_view(cc, |v| {
        v.refresh(now);
        let owner = v.live.owner_of(key)?.clone();
        if owner == v.me {
            return None;
        }
        let (addr, via) = v.addrs.get(&owner)?.clone();
        v.count(shm::PEER_FILLS);
        Some(Target {
            id: owner,
            addr,
            via,
        })
    })
    .flatten()
}

/// The owner of `key` on the full ring (whatever its health).
pub fn owner(cc: &ClusterConf, key: &[u8]) -> Option<String> {
    with_view(cc, |v| v.full.owner_of(key).cloned()).flatten()
}

/// A peer failed or was too slow: its keys go elsewhere for `down_ms`.
pub fn mark_down(cc: &ClusterConf, id: &str) {
    let now = cdncore::now_ms();
    let until = now + cc.down_ms();
    with_view(cc, |v| {
        v.count(shm::PEER_FAILURES);
        if id == v.me {
            return;
        }
        let fresh = match v.shared {
            Some(t) => shm::set_down(t, id, now, until),
            None => v
                .down
                .insert(id.to_string(), until)
                .is_none_or(|u| u <= now),
        };
        if fresh {
            v.count(shm::MARKED_DOWN);
        }
        v.refresh(now);
    });
}

/// Ids of the peers this node holds down now.
pub fn down_now(cc: &ClusterConf) -> Vec<String> {
    let now = cdncore::now_ms();
    with_view(cc, |v| {
        v.refresh(now);
        let mut d: Vec<String> = v.down.keys().cloned().collect();
        d.sort();
        d
    })
    .unwrap_or_default()
}

pub fn counters(cc: &ClusterConf) -> PeerCounters {
    with_view(cc, |v| match v.shared {
        Some(t) => PeerCounters {
            peer_fills: shm::get(t, shm::PEER_FILLS),
            peer_failures: shm::get(t, shm::PEER_FAILURES),
            marked_down: shm::get(t, shm::MARKED_DOWN),
        },
        None => v.local,
    })
    .unwrap_or_default()
}

/// The other peers: (id, address).
pub fn others(cc: &ClusterConf) -> Vec<(String, String)> {
    cc.peers
        .iter()
        .filter(|(id, _)| Some(id) != cc.me.as_ref())
        .cloned()
        .collect()
}
