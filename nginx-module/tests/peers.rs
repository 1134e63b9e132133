//! A cluster of nodes (issue 6): three nginx nodes (2 workers, each with its
//! own block-tier store) and one origin, all on loopback. Each key is filled
//! by its owner on the ring, so the origin sees it once; a killed node is
//! survived; a returning node gets its keys back; a reload moves ~1/N of
//! the keys; no loops between nodes that disagree; a client cannot choose
//! the key an owner stores under; purges fan out; a slow peer times out; a
//! draining node sends its keys elsewhere and finishes its transfers.

mod common;
use cdncore::fill::{ring::DEFAULT_VNODES, Ring};
use common::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OBJECTS: usize = 1450;

fn obj_path(i: usize) -> String {
    format!("/obj/{i}.bin")
}

fn obj_body(i: usize) -> Vec<u8> {
    pattern(300 + (i * 37) % 1500, i as u64 + 1)
}

/// The origin: every request logged as `METHOD URI via=<node> hop=<hop>`.
fn origin(n: usize) -> Nginx {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("obj")).expect("www");
    for i in 0..n {
        std::fs::write(www.join(format!("obj/{i}.bin")), obj_body(i)).expect("obj");
    }
    std::fs::create_dir_all(www.join("tagged")).expect("tagged");
    std::fs::create_dir_all(www.join("slow")).expect("slow");
    for i in 0..40 {
        std::fs::write(www.join(format!("tagged/{i}.txt")), format!("tagged {i}")).expect("t");
    }
    std::fs::write(www.join("slow/big.bin"), pattern(400_000, 9)).expect("slow");
    std::fs::create_dir_all(www.join("big")).expect("big");
    for i in 0..6 {
        std::fs::write(www.join(format!("big/{i}.bin")), pattern(3 << 20, 100 + i)).expect("big");
    }
    let conf = format!(
        r#"daemon off; master_process on; worker_processes 1;
error_log logs/error.log info; pid logs/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  log_format o '$request_method $request_uri via=$http_x_via hop=$http_x_rcdn_hop';
  access_log logs/origin.log o;
  server {{
    listen 127.0.0.1:{port};
    root www;
    location / {{ }}
    location /tagged/ {{ add_header Surrogate-Key "news sport"; add_header X-Rcdn-Tags "42"; add_header Cache-Control "max-age=300"; }}
    location /slow/ {{ limit_rate 250k; }}
  }}
}}
"#
    );
    backdate_tree(&www);
    Nginx::launch(dir, &conf, port)
}

/// One node's identity: id, port, its store (kept across restarts).
struct Spec {
    id: String,
    port: u16,
    store: tempfile::TempDir,
}

fn spec(id: &str) -> Spec {
    Spec {
        id: id.into(),
        port: free_port(),
        store: store_dir(),
    }
}

/// `rcdn_peer` lines. With `pools`, each peer also gets an `upstream`
/// block with keepalive, named by `upstream=`.
fn peer_lines(peers: &[(&str, u16)], pools: bool) -> String {
    peers
        .iter()
        .map(|(id, p)| match pools {
            true => format!(
                "rcdn_peer {id} 127.0.0.1:{p} upstream=peer_{id}; \
                 upstream peer_{id} {{ server 127.0.0.1:{p}; keepalive 8; }}"
            ),
            false => format!("rcdn_peer {id} 127.0.0.1:{p};"),
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn node_conf(s: &Spec, peers: &[(&str, u16)], origin_port: u16, http_extra: &str) -> String {
    let mut http_extra = http_extra.to_string();
    if !http_extra.contains("rcdn_peer_timeout") {
        // Generous: a loaded CI machine must not make a live peer look
        // slow (a dead one fails at connect, at once).
        http_extra.push_str(" rcdn_peer_timeout 10s;");
    }
    if !http_extra.contains("rcdn_peer_down") {
        http_extra.push_str(" rcdn_peer_down 2s;");
    }
    let tokens = format!(
        "mem=64m shards=4 max_object=4m default_ttl=10m tier={0}/shm,size=64m,region=16m,slice=4m ram={0}/ram",
        s.store.path().display()
    );
    format!(
        r#"load_module {so};
daemon off; master_process on; worker_processes 2;
error_log logs/error.log info; pid logs/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  log_format p '$pid $request_uri $status $rcdn_cache_status src=$rcdn_source owner=$rcdn_owner hop=$http_x_rcdn_hop';
  access_log logs/access.log p;
  rcdn_store {tokens};
  rcdn_node {id};
  {peers}
  rcdn_origin origin;
  {http_extra}
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{
      rcdn_cache on;
      rcdn_cache_lock_timeout 20s;
      proxy_pass http://$rcdn_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Via {id};
      add_header X-Cache $rcdn_cache_status always;
      add_header X-Source $rcdn_source always;
      add_header X-Owner $rcdn_owner always;
    }}
    location /purge {{ cdn_purge; }}
    location /peers {{ rcdn_peer_status; }}
  }}
}}
"#,
        so = module_so().display(),
        id = s.id,
        port = s.port,
        peers = peer_lines(peers, http_extra.contains("# pools")),
    )
}

