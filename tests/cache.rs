//! The public cache API end to end: lookups, streaming inserts, removal,
//! limits, counters and concurrency.

use bytes::Bytes;
use cdncore::{now_ms, Cache, Commit, Config, Error, Lookup, Meta};

fn cache(text: &str) -> Cache {
    Cache::open_str(text).expect("test config is valid")
}

fn meta(ttl_ms: u64) -> Meta {
    Meta::with_ttl(now_ms(), ttl_ms)
}

fn body_of(l: &Lookup) -> Option<Bytes> {
    l.object().map(|o| o.body().clone())
}

#[test]
fn miss_then_fresh_then_stale() {
    let c = cache("mem=8m shards=2");
    assert!(matches!(c.get(b"k").unwrap(), Lookup::Miss));
    let mut m = Meta::with_ttl(1_000_000, 10_000);
    m.status = 404;
    c.insert(b"k", m, Bytes::from_static(b"gone")).unwrap();
    let fresh = c.get_at(b"k", 1_005_000).unwrap();
    assert!(fresh.is_fresh());
    assert_eq!(fresh.object().unwrap().meta().status, 404);
    assert!(matches!(
        c.get_at(b"k", 1_010_000).unwrap(),
        Lookup::Stale(_)
    ));
    let n = c.counters();
    assert_eq!((n.hits, n.stale_hits, n.misses), (1, 1, 1));
}

#[test]
fn hits_share_the_body_without_copying() {
    let c = cache("mem=8m");
    c.insert(b"k", meta(60_000), Bytes::from(vec![7u8; 100_000]))
        .unwrap();
    let a = body_of(&c.get(b"k").unwrap()).unwrap();
    let b = body_of(&c.get(b"k").unwrap()).unwrap();
    assert_eq!(a.as_ptr(), b.as_ptr(), "two hits point at the same bytes");
}

#[test]
fn streaming_writer_is_invisible_until_commit() {
    let c = cache("mem=8m");
    let mut w = c.writer(b"k", meta(60_000)).unwrap();
    w.write(b"hello ").unwrap();
    assert!(matches!(c.get(b"k").unwrap(), Lookup::Miss));
    w.write(b"world").unwrap();
    assert_eq!(w.written(), 11);
    assert_eq!(w.commit().unwrap(), Commit::Stored);
    let l = c.get(b"k").unwrap();
    let o = l.object().unwrap();
    assert_eq!(&o.body()[..], b"hello world");
    assert_eq!(o.meta().size, 11);
    // The documented checksum: xxh3-64 of the body.
    assert_eq!(
        o.meta().checksum,
        xxhash_rust::xxh3::xxh3_64(b"hello world")
    );
}

#[test]
fn aborted_and_dropped_writers_leave_no_trace() {
    let c = cache("mem=8m");
    c.insert(b"old", meta(60_000), Bytes::from_static(b"v1"))
        .unwrap();
    let mut w = c.writer(b"old", meta(60_000)).unwrap();
    w.write(b"v2-partial").unwrap();
    w.abort();
    {
        let mut w = c.writer(b"new", meta(60_000)).unwrap();
        w.write(b"partial").unwrap();
    } // dropped
    assert_eq!(&body_of(&c.get(b"old").unwrap()).unwrap()[..], b"v1");
    assert!(matches!(c.get(b"new").unwrap(), Lookup::Miss));
    let n = c.counters();
    assert_eq!((n.inserts, n.aborted, n.objects), (1, 2, 1));
}

#[test]
fn oversized_objects_are_refused_whole() {
    let c = cache("mem=4m shards=1 max_object=1m");
    assert_eq!(c.max_object(), 1 << 20);
    // Known size: refused before any byte.
    let e = c
        .writer_sized(b"big", meta(1000), Some(2 << 20))
        .err()
        .unwrap();
    assert_eq!(
        e,
        Error::ObjectTooLarge {
            size: 2 << 20,
            max: 1 << 20
        }
    );
    assert!(e.to_string().contains("max_object"));
    // Unknown size: the writer fails once over, and stays failed.
    let mut w = c.writer(b"big", meta(1000)).unwrap();
    let chunk = vec![0u8; 300_000];
    for _ in 0..3 {
        w.write(&chunk).unwrap();
    }
    assert!(matches!(w.write(&chunk), Err(Error::ObjectTooLarge { .. })));
    assert!(w.write(b"x").is_err());
    assert!(w.commit().is_err());
    assert!(matches!(c.get(b"big").unwrap(), Lookup::Miss));
    // One-shot insert too.
    let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
    assert!(c.insert(b"big", meta(1000), big).is_err());
    assert_eq!(c.counters().objects, 0);
}

