//! Purges through the public API: each kind hits exactly what it names, is
//! visible to the next lookup, catches fills in flight, and its records are
//! retired once swept so lookups stay cheap.

use bytes::Bytes;
use cdncore::{now_ms, Cache, Commit, Error, Lookup, Meta, Purge};

struct Obj {
    key: &'static str,
    group: Option<&'static str>,
    tags: &'static [u16],
    skeys: &'static [&'static str],
    mask: u64,
}

const OBJS: &[Obj] = &[
    Obj {
        key: "a.com/news/1.html",
        group: None,
        tags: &[1],
        skeys: &["news"],
        mask: 0b001,
    },
    Obj {
        key: "a.com/news/2.jpg",
        group: None,
        tags: &[2],
        skeys: &["news", "img"],
        mask: 0b010,
    },
    Obj {
        key: "a.com/img/3.jpg",
        group: Some("tenant-7"),
        tags: &[2],
        skeys: &["img"],
        mask: 0b100,
    },
    Obj {
        key: "b.org/news/4.html",
        group: None,
        tags: &[1],
        skeys: &[],
        mask: 0b001,
    },
    Obj {
        key: "b.org/app/5.tar.gz",
        group: None,
        tags: &[3],
        skeys: &["rel"],
        mask: 0,
    },
];

fn filled() -> Cache {
    let c = Cache::open_str("mem=16m shards=4").unwrap();
    for o in OBJS {
        let mut m = Meta::with_ttl(now_ms(), 600_000);
        m.group = o.group.map(|g| Bytes::from_static(g.as_bytes()));
        m.tags = o.tags.to_vec();
        m.surrogate_keys = o.skeys.iter().map(|s| s.to_string()).collect();
        m.mask = o.mask;
        c.insert(o.key.as_bytes(), m, Bytes::from(o.key.repeat(3)))
            .unwrap();
    }
    c
}

/// Keys still served after a purge.
fn survivors(c: &Cache) -> Vec<&'static str> {
    OBJS.iter()
        .map(|o| o.key)
        .filter(|k| c.get(k.as_bytes()).unwrap().is_fresh())
        .collect()
}

fn purged_by(p: Purge) -> Vec<&'static str> {
    let c = filled();
    c.purge(&p).unwrap();
    let alive = survivors(&c);
    OBJS.iter()
        .map(|o| o.key)
        .filter(|k| !alive.contains(k))
        .collect()
}

#[test]
fn each_kind_purges_exactly_what_it_names() {
    let cases: Vec<(Purge, Vec<&str>)> = vec![
        (
            Purge::Key(b"a.com/news/2.jpg".to_vec()),
            vec!["a.com/news/2.jpg"],
        ),
        (
            Purge::Prefix(b"a.com/news/".to_vec()),
            vec!["a.com/news/1.html", "a.com/news/2.jpg"],
        ),
        (
            Purge::Prefix(b"http://a.com/".to_vec()),
            vec!["a.com/news/1.html", "a.com/news/2.jpg", "a.com/img/3.jpg"],
        ),
        // Not a directory: handled by a ban, same result semantics.
        (
            Purge::Prefix(b"a.com/news/1".to_vec()),
            vec!["a.com/news/1.html"],
        ),
        // Default group is the first path level; explicit groups win.
        (
            Purge::Group(b"a.com".to_vec()),
            vec!["a.com/news/1.html", "a.com/news/2.jpg"],
        ),
        (Purge::Group(b"tenant-7".to_vec()), vec!["a.com/img/3.jpg"]),
        (
            Purge::Tag(1),
            vec!["a.com/news/1.html", "b.org/news/4.html"],
        ),
        (
            Purge::SurrogateKey("img".into()),
            vec!["a.com/news/2.jpg", "a.com/img/3.jpg"],
        ),
        (
            Purge::Mask(0b110),
            vec!["a.com/news/2.jpg", "a.com/img/3.jpg"],
        ),
        (
            Purge::Regex(r"^[ab]\.(com|org)/.*\.html$".into()),
            vec!["a.com/news/1.html", "b.org/news/4.html"],
        ),
        (Purge::All, OBJS.iter().map(|o| o.key).collect()),
    ];
    for (p, expected) in cases {
        assert_eq!(purged_by(p.clone()), expected, "{p}");
    }
}

#[test]
fn reports_what_is_cheap_to_count() {
    let c = filled();
    let r = c.purge(&Purge::Key(b"a.com/news/1.html".to_vec())).unwrap();
    assert_eq!(r.covered, Some(1));
    let r = c.purge(&Purge::Key(b"nothing/here".to_vec())).unwrap();
    assert_eq!(r.covered, Some(0));
    let r = c.purge(&Purge::Tag(2)).unwrap();
    assert_eq!(r.covered, None);
    let r = c.purge(&Purge::All).unwrap();
    assert_eq!(r.covered, Some(4)); // tag-2 objects are dead but not yet swept
    assert!(r.seq > 1);
}

#[test]
fn objects_stored_after_a_purge_are_not_affected() {
    let c = filled();
    c.purge(&Purge::Tag(1)).unwrap();
    c.purge(&Purge::All).unwrap();
    let mut m = Meta::with_ttl(now_ms(), 60_000);
    m.tags = vec![1];
    c.insert(b"a.com/news/1.html", m, Bytes::from_static(b"v2"))
        .unwrap();
    assert_eq!(survivors(&c), vec!["a.com/news/1.html"]);
}

