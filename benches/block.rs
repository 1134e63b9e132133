//! get of 4 KiB and 16 KiB objects from a block tier on /dev/shm and on disk
//! (/var/tmp), 1 and 2 threads, beside pread of the same bytes from one file
//! (the floor). Times are per get, over all threads (2 threads that scale
//! perfectly halve it). foyer is compared in `bench/foyer-cmp`, kept out of
//! the workspace so CI does not build it.

use cdncore::block::{Tier, TierSpec};
use cdncore::Meta;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const DATA: usize = 64 << 20;

fn body(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| (i * 31 + j) as u8).collect()
}

/// Runs `iters` gets on each of `threads` threads; time per get overall.
fn run(threads: usize, iters: u64, n: usize, f: &(dyn Fn(usize) -> usize + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                for _ in 0..iters {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    black_box(f(x as usize % n));
                }
            });
        }
    });
    start.elapsed() / threads as u32
}

fn gets(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_get");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (medium, base) in [("shm", "/dev/shm"), ("disk", "/var/tmp")] {
        for size in [4096usize, 16384] {
            let n = DATA / size;
            let keys: Vec<String> = (0..n).map(|i| format!("bench.example/obj/{i}")).collect();
            let d = tempfile::tempdir_in(base).expect("tmp");
            let tier =
                Tier::open(&TierSpec::new(d.path(), 256 << 20), Tier::stderr_log()).expect("tier");
            let meta = Meta::with_ttl(cdncore::now_ms(), 3_600_000);
            let mut all = Vec::with_capacity(DATA);
            for (i, k) in keys.iter().enumerate() {
                let b = body(i, size);
                tier.put(k.as_bytes(), &meta, 1, &b).expect("put");
                all.extend_from_slice(&b);
            }
            let floor_path = d.path().join("floor");
            std::fs::write(&floor_path, &all).expect("floor");
            drop(all);
            let floor = std::fs::File::open(&floor_path).expect("floor");
            for threads in [1usize, 2] {
                let id = |what: &str| {
                    BenchmarkId::new(format!("{medium}/{}k/{what}", size / 1024), threads)
                };
                g.bench_function(id("tier"), |b| {
                    b.iter_custom(|iters| {
                        run(threads, iters, n, &|i| {
                            tier.get(keys[i].as_bytes())
                                .ok()
                                .flatten()
                                .map_or(0, |h| h.body.len())
                        })
                    })
                });
                g.bench_function(id("pread"), |b| {
                    b.iter_custom(|iters| {
                        run(threads, iters, n, &|i| {
                            let mut buf = vec![0u8; size];
                            floor
                                .read_exact_at(&mut buf, (i * size) as u64)
                                .map_or(0, |_| buf.len())
                        })
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, gets);
criterion_main!(benches);
