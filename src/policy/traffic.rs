//! Traffic statistics per domain and in total (UpCDN, nginx-module-vts):
//! requests, bytes, responses by status class, cache results, origin bytes
//! and time, guard and hotlink decisions — as monotonic totals (for
//! Prometheus) and in fixed windows (default 5 minutes; the current one and
//! the last N) whose summaries can be shipped to a collector.
//!
//! Like the purge table, everything is a flat array of `AtomicU64` words, so
//! nginx workers can share one table in a shared mapping. A domain takes a
//! slot found by open addressing on its name hash; when no slot is left the
//! request is counted in the total only, and `overflow` says so.

use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::*};

use super::PolicyError;
use crate::purge::Words;

/// What one request contributes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub status: u16,
    pub bytes_sent: u64,
    pub cache: CacheResult,
    pub origin_bytes: u64,
    pub origin_ms: u64,
    /// Origin fetches this request made itself (a proxied pass); fills
    /// count theirs with [`Traffic::record_origin`].
    pub origin_fetches: u64,
    pub challenged: bool,
    pub blocked: bool,
    pub hotlink_denied: bool,
}

/// Cache outcome of a request, as in `$rcdn_cache_status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Stale,
    Updating,
    Revalidated,
    Expired,
    #[default]
    Bypass,
}

const FIELDS: [&str; 19] = [
    "requests",
    "bytes_sent",
    "status_1xx",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "hit",
    "miss",
    "stale",
    "updating",
    "revalidated",
    "expired",
    "bypass",
    "origin_bytes",
    "origin_ms",
    "origin_fetches",
    "guard_challenged",
    "guard_blocked",
];
const HOTLINK_DENIED: usize = FIELDS.len();
const NFIELDS: usize = FIELDS.len() + 1;
/// A block: the window number it counts, then the fields.
const BLOCK: usize = 1 + NFIELDS;
const NAME_WORDS: usize = 32;
/// Longest domain name kept (longer ones are truncated).
pub const MAX_NAME: usize = NAME_WORDS * 8 - 1;
const HEADER: usize = 8;
const H_OVERFLOW: usize = 0;
const PROBE: usize = 16;
const RESETTING: u64 = 1 << 63;

/// Windowed counters for up to `slots` domains.
pub struct Traffic {
    store: Box<dyn Words>,
    slots: usize,
    windows: usize,
    window_ms: u64,
}

fn field_index(name: &str) -> usize {
    FIELDS
        .iter()
        .position(|f| *f == name)
        .unwrap_or(HOTLINK_DENIED)
}

fn fields_of(s: &Sample) -> [(usize, u64); 10] {
    let class = match s.status {
        100..=199 => "status_1xx",
        200..=299 => "status_2xx",
        300..=399 => "status_3xx",
        400..=499 => "status_4xx",
        _ => "status_5xx",
    };
    let cache = match s.cache {
        CacheResult::Hit => "hit",
        CacheResult::Miss => "miss",
        CacheResult::Stale => "stale",
        CacheResult::Updating => "updating",
        CacheResult::Revalidated => "revalidated",
        CacheResult::Expired => "expired",
        CacheResult::Bypass => "bypass",
    };
    [
        (field_index("requests"), 1),
        (field_index("bytes_sent"), s.bytes_sent),
        (field_index(class), 1),
        (field_index(cache), 1),
        (field_index("origin_bytes"), s.origin_bytes),
        (field_index("origin_ms"), s.origin_ms),
        (field_index("origin_fetches"), s.origin_fetches),
        (field_index("guard_challenged"), u64::from(s.challenged)),
        (field_index("guard_blocked"), u64::from(s.blocked)),
        (HOTLINK_DENIED, u64::from(s.hotlink_denied)),
    ]
}

impl Traffic {
    /// Words a table of this shape needs.
    pub fn words_needed(slots: usize, windows: usize) -> usize {
        HEADER + (slots + 1) * Self::slot_words(windows)
    }

    fn slot_words(windows: usize) -> usize {
        // hash, name, a total block, `windows + 1` window blocks
        1 + NAME_WORDS + BLOCK * (windows + 2)
    }

    /// A table on the process heap (at least one domain slot).
    pub fn new(slots: usize, windows: usize, window_ms: u64) -> Self {
        let slots = slots.max(1);
        let words: Box<[AtomicU64]> = (0..Self::words_needed(slots, windows))
            .map(|_| AtomicU64::new(0))
            .collect();
        Self::attach(Box::new(words), slots, windows, window_ms)
            .unwrap_or_else(|_| unreachable!("a table of words_needed words always attaches"))
    }