#[test]
fn declared_size_must_match() {
    let c = cache("mem=4m");
    let mut w = c.writer_sized(b"k", meta(1000), Some(10)).unwrap();
    w.write(b"12345").unwrap();
    assert_eq!(
        w.commit(),
        Err(Error::SizeMismatch {
            declared: 10,
            written: 5
        })
    );
    let mut w = c.writer_sized(b"k", meta(1000), Some(3)).unwrap();
    assert!(matches!(w.write(b"1234"), Err(Error::SizeMismatch { .. })));
    assert!(matches!(c.get(b"k").unwrap(), Lookup::Miss));
}

#[test]
fn bad_keys_are_typed_errors() {
    let c = cache("mem=4m max_key=16");
    assert_eq!(c.get(b"").unwrap_err(), Error::EmptyKey);
    assert_eq!(
        c.get(&[b'a'; 17]).unwrap_err(),
        Error::KeyTooLong { len: 17, max: 16 }
    );
    assert!(c.insert(b"", meta(1), Bytes::new()).is_err());
    assert!(c.writer(&[b'a'; 17], meta(1)).is_err());
    assert!(c.remove(b"").is_err());
    // Binary keys are fine.
    c.insert(b"\0\xff/x", meta(60_000), Bytes::new()).unwrap();
    assert!(c.get(b"\0\xff/x").unwrap().is_fresh());
}

#[test]
fn invalid_configs_are_refused_with_the_field_named() {
    for (text, field) in [
        ("mem=12q", "mem"),
        ("memory=1g", "memory"),
        ("shards=0", "shards"),
        ("default_ttl=soon", "default_ttl"),
        ("mem=1m mem=1m", "mem"),
    ] {
        match Cache::open_str(text) {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field, "{text}"),
            Err(e) => panic!("{text}: wrong error {e}"),
            Ok(_) => panic!("{text}: accepted"),
        }
    }
    let cfg = Config {
        shards: 5000,
        ..Config::default()
    };
    assert!(Cache::open(cfg).is_err());
}

#[test]
fn remove_and_replace() {
    let c = cache("mem=4m");
    c.insert(b"k", meta(60_000), Bytes::from_static(b"1"))
        .unwrap();
    c.insert(b"k", meta(60_000), Bytes::from_static(b"22"))
        .unwrap();
    assert_eq!(&body_of(&c.get(b"k").unwrap()).unwrap()[..], b"22");
    assert_eq!(c.counters().objects, 1);
    assert!(c.remove(b"k").unwrap());
    assert!(!c.remove(b"k").unwrap());
    assert!(matches!(c.get(b"k").unwrap(), Lookup::Miss));
    let n = c.counters();
    assert_eq!((n.removed, n.objects, n.bytes_used), (1, 0, 0));
}

#[test]
fn byte_budget_is_kept_and_evictions_counted() {
    let c = cache("mem=1m shards=1");
    for i in 0..200u32 {
        let body = Bytes::from(vec![i as u8; 10_000]);
        c.insert(format!("k{i}").as_bytes(), meta(60_000), body)
            .unwrap();
    }
    let n = c.counters();
    assert!(n.bytes_used <= 1 << 20, "{n:?}");
    assert!(
        n.objects >= 95 && n.objects <= 102,
        "about 1 MiB / 10.3 KB: {n:?}"
    );
    assert_eq!(n.objects + n.evictions, 200);
    // The newest object is resident, with the right content.
    let last = body_of(&c.get(b"k199").unwrap()).unwrap();
    assert!(last.iter().all(|&b| b == 199));
}

#[test]
fn threads_share_one_cache_consistently() {
    let c = cache("mem=32m shards=8");
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    let key = format!("t{t}/k{}", i % 300);
                    match c.get(key.as_bytes()).unwrap() {
                        Lookup::Fresh(o) => {
                            // Every body is its key repeated: never mixed up.
                            assert!(o.body().starts_with(key.as_bytes()));
                        }
                        _ => {
                            let body = Bytes::from(key.repeat(20));
                            c.insert(key.as_bytes(), meta(60_000), body).unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    let n = c.counters();
    assert_eq!(n.hits + n.misses, 8000);
    assert_eq!(n.inserts, n.misses);
}

#[test]
fn http_verdict_feeds_the_cache() {
    use cdncore::http::{verdict, HttpPolicy, Verdict};
    let c = cache("mem=4m");
    let now = now_ms();
    let head: Vec<(&str, &[u8])> = vec![
        ("Cache-Control", b"max-age=30, stale-if-error=600"),
        ("ETag", b"\"abc\""),
        ("Surrogate-Key", b"post-1 home"),
    ];
    let Verdict::Store(m) = verdict(200, &head, now, &HttpPolicy::default()) else {
        panic!("cacheable response was skipped");
    };
    c.insert(b"a.com/p/1", m, Bytes::from_static(b"post"))
        .unwrap();
    let l = c.get_at(b"a.com/p/1", now + 31_000).unwrap();
    let Lookup::Stale(o) = l else {
        panic!("expected stale")
    };
    assert!(o.meta().within_stale_if_error(now + 31_000));
    assert_eq!(o.meta().etag.as_deref(), Some(&b"\"abc\""[..]));
}
