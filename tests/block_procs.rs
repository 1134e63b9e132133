//! Several real processes on one block tier: this binary re-runs itself with
//! `BLOCK_CHILD` set to play a child role. Runs without the libtest harness
//! (each check is a function called from `main`; any failure panics and
//! fails the test binary).

use cdncore::block::{Tier, TierSpec};
use cdncore::Meta;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "BLOCK_CHILD";

fn spec(dir: &Path, size: u64, region: u64) -> TierSpec {
    TierSpec {
        region,
        slice: 16 << 10,
        ..TierSpec::new(dir, size)
    }
}

/// Deterministic body of a key: length and bytes follow from the key alone,
/// so any reader can verify any object.
fn body_for(key: &str) -> Vec<u8> {
    let h = key.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let len = 200 + (h % 40_000) as usize;
    (0..len)
        .map(|i| (h.rotate_left((i % 64) as u32) as u8) ^ (i as u8))
        .collect()
}

fn meta() -> Meta {
    Meta::with_ttl(1_000, 3_600_000)
}

fn open(dir: &Path, size: u64, region: u64) -> Tier {
    Tier::open(&spec(dir, size, region), Tier::stderr_log()).expect("open tier")
}

/// Checks one key: a hit must be byte-correct. Returns whether it hit.
fn verify(t: &Tier, key: &str) -> bool {
    let expected = body_for(key);
    let mut got = Vec::new();
    let hit = t
        .read_range(key.as_bytes(), 0, u64::MAX, &mut |p| {
            got.extend_from_slice(p);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("read {key}: {e}"));
    match hit {
        Some(m) => {
            assert_eq!(m.size as usize, expected.len(), "{key}: size");
            assert!(got == expected, "{key}: wrong body served");
            true
        }
        None => false,
    }
}

fn child(role: &str, args: &[String]) {
    let dir = PathBuf::from(&args[0]);
    let num = |i: usize| args[i].parse::<u64>().expect("numeric arg");
    match role {
        // writer DIR SIZE REGION ID COUNT
        "writer" => {
            let t = open(&dir, num(1), num(2));
            for i in 0..num(4) {
                let k = format!("w{}/{i}", num(3));
                t.put(k.as_bytes(), &meta(), 1, &body_for(&k)).expect("put");
            }
        }
        // reader DIR SIZE REGION WRITERS COUNT SECS: verifies whatever it sees
        "reader" => {
            let t = open(&dir, num(1), num(2));
            let end = Instant::now() + Duration::from_secs(num(5));
            let mut seen = 0;
            while Instant::now() < end {
                seen = 0;
                for w in 0..num(3) {
                    for i in 0..num(4) {
                        seen += verify(&t, &format!("w{w}/{i}")) as u64;
                    }
                }
                if seen == num(3) * num(4) {
                    break;
                }
            }
            println!("seen {seen} {:?}", t.stats());
        }
        // churn DIR SIZE REGION: writes until killed (bounded anyway)
        "churn" => {
            let t = open(&dir, num(1), num(2));
            let end = Instant::now() + Duration::from_secs(20);
            let mut i = 0u64;
            while Instant::now() < end && i < 2_000_000 {
                let k = format!("c/{i}");
                t.put(k.as_bytes(), &meta(), 1, &body_for(&k)).expect("put");
                i += 1;
            }
        }
        // purge CONFIG: records a tag purge from another process
        "purge" => {
            let c = cdncore::Cache::open_str(&args[0]).expect("open cache");
            c.purge(&cdncore::Purge::Tag(7)).expect("purge");
        }
        // big DIR SIZE: a 2 GiB object written and read back, then VmHWM
        "big" => big_object(&dir, num(1)),
        _ => panic!("unknown role {role}"),
    }
}

fn spawn(role: &str, args: &[String]) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE, role)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

fn args(dir: &Path, rest: &[u64]) -> Vec<String> {
    let mut v = vec![dir.display().to_string()];
    v.extend(rest.iter().map(|n| n.to_string()));
    v
}

