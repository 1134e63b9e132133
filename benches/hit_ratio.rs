//! Hit ratio on generated traces: Zipf α = 0.8 and 1.0 over 1M keys, with
//! and without periodic one-time scans, for caches of 0.5 %, 1 % and 10 % of
//! the key space. Our ARC (through the public `Cache` API, one shard, equal
//! object sizes, so the byte budget is exactly N objects) against LRU
//! (`lru`), TinyUFO (`TinyUFO`) and Belady's offline optimum on the same
//! trace. A hit ratio is not a timing, so this binary prints a table rather
//! than running criterion. `cargo bench --bench hit_ratio`.

use bytes::Bytes;
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
const POLICIES: [(&str, Policy); 5] = [
    ("Belady", belady),
    ("ARC (engine)", engine),
    ("ARC (unit)", arc_unit),
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
    println!(
        "\n{} accesses per plain trace, {} per scan trace; {:.0} s",
        len,
        traces[1].keys.len(),
        started.elapsed().as_secs_f64()
    );
}

fn print_table(traces: &[Trace], r: &HashMap<(usize, u64, usize), f64>) {
    let names: Vec<&str> = POLICIES.iter().map(|p| p.0).collect();
    println!(
        "| trace | cache | {} | ARC − LRU | ARC − TinyUFO |",
        names.join(" | ")
    );
    println!("|---|---|{}---|---|", "---|".repeat(names.len()));
    for (t, trace) in traces.iter().enumerate() {
        for size in SIZES_PERMILLE {
            let v: Vec<f64> = (0..POLICIES.len()).map(|p| r[&(t, size, p)]).collect();
            let cols: Vec<String> = v.iter().map(|x| format!("{x:.2} %")).collect();
            println!(
                "| {} | {:.1} % | {} | {:+.2} | {:+.2} |",
                trace.name,
                size as f64 / 10.0,
                cols.join(" | "),
                v[1] - v[3],
                v[1] - v[4]
            );
        }
    }
}
