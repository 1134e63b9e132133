//! Request scheduler (SNDA download CDN, MiniCDN's manager): map a client
//! address to a zone, and the zone to ordered levels of nodes; answer with the
//! best node: the first healthy, not overloaded node of the zone's levels,
//! then any healthy node, then any node, at random among equals. With no
//! nodes at all the caller serves the request itself.
//!
//! The table is a text file, one statement per line, `#` comments:
//!
//! ```text
//! node   a   http://127.0.0.1:8081          # id, base URL for redirects
//! node   b   http://127.0.0.1:8082
//! zone   north  10.0.0.0/8  192.168.1.10-192.168.1.99  2001:db8::/32
//! levels north  a,b  c                      # level 1: a or b; level 2: c
//! ```
//!
//! Address ranges live in a sorted, non-overlapping interval list (IPv4 as
//! IPv4-mapped IPv6), so a lookup is one binary search: O(log n).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

use super::PolicyError;

/// A node clients can be sent to.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: String,
    pub url: String,
    pub healthy: bool,
    /// Load reported by the node's status endpoint, 0.0 = idle, 1.0 = full.
    pub load: f64,
}

/// Load at or above which a node counts as overloaded.
pub const OVERLOADED: f64 = 0.9;

#[derive(Clone, Debug)]
struct Zone {
    name: String,
    levels: Vec<Vec<usize>>,
}

/// The scheduler's tables.
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    nodes: Vec<Node>,
    zones: Vec<Zone>,
    /// (first, last, zone), sorted by first, non-overlapping.
    ranges: Vec<(u128, u128, usize)>,
}

fn addr_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn err(line: usize, reason: impl Into<String>) -> PolicyError {
    PolicyError::new(format!("scheduler line {line}"), reason)
}

/// `10.0.0.0/8`, `2001:db8::/32`, `1.2.3.4`, or `1.2.3.4-1.2.3.99`.
fn parse_range(s: &str, line: usize) -> Result<(u128, u128), PolicyError> {
    if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a
            .parse()
            .map_err(|_| err(line, format!("bad address {a:?}")))?;
        let b: IpAddr = b
            .parse()
            .map_err(|_| err(line, format!("bad address {b:?}")))?;
        if a.is_ipv4() != b.is_ipv4() || addr_key(a) > addr_key(b) {
            return Err(err(line, format!("bad range {s:?}")));
        }
        return Ok((addr_key(a), addr_key(b)));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((addr_key(ip), addr_key(ip)));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| err(line, format!("bad CIDR or range {s:?}")))?;
    let (first, last) = (net.network(), net.broadcast());
    Ok((addr_key(first), addr_key(last)))
}

