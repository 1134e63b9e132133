//! A cluster of nodes (issue 6): which node fills a key, by the engine's
//! consistent-hash ring over node ids (`cdncore::fill::Ring`).
//!
//! Directives (http): `rcdn_node <id>`, `rcdn_peer <id> <host:port>`
//! (repeated, this node included), `rcdn_origin <upstream | host:port>`,
//! `rcdn_peer_timeout <time>`, `rcdn_peer_down <time>`, `rcdn_drain on|off`.
//! A reload changes them (new workers build a new ring).
//!
//! Each worker keeps its own view of the ring; the peers found down, and
//! until when, are shared by the node's workers (`peer_shm`). A down peer's keys go to their next live node on the ring
//! (every node that saw it down computes the same successor), so a dead
//! node costs the origin one fetch per key, not one per asking node.

use crate::conf::{args, bad, lossy, parse_time, MainConf};
use crate::{guard, peer_shm};
use cdncore::fill::{NodeId, Ring};
use core::ffi::{c_char, c_void};
use nginx_sys::*;
use ngx::core::NGX_CONF_OK;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

/// Points per node on the ring (the engine's default).
const VNODES: u32 = cdncore::fill::ring::DEFAULT_VNODES;

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

pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_DOWN_MS: u64 = 10_000;

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

fn main_conf<'a>(conf: *mut c_void) -> &'a mut ClusterConf {
    // SAFETY: every setter here is registered with NGX_HTTP_MAIN_CONF_OFFSET,
    // so conf is our MainConf, alive for the whole configuration.
    unsafe { &mut (*conf.cast::<MainConf>()).cluster }
}

/// `rcdn_node <id>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_node(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_node", || {
        let cc = main_conf(conf);
        if cc.me.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let id = lossy(&unsafe { args(cf) }[0]);
        if let Err(why) = check_id(&id) {
            return bad(cf, "rcdn_node", &id, why);
        }
        cc.me = Some(id);
        NGX_CONF_OK
    })
}

fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|c| c.is_ascii_graphic()) {
        return Err("a node id is 1..64 printable characters without spaces");
    }
    Ok(())
}

/// `rcdn_peer <id> <host:port> [upstream=<name>];` (repeated; the ring
/// includes this node).
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_peer(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_peer", || {
        let cc = main_conf(conf);
        // SAFETY: called by nginx while parsing this directive.
        let a = unsafe { args(cf) };
        let (id, addr) = (lossy(&a[0]), lossy(&a[1]));
        if let Err(why) = check_id(&id) {
            return bad(cf, "rcdn_peer", &id, why);
        }
        if cc.peers.iter().any(|(p, _)| *p == id) {
            return bad(cf, "rcdn_peer", &id, "this peer id appears twice");
        }
        if let Err(why) = check_addr(&addr) {
            return bad(cf, "rcdn_peer", &addr, why);
        }
        if cc.peers.iter().any(|(_, a)| *a == addr) {
            return bad(cf, "rcdn_peer", &addr, "two peers have this address");
        }
        if let Some(extra) = a.get(2).map(lossy) {
            match extra.strip_prefix("upstream=") {
                Some(u) if !u.is_empty() && u.bytes().all(|c| c.is_ascii_graphic()) => {
                    cc.upstreams.insert(id.clone(), u.to_string());
                }
                _ => {
                    return bad(
                        cf,
                        "rcdn_peer",
                        &extra,
                        "expected upstream=<name of an upstream block>",
                    )
                }
            }
        }
        cc.peers.push((id, addr));
        NGX_CONF_OK
    })
}

/// `rcdn_origin <upstream name | host[:port]>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_origin(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_origin", || {
        let cc = main_conf(conf);
        if cc.origin.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = lossy(&unsafe { args(cf) }[0]);
        if v.is_empty() || v.contains("://") || v.bytes().any(|c| !c.is_ascii_graphic()) {
            return bad(
                cf,
                "rcdn_origin",
                &v,
                "expected an upstream name or host:port (no scheme)",
            );
        }
        cc.origin = Some(v);
        NGX_CONF_OK
    })
}

/// `rcdn_peer_timeout <time>;` and `rcdn_peer_down <time>;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_time(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cmd is the command being parsed.
    let name = lossy(unsafe { &(*cmd).name });
    guard::conf(cf, &name.clone(), || {
        let cc = main_conf(conf);
        let slot = if name == "rcdn_peer_timeout" {
            &mut cc.timeout_ms
        } else {
            &mut cc.down_ms
        };
        if slot.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        match parse_time(v.as_bytes()) {
            Some(ms) if (1..=86_400_000).contains(&ms) => {
                *slot = Some(ms);
                NGX_CONF_OK
            }
            _ => bad(
                cf,
                &name,
                &lossy(&v),
                "expected a time from 1ms to 1d, such as 2s or 500ms",
            ),
        }
    })
}

/// `rcdn_peer_secret <secret>;`: only requests carrying it in
/// `X-Rcdn-Peer-Secret` are peer requests.
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_secret(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_peer_secret", || {
        let cc = main_conf(conf);
        if cc.secret.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = lossy(&unsafe { args(cf) }[0]);
        if v.is_empty() || !v.bytes().all(|c| c.is_ascii_graphic()) {
            return bad(
                cf,
                "rcdn_peer_secret",
                &v,
                "the secret is printable characters without spaces",
            );
        }
        cc.secret = Some(v);
        NGX_CONF_OK
    })
}

/// `rcdn_drain on | off;`
///
/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn set_drain(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard::conf(cf, "rcdn_drain", || {
        let cc = main_conf(conf);
        if cc.drain.is_some() {
            return c"is duplicate".as_ptr().cast_mut();
        }
        // SAFETY: called by nginx while parsing this directive.
        let v = unsafe { args(cf) }[0];
        cc.drain = Some(match v.as_bytes() {
            b"on" => true,
            b"off" => false,
            _ => return bad(cf, "rcdn_drain", &lossy(&v), "expected on or off"),
        });
        NGX_CONF_OK
    })
}

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
            shared: peer_shm::table(cc.zone),
            local: PeerCounters::default(),
        })
    }

    /// Reads the down marks at `now`; rebuilds the live ring on a change.
    fn refresh(&mut self, now: u64) {
        let mut down = HashMap::new();
        for id in self.full.nodes() {
            let until = match self.shared {
                Some(t) => peer_shm::down_until(t, id),
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
            Some(t) => peer_shm::add(t, which),
            None => match which {
                peer_shm::PEER_FILLS => self.local.peer_fills += 1,
                peer_shm::PEER_FAILURES => self.local.peer_failures += 1,
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
        v.count(peer_shm::PEER_FILLS);
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
        v.count(peer_shm::PEER_FAILURES);
        if id == v.me {
            return;
        }
        let fresh = match v.shared {
            Some(t) => peer_shm::set_down(t, id, now, until),
            None => v
                .down
                .insert(id.to_string(), until)
                .is_none_or(|u| u <= now),
        };
        if fresh {
            v.count(peer_shm::MARKED_DOWN);
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
            peer_fills: peer_shm::get(t, peer_shm::PEER_FILLS),
            peer_failures: peer_shm::get(t, peer_shm::PEER_FAILURES),
            marked_down: peer_shm::get(t, peer_shm::MARKED_DOWN),
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
