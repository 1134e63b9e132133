//! Routing a miss: to the key's owner on the ring, or to a local load when
//! this node owns it, the owner is marked down, or the request already came
//! from a peer (one hop only: no fill loops, and no A<->B waits when two
//! nodes briefly disagree on the ring, mailgun/groupcache issue 72).
//!
//! Keys travel between peers base64url-encoded in the path, so any bytes
//! (including a leading `/`, which broke groupcache's HTTPPool) round-trip.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;

use super::ring::{NodeId, Ring, RingError, DEFAULT_VNODES};
use crate::key::KeyHash;

/// Request header that marks a peer fill; a request carrying it is always
/// loaded locally, never forwarded again.
pub const HOP_HEADER: &str = "X-Rcdn-Hop";

/// Where a miss goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Load it here (origin fetch).
    Local,
    /// Ask this peer: (id, address such as `127.0.0.1:8081`).
    Peer(&'a str, &'a str),
}

/// This node's view of the cluster.
#[derive(Clone, Debug)]
pub struct Peers {
    me: NodeId,
    ring: Ring,
    addrs: HashMap<NodeId, String>,
    down_until: HashMap<NodeId, u64>,
}

impl Peers {
    /// `peers` lists every node, this one included, as (id, address).
    pub fn new(me: &str, peers: &[(String, String)]) -> Result<Peers, RingError> {
        let ring = Ring::new(peers.iter().map(|(id, _)| id.clone()), DEFAULT_VNODES)?;
        if !ring.nodes().iter().any(|n| n == me) {
            return Err(RingError::NotAPeer(me.to_string()));
        }
        Ok(Peers {
            me: me.to_string(),
            ring,
            addrs: peers.iter().cloned().collect(),
            down_until: HashMap::new(),
        })
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The owner of a key, whatever its health.
    pub fn owner(&self, key: &[u8]) -> Option<&str> {
        self.ring.owner(KeyHash::of(key)).map(String::as_str)
    }

    /// Where a miss for `key` goes at `now_ms`; `from_peer` is whether the
    /// request carries [`HOP_HEADER`].
    pub fn route(&self, key: &[u8], from_peer: bool, now_ms: u64) -> Route<'_> {
        if from_peer {
            return Route::Local;
        }
        match self.owner(key) {
            Some(id) if id != self.me && !self.is_down(id, now_ms) => {
                Route::Peer(id, self.addrs.get(id).map_or("", String::as_str))
            }
            _ => Route::Local,
        }
    }

    /// After a failed or slow peer fetch: load locally for `for_ms`.
    pub fn mark_down(&mut self, id: &str, now_ms: u64, for_ms: u64) {
        self.down_until.insert(id.to_string(), now_ms + for_ms);
    }

    pub fn is_down(&self, id: &str, now_ms: u64) -> bool {
        self.down_until.get(id).is_some_and(|&t| now_ms < t)
    }
}

/// A key as a path segment.
pub fn encode_key(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// The key back from a path segment; `None` if it is not valid base64url.
pub fn decode_key(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(me: &str) -> Peers {
        let peers: Vec<(String, String)> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| (id.to_string(), format!("127.0.0.1:{}", 8081 + i)))
            .collect();
        Peers::new(me, &peers).unwrap()
    }

    #[test]
    fn every_node_agrees_on_owners_and_routes_accordingly() {
        let (a, b) = (cluster("a"), cluster("b"));
        let mut local = 0;
        for i in 0..3000 {
            let key = format!("k{i}");
            let owner = a.owner(key.as_bytes()).unwrap();
            assert_eq!(Some(owner), b.owner(key.as_bytes()));
            match a.route(key.as_bytes(), false, 0) {
                Route::Local => {
                    assert_eq!(owner, "a");
                    local += 1;
                }
                Route::Peer(id, addr) => {
                    assert_eq!(id, owner);
                    assert!(addr.starts_with("127.0.0.1:"));
                }
            }
        }
        assert!((700..1300).contains(&local), "about a third local: {local}");
    }

    #[test]
    fn hop_and_down_peers_load_locally() {
        let mut a = cluster("a");
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| a.owner(k.as_bytes()) == Some("b"))
            .unwrap();
        assert_eq!(
            a.route(key.as_bytes(), false, 0),
            Route::Peer("b", "127.0.0.1:8082")
        );
        assert_eq!(
            a.route(key.as_bytes(), true, 0),
            Route::Local,
            "never forwarded twice"
        );
        a.mark_down("b", 1000, 5000);
        assert_eq!(a.route(key.as_bytes(), false, 3000), Route::Local);
        assert_eq!(
            a.route(key.as_bytes(), false, 6000),
            Route::Peer("b", "127.0.0.1:8082")
        );
    }

    #[test]
    fn keys_round_trip_whatever_their_bytes() {
        for key in [&b"/leading/slash"[..], b"a b?c#d%2F", b"\x00\xff\n"] {
            let seg = encode_key(key);
            assert!(!seg.contains(['/', '?', '#', '%']));
            assert_eq!(decode_key(&seg).unwrap(), key);
        }
        assert_eq!(decode_key("!!"), None);
        assert_eq!(decode_key(""), None);
    }

    #[test]
    fn this_node_must_be_a_peer() {
        let peers = vec![("a".to_string(), "x".to_string())];
        assert!(Peers::new("z", &peers).is_err());
    }
}
