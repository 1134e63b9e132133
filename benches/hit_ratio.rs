//! Hit ratio on generated traces: Zipf α = 0.8 and 1.0 over 1M keys, with
//! and without periodic one-time scans, for caches of 0.5 %, 1 % and 10 % of
//! the key space. Our ARC (through the public `Cache` API, one shard, equal
//! object sizes, so the byte budget is exactly N objects; the bare policy;
//! the shared directory of the RAM tier with batched hits; a model of the
//! RAM tier's regions recycled under that directory) against LRU (`lru`),
//! TinyUFO (`TinyUFO`) and Belady's offline optimum on the same trace. A hit
//! ratio is not a timing, so this binary prints a table rather than running
//! criterion. `cargo bench --bench hit_ratio`.

use bytes::Bytes;
use cdncore::evict::shared::{Geometry, SharedArc};
use cdncore::evict::ArcCache;
use cdncore::{Cache, Config, Lookup, Meta};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use rand_distr::Zipf;
use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const KEYS: u64 = 1_000_000;
/// Zipf accesses per trace.
const ZIPF_LEN: usize = 2_000_000;
/// In scan traces: after every tenth of the Zipf accesses, `SCAN_LEN` keys
/// that are never seen again (5 % of the key space each time).
const SCANS: usize = 10;
const SCAN_LEN: usize = 50_000;
/// Cache sizes in thousandths of the key space.
const SIZES_PERMILLE: [u64; 3] = [5, 10, 100];
const NOW: u64 = 1_700_000_000_000;

struct Trace {
    name: String,
    keys: Vec<u32>,
}

fn zipf_trace(alpha: f64, seed: u64, len: usize) -> Vec<u32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let zipf = Zipf::new(KEYS, alpha).expect("valid Zipf parameters");
    (0..len).map(|_| rng.sample(zipf) as u32 - 1).collect()
}

/// The same Zipf accesses with a scan of fresh keys every `every` accesses.
fn with_scans(zipf: &[u32], every: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(zipf.len() * 5 / 4);
    let mut fresh = KEYS as u32;
    for (i, &k) in zipf.iter().enumerate() {
        if i > 0 && i % every == 0 {
            out.extend(fresh..fresh + SCAN_LEN as u32);
            fresh += SCAN_LEN as u32;
        }
        out.push(k);
    }
    out
}

/// Belady's MIN: on a miss with a full cache, keep the `n` keys whose next
/// use is soonest (the requested key included, so a key never used again is
/// not admitted).
fn belady(trace: &[u32], n: usize) -> u64 {
    let never = u32::MAX;
    let mut next = vec![never; trace.len()];
    let mut last: HashMap<u32, u32> = HashMap::new();
    for (i, &k) in trace.iter().enumerate().rev() {
        if let Some(j) = last.insert(k, i as u32) {
            next[i] = j;
        }
    }
    drop(last);
    // Resident keys by next use, and each resident key's next use.
    let mut by_next: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut resident: HashMap<u32, u32> = HashMap::with_capacity(n * 2);
    let mut hits = 0;
    for (i, &k) in trace.iter().enumerate() {
        let nu = next[i];
        if let Some(old) = resident.get_mut(&k) {
            hits += 1;
            by_next.remove(&(*old, k));
            *old = nu;
            by_next.insert((nu, k));
            continue;
        }
        if resident.len() == n {
            let &(far, victim) = by_next.last().expect("a full cache has keys");
            if far <= nu {
                continue; // the new key is needed last: do not admit it
            }
            by_next.pop_last();
            resident.remove(&victim);
        }
        resident.insert(k, nu);
        by_next.insert((nu, k));
    }
    hits
}

fn key_bytes(k: u32) -> [u8; 11] {
    let mut b = *b"k0000000000";
    let mut v = k;
    for d in b[1..].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    b
}

/// Bytes the engine charges for one object of the trace (empty body).
fn charge() -> u64 {
    let c = Cache::open_str("mem=1m shards=1").expect("probe cache opens");
    c.insert(&key_bytes(0), Meta::with_ttl(NOW, 1 << 40), Bytes::new())
        .expect("probe insert");
    c.counters().bytes_used
}

/// Our ARC through the engine API: get, and insert on a miss.
fn engine(trace: &[u32], n: usize) -> u64 {
    let cfg = Config {
        mem: n as u64 * charge(),
        shards: 1,
        ..Config::default()
    };
    let cache = Cache::open(cfg).expect("cache opens");
    let mut hits = 0;
    for &k in trace {
        let key = key_bytes(k);
        match cache.get_at(&key, NOW) {
            Ok(Lookup::Fresh(_)) => hits += 1,
            _ => {
                let meta = Meta::with_ttl(NOW, 1 << 40);
                cache.insert(&key, meta, Bytes::new()).expect("insert");
            }
        }
    }
    hits
}

