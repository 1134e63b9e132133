//! Throughput of get-hit, insert and a 90/10 get/insert mix on 1 and 2
//! threads: `cdncore::Cache` against `lru` (behind a `parking_lot::Mutex`),
//! `moka::sync::Cache` and `quick_cache::sync::Cache`, all holding the same
//! number of objects (ours: a byte budget of that many objects). After the
//! criterion runs, prints the median ops/s of each and its ratio to moka.
//! `cargo bench --bench throughput`.

use bytes::Bytes;
use cdncore::{Cache, Config, Lookup, Meta};
use criterion::{BenchmarkId, Criterion, Throughput};
use parking_lot::Mutex;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use rand_distr::Zipf;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// Objects each cache holds.
const CAP: usize = 100_000;
/// Body bytes of every object.
const VALUE: usize = 256;
/// Keys the insert and mixed loads draw from (4× the capacity).
const SPACE: usize = 4 * CAP;
/// Pre-generated operations per thread (a power of two; replayed in a loop).
const OPS: usize = 1 << 20;
const INSERT: u32 = 1 << 31;
const TTL: u64 = 1 << 40;
/// Interleaved rounds for the ratio table, and operations per thread in each.
const ROUNDS: usize = 11;
const ROUND_OPS: u64 = 300_000;
const LOADS: [Load; 3] = [Load::GetHit, Load::Insert, Load::Mixed];

/// The operations every contender offers.
trait Contender: Sync {
    /// A lookup that hands the value out (a reference-count bump); hit?
    fn get(&self, k: &[u8]) -> bool;
    fn put(&self, k: &[u8], v: &Bytes);
}

struct Ours(Cache, u64);
impl Contender for Ours {
    fn get(&self, k: &[u8]) -> bool {
        // `get_at` with the caller's clock, as nginx passes its cached time.
        matches!(black_box(self.0.get_at(k, self.1)), Ok(Lookup::Fresh(_)))
    }
    fn put(&self, k: &[u8], v: &Bytes) {
        let meta = Meta::with_ttl(self.1, TTL);
        let _ = black_box(self.0.insert(k, meta, v.clone()));
    }
}

struct Lru(Mutex<lru::LruCache<Box<[u8]>, Bytes>>);
impl Contender for Lru {
    fn get(&self, k: &[u8]) -> bool {
        black_box(self.0.lock().get(k).cloned()).is_some()
    }
    fn put(&self, k: &[u8], v: &Bytes) {
        self.0.lock().put(k.into(), v.clone());
    }
}

struct Moka(moka::sync::Cache<Box<[u8]>, Bytes>);
impl Contender for Moka {
    fn get(&self, k: &[u8]) -> bool {
        black_box(self.0.get(k)).is_some()
    }
    fn put(&self, k: &[u8], v: &Bytes) {
        self.0.insert(k.into(), v.clone());
    }
}

struct Quick(quick_cache::sync::Cache<Box<[u8]>, Bytes>);
impl Contender for Quick {
    fn get(&self, k: &[u8]) -> bool {
        black_box(self.0.get(k)).is_some()
    }
    fn put(&self, k: &[u8], v: &Bytes) {
        self.0.insert(k.into(), v.clone());
    }
}

const NAMES: [&str; 4] = ["cdncore", "lru+mutex", "moka", "quick_cache"];

fn make(name: &str) -> Box<dyn Contender> {
    match name {
        "cdncore" => Box::new(ours()),
        "lru+mutex" => Box::new(Lru(Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(CAP).expect("CAP > 0"),
        )))),
        "moka" => Box::new(Moka(moka::sync::Cache::new(CAP as u64))),
        _ => Box::new(Quick(quick_cache::sync::Cache::new(CAP))),
    }
}

/// Our cache with a byte budget of exactly `CAP` objects of this bench.
fn ours() -> Ours {
    let now = cdncore::now_ms();
    let probe = Cache::open_str("mem=1m shards=1").expect("probe cache opens");
    probe
        .insert(&key(0), Meta::with_ttl(now, TTL), value(0))
        .expect("probe insert");
    let per_object = probe.counters().bytes_used;
    let cfg = Config {
        mem: CAP as u64 * per_object,
        ..Config::default()
    };
    Ours(Cache::open(cfg).expect("cache opens"), now)
}

fn key(i: usize) -> Box<[u8]> {
    format!("example.com/static/obj{i:08}.js")
        .into_bytes()
        .into()
}

/// A body of its own for key `i`: objects share no reference count.
fn value(i: usize) -> Bytes {
    Bytes::from(vec![i as u8; VALUE])
}

/// The three loads: which keys are pre-filled, and each thread's operations
/// (key index, with `INSERT` set for an insert).
#[derive(Clone, Copy)]
enum Load {
    GetHit,
    Insert,
    Mixed,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::GetHit => "get_hit",
            Load::Insert => "insert",
            Load::Mixed => "mixed_90_10",
        }
    }

    /// Get-hit uses half the capacity so that every contender (moka admits
    /// by frequency, ours is sharded) holds the whole working set.
    fn prefill(self) -> usize {
        match self {
            Load::GetHit => CAP / 2,
            Load::Insert | Load::Mixed => CAP,
        }
    }

    fn ops(self, thread: u64) -> Vec<u32> {
        let mut rng = SmallRng::seed_from_u64(0x5eed + thread);
        let zipf = Zipf::new(SPACE as u64, 0.9).expect("valid Zipf parameters");
        (0..OPS)
            .map(|_| match self {
                Load::GetHit => rng.gen_range(0..CAP as u32 / 2),
                Load::Insert => rng.gen_range(0..SPACE as u32) | INSERT,
                Load::Mixed => {
                    let k = rng.sample(zipf) as u32 - 1;
                    if rng.gen_ratio(1, 10) {
                        k | INSERT
                    } else {
                        k
                    }
                }
            })
            .collect()
    }
}

