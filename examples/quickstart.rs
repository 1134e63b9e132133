//! A tour of the engine: store a few objects the way a CDN node would, hit
//! them, purge them several ways, and print the counters.
//!
//! Run: `cargo run --release --example quickstart`

use bytes::Bytes;
use cdncore::http::{verdict, HttpPolicy, Verdict};
use cdncore::{now_ms, Cache, Config, Lookup, Purge};

fn show(cache: &Cache, key: &str) {
    let state = match cache.get(key.as_bytes()) {
        Ok(Lookup::Fresh(o)) => format!(
            "HIT  ({} bytes, age {}s)",
            o.body().len(),
            o.meta().age_secs(now_ms())
        ),
        Ok(Lookup::Stale(o)) => format!("STALE ({} bytes)", o.body().len()),
        Ok(Lookup::Miss) => "MISS".to_string(),
        Err(e) => format!("ERROR {e}"),
    };
    println!("  get {key:<40} {state}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = Config::parse("mem=64m shards=8 default_ttl=5m")?;
    println!(
        "opened a memory cache: {} MiB in {} shards, objects up to {} KiB",
        cfg.mem >> 20,
        cfg.shards,
        cfg.max_object_bytes() >> 10
    );
    let cache = Cache::open(cfg)?;
    let policy = HttpPolicy::default();

    // An origin response head, as the nginx module would see it.
    let objects = [
        ("example.com/news/today.html", "max-age=60", "news front"),
        ("example.com/news/sport.html", "max-age=60", "news sport"),
        ("example.com/img/logo.png", "max-age=86400", "logo"),
        (
            "example.com/img/banner.jpg",
            "s-maxage=600, max-age=60",
            "banner",
        ),
        ("cdn.example.org/app/v1.2.tar.gz", "max-age=3600", "release"),
    ];
    println!(
        "\nfilling {} objects (streamed in 4 KiB chunks):",
        objects.len()
    );
    for (i, (key, cc, skey)) in objects.iter().enumerate() {
        let head: Vec<(&str, &[u8])> = vec![
            ("Cache-Control", cc.as_bytes()),
            ("Content-Type", b"application/octet-stream"),
            ("Surrogate-Key", skey.as_bytes()),
        ];
        let Verdict::Store(mut meta) = verdict(200, &head, now_ms(), &policy) else {
            continue;
        };
        meta.tags = vec![match key.rsplit('.').next() {
            Some("html") => 1,
            Some("png" | "jpg") => 2,
            _ => 3,
        }];
        meta.mask = 1 << i;
        let body = Bytes::from(vec![b'x'; 10_000 * (i + 1)]);
        let mut w = cache.writer_sized(key.as_bytes(), meta, Some(body.len() as u64))?;
        for chunk in body.chunks(4096) {
            w.write(chunk)?;
        }
        w.commit()?;
        println!("  put {key:<40} {} bytes, Cache-Control: {cc}", body.len());
    }

    println!("\nlookups:");
    for (key, _, _) in &objects {
        show(&cache, key);
    }
    show(&cache, "example.com/not/cached");

    let no_store: Vec<(&str, &[u8])> = vec![("Cache-Control", b"no-store")];
    if let Verdict::Skip(why) = verdict(200, &no_store, now_ms(), &policy) {
        println!("\na `Cache-Control: no-store` response is not stored ({why})");
    }

    let purges = [
        Purge::Prefix(b"example.com/news/".to_vec()),
        Purge::Tag(2),
        Purge::Regex(r"\.tar\.gz$".into()),
    ];
    for p in &purges {
        let r = cache.purge(p)?;
        println!("\npurge {p} (seq {}):", r.seq);
        for (key, _, _) in &objects {
            show(&cache, key);
        }
    }

    match cache.purge(&Purge::Regex("(unclosed".into())) {
        Err(e) => println!("\na bad purge is refused: {e}"),
        Ok(_) => println!("\nunexpected: a bad regex was accepted"),
    }
    match Config::parse("mem=lots") {
        Err(e) => println!("a bad config is refused: {e}"),
        Ok(_) => println!("unexpected: a bad config was accepted"),
    }

    let reclaimed = cache.reclaim_now();
    let c = cache.counters();
    println!(
        "\ncounters: hits={} misses={} inserts={} purged={} (swept now: {reclaimed}) objects={} bytes_used={} purges={} active_bans={}",
        c.hits, c.misses, c.inserts, c.purged, c.objects, c.bytes_used, c.purges, c.active_bans
    );
    Ok(())
}
