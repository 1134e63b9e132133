//! get of 4 KiB and 16 KiB objects from a block tier on /dev/shm and on
//! disk, 1 and 2 threads, against foyer's hybrid cache (memory part 1 MiB,
//! block engine on the same directory, buffered I/O) and against plain
//! pread of the same bytes from one file (the floor). Prints gets/s and
//! ratios, all measured in one run.

use cdncore::block::{Tier, TierSpec};
use cdncore::Meta;
use foyer::{
    BlockEngineBuilder, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, IoEngineBuilder, PsyncIoEngineBuilder,
};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DATA: usize = 64 << 20;
const RUN: Duration = Duration::from_millis(1500);

fn body(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| (i * 31 + j) as u8).collect()
}

/// Gets per second over all threads, each looping over random keys.
fn measure(threads: usize, n: usize, f: &(dyn Fn(usize) -> usize + Sync)) -> f64 {
    let total = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let total = &total;
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let (mut ops, mut bytes) = (0u64, 0usize);
                let end = Instant::now() + RUN;
                while ops % 256 != 0 || Instant::now() < end {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    bytes += f(x as usize % n);
                    ops += 1;
                }
                assert!(bytes > 0);
                total.fetch_add(ops, Ordering::Relaxed);
            });
        }
    });
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| tier | size | threads | cdncore gets/s | foyer gets/s | pread gets/s | cdncore/foyer | cdncore/pread |");
    println!("|---|---|---|---|---|---|---|---|");
    for (medium, base) in [("/dev/shm", "/dev/shm"), ("disk", "/var/tmp")] {
        for size in [4096usize, 16384] {
            let n = DATA / size;
            let keys: Vec<String> = (0..n).map(|i| format!("bench.example/obj/{i}")).collect();
            let d1 = tempfile::tempdir_in(base).expect("tmp");
            let tier =
                Tier::open(&TierSpec::new(d1.path(), 256 << 20), Tier::stderr_log()).expect("tier");
            let meta = Meta::with_ttl(cdncore::now_ms(), 3_600_000);
            for (i, k) in keys.iter().enumerate() {
                tier.put(k.as_bytes(), &meta, 1, &body(i, size))
                    .expect("put");
            }
            let d2 = tempfile::tempdir_in(base).expect("tmp");
            let hybrid: HybridCache<u64, Vec<u8>> = rt.block_on(async {
                let device = FsDeviceBuilder::new(d2.path())
                    .with_capacity(256 << 20)
                    .with_direct(false)
                    .build()
                    .expect("device");
                let h = HybridCacheBuilder::new()
                    .with_policy(HybridCachePolicy::WriteOnInsertion)
                    .memory(1 << 20)
                    .with_weighter(|_: &u64, v: &Vec<u8>| v.len())
                    .storage()
                    .with_io_engine(PsyncIoEngineBuilder::new().build().await.expect("io"))
                    .with_engine_config(BlockEngineBuilder::new(device).with_block_size(32 << 20))
                    .build()
                    .await
                    .expect("foyer");
                for i in 0..n {
                    h.insert(i as u64, body(i, size));
                }
                h.storage().wait().await;
                h
            });
            let d3 = tempfile::tempdir_in(base).expect("tmp");
            let floor_path = d3.path().join("floor");
            let mut all = Vec::with_capacity(DATA);
            for i in 0..n {
                all.extend_from_slice(&body(i, size));
            }
            std::fs::write(&floor_path, &all).expect("floor file");
            drop(all);
            let floor = std::fs::File::open(&floor_path).expect("open floor");
            let handle = rt.handle().clone();
            // Warm up: one pass over every key of each, so first-touch page
            // faults are not measured.
            for (i, k) in keys.iter().enumerate() {
                assert!(
                    tier.get(k.as_bytes()).ok().flatten().is_some(),
                    "tier lost {k}"
                );
                let _ = handle.block_on(hybrid.get(&(i as u64)));
                let mut buf = vec![0u8; size];
                let _ = floor.read_exact_at(&mut buf, (i * size) as u64);
            }
            for threads in [1, 2] {
                let c = measure(threads, n, &|i| {
                    tier.get(keys[i].as_bytes())
                        .ok()
                        .flatten()
                        .map_or(0, |h| h.body.len())
                });
                let f = measure(threads, n, &|i| {
                    handle
                        .block_on(hybrid.get(&(i as u64)))
                        .ok()
                        .flatten()
                        .map_or(0, |e| e.value().len())
                });
                let p = measure(threads, n, &|i| {
                    let mut buf = vec![0u8; size];
                    floor
                        .read_exact_at(&mut buf, (i * size) as u64)
                        .map_or(0, |_| buf.len())
                });
                println!(
                    "| {medium} | {} KiB | {threads} | {c:.0} | {f:.0} | {p:.0} | {:.2} | {:.2} |",
                    size / 1024,
                    c / f,
                    c / p
                );
            }
            rt.block_on(async { hybrid.close().await.expect("close") });
        }
    }
}