    /// A table in caller-provided (e.g. shared) words.
    pub fn attach(
        store: Box<dyn Words>,
        slots: usize,
        windows: usize,
        window_ms: u64,
    ) -> Result<Self, PolicyError> {
        if slots == 0 || store.words().len() < Self::words_needed(slots, windows) {
            return Err(PolicyError::new("stats zone", "too small for its slots"));
        }
        Ok(Traffic {
            store,
            slots,
            windows,
            window_ms: window_ms.max(1),
        })
    }

    fn w(&self) -> &[AtomicU64] {
        self.store.words()
    }

    /// Base word of slot `i`; slot `slots` is the total.
    fn slot(&self, i: usize) -> usize {
        HEADER + i * Self::slot_words(self.windows)
    }

    fn name_hash(name: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(name.as_bytes()).max(1)
    }

    /// The slot of a domain, claiming a free one if needed.
    fn find(&self, domain: &str, claim: bool) -> Option<usize> {
        let h = Self::name_hash(domain);
        for p in 0..PROBE {
            let i = (h as usize + p) % self.slots;
            let hw = &self.w()[self.slot(i)];
            match hw.load(Acquire) {
                x if x == h => return Some(i),
                0 if claim => {
                    if hw.compare_exchange(0, h, AcqRel, Acquire).is_ok() {
                        self.write_name(i, domain);
                        return Some(i);
                    }
                    if hw.load(Acquire) == h {
                        return Some(i);
                    }
                }
                0 => return None,
                _ => {}
            }
        }
        None
    }

    fn write_name(&self, i: usize, name: &str) {
        let bytes = &name.as_bytes()[..name.len().min(MAX_NAME)];
        let base = self.slot(i) + 1;
        for (k, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.w()[base + k].store(u64::from_le_bytes(word), Release);
        }
    }

