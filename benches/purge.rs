//! Purge cost: a cache of N objects (10k and 1M) where tag 7, and the
//! directory `example.com/a/`, cover half of them. For each N and each kind
//! (tag, prefix):
//! - the first purge call on a fully populated cache and the next 1,000
//!   gets (half of them land on purged objects), against 1,000 gets just
//!   before it: median of `ROUNDS` rounds, the purged half refilled between;
//!   once with the background sweeper on (the default: it wakes on the purge
//!   and sweeps while the gets run) and once with `sweeper=off` (the
//!   embedder reclaims later), which isolates the engine's own costs;
//! - criterion's measurement of the purge call repeated back to back
//!   (sweeper on).
//!
//! `cargo bench --bench purge`.

use bytes::Bytes;
use cdncore::{Cache, Config, Lookup, Meta, Purge};
use criterion::{BenchmarkId, Criterion};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 2] = [10_000, 1_000_000];
const TAG: u16 = 7;
const PREFIX: &[u8] = b"example.com/a/";
const GETS: usize = 1_000;
const ROUNDS: usize = 7;
const SAMPLES: usize = 10;
const TTL: u64 = 1 << 40;

/// Even objects live under `example.com/a/` and carry tag 7.
fn key(i: usize) -> Vec<u8> {
    let dir = if i % 2 == 0 { 'a' } else { 'b' };
    format!("example.com/{dir}/obj{i:08}").into_bytes()
}

fn store(c: &Cache, i: usize) {
    let mut meta = Meta::with_ttl(cdncore::now_ms(), TTL);
    if i % 2 == 0 {
        meta.tags = vec![TAG];
    }
    let body = Bytes::from(vec![i as u8; 64]);
    c.insert(&key(i), meta, body).expect("insert");
}

/// A cache holding objects 0..n, with room to spare so none is evicted.
fn filled(n: usize, sweeper: bool) -> Cache {
    let probe = Cache::open_str("mem=1m shards=1").expect("probe cache opens");
    store(&probe, 0);
    let per_object = probe.counters().bytes_used;
    let cfg = Config {
        mem: (2 * n as u64 * per_object).max(8 << 20),
        sweeper,
        ..Config::default()
    };
    let c = Cache::open(cfg).expect("cache opens");
    (0..n).for_each(|i| store(&c, i));
    assert_eq!(c.counters().objects, n as u64, "every object is resident");
    c
}

fn purge_of(kind: &str) -> Purge {
    match kind {
        "tag" => Purge::Tag(TAG),
        _ => Purge::Prefix(PREFIX.to_vec()),
    }
}

/// 1,000 gets of random keys; time and hits.
fn gets(c: &Cache, keys: &[Vec<u8>]) -> (Duration, usize) {
    let start = Instant::now();
    let hits = keys
        .iter()
        .filter(|k| matches!(black_box(c.get(k)), Ok(Lookup::Fresh(_))))
        .count();
    (start.elapsed(), hits)
}

struct Row {
    n: usize,
    sweeper: bool,
    kind: &'static str,
    call: Duration,
    after: Duration,
    before: Duration,
    repeated: Option<Duration>,
}

/// Medians over rounds of: 1,000 gets, the purge call, 1,000 gets.
fn rounds(c: &Cache, n: usize, kind: &'static str) -> (Duration, Duration, Duration) {
    let mut rng = SmallRng::seed_from_u64(n as u64);
    let (mut call, mut after, mut before) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        // Refill the purged half, then let the sweeper finish.
        (0..n).step_by(2).for_each(|i| store(c, i));
        c.reclaim_now();
        assert_eq!(c.counters().objects, n as u64, "refilled");
        let pick =
            |rng: &mut SmallRng| -> Vec<usize> { (0..GETS).map(|_| rng.gen_range(0..n)).collect() };
        let warm: Vec<Vec<u8>> = pick(&mut rng).into_iter().map(key).collect();
        let idx = pick(&mut rng);
        let keys: Vec<Vec<u8>> = idx.iter().map(|&i| key(i)).collect();
        let p = purge_of(kind);
        before.push(gets(c, &warm).0);

        let start = Instant::now();
        black_box(c.purge(black_box(&p)).expect("purge"));
        call.push(start.elapsed());

        let (t, hits) = gets(c, &keys);
        after.push(t);
        let alive = idx.iter().filter(|&&i| i % 2 == 1).count();
        assert_eq!(hits, alive, "purged objects miss, the others hit");
    }
    (median(call), median(after), median(before))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Criterion: the purge call repeated; returns the median per call.
fn repeated(cr: &mut Criterion, c: &Cache, n: usize, kind: &str) -> Option<Duration> {
    let p = purge_of(kind);
    let mut per_call = Vec::new();
    let mut g = cr.benchmark_group("purge_call");
    g.sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::new(kind, n), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(c.purge(black_box(&p)).expect("purge"));
            }
            let t = start.elapsed();
            per_call.push(t / iters.max(1) as u32);
            t
        })
    });
    g.finish();
    // The last SAMPLES calls are the measurement, earlier ones warm-up.
    let m = per_call.split_off(per_call.len().saturating_sub(SAMPLES));
    (!m.is_empty()).then(|| median(m))
}

fn main() {
    let mut cr = Criterion::default().configure_from_args();
    let full = std::env::args().skip(1).all(|a| a == "--bench");
    let mut rows = Vec::new();
    for n in SIZES {
        for sweeper in [true, false] {
            let c = filled(n, sweeper);
            for kind in ["tag", "prefix"] {
                // The back-to-back call with the default set-up only.
                let rep = match sweeper {
                    true => repeated(&mut cr, &c, n, kind),
                    false => None,
                };
                if full {
                    let (call, after, before) = rounds(&c, n, kind);
                    rows.push(Row {
                        n,
                        sweeper,
                        kind,
                        call,
                        after,
                        before,
                        repeated: rep,
                    });
                }
            }
        }
    }
    cr.final_summary();
    if full {
        print_table(&rows);
    }
}

fn print_table(rows: &[Row]) {
    println!("\nPurge of half the cache (medians; first call and gets: {ROUNDS} rounds):\n");
    println!(
        "| objects | sweeper | purge | first call | repeated call | {GETS} gets after | {GETS} gets before |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let rep = r.repeated.map_or("–".into(), |d| format!("{d:.0?}"));
        println!(
            "| {} | {} | {} | {:.1?} | {rep} | {:.2?} | {:.2?} |",
            r.n,
            if r.sweeper { "on" } else { "off" },
            r.kind,
            r.call,
            r.after,
            r.before
        );
    }
}
