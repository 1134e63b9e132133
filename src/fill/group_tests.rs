use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cluster(me: &str) -> Peers {
    let peers: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, id)| (id.to_string(), format!("127.0.0.1:{}", 9001 + i)))
        .collect();
    Peers::new(me, &peers).unwrap()
}

fn value(tag: &str, key: &[u8]) -> Fetched {
    let body = format!("{tag}:{}", String::from_utf8_lossy(key));
    (Meta::with_ttl(now_ms(), 60_000), Bytes::from(body))
}

/// Keys owned by `owner` in a cluster of a, b, c.
fn owned_by(owner: &str, n: usize) -> Vec<Vec<u8>> {
    let p = cluster("a");
    (0..)
        .map(|i| format!("site/k{i}").into_bytes())
        .filter(|k| p.owner(k) == Some(owner))
        .take(n)
        .collect()
}

/// Counts getter calls; `fail_peer` makes the fetcher fail.
#[derive(Default)]
struct Origin {
    gets: AtomicUsize,
    fetches: Mutex<Vec<(String, String, Vec<u8>)>>,
    fail_peer: AtomicBool,
}

fn loader(me: Option<&str>, origin: &Arc<Origin>, opts: LoaderOptions) -> Loader {
    let (g, f) = (origin.clone(), origin.clone());
    let getter = move |k: &[u8]| {
        g.gets.fetch_add(1, SeqCst);
        Ok(value("origin", k))
    };
    let fetcher = move |id: &str, addr: &str, k: &[u8], _t: u64| {
        f.fetches
            .lock()
            .unwrap()
            .push((id.into(), addr.into(), k.to_vec()));
        if f.fail_peer.load(SeqCst) {
            return Err("connection refused".to_string());
        }
        Ok(value(id, k))
    };
    let cache = Cache::open_str("mem=8m shards=2").unwrap();
    Loader::new(
        cache,
        me.map(cluster),
        Box::new(getter),
        Some(Box::new(fetcher)),
        opts,
    )
    .unwrap()
}