fn start_node(s: &Spec, peers: &[(&str, u16)], origin_port: u16, http_extra: &str) -> Nginx {
    let conf = node_conf(s, peers, origin_port, http_extra);
    Nginx::launch(tempfile::tempdir().expect("tempdir"), &conf, s.port)
}

/// Origin log lines: (uri, via).
fn origin_log(origin: &Nginx) -> Vec<(String, String)> {
    // Let the log settle (it is written after the response).
    origin_hits(origin, "/settle");
    origin
        .log("logs/origin.log")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let via = f.get(2)?.strip_prefix("via=")?;
            Some((f.get(1)?.to_string(), via.to_string()))
        })
        .collect()
}

fn counts(log: &[(String, String)]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (u, _) in log {
        *m.entry(u.clone()).or_insert(0) += 1;
    }
    m
}

fn key(i: usize) -> String {
    format!("localhost{}", obj_path(i))
}

fn ring(ids: &[&str]) -> Ring {
    Ring::new(ids.iter().map(|s| s.to_string()), DEFAULT_VNODES).expect("ring")
}

/// Requests every (object, port) pair from `threads` client threads and
/// checks status and bytes; returns (object, response's X-Source).
fn fetch_all(jobs: Vec<(usize, u16)>, threads: usize) -> Vec<(usize, String)> {
    let jobs = Arc::new(jobs);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let jobs = jobs.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for (n, &(i, port)) in jobs.iter().enumerate() {
                    if n % threads != t {
                        continue;
                    }
                    let r = get(port, &obj_path(i));
                    assert_eq!(r.status, 200, "object {i} on port {port}");
                    assert!(
                        r.body == obj_body(i),
                        "object {i} on port {port}: bytes differ"
                    );
                    out.push((i, r.header("x-source").unwrap_or("").to_string()));
                }
                out
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

/// SIGKILLs a node: its master first (a master that outlives its workers
/// would fork new ones), then every worker it had (by PID, from /proc).
fn hard_kill(n: &mut Nginx) {
    let master = n.pid().expect("master pid");
    let workers = children_of(master);
    assert!(!workers.is_empty(), "the node has workers");
    n.signal(libc::SIGKILL);
    assert!(n.wait_exit(Duration::from_secs(10)), "killed master exits");
    for &w in &workers {
        // SAFETY: kill(2) on a worker of the nginx this test started (its
        // master is dead, so the pid was not reused by a respawn of ours).
        unsafe { libc::kill(w as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers.iter().any(|w| alive(*w)) {
        assert!(Instant::now() < deadline, "workers of a killed node linger");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Live child processes of `master` (from /proc).
fn children_of(master: u32) -> HashSet<u32> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let mut rest = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace());
        let state = rest.as_mut().and_then(|r| r.next());
        let ppid = rest
            .as_mut()
            .and_then(|r| r.next())
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(master) && state != Some("Z") {
            out.insert(pid);
        }
    }
    out
}

/// Workers of `master` that are not shutting down.
fn live_workers(master: u32) -> HashSet<u32> {
    children_of(master)
        .into_iter()
        .filter(|p| {
            let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmd.contains("worker process") && !cmd.contains("shutting")
        })
        .collect()
}

/// Rewrites a node's config and reloads it; waits for the new workers.
fn reload(n: &Nginx, conf: &str) {
    let master = n.pid().expect("master pid");
    let before = live_workers(master);
    std::fs::write(n.path("nginx.conf"), conf).expect("write conf");
    n.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = live_workers(master);
        if now.len() == 2 && now.is_disjoint(&before) {
            return;
        }
        assert!(Instant::now() < deadline, "no new workers after HUP");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_logs(nodes: &[&Nginx]) {
    for n in nodes {
        n.check_log();
    }
}

#[test]
fn three_nodes_fill_once_survive_a_killed_node_and_get_keys_back() {
    let origin = origin(OBJECTS);
    let (a, b, c) = (spec("a"), spec("b"), spec("c"));
    let peers = [("a", a.port), ("b", b.port), ("c", c.port)];
    // Peers through upstream blocks with keepalive (`upstream=`).
    let pools = "# pools\n";
    let na = start_node(&a, &peers, origin.port, pools);
    let nb = start_node(&b, &peers, origin.port, pools);
    let mut nc = start_node(&c, &peers, origin.port, pools);
    let ports = [a.port, b.port, c.port];
    let r3 = ring(&["a", "b", "c"]);

    // 1000 objects, round-robin over the nodes: the origin sees each once,
    // fetched by its owner.
    fetch_all((0..1000).map(|i| (i, ports[i % 3])).collect(), 4);
    let log = origin_log(&origin);
    let n = counts(&log);
    for i in 0..1000 {
        assert_eq!(
            n.get(&obj_path(i)),
            Some(&1),
            "object {i}: {:?}",
            n.get(&obj_path(i))
        );
    }
    for (uri, via) in &log {
        let i: usize = uri[5..uri.len() - 4].parse().expect("object number");
        let owner = r3.owner_of(key(i).as_bytes()).expect("owner");
        assert_eq!(via, owner, "{uri} fetched by its owner");
    }
    // Every object's bytes on every node (peer-filled copies are kept).
    fetch_all((0..1000).flat_map(|i| ports.map(|p| (i, p))).collect(), 4);
    assert_eq!(
        origin_log(&origin).len(),
        1000,
        "no origin request for copies"
    );

    // Node c dies hard: a and b keep serving everything, new keys cost the
    // origin at most one extra fetch each (c's keys go to their successor).
    hard_kill(&mut nc);
    fetch_all(
        (0..1000).flat_map(|i| [(i, a.port), (i, b.port)]).collect(),
        4,
    );
    assert_eq!(origin_log(&origin).len(), 1000, "cached objects survive");
    let fresh: Vec<usize> = (1000..1300).collect();
    fetch_all(fresh.iter().map(|&i| (i, ports[i % 2])).collect(), 4);
    fetch_all(fresh.iter().map(|&i| (i, ports[(i + 1) % 2])).collect(), 4);
    let n = counts(&origin_log(&origin));
    let extra: usize = fresh
        .iter()
        .map(|&i| n.get(&obj_path(i)).copied().unwrap_or(0))
        .sum();
    for &i in &fresh {
        let got = n.get(&obj_path(i)).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&got),
            "object {i} fetched {got} times with c down"
        );
    }
    eprintln!(
        "with c down: {extra} origin requests for {} new objects",
        fresh.len()
    );
    let log = origin_log(&origin);
    let twice: Vec<(&String, &String)> = log
        .iter()
        .filter(|(u, _)| n.get(u) == Some(&2))
        .map(|(u, v)| (u, v))
        .collect();
    let warn = |x: &Nginx| {
        x.error_log()
            .lines()
            .filter(|l| l.contains("[warn]") || l.contains("[error]"))
            .map(|l| l.chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        extra <= fresh.len() + 10,
        "origin load bounded: {extra}: {twice:?}\nA:\n{}\nB:\n{}",
        warn(&na),
        warn(&nb)
    );

    // c comes back on its store: after the down time, its keys go to it.
    let nc = start_node(&c, &peers, origin.port, pools);
    std::thread::sleep(Duration::from_millis(2500));
    let back: Vec<usize> = (1300..1450).collect();
    let got = fetch_all(back.iter().map(|&i| (i, a.port)).collect(), 2);
    let log = origin_log(&origin);
    for &i in &back {
        let owner = r3.owner_of(key(i).as_bytes()).expect("owner");
        let vias: Vec<&String> = log
            .iter()
            .filter(|(u, _)| *u == obj_path(i))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            vias,
            vec![owner],
            "object {i} filled by its owner once: {}",
            na.error_log()
                .lines()
                .filter(|l| !l.contains("[notice]") && !l.contains("[info]"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(got
        .iter()
        .any(|(i, s)| s == "peer"
            && r3.owner_of(key(*i).as_bytes()).map(String::as_str) == Some("c")));
    // Objects c still has on disk: a forgets its copies, asks c, and the
    // origin is not asked again.
    let before = origin_log(&origin).len();
    let r = get(a.port, "/purge?all=1");
    assert_eq!(r.status, 200);
    let c_owned: Vec<usize> = (0..1000)
        .filter(|&i| r3.owner_of(key(i).as_bytes()).map(String::as_str) == Some("c"))
        .collect();
    assert!(
        c_owned.len() > 200,
        "c owns about a third: {}",
        c_owned.len()
    );
    let got = fetch_all(c_owned.iter().map(|&i| (i, a.port)).collect(), 4);
    let not_peer: Vec<&(usize, String)> = got.iter().filter(|(_, s)| s != "peer").collect();
    assert!(
        not_peer.is_empty(),
        "all from c: {not_peer:?}\n{}",
        na.error_log()
            .lines()
            .filter(|l| l.contains("[warn]") || l.contains("[error]"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        origin_log(&origin).len(),
        before,
        "c served them from its disk"
    );
    check_logs(&[&na, &nb, &nc]);
}

#[test]
fn reload_with_a_new_peer_moves_about_a_quarter_of_the_keys() {
    let origin = origin(400);
    let (a, b, c, d) = (spec("a"), spec("b"), spec("c"), spec("d"));
    let three = [("a", a.port), ("b", b.port), ("c", c.port)];
    let four = [("a", a.port), ("b", b.port), ("c", c.port), ("d", d.port)];
    let na = start_node(&a, &three, origin.port, "");
    let nb = start_node(&b, &three, origin.port, "");
    let nc = start_node(&c, &three, origin.port, "");
    let nd = start_node(&d, &four, origin.port, "");
    let keys: Vec<usize> = (0..400).collect();
    fetch_all(keys.iter().map(|&i| (i, a.port)).collect(), 4);
    let before: HashMap<String, String> = origin_log(&origin).into_iter().collect();

    reload(&na, &node_conf(&a, &four, origin.port, ""));
    // Forget every copy, on every node (purge fan-out), then fill again.
    let r = get(a.port, "/purge?all=1&peers=1");
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    for id in ["b", "c", "d"] {
        assert_eq!(json["peers"][id]["ok"], true, "{json}");
    }
    fetch_all(keys.iter().map(|&i| (i, a.port)).collect(), 4);
    let log = origin_log(&origin);
    let after: HashMap<String, String> = log[before.len()..].iter().cloned().collect();
    assert_eq!(after.len(), keys.len(), "each key filled again once");
    let r4 = ring(&["a", "b", "c", "d"]);
    let mut moved = 0;
    for &i in &keys {
        let (old, new) = (&before[&obj_path(i)], &after[&obj_path(i)]);
        assert_eq!(new, r4.owner_of(key(i).as_bytes()).expect("owner"));
        if old != new {
            moved += 1;
            assert_eq!(new, "d", "object {i} moved between old peers");
        }
    }
    let frac = moved as f64 / keys.len() as f64;
    assert!((0.13..0.37).contains(&frac), "moved {frac}");
    check_logs(&[&na, &nb, &nc, &nd]);
}

#[test]
fn nodes_that_disagree_on_the_ring_do_not_loop() {
    let origin = origin(120);
    let (x, y) = (spec("x"), spec("y"));
    // y knows x under another id, so their rings disagree.
    let nx = start_node(&x, &[("x", x.port), ("y", y.port)], origin.port, "");
    let ny = start_node(&y, &[("y", y.port), ("z", x.port)], origin.port, "");
    let started = Instant::now();
    fetch_all(
        (0..120).flat_map(|i| [(i, x.port), (i, y.port)]).collect(),
        4,
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no waits between nodes"
    );
    let n = counts(&origin_log(&origin));
    assert!(
        (0..120).all(|i| n.get(&obj_path(i)).is_some_and(|&c| c <= 2)),
        "{n:?}"
    );
    for node in [&nx, &ny] {
        for l in node.log("logs/access.log").lines() {
            if !l.ends_with("hop=-") && l.contains(" src=peer ") {
                panic!("a peer request was forwarded again: {l}");
            }
        }
    }
    check_logs(&[&nx, &ny]);
}

fn b64(k: &str) -> String {
    cdncore::fill::peer::encode_key(k.as_bytes())
}

#[test]
fn an_owner_never_stores_under_a_key_the_client_chose() {
    let origin = origin(10);
    let a = spec("a");
    let na = start_node(&a, &[("a", a.port), ("b", free_port())], origin.port, "");
    let poisoned = request(
        a.port,
        "GET",
        "/obj/1.bin",
        &[
            ("X-Rcdn-Hop", "b"),
            ("X-Rcdn-Key", &b64("localhost/obj/2.bin")),
        ],
    );
    assert_eq!(poisoned.status, 400);
    assert_eq!(poisoned.header("x-rcdn-error"), Some("key mismatch"));
    let garbage = request(
        a.port,
        "GET",
        "/obj/1.bin",
        &[("X-Rcdn-Hop", "b"), ("X-Rcdn-Key", "!!")],
    );
    assert_eq!(garbage.status, 400);
    assert!(
        origin_log(&origin).is_empty(),
        "nothing fetched for refused requests"
    );
    // The right key: served, with the owner's metadata for the asking node.
    let ok = request(
        a.port,
        "GET",
        "/obj/2.bin",
        &[
            ("X-Rcdn-Hop", "b"),
            ("X-Rcdn-Key", &b64("localhost/obj/2.bin")),
        ],
    );
    assert_eq!(ok.status, 200);
    assert!(ok.body == obj_body(2));
    let meta = ok.header("x-rcdn-meta").expect("X-Rcdn-Meta");
    assert!(cdncore::fill::wire::decode(meta.as_bytes(), cdncore::now_ms()).is_ok());
    // A plain client gets no metadata; /obj/1.bin was never stored.
    assert!(get(a.port, "/obj/2.bin").header("x-rcdn-meta").is_none());
    assert_eq!(get(a.port, "/obj/1.bin").header("x-cache"), Some("MISS"));
    check_logs(&[&na]);
}

/// An object under `/tagged/` owned by `owner`.
fn tagged_owned_by(r: &Ring, owner: &str) -> String {
    (0..40)
        .map(|i| format!("/tagged/{i}.txt"))
        .find(|p| {
            r.owner_of(format!("localhost{p}").as_bytes())
                .map(String::as_str)
                == Some(owner)
        })
        .expect("an object of that owner")
}

#[test]
fn peer_filled_objects_keep_ttl_and_tags_and_purges_fan_out() {
    let origin = origin(10);
    let (a, b, c) = (spec("a"), spec("b"), spec("c"));
    let peers = [("a", a.port), ("b", b.port), ("c", c.port)];
    let na = start_node(&a, &peers, origin.port, "");
    let nb = start_node(&b, &peers, origin.port, "");
    let nc = start_node(&c, &peers, origin.port, "");
    let r3 = ring(&["a", "b", "c"]);
    let p = tagged_owned_by(&r3, "b");
    // Filled on its owner; two seconds later a asks b for it: a's copy is
    // as old as b's (stored_at and TTL came in X-Rcdn-Meta).
    assert_eq!(get(b.port, &p).header("x-cache"), Some("MISS"));
    std::thread::sleep(Duration::from_millis(2100));
    let r = get(a.port, &p);
    assert_eq!(r.header("x-source"), Some("peer"));
    let age: u64 = r.header("age").and_then(|v| v.parse().ok()).expect("Age");
    assert!(age >= 2, "age {age}");
    // Its tags came too: a tag purge on a alone drops it there.
    assert_eq!(get(a.port, &p).header("x-cache"), Some("HIT"));
    let r = get(a.port, "/purge?tag=sport");
    assert_eq!(r.status, 200);
    assert_eq!(get(a.port, &p).header("x-cache"), Some("MISS"));
    assert_eq!(
        get(b.port, &p).header("x-cache"),
        Some("HIT"),
        "b not purged"
    );
    // Fan-out: one purge on a, with peers=1, reaches b and c.
    for port in [a.port, b.port, c.port] {
        assert_eq!(get(port, &p).status, 200);
        assert_eq!(get(port, &p).header("x-cache"), Some("HIT"));
    }
    let r = get(a.port, "/purge?itag=42&peers=1");
    assert_eq!(r.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(json["ok"], true, "{json}");
    for id in ["b", "c"] {
        assert_eq!(json["peers"][id]["ok"], true, "{json}");
        assert_eq!(json["peers"][id]["answer"]["purge"], "itag", "{json}");
    }
    // The owner first: a non-owner's miss refills the owner's copy.
    for port in [b.port, a.port, c.port] {
        let r = get(port, &p);
        let ports = (a.port, b.port, c.port);
        assert_ne!(
            r.header("x-cache"),
            Some("HIT"),
            "{port} {ports:?} {json} {:?}",
            r.headers
        );
    }
    // Multi-MiB objects through a peer: a Range request on a node that
    // does not own it (206, right bytes), then the whole object elsewhere.
    let big = (0..6)
        .map(|i| format!("/big/{i}.bin"))
        .find(|p| {
            r3.owner_of(format!("localhost{p}").as_bytes())
                .map(String::as_str)
                == Some("b")
        })
        .expect("a big object owned by b");
    let want = pattern(3 << 20, 100 + big[5..6].parse::<u64>().expect("n"));
    let r = request(a.port, "GET", &big, &[("Range", "bytes=1000000-1999999")]);
    assert_eq!(r.status, 206);
    assert!(r.body == want[1_000_000..2_000_000], "range through a peer");
    // The range may be answered while the fill streams on: wait until a
    // has stored the whole object (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(a.port, &big);
        assert!(r.body == want, "whole object on a");
        if r.header("x-cache") == Some("HIT") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a never stored the object: {:?} {}",
            r.headers,
            na.error_log()
                .lines()
                .filter(|l| !l.contains("[notice]"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = get(c.port, &big);
    assert_eq!(r.header("x-source"), Some("peer"));
    assert!(r.body == want, "3 MiB through a peer");
    let n = counts(&origin_log(&origin));
    assert_eq!(n.get(&big), Some(&1), "{n:?}");
    // A peer that is down is reported, not waited for forever.
    drop(nc);
    let r = get(a.port, "/purge?all=1&peers=1");
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(json["peers"]["b"]["ok"], true, "{json}");
    assert_eq!(json["peers"]["c"]["ok"], false, "{json}");
    assert!(json["peers"]["c"]["error"].as_str().is_some(), "{json}");
    check_logs(&[&na, &nb]);
}

#[test]
fn a_slow_peer_times_out_and_the_key_is_filled_locally() {
    let origin = origin(40);
    // A "peer" that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let sport = silent.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        silent.set_nonblocking(true).expect("nonblocking");
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok((s, _)) = silent.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let a = spec("a");
    let na = start_node(
        &a,
        &[("a", a.port), ("s", sport)],
        origin.port,
        "rcdn_peer_timeout 300ms; rcdn_peer_down 30s;",
    );
    let r2 = ring(&["a", "s"]);
    let slow: Vec<usize> = (0..40)
        .filter(|&i| r2.owner_of(key(i).as_bytes()).map(String::as_str) == Some("s"))
        .take(6)
        .collect();
    assert!(!slow.is_empty());
    let started = Instant::now();
    let got = fetch_all(slow.iter().map(|&i| (i, a.port)).collect(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}: {}",
        started.elapsed(),
        na.error_log()
    );
    assert!(got.iter().all(|(_, s)| s == "origin"), "{got:?}");
    // The mark is shared by both workers: each of them reports s down, and
    // only the first request of the node paid the timeout.
    for _ in 0..8 {
        let status: serde_json::Value =
            serde_json::from_slice(&get(a.port, "/peers").body).expect("json");
        let peers = status["peers"].as_array().expect("peers");
        assert!(
            peers.iter().any(|p| p["id"] == "s" && p["down"] == true),
            "{status}"
        );
        assert_eq!(status["peers_down"], 1, "{status}");
        assert_eq!(status["marked_down"], 1, "{status}");
    }
    let timeouts = na.error_log().matches("timed out: marked down").count();
    assert_eq!(timeouts, 1, "{}", na.error_log());
    let n = counts(&origin_log(&origin));
    assert!(
        slow.iter().all(|&i| n.get(&obj_path(i)) == Some(&1)),
        "{n:?}"
    );
    assert!(na.error_log().contains("timed out: marked down"), "logged");
    check_logs(&[&na]);
    drop(na);
    drop(holder);
}

#[test]
fn a_draining_node_sends_peers_away_and_finishes_its_transfers() {
    let origin = origin(200);
    let (a, b) = (spec("a"), spec("b"));
    let peers = [("a", a.port), ("b", b.port)];
    let na = start_node(&a, &peers, origin.port, "");
    let mut nb = start_node(&b, &peers, origin.port, "");
    let big = pattern(400_000, 9);
    reload(&nb, &node_conf(&b, &peers, origin.port, "rcdn_drain on;"));
    // The reload is asynchronous: wait (bounded) until b's workers drain.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut in_a_row = 0;
    while in_a_row < 8 {
        let hop = request(b.port, "GET", "/obj/199.bin", &[("X-Rcdn-Hop", "a")]);
        in_a_row = if hop.status == 503 { in_a_row + 1 } else { 0 };
        assert!(Instant::now() < deadline, "b never drained");
    }
    let r2 = ring(&["a", "b"]);
    let b_keys: Vec<usize> = (0..200)
        .filter(|&i| r2.owner_of(key(i).as_bytes()).map(String::as_str) == Some("b"))
        .take(20)
        .collect();
    let got = fetch_all(b_keys.iter().map(|&i| (i, a.port)).collect(), 2);
    assert!(
        got.iter().all(|(_, s)| s == "origin"),
        "{got:?}\n{}\n{}\n{}",
        na.error_log(),
        na.log("logs/access.log"),
        nb.log("logs/access.log")
    );
    let hop = request(b.port, "GET", "/obj/1.bin", &[("X-Rcdn-Hop", "a")]);
    assert_eq!(hop.status, 503);
    assert_eq!(hop.header("x-rcdn-draining"), Some("1"));
    // Its own clients are still served while it drains; a transfer in
    // flight when it quits completes.
    let port = b.port;
    let slow = std::thread::spawn(move || request(port, "GET", "/slow/big.bin?in-flight", &[]));
    std::thread::sleep(Duration::from_millis(200));
    nb.signal(libc::SIGQUIT);
    let r = slow.join().expect("client");
    assert_eq!(r.status, 200);
    assert!(r.body == big, "in-flight transfer complete");
    assert!(nb.wait_exit(Duration::from_secs(20)), "b left");
    check_logs(&[&na]);
}

fn conf_with(http: &str) -> String {
    format!(
        "load_module {};\nerror_log logs/error.log;\nevents {{}}\nhttp {{\nrcdn_store mem=8m;\n{http}\nserver {{ listen 127.0.0.1:{};\nlocation / {{ rcdn_cache on; proxy_pass http://$rcdn_upstream; }}\n}}\n}}\n",
        module_so().display(),
        free_port()
    )
}

#[test]
fn bad_cluster_config_fails_nginx_t_naming_directive_and_value() {
    let good = "rcdn_node a; rcdn_peer a 127.0.0.1:9001; rcdn_peer b 127.0.0.1:9002 upstream=pb; upstream pb { server 127.0.0.1:9002; keepalive 4; } rcdn_origin origin; rcdn_peer_timeout 2s; rcdn_peer_down 10s; rcdn_drain off; upstream origin { server 127.0.0.1:9003; }";
    let (ok, err) = config_test(&conf_with(good));
    assert!(ok, "{err}");
    let cases: &[(&str, &[&str])] = &[
        (
            "rcdn_node a; rcdn_peer a 127.0.0.1:9001; rcdn_peer a 127.0.0.1:9002; rcdn_origin o;",
            &["rcdn_peer", "\"a\"", "twice"],
        ),
        (
            "rcdn_node a; rcdn_peer a 127.0.0.1:9001; rcdn_peer b 127.0.0.1:99999; rcdn_origin o;",
            &["rcdn_peer", "127.0.0.1:99999", "port"],
        ),
        (
            "rcdn_node a; rcdn_peer a 127.0.0.1:9001; rcdn_peer b nowhere; rcdn_origin o;",
            &["rcdn_peer", "nowhere"],
        ),
        (
            "rcdn_node c; rcdn_peer a 127.0.0.1:9001; rcdn_peer b 127.0.0.1:9002; rcdn_origin o;",
            &["rcdn_node", "\"c\"", "not in the rcdn_peer list"],
        ),
        (
            "rcdn_peer a 127.0.0.1:9001; rcdn_origin o;",
            &["rcdn_node", "not set"],
        ),
        (
            "rcdn_node a; rcdn_peer a 127.0.0.1:9001;",
            &["rcdn_origin", "required"],
        ),
        (
            "rcdn_node a; rcdn_peer a 127.0.0.1:9001; rcdn_origin http://x;",
            &["rcdn_origin", "http://x"],
        ),
        ("rcdn_peer_timeout soon;", &["rcdn_peer_timeout", "soon"]),
        (
            "rcdn_node a; rcdn_peer a 127.0.0.1:9001 pool=x; rcdn_origin o;",
            &["rcdn_peer", "pool=x", "upstream="],
        ),
        ("rcdn_drain maybe;", &["rcdn_drain", "maybe"]),
        ("rcdn_peer_secret \"a b\";", &["rcdn_peer_secret", "a b"]),
    ];
    for (http, want) in cases {
        let (ok, err) = config_test(&conf_with(http));
        assert!(!ok, "{http} accepted");
        for w in *want {
            assert!(err.contains(w), "{http}: {w:?} not in {err}");
        }
    }
}

#[test]
fn with_a_peer_secret_clients_cannot_pose_as_peers() {
    let origin = origin(40);
    let (a, b) = (spec("a"), spec("b"));
    let peers = [("a", a.port), ("b", b.port)];
    let secret = "rcdn_peer_secret s3cr3t;";
    let na = start_node(&a, &peers, origin.port, secret);
    let nb = start_node(&b, &peers, origin.port, secret);
    let r2 = ring(&["a", "b"]);
    let owned_by = |id: &str| {
        (0..40)
            .find(|&i| r2.owner_of(key(i).as_bytes()).map(String::as_str) == Some(id))
            .expect("a key of that owner")
    };
    // Peers fill from each other (they send the secret).
    let kb = owned_by("b");
    let r = get(a.port, &obj_path(kb));
    assert_eq!(r.header("x-source"), Some("peer"));
    assert!(r.body == obj_body(kb));
    // A client's hop header without the secret: routed like any client
    // request, no metadata, no key check.
    let ka = owned_by("a");
    let kb2 = (0..40)
        .filter(|&i| r2.owner_of(key(i).as_bytes()).map(String::as_str) == Some("b"))
        .nth(1)
        .expect("a second key of b");
    let fake = [("X-Rcdn-Hop", "b"), ("X-Rcdn-Key", "AAAA")];
    let r = request(a.port, "GET", &obj_path(kb2), &fake);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-source"), Some("peer"), "forwarded to the owner");
    assert!(r.header("x-rcdn-meta").is_none());
    let r = request(a.port, "GET", &obj_path(ka), &fake);
    assert_eq!(r.status, 200);
    assert!(r.header("x-rcdn-meta").is_none());
    // With the secret it is a peer request.
    let real = [("X-Rcdn-Hop", "b"), ("X-Rcdn-Peer-Secret", "s3cr3t")];
    assert!(request(a.port, "GET", &obj_path(ka), &real)
        .header("x-rcdn-meta")
        .is_some());
    // Fan-out carries the secret: b does not fan out again, and answers.
    let r = get(a.port, "/purge?all=1&peers=1");
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(json["peers"]["b"]["ok"], true, "{json}");
    assert!(
        json["peers"]["b"]["answer"].get("peers").is_none(),
        "{json}"
    );
    check_logs(&[&na, &nb]);
}