/// The ARC policy alone, unit sizes: a cross-check of the engine column.
fn arc_unit(trace: &[u32], n: usize) -> u64 {
    let mut c: ArcCache<()> = ArcCache::new(n as u64);
    let mut hits = 0;
    for &k in trace {
        if c.get(u128::from(k)).is_some() {
            hits += 1;
        } else {
            c.insert(u128::from(k), 1, (), &mut |_, _| {});
        }
    }
    hits
}

/// A shared directory of capacity `cap` units in a temporary file, with
/// room for every node ARC keeps (residents and ghosts).
fn directory(n: usize, cap: u64) -> (tempfile::TempDir, SharedArc) {
    let d = tempfile::tempdir().expect("temp dir");
    let geo = Geometry {
        nodes: 2 * n as u32 + 64,
        cap,
    };
    let log = std::sync::Arc::new(|l: &str| eprintln!("{l}"));
    let dir = SharedArc::open(&d.path().join("arc"), geo, log).expect("directory");
    (d, dir)
}

/// The RAM tier's directory as production drives it: a hit is batched
/// (applied every `BATCH` hits or before the next insert), a miss inserts.
fn shared_dir(trace: &[u32], n: usize) -> u64 {
    let (_d, dir) = directory(n, n as u64);
    let mut hits = 0;
    for &k in trace {
        let h = u128::from(k);
        if dir.which(h).is_some_and(|w| w.resident()) {
            hits += 1;
            dir.hit(h, 1);
        } else {
            dir.insert(h, 1);
        }
    }
    hits
}

/// Regions of the modelled RAM tier (the default `ram_region` is mem/16).
const RAM_REGIONS: usize = 16;

/// What the model of the RAM tier counts.
struct RamRun {
    hits: u64,
    /// Records copied to the head by recycling, and records inserted.
    copies: u64,
    inserts: u64,
}

/// The RAM tier at unit sizes: `n` record slots in `RAM_REGIONS` regions
/// written FIFO, under a directory of capacity `cap`. A hit is a record
/// still there (ARC-resident or not); when the oldest region is recycled,
/// its ARC-resident records are copied to the head (at most `budget` of a
/// region) and the rest leave (to the disk tier, not counted as a hit).
fn ram_model(trace: &[u32], n: usize, cap: u64, budget: u64) -> RamRun {
    let per = n / RAM_REGIONS;
    let (_d, dir) = directory(n, cap);
    let mut regions: Vec<Vec<u32>> = (0..RAM_REGIONS).map(|_| Vec::with_capacity(per)).collect();
    let mut present: HashMap<u32, ()> = HashMap::with_capacity(n * 2);
    let mut run = RamRun {
        hits: 0,
        copies: 0,
        inserts: 0,
    };
    let mut head = 0;
    for &k in trace {
        let h = u128::from(k);
        if present.contains_key(&k) {
            run.hits += 1;
            dir.hit(h, 1);
            continue;
        }
        // Recycle until the head has room (compaction may refill it).
        while regions[head].len() >= per {
            head = (head + 1) % RAM_REGIONS;
            let old = std::mem::take(&mut regions[head]);
            let objects: Vec<(u128, u64)> = old.iter().map(|&k| (u128::from(k), 1)).collect();
            let (keep, _) = dir.keep(&objects, budget);
            for (k, keep) in old.into_iter().zip(keep) {
                if keep {
                    regions[head].push(k);
                    run.copies += 1;
                } else {
                    present.remove(&k);
                }
            }
        }
        regions[head].push(k);
        present.insert(k, ());
        dir.insert(h, 1);
        run.inserts += 1;
    }
    run
}

/// The RAM tier with the engine's choices of capacity and recycling budget.
fn ram_tier(trace: &[u32], n: usize) -> u64 {
    let per = (n / RAM_REGIONS) as u64;
    let cap = cdncore::config::ram_capacity(n as u64, per);
    ram_model(trace, n, cap, cdncore::config::ram_compaction_budget(per)).hits
}

/// Other choices of slack (capacity = n - slack) and recycling budget, in
/// regions and eighths of a region: (name, slack, budget).
const RAM_VARIANTS: [(&str, f64, u64); 5] = [
    ("slack 1/8 + 2 regions, budget 3/4 (engine)", 4.0, 6),
    ("slack 1/8 + 2 regions, budget 7/8", 4.0, 7),
    ("slack 1/8 + 2 regions, budget 1/2", 4.0, 4),
    ("slack 2 regions, budget 7/8", 2.0, 7),
    ("slack 1 region, budget 7/8", 1.0, 7),
];

fn lru(trace: &[u32], n: usize) -> u64 {
    let mut c = lru::LruCache::new(NonZeroUsize::new(n).expect("n > 0"));
    let mut hits = 0;
    for &k in trace {
        if c.get(&k).is_some() {
            hits += 1;
        } else {
            c.put(k, ());
        }
    }
    hits
}

fn tinyufo(trace: &[u32], n: usize) -> u64 {
    let c = tinyufo::TinyUfo::new(n, n);
    let mut hits = 0;
    for &k in trace {
        if c.get(&k).is_some() {
            hits += 1;
        } else {
            c.put(k, (), 1);
        }
    }
    hits
}