#[test]
fn concurrent_loads_of_a_key_call_the_origin_once() {
    let release = Arc::new(AtomicBool::new(false));
    let gets = Arc::new(AtomicUsize::new(0));
    let (r, g) = (release.clone(), gets.clone());
    let getter = move |k: &[u8]| {
        g.fetch_add(1, SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !r.load(SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(value("origin", k))
    };
    let cache = Cache::open_str("mem=8m").unwrap();
    let l = Arc::new(
        Loader::new(
            cache,
            None,
            Box::new(getter),
            None,
            LoaderOptions::default(),
        )
        .unwrap(),
    );
    let n = 8;
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || l.load(b"site/big", false))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let key: Box<[u8]> = b"site/big"[..].into();
    while l.flights.waiters(&key) < n - 1 {
        assert!(Instant::now() < deadline, "loads never queued up");
        std::thread::sleep(Duration::from_millis(1));
    }
    release.store(true, SeqCst);
    let results: Vec<Loaded> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    assert_eq!(gets.load(SeqCst), 1);
    assert!(results
        .iter()
        .all(|r| &r.object.body()[..] == b"origin:site/big"));
    assert_eq!(results.iter().filter(|r| r.shared).count(), n - 1);
    assert_eq!(l.counters().shared, (n - 1) as u64);
    let again = l.load(b"site/big", false).unwrap();
    assert_eq!((again.source, gets.load(SeqCst)), (Source::Cache, 1));
}

#[test]
fn keys_owned_elsewhere_go_to_their_owner_not_the_origin() {
    let origin = Arc::new(Origin::default());
    let l = loader(Some("a"), &origin, LoaderOptions::default());
    for key in owned_by("b", 20) {
        let got = l.load(&key, false).unwrap();
        assert!(
            matches!(got.source, Source::Peer(ref id) if id == "b") || got.source == Source::Hot
        );
        assert_eq!(
            &got.object.body()[..],
            format!("b:{}", String::from_utf8_lossy(&key)).as_bytes()
        );
        assert!(
            l.cache().get(&key).unwrap().object().is_none(),
            "not in the main cache"
        );
    }
    let fetches = origin.fetches.lock().unwrap();
    assert_eq!(fetches.len(), 20);
    assert!(fetches
        .iter()
        .all(|(id, addr, _)| id == "b" && addr == "127.0.0.1:9002"));
    assert_eq!(origin.gets.load(SeqCst), 0);
    // Keys this node owns go to the origin and stay in the main cache.
    let mine = &owned_by("a", 1)[0];
    assert_eq!(l.load(mine, false).unwrap().source, Source::Local);
    assert_eq!(origin.gets.load(SeqCst), 1);
    assert!(l.cache().get(mine).unwrap().is_fresh());
}

#[test]
fn a_failing_peer_is_marked_down_loaded_locally_and_comes_back() {
    let origin = Arc::new(Origin::default());
    let opts = LoaderOptions {
        down_ms: 100,
        ..LoaderOptions::default()
    };
    let l = loader(Some("a"), &origin, opts);
    let keys = owned_by("b", 3);
    origin.fail_peer.store(true, SeqCst);
    let got = l.load(&keys[0], false).unwrap();
    assert_eq!(got.source, Source::Local);
    assert_eq!(origin.gets.load(SeqCst), 1);
    assert!(l.is_down("b", now_ms()));
    assert!(l.cache().get(&keys[0]).unwrap().is_fresh(), "stored here");
    // While down: straight to the origin, the peer is not asked.
    assert_eq!(l.load(&keys[1], false).unwrap().source, Source::Local);
    assert_eq!(origin.fetches.lock().unwrap().len(), 1);
    assert_eq!(l.counters().peer_errors, 1);
    origin.fail_peer.store(false, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while l.is_down("b", now_ms()) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = l.load(&keys[2], false).unwrap();
    assert_eq!(got.source, Source::Peer("b".into()));
    assert_eq!(origin.gets.load(SeqCst), 2);
}

#[test]
fn a_request_from_a_peer_is_never_forwarded() {
    let origin = Arc::new(Origin::default());
    let l = loader(Some("a"), &origin, LoaderOptions::default());
    for key in owned_by("c", 10) {
        assert_eq!(l.load(&key, true).unwrap().source, Source::Local);
    }
    assert!(origin.fetches.lock().unwrap().is_empty());
    assert_eq!(origin.gets.load(SeqCst), 10);
}

#[test]
fn hot_cache_admits_few_and_stays_bounded() {
    let origin = Arc::new(Origin::default());
    let opts = LoaderOptions {
        hot_mem: 64 << 10,
        ..LoaderOptions::default()
    };
    let l = loader(Some("a"), &origin, opts);
    let keys = owned_by("b", 1000);
    for k in &keys {
        l.load(k, false).unwrap();
    }
    let held = keys
        .iter()
        .filter(|k| l.hot().get(k).unwrap().is_fresh())
        .count();
    assert!(held > 0 && held < 200, "about 1 in 10 admitted: {held}");
    assert!(l.hot().cache().counters().bytes_used <= 64 << 10);
    assert_eq!(origin.gets.load(SeqCst), 0);
}

#[test]
fn purges_reach_both_caches() {
    let origin = Arc::new(Origin::default());
    let l = loader(Some("a"), &origin, LoaderOptions::default());
    let theirs = owned_by("b", 1).remove(0);
    let mine = owned_by("a", 1).remove(0);
    let hot = (0..300)
        .map(|_| l.load(&theirs, false).unwrap().source)
        .any(|s| s == Source::Hot);
    assert!(hot, "a popular key ends up in the hot cache");
    l.load(&mine, false).unwrap();
    l.purge(&Purge::Prefix(b"site/".to_vec())).unwrap();
    assert!(!l.hot().get(&theirs).unwrap().is_fresh());
    assert!(!l.cache().get(&mine).unwrap().is_fresh());
    let before = origin.fetches.lock().unwrap().len();
    assert_eq!(
        l.load(&theirs, false).unwrap().source,
        Source::Peer("b".into())
    );
    assert_eq!(origin.fetches.lock().unwrap().len(), before + 1);
}

#[test]
fn getter_errors_are_returned_and_not_cached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let getter = move |_: &[u8]| {
        c.fetch_add(1, SeqCst);
        Err::<Fetched, _>("origin 502".to_string())
    };
    let cache = Cache::open_str("mem=8m").unwrap();
    let l = Loader::new(
        cache,
        None,
        Box::new(getter),
        None,
        LoaderOptions::default(),
    )
    .unwrap();
    for _ in 0..2 {
        let err = l.load(b"site/x", false).unwrap_err();
        assert_eq!(err, LoadError::Getter("origin 502".into()));
    }
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(l.counters().local_errors, 2);
    assert!(matches!(
        l.load(b"", false),
        Err(LoadError::Cache(Error::EmptyKey))
    ));
}

#[test]
fn a_slow_peer_is_used_once_then_skipped_and_peer_sets_can_change() {
    let origin = Arc::new(Origin::default());
    let slow = move |id: &str, _: &str, k: &[u8], timeout: u64| {
        std::thread::sleep(Duration::from_millis(timeout + 30));
        Ok(value(id, k))
    };
    let o = origin.clone();
    let getter = move |k: &[u8]| {
        o.gets.fetch_add(1, SeqCst);
        Ok(value("origin", k))
    };
    let opts = LoaderOptions {
        peer_timeout_ms: 10,
        down_ms: 60_000,
        ..LoaderOptions::default()
    };
    let cache = Cache::open_str("mem=8m").unwrap();
    let l = Loader::new(
        cache,
        Some(cluster("a")),
        Box::new(getter),
        Some(Box::new(slow)),
        opts,
    )
    .unwrap();
    let keys = owned_by("c", 2);
    assert_eq!(
        l.load(&keys[0], false).unwrap().source,
        Source::Peer("c".into())
    );
    assert!(l.is_down("c", now_ms()), "overran its time limit");
    assert_eq!(l.load(&keys[1], false).unwrap().source, Source::Local);
    // A reload to a single-node cluster: everything is local.
    l.set_peers(None);
    assert_eq!(l.owner(&keys[0]), None);
    let other = owned_by("b", 1).remove(0);
    assert_eq!(l.load(&other, false).unwrap().source, Source::Local);
    assert_eq!(origin.gets.load(SeqCst), 2);
}

#[test]
fn a_purge_during_a_peer_fetch_keeps_the_answer_out_of_the_hot_cache() {
    let origin = Arc::new(Origin::default());
    let purge_now = Arc::new(AtomicBool::new(false));
    let slot: Arc<Mutex<Option<Arc<Loader>>>> = Arc::default();
    let (p, s) = (purge_now.clone(), slot.clone());
    let fetcher = move |id: &str, _: &str, k: &[u8], _: u64| {
        if p.load(SeqCst) {
            let l = s.lock().unwrap().clone().unwrap();
            l.purge(&Purge::Key(k.to_vec())).unwrap();
        }
        Ok(value(id, k))
    };
    let o = origin.clone();
    let getter = move |k: &[u8]| {
        o.gets.fetch_add(1, SeqCst);
        Ok(value("origin", k))
    };
    let opts = LoaderOptions {
        hot_one_in: 1,
        ..LoaderOptions::default()
    };
    let cache = Cache::open_str("mem=8m").unwrap();
    let l = Arc::new(
        Loader::new(
            cache,
            Some(cluster("a")),
            Box::new(getter),
            Some(Box::new(fetcher)),
            opts,
        )
        .unwrap(),
    );
    *slot.lock().unwrap() = Some(l.clone());
    let keys = owned_by("b", 2);
    l.load(&keys[0], false).unwrap();
    assert!(
        l.hot().get(&keys[0]).unwrap().is_fresh(),
        "admitted (1 in 1)"
    );
    purge_now.store(true, SeqCst);
    let got = l.load(&keys[1], false).unwrap();
    assert_eq!(got.source, Source::Peer("b".into()));
    assert!(
        !l.hot().get(&keys[1]).unwrap().is_fresh(),
        "overtaken by a purge"
    );
    *slot.lock().unwrap() = None;
}
