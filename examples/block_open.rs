//! Open-time benchmark of a block tier: fills a tier with N small objects,
//! then times `Tier::open` with the index intact (no scan) and after
//! deleting the index (rebuild by scanning region headers), and reports the
//! index bytes per object.
//!
//! `cargo run --release --example block_open -- 10000000 /var/tmp [BODY_BYTES]`

use cdncore::block::{Tier, TierSpec};
use cdncore::Meta;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let base = args.next().unwrap_or_else(|| "/var/tmp".into());
    let body_len: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(16)
        .max(16);
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    // 64-byte header, key, metadata (~90 bytes), body; in 64-byte units.
    let rec = (176 + body_len as u64).div_ceil(64) * 64;
    let region = 32u64 << 20;
    let size = (count * rec * 5 / 4).div_ceil(region).max(2) * region;
    let spec = TierSpec {
        slots: Some(count * 5 / 4),
        ..TierSpec::new(dir.path(), size)
    };
    let quiet: cdncore::block::Log = std::sync::Arc::new(|_: &str| {});
    let t = Tier::open(&spec, quiet.clone()).expect("open");
    let meta = Meta::with_ttl(cdncore::now_ms(), 3_600_000);
    let start = Instant::now();
    for i in 0..count {
        let k = format!("o/{i}");
        let mut body = i.to_le_bytes().repeat(body_len.div_ceil(8));
        body.truncate(body_len);
        t.put(k.as_bytes(), &meta, 1, &body).expect("put");
    }
    let fill = start.elapsed().as_secs_f64();
    let (used, slots) = t.index_usage();
    let index_bytes = t.index_bytes();
    drop(t);
    println!(
        "objects {count} of {body_len} bytes: filled in {fill:.1} s ({:.0} puts/s); tier {} MiB",
        count as f64 / fill,
        size >> 20
    );
    println!(
        "index: {index_bytes} bytes = {:.1} bytes/object ({} slots, 5 per 64-byte bucket, {used} used, load {:.2})",
        index_bytes as f64 / count as f64,
        slots,
        used as f64 / slots as f64
    );
    let start = Instant::now();
    let t = Tier::open(&spec, quiet.clone()).expect("reopen");
    let open = start.elapsed().as_secs_f64();
    check(&t, count);
    drop(t);
    println!("open with intact index: {:.1} ms", open * 1e3);
    std::fs::remove_file(dir.path().join("index")).expect("rm index");
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let l2 = last.clone();
    let log: cdncore::block::Log = std::sync::Arc::new(move |s: &str| {
        if let Ok(mut g) = l2.lock() {
            *g = s.to_string();
        }
    });
    let start = Instant::now();
    let t = Tier::open(&spec, log).expect("rebuild");
    let rebuild = start.elapsed().as_secs_f64();
    check(&t, count);
    println!(
        "open with index deleted (rebuild by scan, page cache warm): {:.2} s, {:.2} GB/s of regions; last progress line: {}",
        rebuild,
        size as f64 / rebuild / 1e9,
        last.lock().map(|g| g.clone()).unwrap_or_default()
    );
    println!("ratio rebuild/intact: {:.0}x", rebuild / open);
}

/// Every 1000th object must be there after each open.
fn check(t: &Tier, count: u64) {
    let mut miss = 0;
    for i in (0..count).step_by(1000) {
        let hit = t.get(format!("o/{i}").as_bytes()).expect("get");
        match hit {
            Some(h) => assert_eq!(&h.body[..8], &i.to_le_bytes()),
            None => miss += 1,
        }
    }
    assert!(miss * 100 <= count / 1000, "{miss} sampled objects missing");
}
