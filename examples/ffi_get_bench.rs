//! The Rust twin of ffi-tests/bench_get.c: the same get-hit loop (lookup,
//! read the body's last byte, drop the handle) over the same keys, so
//! `ffi-tests/bench.sh` can report the C ABI's overhead as a ratio.
//!
//! Run: `cargo run --release --example ffi_get_bench -- [GETS]`

use bytes::Bytes;
use cdncore::{now_ms, Cache, Meta};
use std::hint::black_box;
use std::time::Instant;

const KEYS: usize = 1000;
const BODY: usize = 1024;
const ROUNDS: usize = 9;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gets: usize = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |a| a.parse())?;
    let cache = Cache::open_str("mem=256m shards=8")?;
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("bench.example.com/assets/{i}.js").into_bytes())
        .collect();
    let body = Bytes::from(vec![b'x'; BODY]);
    for k in &keys {
        cache.insert(k, Meta::with_ttl(now_ms(), 3_600_000), body.clone())?;
    }
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut sink = 0u64;
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        for i in 0..gets {
            let found = cache.get(black_box(&keys[i % KEYS]))?;
            let obj = found.object().ok_or("miss")?;
            sink += u64::from(obj.body()[obj.body().len() - 1]);
        }
        rounds.push(t0.elapsed().as_nanos() as f64 / gets as f64);
    }
    rounds.sort_by(f64::total_cmp);
    println!("rust_get_ns {:.1}", rounds[ROUNDS / 2]);
    eprintln!("(sink {sink})");
    Ok(())
}