impl Scheduler {
    pub fn parse(text: &str) -> Result<Scheduler, PolicyError> {
        let mut s = Scheduler::default();
        let mut level_lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let words: Vec<&str> = raw
                .split_once('#')
                .map_or(raw, |(a, _)| a)
                .split_whitespace()
                .collect();
            match words.as_slice() {
                [] => {}
                ["node", id, url] => s.add_node(id, url, line)?,
                ["zone", name, ranges @ ..] if !ranges.is_empty() => {
                    s.add_zone(name, ranges, line)?
                }
                ["levels", zone, levels @ ..] if !levels.is_empty() => {
                    level_lines.push((line, zone.to_string(), levels.iter().map(|l| l.to_string()).collect::<Vec<_>>()))
                }
                [other, ..] => {
                    return Err(err(line, format!("cannot read {other:?} (expected node, zone or levels with their arguments)")))
                }
            }
        }
        for (line, zone, levels) in level_lines {
            s.set_levels(&zone, &levels, line)?;
        }
        s.check_overlaps()?;
        Ok(s)
    }

    fn add_node(&mut self, id: &str, url: &str, line: usize) -> Result<(), PolicyError> {
        if self.nodes.iter().any(|n| n.id == id) {
            return Err(err(line, format!("node {id:?} defined twice")));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err(
                line,
                format!("node {id:?}: URL {url:?} must start with http:// or https://"),
            ));
        }
        self.nodes.push(Node {
            id: id.to_string(),
            url: url.trim_end_matches('/').to_string(),
            healthy: true,
            load: 0.0,
        });
        Ok(())
    }

    fn zone_index(&mut self, name: &str) -> usize {
        match self.zones.iter().position(|z| z.name == name) {
            Some(i) => i,
            None => {
                self.zones.push(Zone {
                    name: name.to_string(),
                    levels: Vec::new(),
                });
                self.zones.len() - 1
            }
        }
    }

    fn add_zone(&mut self, name: &str, ranges: &[&str], line: usize) -> Result<(), PolicyError> {
        let z = self.zone_index(name);
        for r in ranges {
            let (a, b) = parse_range(r, line)?;
            self.ranges.push((a, b, z));
        }
        Ok(())
    }

    fn set_levels(
        &mut self,
        zone: &str,
        levels: &[String],
        line: usize,
    ) -> Result<(), PolicyError> {
        let z = self.zone_index(zone);
        if !self.zones[z].levels.is_empty() {
            return Err(err(line, format!("levels of zone {zone:?} given twice")));
        }
        let mut parsed = Vec::new();
        for level in levels {
            let ids = level.split(',').filter(|s| !s.is_empty());
            let idx: Result<Vec<usize>, PolicyError> = ids
                .map(|id| {
                    self.nodes
                        .iter()
                        .position(|n| n.id == id)
                        .ok_or_else(|| err(line, format!("unknown node {id:?}")))
                })
                .collect();
            parsed.push(idx?);
        }
        self.zones[z].levels = parsed;
        Ok(())
    }

    fn check_overlaps(&mut self) -> Result<(), PolicyError> {
        self.ranges.sort_unstable();
        for w in self.ranges.windows(2) {
            if w[1].0 <= w[0].1 {
                let show = |k: u128| Ipv6Addr::from(k).to_canonical().to_string();
                return Err(PolicyError::new(
                    "scheduler",
                    format!(
                        "address ranges overlap at {} (zones {:?} and {:?})",
                        show(w[1].0),
                        self.zones[w[0].2].name,
                        self.zones[w[1].2].name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The zone of a client address.
    pub fn zone_of(&self, ip: IpAddr) -> Option<&str> {
        let k = addr_key(ip);
        let i = self.ranges.partition_point(|r| r.0 <= k);
        let (_, last, z) = *self.ranges.get(i.checked_sub(1)?)?;
        (k <= last).then(|| self.zones[z].name.as_str())
    }

    /// Records a node's health and load (from its status endpoint).
    pub fn set_state(&mut self, id: &str, healthy: bool, load: f64) -> bool {
        match self.nodes.iter_mut().find(|n| n.id == id) {
            Some(n) => {
                n.healthy = healthy;
                n.load = if load.is_finite() {
                    load.clamp(0.0, 1.0)
                } else {
                    1.0
                };
                true
            }
            None => false,
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node for a client, `rand` picking among equals; `None` when there
    /// are no nodes (serve locally).
    pub fn pick(&self, ip: IpAddr, rand: u64) -> Option<&Node> {
        let choose = |c: &[usize]| (!c.is_empty()).then(|| &self.nodes[c[rand as usize % c.len()]]);
        let good = |&i: &usize| self.nodes[i].healthy && self.nodes[i].load < OVERLOADED;
        let zone = self
            .zone_of(ip)
            .and_then(|name| self.zones.iter().find(|z| z.name == name));
        for level in zone.map_or(&[][..], |z| &z.levels[..]) {
            let ok: Vec<usize> = level.iter().copied().filter(good).collect();
            if let Some(n) = choose(&ok) {
                return Some(n);
            }
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let healthy: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].healthy)
            .collect();
        choose(&healthy).or_else(|| choose(&all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "
        node a http://127.0.0.1:8081/
        node b http://127.0.0.1:8082
        node c http://127.0.0.1:8083
        node d http://127.0.0.1:8084
        zone north 10.0.0.0/8 192.168.1.10-192.168.1.99   # comment
        zone south 172.16.0.0/12 2001:db8::/32
        levels north a,b c
        levels south d
    ";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn zones_by_address() {
        let s = Scheduler::parse(TABLE).unwrap();
        assert_eq!(s.zone_of(ip("10.1.2.3")), Some("north"));
        assert_eq!(s.zone_of(ip("192.168.1.10")), Some("north"));
        assert_eq!(s.zone_of(ip("192.168.1.99")), Some("north"));
        assert_eq!(s.zone_of(ip("192.168.1.100")), None);
        assert_eq!(s.zone_of(ip("172.31.255.255")), Some("south"));
        assert_eq!(s.zone_of(ip("2001:db8::1")), Some("south"));
        assert_eq!(s.zone_of(ip("2001:db9::1")), None);
        assert_eq!(s.zone_of(ip("9.255.255.255")), None);
        // An IPv4 address is not confused with the IPv6 address of the same bits.
        assert_eq!(s.zone_of(ip("::a01:203")), None);
    }

    #[test]
    fn picks_zone_levels_then_healthy_then_any() {
        let mut s = Scheduler::parse(TABLE).unwrap();
        let client = ip("10.9.9.9");
        let picks: Vec<&str> = (0..10)
            .map(|r| s.pick(client, r).unwrap().id.as_str())
            .collect();
        assert!(
            picks.contains(&"a") && picks.contains(&"b"),
            "random among equals"
        );
        assert!(picks.iter().all(|p| *p == "a" || *p == "b"));
        assert_eq!(s.pick(client, 0).unwrap().url, "http://127.0.0.1:8081");
        // Level 1 unhealthy or overloaded -> level 2.
        s.set_state("a", false, 0.0);
        s.set_state("b", true, 0.95);
        assert_eq!(s.pick(client, 0).unwrap().id, "c");
        // Zone exhausted -> any healthy node.
        s.set_state("c", false, 0.0);
        for r in 0..10 {
            let id = &s.pick(client, r).unwrap().id;
            assert!(id == "b" || id == "d", "only healthy nodes: {id}");
        }
        // Unknown zone -> any healthy node.
        assert!(s.pick(ip("8.8.8.8"), 3).unwrap().healthy);
        // Nothing healthy -> any node.
        for id in ["a", "b", "c", "d"] {
            s.set_state(id, false, 0.0);
        }
        assert!(s.pick(client, 0).is_some());
        assert!(!s.set_state("zz", true, 0.0));
    }

    #[test]
    fn no_nodes_means_serve_locally() {
        let s = Scheduler::parse("# empty table\n").unwrap();
        assert!(s.pick(ip("10.0.0.1"), 0).is_none());
    }

    #[test]
    fn bad_tables_are_clear_errors() {
        let e = |t: &str| Scheduler::parse(t).unwrap_err().to_string();
        assert!(e("zone x 10.0.0.0/33").contains("line 1: bad CIDR"));
        assert!(e("zone x 10.0.0.9-10.0.0.1").contains("bad range"));
        assert!(e("zone x 10.0.0.1-::1").contains("bad range"));
        assert!(e("zone x 1.2.3.4-1.2.3.x").contains("bad address"));
        assert!(e("zone x 10.0.0.0/8\nzone y 10.1.0.0/16").contains("overlap"));
        assert!(e("node a ftp://x").contains("http://"));
        assert!(e("node a http://x\nnode a http://y").contains("twice"));
        assert!(e("levels x a").contains("unknown node \"a\""));
        assert!(e("frobnicate 1").contains("line 1: cannot read \"frobnicate\""));
        assert!(e("zone x").contains("cannot read"));
    }
}