/// Keys and bodies of the whole key space.
struct Fixture {
    keys: Vec<Box<[u8]>>,
    values: Vec<Bytes>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            keys: (0..SPACE).map(key).collect(),
            values: (0..SPACE).map(value).collect(),
        }
    }

    /// A contender holding the load's pre-filled keys.
    fn prepared(&self, name: &str, load: Load) -> Box<dyn Contender> {
        let c = make(name);
        let n = load.prefill();
        for (k, v) in self.keys[..n].iter().zip(&self.values) {
            c.put(k, v);
        }
        if let Load::GetHit = load {
            let held = self.keys[..n].iter().filter(|k| c.get(k)).count();
            assert_eq!(held, n, "{name} holds the working set");
        }
        c
    }

    /// Runs `iters` operations on each of `ops.len()` threads; wall time.
    fn run(&self, c: &dyn Contender, ops: &[Vec<u32>], iters: u64) -> Duration {
        let work = |ops: &[u32]| {
            for i in 0..iters as usize {
                let op = ops[i & (OPS - 1)];
                let k = (op & !INSERT) as usize;
                if op & INSERT != 0 {
                    c.put(&self.keys[k], &self.values[k]);
                } else {
                    black_box(c.get(&self.keys[k]));
                }
            }
        };
        let start = Instant::now();
        if ops.len() == 1 {
            work(&ops[0]);
        } else {
            std::thread::scope(|s| {
                for o in ops {
                    s.spawn(|| work(o));
                }
            });
        }
        start.elapsed()
    }
}

/// Criterion's measurement of every (load, threads, contender).
fn bench(cr: &mut Criterion, fx: &Fixture) {
    for load in LOADS {
        let mut g = cr.benchmark_group(load.name());
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for threads in [1, 2] {
            let ops: Vec<Vec<u32>> = (0..threads).map(|t| load.ops(t as u64)).collect();
            g.throughput(Throughput::Elements(threads as u64));
            for name in NAMES {
                // Filled on first use, so a filtered-out bench costs nothing.
                let mut c = None;
                g.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
                    let c = c.get_or_insert_with(|| fx.prepared(name, load));
                    b.iter_custom(|iters| fx.run(&**c, &ops, iters))
                });
            }
        }
        g.finish();
    }
}

/// Ratio to moka per (load, threads, contender): the median over rounds
/// in which all four run back to back, so machine noise hits them alike.
type Ratios = BTreeMap<(&'static str, usize, &'static str), (f64, f64)>;

fn interleaved(fx: &Fixture) -> Ratios {
    let mut out = Ratios::new();
    for load in LOADS {
        for threads in [1, 2] {
            let ops: Vec<Vec<u32>> = (0..threads).map(|t| load.ops(t as u64)).collect();
            let cs: Vec<_> = NAMES.iter().map(|n| fx.prepared(n, load)).collect();
            let mut rates = vec![Vec::new(); NAMES.len()];
            for round in 0..ROUNDS {
                for j in 0..NAMES.len() {
                    let i = (round + j) % NAMES.len(); // rotate who goes first
                    let t = fx.run(&*cs[i], &ops, ROUND_OPS);
                    rates[i].push((threads * ROUND_OPS as usize) as f64 / t.as_secs_f64());
                }
            }
            let moka = NAMES.iter().position(|n| *n == "moka").unwrap_or(0);
            for (i, name) in NAMES.iter().enumerate() {
                let ratios: Vec<f64> = (0..ROUNDS).map(|r| rates[i][r] / rates[moka][r]).collect();
                out.insert(
                    (load.name(), threads, name),
                    (median(rates[i].clone()), median(ratios)),
                );
            }
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_table(r: &Ratios) {
    println!("\nMedian Mops/s (median ratio to moka over {ROUNDS} interleaved rounds), {CAP} objects of {VALUE} B:\n");
    println!("| load | threads | {} |", NAMES.join(" | "));
    println!("|---|---|{}", "---|".repeat(NAMES.len()));
    let mut rows: Vec<(&str, usize)> = r.keys().map(|k| (k.0, k.1)).collect();
    rows.dedup();
    for (load, threads) in rows {
        let cols: Vec<String> = NAMES
            .iter()
            .map(|n| {
                let (rate, ratio) = r[&(load, threads, *n)];
                format!("{:.2} ({ratio:.2}×)", rate / 1e6)
            })
            .collect();
        println!("| {load} | {threads} | {} |", cols.join(" | "));
    }
}

fn main() {
    let fx = Fixture::new();
    let mut cr = Criterion::default().configure_from_args();
    bench(&mut cr, &fx);
    cr.final_summary();
    // The ratio table only for a full run, not for `--test`/`--list`/filters.
    if std::env::args().skip(1).all(|a| a == "--bench") {
        print_table(&interleaved(&fx));
    }
}