#[test]
fn a_fill_in_flight_during_a_purge_is_discarded() {
    let c = filled();
    let mut m = Meta::with_ttl(now_ms(), 60_000);
    m.surrogate_keys = vec!["news".into()];
    let mut w = c.writer(b"a.com/news/9.html", m.clone()).unwrap();
    w.write(b"possibly outdated").unwrap();
    c.purge(&Purge::SurrogateKey("news".into())).unwrap();
    // A sweep in between must not retire the record the open writer needs.
    c.reclaim_now();
    assert_eq!(w.commit().unwrap(), Commit::PurgedDuringFill);
    assert!(matches!(c.get(b"a.com/news/9.html").unwrap(), Lookup::Miss));
    // A fill that starts after the purge is stored.
    let w = c.writer(b"a.com/news/9.html", m).unwrap();
    assert_eq!(w.commit().unwrap(), Commit::Stored);
}

#[test]
fn sweep_reclaims_space_and_retires_bans() {
    let c = Cache::open_str("mem=64m shards=4 sweeper=off").unwrap();
    for i in 0..10_000u32 {
        let mut m = Meta::with_ttl(now_ms(), 600_000);
        m.tags = vec![(i % 2) as u16];
        c.insert(
            format!("h.com/{i}").as_bytes(),
            m,
            Bytes::from(vec![1u8; 100]),
        )
        .unwrap();
    }
    let before = c.counters();
    c.purge(&Purge::Tag(0)).unwrap();
    c.purge(&Purge::Regex(r"/1\d*$".into())).unwrap();
    // Purging is O(1): nothing was touched yet.
    assert_eq!(c.counters().objects, before.objects);
    assert_eq!(c.counters().active_bans, 1);
    let removed = c.reclaim_now();
    let after = c.counters();
    // Odd numbers starting with 1: 1, 11, 13, ..., 19999 within 0..10000.
    let odd_starting_1 = (0..10_000u32)
        .filter(|i| i % 2 == 1 && i.to_string().starts_with('1'))
        .count() as u64;
    assert_eq!(removed, 5_000 + odd_starting_1);
    assert_eq!(after.purged, removed);
    assert_eq!(after.objects, 10_000 - after.purged);
    assert!(after.bytes_used < before.bytes_used / 2);
    assert_eq!(after.active_bans, 0, "the ban is retired after a sweep");
    assert!(c.get(b"h.com/3").unwrap().is_fresh());
    assert!(!c.get(b"h.com/4").unwrap().is_fresh());
    assert!(!c.get(b"h.com/13").unwrap().is_fresh());
}

#[test]
fn ban_list_stays_bounded() {
    let c = Cache::open_str("mem=4m ban_slots=4").unwrap();
    c.insert(
        b"x.com/keep",
        Meta::with_ttl(now_ms(), 60_000),
        Bytes::new(),
    )
    .unwrap();
    for i in 0..100 {
        c.purge(&Purge::Regex(format!("^nomatch{i}$"))).unwrap();
        assert!(c.counters().active_bans <= 4);
    }
    // Folding old bans into the floor over-purges older objects: a miss,
    // never a wrong hit. Newer objects are unaffected.
    c.insert(b"x.com/new", Meta::with_ttl(now_ms(), 60_000), Bytes::new())
        .unwrap();
    assert!(c.get(b"x.com/new").unwrap().is_fresh());
}

#[test]
fn bad_purges_are_typed_errors() {
    let c = filled();
    match c.purge(&Purge::Regex("a(b".into())) {
        Err(Error::InvalidRegex { pattern, reason }) => {
            assert_eq!(pattern, "a(b");
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidRegex, got {other:?}"),
    }
    assert_eq!(
        c.purge(&Purge::Key(Vec::new())).unwrap_err(),
        Error::EmptyKey
    );
    assert!(matches!(
        c.purge(&Purge::Group(Vec::new())),
        Err(Error::InvalidPurge(_))
    ));
    assert!(matches!(
        c.purge(&Purge::Prefix("p".repeat(5000).into_bytes())),
        Err(Error::InvalidPurge(_))
    ));
    assert!(matches!(
        c.purge(&Purge::Mask(0)),
        Err(Error::InvalidPurge(_))
    ));
    // Nothing was purged by the failures.
    assert_eq!(survivors(&c).len(), OBJS.len());
}

#[test]
fn concurrent_purges_and_lookups() {
    let c = Cache::open_str("mem=32m shards=8").unwrap();
    let writer = {
        let c = c.clone();
        std::thread::spawn(move || {
            for round in 0..50u16 {
                for i in 0..100u32 {
                    let mut m = Meta::with_ttl(now_ms(), 600_000);
                    m.tags = vec![round];
                    let key = format!("c.com/{i}");
                    c.insert(key.as_bytes(), m, Bytes::from(format!("{round}")))
                        .unwrap();
                }
                c.purge(&Purge::Tag(round)).unwrap();
                // Everything of this round is gone at once.
                for i in 0..100u32 {
                    let key = format!("c.com/{i}");
                    assert!(!c.get(key.as_bytes()).unwrap().is_fresh(), "{key} {round}");
                }
            }
        })
    };
    for _ in 0..20 {
        c.reclaim_now();
    }
    writer.join().expect("writer thread");
    c.reclaim_now();
    assert_eq!(c.counters().objects, 0);
}

#[test]
fn background_sweeper_reclaims_without_lookups() {
    let c = Cache::open_str("mem=8m").unwrap();
    for i in 0..1000u32 {
        let mut m = Meta::with_ttl(now_ms(), 600_000);
        m.tags = vec![9];
        c.insert(format!("s.com/{i}").as_bytes(), m, Bytes::from_static(b"x"))
            .unwrap();
    }
    c.purge(&Purge::Tag(9)).unwrap();
    // Poll (bounded: 10 s) for the sweeper thread; no lookup touches them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.counters().objects > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let n = c.counters();
    assert_eq!((n.objects, n.purged, n.hits + n.misses), (0, 1000, 0));
}
