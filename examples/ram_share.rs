//! Memory of processes sharing one store: one process fills OBJECTS bodies
//! of SIZE_KB, then PROCS processes each hit all of them twice and read
//! every byte (as a `writev` of the mapped body would; `sendfile` touches
//! nothing). Each reports how much its anonymous memory (heap), its mapped
//! shared memory and its proportional set size (Pss) grew; the RAM tier's
//! files in tmpfs are counted once.
//!
//! `cargo run --release --example ram_share -- [PROCS] [OBJECTS] [SIZE_KB]`
//! (defaults 2, 64, 1024). The RAM tier goes in a temporary directory under
//! /dev/shm, removed at the end.

use cdncore::{Cache, Meta};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kb(path: &str) -> HashMap<String, i64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((k.trim().to_string(), n))
        })
        .collect()
}

/// (RssAnon, RssShmem, Pss) in kB.
fn memory() -> [i64; 3] {
    let (st, roll) = (kb("/proc/self/status"), kb("/proc/self/smaps_rollup"));
    [st["RssAnon"], st["RssShmem"], roll["Pss"]]
}

fn body(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

fn hitter(conf: &str, objects: usize, barrier: &Path, procs: usize) {
    let c = Cache::open_str(conf).expect("open the store");
    let before = memory();
    let mut sum = 0u64;
    for _ in 0..2 {
        for i in 0..objects {
            let l = c.get(format!("share/{i}").as_bytes()).expect("get");
            let o = l.object().expect("a hit");
            sum += o.body().iter().map(|&b| b as u64).sum::<u64>();
        }
    }
    // Measure once every hitter has touched every page, and stay until all
    // have measured (Pss divides a page among the processes mapping it).
    let wait_for = |name: &str, count: usize| {
        std::fs::write(barrier.join(format!("{name}.{}", std::process::id())), b"")
            .expect("barrier");
        let end = Instant::now() + Duration::from_secs(60);
        while std::fs::read_dir(barrier).map_or(0, |d| d.count()) < count && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("touched", procs);
    let after = memory();
    wait_for("measured", 2 * procs);
    let d: Vec<String> = (0..3).map(|i| (after[i] - before[i]).to_string()).collect();
    println!("{} {sum}", d.join(" "));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Ok(conf) = std::env::var("RAM_SHARE_CHILD") {
        let n = |i: usize| args[i].parse::<usize>().expect("number");
        hitter(&conf, n(1), Path::new(&args[2]), n(3));
        return;
    }
    let arg = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (procs, objects, size_kb) = (arg(1, 2), arg(2, 64), arg(3, 1024));
    let shm = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let disk = tempfile::tempdir().expect("temp dir");
    let barrier = tempfile::tempdir().expect("temp dir");
    let mem = (objects * size_kb * 2).max(16 << 10);
    let conf = format!(
        "mem={mem}k max_object={}k ram={} tier={},size={}k",
        size_kb.max(64),
        shm.path().display(),
        disk.path().display(),
        (mem * 2).max(64 << 10)
    );
    {
        let c = Cache::open_str(&conf).expect("open the store");
        for i in 0..objects {
            let m = Meta::with_ttl(cdncore::now_ms(), 3_600_000);
            c.insert(
                format!("share/{i}").as_bytes(),
                m,
                body(i, size_kb << 10).into(),
            )
            .expect("insert");
        }
    }
    let kids: Vec<_> = (0..procs)
        .map(|_| {
            Command::new(std::env::current_exe().expect("exe"))
                .env("RAM_SHARE_CHILD", &conf)
                .args([
                    objects.to_string(),
                    barrier.path().display().to_string(),
                    procs.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let bodies = (objects * size_kb) as i64;
    println!(
        "{procs} processes, {objects} x {size_kb} KiB = {} MiB of bodies",
        bodies / 1024
    );
    println!("| process | heap (RssAnon) + | shared (RssShmem) + | Pss + |");
    println!("|---|---|---|---|");
    let mut pss = 0;
    for (i, k) in kids.into_iter().enumerate() {
        let out = k.wait_with_output().expect("wait");
        let line = String::from_utf8_lossy(&out.stdout);
        let v: Vec<i64> = line
            .split_whitespace()
            .take(3)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() < 3 {
            eprintln!("ram_share: child {i} failed: {line}");
            std::process::exit(1);
        }
        pss += v[2];
        println!(
            "| {i} | {} MiB | {} MiB | {} MiB |",
            v[0] / 1024,
            v[1] / 1024,
            v[2] / 1024
        );
    }
    let files: u64 = std::fs::read_dir(shm.path())
        .expect("ram dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum();
    println!(
        "sum of Pss growth: {} MiB; RAM tier files in tmpfs: {} MiB (bodies {} MiB)",
        pss / 1024,
        files >> 20,
        bodies / 1024
    );
}
