//! Slices across a cluster (issue 6, item 2): three nodes slicing by
//! 4 MiB and one origin logging each Range with the node that asked. A
//! 256 MiB object requested from one node is filled slice by slice by the
//! slices' owners (each range once, several nodes), then served
//! byte-correct by every node without the origin; a Range across a slice
//! boundary works on a node that never saw the object. Owners refuse slice
//! keys that do not match the request, and never store a slice whose
//! identity differs from its key's.

mod common;
use cdncore::fill::{ring::DEFAULT_VNODES, Ring};
use common::*;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const TOTAL: u64 = 256 * MIB;
const SLICE: u64 = 4 * MIB;
const IDS: [&str; 3] = ["a", "b", "c"];

/// The object's 8-byte word at word index `w` (splitmix64): every offset
/// has its own bytes, so a misplaced slice is caught.
fn word(w: u64) -> [u8; 8] {
    let mut z = w.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Bytes `[at, at + out.len())` of the object.
fn expected(at: u64, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        let o = at + k as u64;
        *b = word(o / 8)[(o % 8) as usize];
    }
}

/// Writes the first `total` bytes of the object to `path` in 1 MiB pieces.
fn write_object(path: &std::path::Path, total: u64) {
    let mut f = std::fs::File::create(path).expect("object file");
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..total / MIB {
        expected(i * MIB, &mut buf);
        f.write_all(&buf).expect("write object");
    }
}

/// The origin, with `/huge.bin` of `total` bytes.
fn origin(total: u64) -> Nginx {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("www")).expect("www");
    write_object(&dir.path().join("www/huge.bin"), total);
    backdate_tree(&dir.path().join("www"));
    let conf = format!(
        r#"daemon off; master_process on; worker_processes 1;
error_log logs/error.log info; pid logs/nginx.pid;
events {{ worker_connections 512; }}
http {{
  log_format o '$request_method $request_uri via=$http_x_via range=$http_range';
  access_log logs/origin.log o;
  sendfile on;
  server {{ listen 127.0.0.1:{port}; root www; location / {{ }} }}
}}
"#
    );
    Nginx::launch(dir, &conf, port)
}

struct Node {
    id: &'static str,
    port: u16,
    store: tempfile::TempDir,
}

fn node_conf(n: &Node, peers: &[(&str, u16)], origin_port: u16) -> String {
    let tokens = format!(
        "mem=64m shards=4 max_object=8m default_ttl=10m tier={0}/shm,size=512m,region=32m,slice=8m ram={0}/ram",
        n.store.path().display()
    );
    let peers: String = peers
        .iter()
        .map(|(id, p)| format!("rcdn_peer {id} 127.0.0.1:{p};\n  "))
        .collect();
    format!(
        r#"load_module {so};
daemon off; master_process on; worker_processes 2;
error_log logs/error.log info; pid logs/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  log_format p '$pid $request_uri $status $rcdn_cache_status src=$rcdn_source hop=$http_x_rcdn_hop range=$http_range';
  access_log logs/access.log p;
  sendfile on;
  rcdn_store {tokens};
  rcdn_node {id};
  {peers}rcdn_origin 127.0.0.1:{origin_port};
  rcdn_peer_timeout 20s;
  rcdn_peer_down 2s;
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{
      rcdn_cache on;
      rcdn_slice 4m;
      rcdn_cache_lock_timeout 30s;
      proxy_pass http://$rcdn_upstream;
      proxy_set_header Host $host;
      proxy_set_header X-Via {id};
      add_header X-Cache $rcdn_cache_status always;
    }}
  }}
}}
"#,
        so = module_so().display(),
        id = n.id,
        port = n.port,
    )
}

/// What a streamed download got: status, headers (lower-case names), body
/// length, and the first offset whose byte was wrong.
struct Got {
    status: u16,
    headers: HashMap<String, String>,
    len: u64,
    bad_at: Option<u64>,
}