type Policy = fn(&[u32], usize) -> u64;
const POLICIES: [(&str, Policy); 7] = [
    ("Belady", belady),
    ("ARC (engine)", engine),
    ("ARC (unit)", arc_unit),
    ("ARC (shared dir)", shared_dir),
    ("RAM tier", ram_tier),
    ("LRU", lru),
    ("TinyUFO", tinyufo),
];

fn main() {
    // `--test` (as in `cargo bench -- --test`): a quick smoke run.
    let smoke = std::env::args().any(|a| a == "--test");
    let len = if smoke { ZIPF_LEN / 100 } else { ZIPF_LEN };
    let started = std::time::Instant::now();
    let mut traces = Vec::new();
    for (alpha, seed) in [(0.8, 8), (1.0, 10)] {
        let z = zipf_trace(alpha, seed, len);
        traces.push(Trace {
            name: format!("zipf {alpha:.1} + scans"),
            keys: with_scans(&z, len / SCANS),
        });
        traces.push(Trace {
            name: format!("zipf {alpha:.1}"),
            keys: z,
        });
    }
    traces.sort_by(|a, b| a.name.cmp(&b.name));
    // Every (trace, size, policy) run is independent: share them out over
    // the cores (hit ratios do not depend on timing).
    let jobs: Vec<(usize, u64, usize)> = (0..traces.len())
        .flat_map(|t| SIZES_PERMILLE.iter().map(move |&s| (t, s)))
        .flat_map(|(t, s)| (0..POLICIES.len()).map(move |p| (t, s, p)))
        .collect();
    let results = Mutex::new(HashMap::new());
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some(&(t, size, p)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let n = (KEYS * size / 1000) as usize;
                let trace = &traces[t].keys;
                let hits = (POLICIES[p].1)(trace, n);
                let ratio = 100.0 * hits as f64 / trace.len() as f64;
                results
                    .lock()
                    .expect("no panics")
                    .insert((t, size, p), ratio);
            });
        }
    });
    let r = results.into_inner().expect("no panics");
    print_table(&traces, &r);
    print_ram_variants(&traces, &r);
    println!(
        "\n{} accesses per plain trace, {} per scan trace; {:.0} s",
        len,
        traces[1].keys.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The RAM tier model under other slack and budget choices, at a cache of
/// 1 % of the key space, beside ARC (unit) of the same size.
fn print_ram_variants(traces: &[Trace], r: &HashMap<(usize, u64, usize), f64>) {
    let size = 10;
    let n = (KEYS * size / 1000) as usize;
    let per = (n / RAM_REGIONS) as f64;
    let jobs: Vec<(usize, usize)> = (0..RAM_VARIANTS.len())
        .flat_map(|v| (0..traces.len()).map(move |t| (v, t)))
        .collect();
    let out = Mutex::new(HashMap::new());
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some(&(v, t)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let (_, slack, eighths) = RAM_VARIANTS[v];
                let cap = n as u64 - (slack * per) as u64;
                let run = ram_model(&traces[t].keys, n, cap, per as u64 / 8 * eighths);
                out.lock().expect("no panics").insert((v, t), run);
            });
        }
    });
    let out = out.into_inner().expect("no panics");
    println!("\nRAM tier at 1 % of the key space: hit ratio − ARC (unit), records copied by recycling per insert");
    let names: Vec<&str> = traces.iter().map(|t| t.name.as_str()).collect();
    println!("| variant | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for (v, (name, _, _)) in RAM_VARIANTS.iter().enumerate() {
        let cols: Vec<String> = (0..traces.len())
            .map(|t| {
                let run = &out[&(v, t)];
                let ratio = 100.0 * run.hits as f64 / traces[t].keys.len() as f64;
                let arc = r[&(t, size, 2)];
                format!(
                    "{:+.2} ({:.2})",
                    ratio - arc,
                    run.copies as f64 / run.inserts.max(1) as f64
                )
            })
            .collect();
        println!("| {name} | {} |", cols.join(" | "));
    }
}

fn print_table(traces: &[Trace], r: &HashMap<(usize, u64, usize), f64>) {
    let names: Vec<&str> = POLICIES.iter().map(|p| p.0).collect();
    println!(
        "| trace | cache | {} | ARC − LRU | ARC − TinyUFO | shared dir − ARC |",
        names.join(" | ")
    );
    println!("|---|---|{}---|---|---|", "---|".repeat(names.len()));
    for (t, trace) in traces.iter().enumerate() {
        for size in SIZES_PERMILLE {
            let v: Vec<f64> = (0..POLICIES.len()).map(|p| r[&(t, size, p)]).collect();
            let cols: Vec<String> = v.iter().map(|x| format!("{x:.2} %")).collect();
            println!(
                "| {} | {:.1} % | {} | {:+.2} | {:+.2} | {:+.2} |",
                trace.name,
                size as f64 / 10.0,
                cols.join(" | "),
                v[1] - v[5],
                v[1] - v[6],
                v[3] - v[2]
            );
        }
    }
}