fn wait_ok(c: Child) -> String {
    let out = c.wait_with_output().expect("wait");
    assert!(out.status.success(), "child failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three writer processes and two readers at once on one tier; afterwards
/// every object of every writer is there, byte-correct.
fn concurrent_writers_and_readers() {
    let d = tempfile::tempdir().expect("tempdir");
    let (size, region, count) = (256u64 << 20, 8u64 << 20, 1500u64);
    let _ = open(d.path(), size, region); // create before the race
    let writers: Vec<Child> = (0..3)
        .map(|w| spawn("writer", &args(d.path(), &[size, region, w, count])))
        .collect();
    let readers: Vec<Child> = (0..2)
        .map(|_| spawn("reader", &args(d.path(), &[size, region, 3, count, 30])))
        .collect();
    for w in writers {
        wait_ok(w);
    }
    for r in readers {
        let out = wait_ok(r);
        assert!(out.contains("seen"), "{out}");
        eprintln!("reader: {out}");
    }
    let t = open(d.path(), size, region);
    for w in 0..3 {
        for i in 0..count {
            assert!(verify(&t, &format!("w{w}/{i}")), "w{w}/{i} lost");
        }
    }
    println!("concurrent_writers_and_readers: ok");
}

/// The same with a tier far smaller than what is written, so regions
/// recycle under the readers' feet in every process: every hit is still
/// byte-correct, and the most recent objects are all there.
fn concurrent_writers_with_recycling() {
    let d = tempfile::tempdir().expect("tempdir");
    let (size, region, count) = (8u64 << 20, 1u64 << 20, 1500u64);
    let _ = open(d.path(), size, region);
    let writers: Vec<Child> = (0..3)
        .map(|w| spawn("writer", &args(d.path(), &[size, region, w, count])))
        .collect();
    let readers: Vec<Child> = (0..2)
        .map(|_| spawn("reader", &args(d.path(), &[size, region, 3, count, 4])))
        .collect();
    for w in writers {
        wait_ok(w);
    }
    for r in readers {
        // A reader panics (and fails) on any wrong byte; it must have
        // checked some objects for that to mean anything.
        let out = wait_ok(r);
        let seen: u64 = out
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(seen > 0, "reader verified nothing: {out}");
    }
    let t = open(d.path(), size, region);
    let st = t.stats();
    let hits: u64 = (0..3)
        .map(|w| {
            (0..count)
                .filter(|i| verify(&t, &format!("w{w}/{i}")))
                .count() as u64
        })
        .sum();
    assert!(hits > 100, "only {hits} objects left ({st:?})");
    assert!(hits < 3 * count, "nothing was recycled");
    println!(
        "concurrent_writers_with_recycling: ok, {hits} of {} left",
        3 * count
    );
}

/// kill -9 in the middle of heavy writes (with recycling), three times;
/// after each, reopen and check every object served is byte-correct.
fn kill_during_writes_then_reopen() {
    let d = tempfile::tempdir().expect("tempdir");
    let (size, region) = (16u64 << 20, 1u64 << 20);
    for round in 0..3u64 {
        let mut c = spawn("churn", &args(d.path(), &[size, region]));
        std::thread::sleep(Duration::from_millis(400 + 300 * round));
        c.kill().expect("kill -9");
        let _ = c.wait();
        if round == 2 {
            std::fs::remove_file(d.path().join("index")).expect("rm index");
        }
        let t = open(d.path(), size, region);
        let mut hits = 0;
        let mut misses_in_a_row = 0;
        for i in 0.. {
            if verify(&t, &format!("c/{i}")) {
                hits += 1;
                misses_in_a_row = 0;
            } else {
                misses_in_a_row += 1;
                if misses_in_a_row > 50_000 {
                    break;
                }
            }
        }
        assert!(hits > 50, "round {round}: only {hits} objects survived");
        println!("kill round {round}: {hits} objects verified");
    }
    println!("kill_during_writes_then_reopen: ok");
}

/// Bytes of the big object at `start..start + len`: a cheap pattern any
/// offset can be checked against.
fn pattern(start: u64, len: usize) -> Vec<u8> {
    let (w0, w1) = (start / 8, (start + len as u64).div_ceil(8));
    let mut b = Vec::with_capacity(((w1 - w0) * 8) as usize);
    for w in w0..w1 {
        b.extend_from_slice(&(w.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (w >> 7)).to_le_bytes());
    }
    let a = (start - w0 * 8) as usize;
    b[a..a + len].to_vec()
}

const BIG: u64 = 2 << 30;

fn big_object(dir: &Path, size: u64) {
    let spec = TierSpec::new(dir, size); // 32 MiB regions, 1 MiB slices
    let t = Tier::open(&spec, Tier::stderr_log()).expect("open");
    let mut w = t.writer(b"big/object", meta(), 1).expect("writer");
    let chunk = 256 << 10;
    let mut pos = 0;
    while pos < BIG {
        w.write(&pattern(pos, chunk)).expect("write");
        pos += chunk as u64;
    }
    w.commit().expect("commit");
    let check = |start: u64, end: u64| {
        let mut at = start;
        let m = t
            .read_range(b"big/object", start, end, &mut |piece| {
                assert!(piece == pattern(at, piece.len()), "bytes at {at}");
                at += piece.len() as u64;
                Ok(())
            })
            .expect("read")
            .expect("big object missing");
        assert_eq!(m.size, BIG);
        assert_eq!(at, end.min(BIG), "short read from {start}");
    };
    check(1_000_000_007, 1_003_000_000);
    check(BIG - 5, BIG + 100);
    check(0, BIG);
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    println!("{hwm}");
}

/// A purge recorded by another process applies here at once, in memory
/// and in the block tiers.
fn purge_from_another_process() {
    let (a, b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let conf = format!(
        "mem=4m shards=2 tier={},size=4m,region=256k tier={},size=8m,region=256k ram={}/ram",
        a.path().display(),
        b.path().display(),
        a.path().display()
    );
    let c = cdncore::Cache::open_str(&conf).expect("open");
    let mut m7 = meta();
    m7.tags = vec![7];
    c.insert(b"x.com/seven", m7, body_for("7").into())
        .expect("insert");
    c.insert(b"x.com/eight", meta(), body_for("8").into())
        .expect("insert");
    assert!(c.get(b"x.com/seven").expect("get").object().is_some());
    wait_ok(spawn("purge", std::slice::from_ref(&conf)));
    assert!(
        c.get(b"x.com/seven").expect("get").object().is_none(),
        "purged elsewhere"
    );
    let other = cdncore::Cache::open_str(&conf).expect("open");
    assert!(other.get(b"x.com/seven").expect("get").object().is_none());
    assert!(other.get(b"x.com/eight").expect("get").object().is_some());
    println!("purge_from_another_process: ok");
}

/// A 2 GiB object through a streaming writer and back by ranges, in a child
/// whose peak RSS must stay far below the object size. On disk, not RAM.
fn two_gib_object_with_bounded_memory() {
    let base = Path::new("/var/tmp");
    let d = tempfile::tempdir_in(base).expect("tempdir in /var/tmp");
    let mut c = spawn("big", &args(d.path(), &[BIG + (512 << 20)]));
    let deadline = Instant::now() + Duration::from_secs(600);
    while c.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("2 GiB round trip took over 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = wait_ok(c);
    let kb: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {out:?}"));
    assert!(kb < 64 * 1024, "peak RSS {kb} kB for a 2 GiB object");
    println!(
        "two_gib_object_with_bounded_memory: ok, peak RSS {} MiB",
        kb / 1024
    );
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let a: Vec<String> = std::env::args().skip(1).collect();
        child(&role, &a);
        return;
    }
    concurrent_writers_and_readers();
    concurrent_writers_with_recycling();
    kill_during_writes_then_reopen();
    purge_from_another_process();
    two_gib_object_with_bounded_memory();
}