/// GETs `path` and compares the body with the object from byte `from` as
/// it arrives (never holding it whole).
fn download(port: u16, path: &str, extra: &[(&str, &str)], from: u64) -> Got {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let rest = loop {
        let n = s.read(&mut buf).expect("read header");
        assert!(n > 0, "connection closed before the header end");
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.split_off(p + 4);
            break rest;
        }
        assert!(head.len() < 64 * 1024, "header too long");
    };
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut got = Got {
        status,
        headers,
        len: 0,
        bad_at: None,
    };
    let mut want = vec![0u8; buf.len()];
    let mut check = |got: &mut Got, data: &[u8]| {
        expected(from + got.len, &mut want[..data.len()]);
        if got.bad_at.is_none() && data != &want[..data.len()] {
            let k = data
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            got.bad_at = Some(from + got.len + k as u64);
        }
        got.len += data.len() as u64;
    };
    for piece in rest.chunks(buf.len()) {
        check(&mut got, piece);
    }
    loop {
        let n = s.read(&mut buf).expect("read body");
        if n == 0 {
            break;
        }
        check(&mut got, &buf[..n]);
    }
    got
}

/// The identity of the origin's version, as the nodes compute it (FNV-1a
/// over ETag, Last-Modified and the length, each followed by a separator).
fn ident(etag: &str, lm: &str, total: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in [etag.as_bytes(), lm.as_bytes(), total.to_string().as_bytes()] {
        for &b in p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn slice_key(ident: u64, i: u64) -> String {
    format!("localhost/huge.bin slice={SLICE}:{ident:016x}:{i}")
}

/// The origin's log lines for the object: (range, via).
fn origin_ranges(origin: &Nginx) -> Vec<(String, String)> {
    origin_hits(origin, "/huge.bin")
        .iter()
        .filter(|l| l.starts_with("GET "))
        .filter_map(|l| {
            let via = l.split(' ').find_map(|f| f.strip_prefix("via="))?;
            let range = l.rsplit("range=").next()?;
            Some((range.to_string(), via.to_string()))
        })
        .collect()
}

fn range_of(i: u64) -> String {
    let end = ((i + 1) * SLICE).min(TOTAL) - 1;
    format!("bytes={}-{end}", i * SLICE)
}

/// Three nodes a, b, c in front of `origin`.
fn cluster(origin: &Nginx) -> (Vec<Node>, Vec<Nginx>) {
    let specs: Vec<Node> = IDS
        .iter()
        .map(|id| Node {
            id,
            port: free_port(),
            store: store_dir(),
        })
        .collect();
    let peers: Vec<(&str, u16)> = specs.iter().map(|n| (n.id, n.port)).collect();
    let nodes = specs
        .iter()
        .map(|n| {
            let conf = node_conf(n, &peers, origin.port);
            Nginx::launch(tempfile::tempdir().expect("tempdir"), &conf, n.port)
        })
        .collect();
    (specs, nodes)
}

fn assert_whole(g: &Got, node: &str) {
    assert_eq!(g.status, 200, "whole object from {node}");
    assert_eq!(g.len, TOTAL, "length from {node}");
    assert_eq!(g.bad_at, None, "first wrong byte from {node}");
}

#[test]
fn a_256_mib_object_is_filled_by_the_slice_owners_and_served_everywhere() {
    let t0 = Instant::now();
    let origin = origin(TOTAL);
    let (specs, nodes) = cluster(&origin);
    let head = request(origin.port, "HEAD", "/huge.bin", &[]);
    let (etag, lm) = (
        head.header("etag").expect("etag").to_string(),
        head.header("last-modified").expect("lm").to_string(),
    );
    let id = ident(&etag, &lm, TOTAL);
    let ring = Ring::new(IDS.iter().map(|s| s.to_string()), DEFAULT_VNODES).expect("ring");
    let count = TOTAL / SLICE;

    // One client on a: every slice fetched once, by the slice's owner (the
    // first one by the owner of the object's base key, which learns the
    // manifest).
    let a = download(specs[0].port, "/huge.bin", &[], 0);
    assert_whole(&a, "a");
    let t_fill = t0.elapsed();
    let log = origin_ranges(&origin);
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for (range, via) in &log {
        seen.entry(range.clone()).or_default().push(via.clone());
    }
    let want: HashSet<String> = (0..count).map(range_of).collect();
    let got: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(got, want, "the origin saw exactly the slice ranges");
    for (range, vias) in &seen {
        assert_eq!(vias.len(), 1, "{range} fetched once: {vias:?}");
    }
    let base_owner = ring.owner_of(b"localhost/huge.bin").expect("owner");
    for i in 0..count {
        let owner = if i == 0 {
            base_owner.clone()
        } else {
            ring.owner_of(slice_key(id, i).as_bytes())
                .expect("owner")
                .clone()
        };
        assert_eq!(
            seen[&range_of(i)],
            vec![owner],
            "slice {i} fetched by its owner"
        );
    }
    let fetchers: HashSet<&String> = seen.values().flatten().collect();
    assert!(fetchers.len() >= 2, "slices fetched by {fetchers:?}");

    // A range across the boundary of slices 9 and 10 on c (which has not
    // seen the object), then the whole object from b and c: no origin.
    let (from, to) = (10 * SLICE - 1000, 10 * SLICE + 5000);
    let r = download(
        specs[2].port,
        "/huge.bin",
        &[("Range", &format!("bytes={from}-{}", to - 1))],
        from,
    );
    assert_eq!(r.status, 206, "range on c");
    assert_eq!(r.len, to - from, "range length");
    assert_eq!(r.bad_at, None, "range bytes");
    assert_eq!(
        r.headers.get("content-range").map(String::as_str),
        Some(format!("bytes {from}-{}/{TOTAL}", to - 1).as_str())
    );
    for (k, n) in specs.iter().enumerate().skip(1) {
        assert_whole(&download(n.port, "/huge.bin", &[], 0), IDS[k]);
    }
    assert_whole(&download(specs[0].port, "/huge.bin", &[], 0), "a again");
    let after = origin_ranges(&origin);
    assert_eq!(
        after.len(),
        count as usize,
        "no origin request after the first download: {:?}\nnode logs:\n{}",
        &after[count as usize..],
        nodes
            .iter()
            .map(|n| n.log("logs/access.log") + &n.error_log())
            .collect::<Vec<_>>()
            .join("\n====\n")
    );
    for n in &nodes {
        n.check_log();
    }
    eprintln!(
        "256 MiB by {count} slices: first download (filled by {} nodes) {:.1}s, all {:.1}s",
        fetchers.len(),
        t_fill.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// A peer request naming a slice: refused unless its key, Range and
/// manifest agree; a slice whose identity is not the key's is never stored.
#[test]
fn an_owner_checks_slice_keys() {
    let origin = origin(TOTAL);
    let n = Node {
        id: "a",
        port: free_port(),
        store: store_dir(),
    };
    let conf = node_conf(&n, &[("a", n.port)], origin.port);
    let node = Nginx::launch(tempfile::tempdir().expect("tempdir"), &conf, n.port);
    let head = request(origin.port, "HEAD", "/huge.bin", &[]);
    let id = ident(
        head.header("etag").expect("etag"),
        head.header("last-modified").expect("lm"),
        TOTAL,
    );
    let manifest = format!("{SLICE} {TOTAL} {id:016x}");
    let ask = |key: &str, range: &str, manifest: &str| {
        let k = cdncore::fill::peer::encode_key(key.as_bytes());
        request(
            n.port,
            "GET",
            "/huge.bin",
            &[
                ("X-Rcdn-Hop", "z"),
                ("X-Rcdn-Key", &k),
                ("Range", range),
                ("X-Rcdn-Slice", manifest),
            ],
        )
    };
    let good = slice_key(id, 3);
    let huge = |suffix: &str| format!("localhost/huge.bin slice={suffix}");
    let cases: Vec<(String, String, String, &str)> = vec![
        (
            good.clone(),
            range_of(4),
            manifest.clone(),
            "range of another slice",
        ),
        (
            good.clone(),
            "bytes=0-10".into(),
            manifest.clone(),
            "a short range",
        ),
        (
            good.clone(),
            range_of(3),
            format!("{MIB} {TOTAL} {id:016x}"),
            "another size",
        ),
        (good.clone(), range_of(3), String::new(), "no manifest"),
        (
            "localhost/other.bin slice=4194304:0000000000000001:3".into(),
            range_of(3),
            manifest.clone(),
            "another URL",
        ),
        (
            huge(&format!("{SLICE}:{id:016x}:64")),
            range_of(64),
            manifest.clone(),
            "past the end",
        ),
        (
            huge(&format!("{SLICE}:{id:016x}:3x")),
            range_of(3),
            manifest.clone(),
            "garbage index",
        ),
        (
            huge(&format!("{SLICE}:{id:x}:03")),
            range_of(3),
            manifest.clone(),
            "non-canonical index",
        ),
    ];
    for (key, range, m, what) in &cases {
        let r = ask(key, range, m);
        assert_eq!(r.status, 400, "{what}");
        assert_eq!(r.header("x-rcdn-error"), Some("key mismatch"), "{what}");
    }
    assert!(
        origin_ranges(&origin).is_empty(),
        "refusals reach no origin"
    );

    // A well-formed slice key: the slice, as a 206 with the owner's
    // metadata; the second time from the cache.
    for round in 0..2 {
        let r = ask(&good, &range_of(3), &manifest);
        assert_eq!(r.status, 206, "round {round}");
        assert!(r.header("x-rcdn-meta").is_some(), "round {round}: metadata");
        let mut want = vec![0u8; SLICE as usize];
        expected(3 * SLICE, &mut want);
        assert!(r.body == want, "round {round}: slice bytes");
    }
    assert_eq!(origin_ranges(&origin).len(), 1, "the slice filled once");

    // An identity the origin's version does not have: the owner fills, sees
    // the mismatch and stores nothing under that key.
    let fake = id ^ 1;
    let fake_key = slice_key(fake, 5);
    let fake_m = format!("{SLICE} {TOTAL} {fake:016x}");
    for _ in 0..2 {
        let r = ask(&fake_key, &range_of(5), &fake_m);
        assert!(r.header("x-rcdn-meta").is_none(), "not served as stored");
    }
    let fives = origin_ranges(&origin)
        .into_iter()
        .filter(|(r, _)| *r == range_of(5))
        .count();
    assert!(
        fives >= 2,
        "a wrong identity is never a hit ({fives} fetches)"
    );
    node.check_log();
}

/// A dead owner: its slices are filled by the next live node on the ring,
/// each range still once, and the download is whole and byte-correct.
#[test]
fn slices_of_a_dead_owner_are_filled_by_the_next_node() {
    let total = 48 * MIB;
    let origin = origin(total);
    let (specs, mut nodes) = cluster(&origin);
    nodes[1].stop(); // b
    let g = download(specs[0].port, "/huge.bin", &[], 0);
    assert_eq!(
        (g.status, g.len, g.bad_at),
        (200, total, None),
        "download from a"
    );
    let log = origin_ranges(&origin);
    let ranges: HashSet<&String> = log.iter().map(|(r, _)| r).collect();
    assert_eq!(
        ranges.len(),
        (total / SLICE) as usize,
        "every slice fetched"
    );
    assert_eq!(log.len(), ranges.len(), "each once: {log:?}");
    // Each by its owner among the live nodes (the successor of b's keys).
    let head = request(origin.port, "HEAD", "/huge.bin", &[]);
    let id = ident(
        head.header("etag").expect("etag"),
        head.header("last-modified").expect("lm"),
        total,
    );
    let live = Ring::new(["a".to_string(), "c".to_string()], DEFAULT_VNODES).expect("ring");
    for (range, via) in &log {
        let i = (0..total / SLICE)
            .find(|&i| range_of(i) == *range)
            .expect("a slice range");
        let key = match i {
            0 => "localhost/huge.bin".to_string(),
            _ => slice_key(id, i),
        };
        assert_eq!(Some(via), live.owner_of(key.as_bytes()), "slice {i}");
    }
    assert!(
        nodes[0].error_log().contains("marked down"),
        "a marked b down"
    );
    nodes[0].check_log();
    nodes[2].check_log();
}
