//! The cluster directives as configured (`rcdn_node`, `rcdn_peer`,
//! `rcdn_origin`, ...) and their checks; the setters, the ring and the peer
//! protocol are in `crate::cluster`.

use cdncore::fill::Ring;
use std::collections::HashMap;

/// Points per node on the ring (the engine's default).
pub(crate) const VNODES: u32 = cdncore::fill::ring::DEFAULT_VNODES;

/// The cluster directives, as configured.
#[derive(Clone, Debug, Default)]
pub struct ClusterConf {
    pub me: Option<String>,
    /// (id, host:port), in configuration order.
    pub peers: Vec<(String, String)>,
    /// id -> `upstream=` name: what `$rcdn_upstream` names for that peer
    /// (an `upstream {}` block with keepalive) instead of its address.
    pub upstreams: HashMap<String, String>,
    /// What `$rcdn_upstream` is when this node loads a key itself.
    pub origin: Option<String>,
    pub timeout_ms: Option<u64>,
    pub down_ms: Option<u64>,
    pub drain: Option<bool>,
    /// Address of the `rcdn_peers` shared zone (`peer_shm`), 0 if none.
    pub zone: usize,
    /// `rcdn_peer_secret`: peer requests must carry it.
    pub secret: Option<String>,
}

const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_DOWN_MS: u64 = 10_000;

impl ClusterConf {
    pub fn enabled(&self) -> bool {
        !self.peers.is_empty()
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }

    pub fn down_ms(&self) -> u64 {
        self.down_ms.unwrap_or(DEFAULT_DOWN_MS)
    }

    pub fn draining(&self) -> bool {
        self.drain.unwrap_or(false)
    }

    /// The checks that need every directive: run at the end of `http{}`.
    pub fn check(&self) -> Result<(), (&'static str, String, String)> {
        if !self.enabled() {
            if let Some(me) = &self.me {
                return Err((
                    "rcdn_node",
                    me.clone(),
                    "no rcdn_peer lists the cluster".into(),
                ));
            }
            return Ok(());
        }
        let Some(me) = &self.me else {
            let first = self.peers[0].0.clone();
            return Err((
                "rcdn_peer",
                first,
                "rcdn_node (this node's id) is not set".into(),
            ));
        };
        if !self.peers.iter().any(|(id, _)| id == me) {
            return Err((
                "rcdn_node",
                me.clone(),
                "this node is not in the rcdn_peer list".into(),
            ));
        }
        if self.origin.is_none() {
            return Err((
                "rcdn_peer",
                self.peers[0].0.clone(),
                "rcdn_origin is required with rcdn_peer (what $rcdn_upstream is for keys this node loads)".into(),
            ));
        }
        Ring::new(self.peers.iter().map(|(id, _)| id.clone()), VNODES)
            .map(|_| ())
            .map_err(|e| ("rcdn_peer", String::new(), e.to_string()))
    }
}

/// Checks `host:port` (`[v6]:port` too): a non-empty host without spaces
/// or URL characters, and a port 1..65535.
pub fn check_addr(a: &str) -> Result<(), &'static str> {
    let (host, port) = match a.strip_prefix('[') {
        Some(v6) => {
            let (h, rest) = v6.split_once(']').ok_or("unclosed [ in an IPv6 address")?;
            (h, rest.strip_prefix(':').ok_or("expected host:port")?)
        }
        None => a.rsplit_once(':').ok_or("expected host:port")?,
    };
    if host.is_empty()
        || host
            .bytes()
            .any(|c| c.is_ascii_whitespace() || b"/?#@\"'".contains(&c))
    {
        return Err("bad host (expected host:port, e.g. 10.0.0.2:8080)");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("bad port (expected 1..65535)"),
    }
}