    fn read_name(&self, i: usize) -> String {
        let base = self.slot(i) + 1;
        let mut bytes: Vec<u8> = (0..NAME_WORDS)
            .flat_map(|k| self.w()[base + k].load(Acquire).to_le_bytes())
            .collect();
        bytes.truncate(bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Base word of block `b` of slot `i` (0 = total, 1.. = windows).
    fn block(&self, i: usize, b: usize) -> usize {
        self.slot(i) + 1 + NAME_WORDS + b * BLOCK
    }

    fn window_block(&self, window: u64) -> usize {
        1 + (window % (self.windows as u64 + 1)) as usize
    }

    /// Makes block `b` count `window`, zeroing it if it held an older one.
    fn claim_window(&self, base: usize, window: u64) {
        let id = &self.w()[base];
        loop {
            let cur = id.load(Acquire);
            if cur == window + 1 {
                return;
            }
            if cur & RESETTING != 0 {
                std::hint::spin_loop();
                continue;
            }
            if cur > window + 1 {
                return; // a late sample for a window already recycled: dropped
            }
            if id.compare_exchange(cur, RESETTING, AcqRel, Acquire).is_ok() {
                for f in 0..NFIELDS {
                    self.w()[base + 1 + f].store(0, Relaxed);
                }
                id.store(window + 1, Release);
                return;
            }
        }
    }

    fn add(&self, slot: usize, window: u64, fields: &[(usize, u64)]) {
        let total = self.block(slot, 0);
        let win = self.block(slot, self.window_block(window));
        self.claim_window(win, window);
        let same_window = self.w()[win].load(Acquire) == window + 1;
        for &(f, v) in fields {
            if v != 0 {
                self.w()[total + 1 + f].fetch_add(v, Relaxed);
                if same_window {
                    self.w()[win + 1 + f].fetch_add(v, Relaxed);
                }
            }
        }
    }

    /// Counts one request for `domain` (and the total) at `now_ms`.
    pub fn record(&self, domain: &str, s: &Sample, now_ms: u64) {
        let window = now_ms / self.window_ms;
        let fields = fields_of(s);
        self.add(self.slots, window, &fields);
        match self.find(domain, true) {
            Some(i) => self.add(i, window, &fields),
            None => {
                self.w()[H_OVERFLOW].fetch_add(1, Relaxed);
            }
        }
    }

    /// Counts one origin fetch that is not a client request of its own (a
    /// background fill): its body bytes and upstream time, for `domain` and
    /// the total. Requests, statuses and cache results are left alone.
    pub fn record_origin(&self, domain: &str, bytes: u64, ms: u64, now_ms: u64) {
        let window = now_ms / self.window_ms;
        let fields = [
            (field_index("origin_bytes"), bytes),
            (field_index("origin_ms"), ms),
            (field_index("origin_fetches"), 1),
        ];
        self.add(self.slots, window, &fields);
        // No slot: the total has it; `overflow` counts requests only (the
        // client request that caused this fetch was counted there).
        if let Some(i) = self.find(domain, true) {
            self.add(i, window, &fields);
        }
    }

    /// Requests that found no free domain slot (counted in the total only).
    pub fn overflow(&self) -> u64 {
        self.w()[H_OVERFLOW].load(Relaxed)
    }

    fn read_block(&self, base: usize) -> Map<String, Value> {
        let mut m = Map::new();
        for (f, name) in FIELDS.iter().enumerate() {
            m.insert(
                name.to_string(),
                json!(self.w()[base + 1 + f].load(Relaxed)),
            );
        }
        m.insert(
            "hotlink_denied".into(),
            json!(self.w()[base + 1 + HOTLINK_DENIED].load(Relaxed)),
        );
        m
    }

    /// Windows of a slot that are within the last `windows + 1`, newest first.
    fn windows_of(&self, i: usize, now_ms: u64) -> Vec<Value> {
        let current = now_ms / self.window_ms;
        (0..=self.windows as u64)
            .filter_map(|back| {
                let w = current.checked_sub(back)?;
                let base = self.block(i, self.window_block(w));
                (self.w()[base].load(Acquire) == w + 1).then(|| {
                    let mut m = self.read_block(base);
                    m.insert("start_ms".into(), json!(w * self.window_ms));
                    m.insert("closed".into(), json!(back > 0));
                    Value::Object(m)
                })
            })
            .collect()
    }

    fn domains(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = (0..self.slots)
            .filter(|&i| self.w()[self.slot(i)].load(Acquire) != 0)
            .map(|i| (self.read_name(i), i))
            .collect();
        v.sort();
        v
    }

    /// VTS-like JSON: totals and windows per domain and overall.
    pub fn to_json(&self, now_ms: u64) -> Value {
        let entry = |i: usize| {
            json!({
                "total": Value::Object(self.read_block(self.block(i, 0))),
                "windows": self.windows_of(i, now_ms),
            })
        };
        let domains: Map<String, Value> = self
            .domains()
            .into_iter()
            .map(|(name, i)| (name, entry(i)))
            .collect();
        json!({
            "window_ms": self.window_ms,
            "now_ms": now_ms,
            "overflow": self.overflow(),
            "all": entry(self.slots),
            "domains": domains,
        })
    }

    /// Prometheus text format (version 0.0.4), monotonic `_total` counters.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut rows: Vec<(String, usize)> = vec![("_all".to_string(), self.slots)];
        rows.extend(self.domains());
        let names = FIELDS.iter().copied().chain(["hotlink_denied"]);
        for (f, name) in names.enumerate() {
            let metric = format!("rcdn_{name}_total");
            let _ = writeln!(out, "# TYPE {metric} counter");
            for (domain, i) in &rows {
                let v = self.w()[self.block(*i, 0) + 1 + f].load(Relaxed);
                let label = domain.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(out, "{metric}{{domain=\"{label}\"}} {v}");
            }
        }
        let _ = writeln!(out, "# TYPE rcdn_stats_overflow_total counter");
        let _ = writeln!(out, "rcdn_stats_overflow_total {}", self.overflow());
        out
    }

    /// Summary of the window that closed most recently, for a collector.
    pub fn last_closed_summary(&self, node: &str, now_ms: u64) -> Option<Value> {
        let w = (now_ms / self.window_ms).checked_sub(1)?;
        let read = |i: usize| {
            let base = self.block(i, self.window_block(w));
            (self.w()[base].load(Acquire) == w + 1).then(|| Value::Object(self.read_block(base)))
        };
        let all = read(self.slots)?;
        let domains: Map<String, Value> = self
            .domains()
            .into_iter()
            .filter_map(|(name, i)| Some((name, read(i)?)))
            .collect();
        Some(json!({
            "node": node,
            "window_start_ms": w * self.window_ms,
            "window_ms": self.window_ms,
            "all": all,
            "domains": domains,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(bytes: u64) -> Sample {
        Sample {
            status: 200,
            bytes_sent: bytes,
            cache: CacheResult::Hit,
            ..Sample::default()
        }
    }

    #[test]
    fn counts_per_domain_and_total_in_windows() {
        let t = Traffic::new(16, 2, 1000);
        t.record("a.com", &hit(100), 500);
        t.record("a.com", &hit(50), 900);
        t.record(
            "b.com",
            &Sample {
                status: 404,
                cache: CacheResult::Miss,
                ..Sample::default()
            },
            950,
        );
        t.record("a.com", &hit(7), 1500); // next window
        let j = t.to_json(1600);
        assert_eq!(j["all"]["total"]["requests"], 4);
        assert_eq!(j["domains"]["a.com"]["total"]["bytes_sent"], 157);
        assert_eq!(j["domains"]["b.com"]["total"]["status_4xx"], 1);
        assert_eq!(j["domains"]["b.com"]["total"]["miss"], 1);
        let wins = j["domains"]["a.com"]["windows"].as_array().unwrap();
        assert_eq!(wins.len(), 2);
        assert_eq!(
            (wins[0]["requests"].clone(), wins[0]["closed"].clone()),
            (json!(1), json!(false))
        );
        assert_eq!(
            (wins[1]["requests"].clone(), wins[1]["start_ms"].clone()),
            (json!(2), json!(0))
        );
        // Old windows fall out of the ring; totals stay.
        t.record("a.com", &hit(1), 10_500);
        let j = t.to_json(10_500);
        assert_eq!(
            j["domains"]["a.com"]["windows"].as_array().unwrap().len(),
            1
        );
        assert_eq!(j["domains"]["a.com"]["total"]["requests"], 4);
    }

    #[test]
    fn summary_of_the_closed_window() {
        let t = Traffic::new(16, 2, 1000);
        t.record("a.com", &hit(10), 100);
        t.record("a.com", &hit(10), 1100);
        let s = t.last_closed_summary("node-1", 1200).unwrap();
        assert_eq!(s["node"], "node-1");
        assert_eq!(s["window_start_ms"], 0);
        assert_eq!(s["domains"]["a.com"]["requests"], 1);
        assert!(t.last_closed_summary("n", 500).is_none());
    }

    #[test]
    fn prometheus_text() {
        let t = Traffic::new(16, 2, 1000);
        t.record("a\"b.com", &hit(10), 100);
        let p = t.to_prometheus();
        assert!(p.contains("# TYPE rcdn_requests_total counter\n"));
        assert!(p.contains("rcdn_requests_total{domain=\"_all\"} 1\n"));
        assert!(p.contains("rcdn_bytes_sent_total{domain=\"a\\\"b.com\"} 10\n"));
        assert!(p.contains("rcdn_stats_overflow_total 0\n"));
    }

    #[test]
    fn origin_fetches_add_only_origin_fields() {
        let t = Traffic::new(16, 2, 1000);
        t.record("a.com", &hit(10), 100);
        t.record_origin("a.com", 5000, 12, 200);
        t.record_origin("a.com", 1000, 3, 1200);
        let j = t.to_json(1300);
        let a = &j["domains"]["a.com"]["total"];
        assert_eq!(
            (a["requests"].clone(), a["hit"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(a["origin_bytes"], 6000);
        assert_eq!(a["origin_ms"], 15);
        assert_eq!(a["origin_fetches"], 2);
        assert_eq!(j["all"]["total"]["origin_bytes"], 6000);
        assert_eq!(j["domains"]["a.com"]["windows"][0]["origin_bytes"], 1000);
        let p = t.to_prometheus();
        assert!(p.contains("rcdn_origin_bytes_total{domain=\"a.com\"} 6000\n"));
        assert!(p.contains("rcdn_origin_fetches_total{domain=\"_all\"} 2\n"));
    }

    #[test]
    fn a_full_table_says_so() {
        let t = Traffic::new(2, 1, 1000);
        for d in ["a", "b", "c", "d"] {
            t.record(d, &hit(1), 0);
        }
        let j = t.to_json(0);
        assert_eq!(
            j["all"]["total"]["requests"], 4,
            "the total counts everything"
        );
        assert_eq!(j["domains"].as_object().unwrap().len(), 2);
        assert_eq!(t.overflow(), 2);
    }

    #[test]
    fn threads_count_exactly() {
        let t = std::sync::Arc::new(Traffic::new(64, 2, 60_000));
        let hs: Vec<_> = (0..4)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        t.record(&format!("d{}", (i + k) % 8), &hit(2), 1000);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let j = t.to_json(1000);
        assert_eq!(j["all"]["total"]["requests"], 20_000);
        assert_eq!(j["all"]["windows"][0]["bytes_sent"], 40_000);
        let sum: u64 = (0..8)
            .map(|d| {
                j["domains"][format!("d{d}")]["total"]["requests"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        assert_eq!(sum, 20_000);
    }
}
