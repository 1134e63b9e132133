//! Hotlink policies fetched from a policy URL (UpCDN): the first time a
//! domain is seen its policy is fetched; afterwards it is refreshed after
//! a random delay in `0..=refresh` ([`super::hotlink::refresh_delay_ms`]),
//! so many nodes never refresh at once. A failed or bad fetch keeps the
//! last good policy. This is the bookkeeping; the caller does the HTTP.
//!
//! The answer for `domain` is `200` with one domain policy (a JSON object,
//! or an array holding exactly one) naming that domain, or `404`: the
//! domain has no policy (the unknown-domain rule applies).

use std::collections::HashMap;
use std::sync::Arc;

use super::hotlink::{refresh_delay_ms, DomainPolicy, Hotlink, Unknown};
use super::PolicyError;

/// What a fetch answered, once judged.
#[derive(Debug)]
pub enum Fetched {
    /// The domain's policy.
    Policy(Arc<Hotlink>),
    /// 404: no policy for the domain.
    NoPolicy,
}

/// Judges one answer of the policy URL for `domain`.
pub fn parse_answer(domain: &str, status: u16, body: &[u8]) -> Result<Fetched, PolicyError> {
    let err = |r: String| PolicyError::new(format!("policy for {domain:?}"), r);
    match status {
        200 => {}
        404 => return Ok(Fetched::NoPolicy),
        s => return Err(err(format!("the policy URL answered {s}"))),
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| err(format!("not JSON: {e}")))?;
    let one = match v {
        serde_json::Value::Array(mut a) if a.len() == 1 => a.remove(0),
        serde_json::Value::Array(a) => {
            return Err(err(format!("{} policies, expected one", a.len())))
        }
        o => o,
    };
    let p: DomainPolicy = serde_json::from_value(one).map_err(|e| err(e.to_string()))?;
    let mut h = Hotlink::new(Unknown::Allow);
    h.upsert(p)
        .map_err(|e| err(format!("{}: {}", e.what, e.reason)))?;
    if !h.knows(domain) {
        return Err(err("the policy names another domain".into()));
    }
    Ok(Fetched::Policy(Arc::new(h)))
}

/// A domain's state.
#[derive(Debug)]
struct Entry {
    /// `None` until the first fetch ended (pending).
    have: Option<Fetched>,
    /// When the next fetch is due (ms); `0` = now (first fetch).
    due_ms: u64,
    /// A fetch of it is running.
    running: bool,
}

/// What a request finds for its domain.
#[derive(Debug)]
pub enum Lookup {
    /// The domain's fetched policy.
    Policy(Arc<Hotlink>),
    /// The policy URL has none for it.
    NoPolicy,
    /// The first fetch has not ended (it was just asked for if new).
    Pending,
}

/// Domains kept per registry: Hosts beyond it (e.g. a client sending
/// random Host headers) get the unknown-domain rule without a fetch.
pub const MAX_DOMAINS: usize = 10_000;

/// The fetched policies of one policy URL, and their schedule.
#[derive(Debug, Default)]
pub struct Registry {
    domains: HashMap<String, Entry>,
    /// The longest refresh delay (ms).
    pub refresh_ms: u64,
    /// Hosts turned away because the registry was full.
    pub overflow: u64,
}

/// The outcome of a fetch, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new or changed policy (or "no policy") is in use.
    Updated,
    /// The fetch failed: the last good policy (if any) stays.
    Kept(String),
}

impl Registry {
    pub fn new(refresh_ms: u64) -> Self {
        Registry {
            domains: HashMap::new(),
            refresh_ms,
            overflow: 0,
        }
    }

    /// The state of `domain`, asking for its first fetch if it is new.
    /// Returns whether a fetch was asked for. A new domain beyond
    /// [`MAX_DOMAINS`] is `NoPolicy` (counted in `overflow`).
    pub fn lookup(&mut self, domain: &str) -> (Lookup, bool) {
        if self.domains.len() >= MAX_DOMAINS && !self.domains.contains_key(domain) {
            self.overflow += 1;
            return (Lookup::NoPolicy, false);
        }
        let e = self.domains.entry(domain.to_string());
        let new = matches!(e, std::collections::hash_map::Entry::Vacant(_));
        let e = e.or_insert(Entry {
            have: None,
            due_ms: 0,
            running: false,
        });
        let l = match &e.have {
            Some(Fetched::Policy(p)) => Lookup::Policy(p.clone()),
            Some(Fetched::NoPolicy) => Lookup::NoPolicy,
            None => Lookup::Pending,
        };
        (l, new)
    }

    /// A domain whose fetch is due at `now_ms` (marked running), or the
    /// time of the next one.
    pub fn next_due(&mut self, now_ms: u64) -> Result<String, Option<u64>> {
        let mut soonest = None;
        for (d, e) in self.domains.iter_mut().filter(|(_, e)| !e.running) {
            if e.due_ms <= now_ms {
                e.running = true;
                return Ok(d.clone());
            }
            soonest = Some(soonest.map_or(e.due_ms, |s: u64| s.min(e.due_ms)));
        }
        Err(soonest)
    }

    /// Records a fetch of `domain` that ended at `now_ms`; schedules the
    /// next one `refresh_delay_ms(refresh, entropy)` later.
    pub fn apply(
        &mut self,
        domain: &str,
        result: Result<Fetched, PolicyError>,
        now_ms: u64,
        entropy: u64,
    ) -> Applied {
        let delay = refresh_delay_ms(self.refresh_ms, entropy);
        let e = self.domains.entry(domain.to_string()).or_insert(Entry {
            have: None,
            due_ms: 0,
            running: false,
        });
        e.running = false;
        e.due_ms = now_ms + delay;
        match result {
            Ok(f) => {
                e.have = Some(f);
                Applied::Updated
            }
            Err(why) => {
                if e.have.is_none() {
                    // Nothing good yet: stop waiting, the unknown rule applies.
                    e.have = Some(Fetched::NoPolicy);
                }
                Applied::Kept(format!("{}: {}", why.what, why.reason))
            }
        }
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::hotlink::{Decision, Request};

    const GOOD: &[u8] = br#"{"domain": "a.com", "allow": ["good.com"], "allow_empty": false}"#;

    fn check(l: &Lookup, referer: &str) -> Decision {
        let Lookup::Policy(p) = l else {
            panic!("no policy: {l:?}")
        };
        let req = Request {
            host: "a.com",
            path: "/x",
            referer: Some(referer),
            ..Request::default()
        };
        p.check(&req, 0)
    }

    #[test]
    fn answers_are_judged() {
        assert!(matches!(
            parse_answer("a.com", 200, GOOD),
            Ok(Fetched::Policy(_))
        ));
        let arr = [b"[".as_slice(), GOOD, b"]"].concat();
        assert!(parse_answer("A.com:8080", 200, &arr).is_ok());
        assert!(matches!(
            parse_answer("a.com", 404, b""),
            Ok(Fetched::NoPolicy)
        ));
        let e = |s, b: &[u8]| parse_answer("a.com", s, b).unwrap_err().to_string();
        assert!(e(500, b"").contains("answered 500"));
        assert!(e(200, b"{nope").contains("not JSON"));
        assert!(e(200, b"[]").contains("0 policies"));
        assert!(e(200, br#"{"domain": "b.com"}"#).contains("another domain"));
        assert!(e(200, br#"{"domain": "a.com", "colour": 1}"#).contains("colour"));
        assert!(e(200, br#"{"domain": "a.com", "allow": ["~("]}"#).contains("regex"));
    }

    #[test]
    fn first_fetch_then_refresh_keeps_the_last_good_policy() {
        let mut r = Registry::new(1000);
        let (l, asked) = r.lookup("a.com");
        assert!(matches!(l, Lookup::Pending) && asked);
        let (_, asked) = r.lookup("a.com");
        assert!(!asked, "asked once");
        assert_eq!(r.next_due(5), Ok("a.com".to_string()));
        assert_eq!(r.next_due(5), Err(None), "running: not due twice");
        let ok = parse_answer("a.com", 200, GOOD);
        assert_eq!(r.apply("a.com", ok, 10, 42), Applied::Updated);
        let l = r.lookup("a.com").0;
        assert_eq!(check(&l, "http://good.com/"), Decision::Allow);
        assert_ne!(check(&l, "http://evil.com/"), Decision::Allow);
        // Next fetch within the jitter bound.
        let due = r.next_due(10).unwrap_err().expect("scheduled");
        assert!((10..=1010).contains(&due), "{due}");
        assert_eq!(r.next_due(1010), Ok("a.com".to_string()));
        // A bad answer is refused and the old policy stays.
        let bad = parse_answer("a.com", 200, b"{oops");
        assert!(matches!(r.apply("a.com", bad, 1010, 7), Applied::Kept(_)));
        let l = r.lookup("a.com").0;
        assert_eq!(check(&l, "http://good.com/"), Decision::Allow);
        // A failed first fetch stops the wait: no policy.
        r.lookup("b.com");
        let down = parse_answer("b.com", 503, b"");
        assert!(matches!(r.apply("b.com", down, 0, 1), Applied::Kept(_)));
        assert!(matches!(r.lookup("b.com").0, Lookup::NoPolicy));
    }

    #[test]
    fn the_registry_is_bounded() {
        let mut r = Registry::new(1000);
        for i in 0..MAX_DOMAINS {
            assert!(r.lookup(&format!("d{i}")).1);
        }
        let (l, asked) = r.lookup("one-too-many");
        assert!(matches!(l, Lookup::NoPolicy) && !asked);
        assert_eq!((r.len(), r.overflow), (MAX_DOMAINS, 1));
        assert!(
            matches!(r.lookup("d7").0, Lookup::Pending),
            "known ones stay"
        );
    }

    #[test]
    fn delays_spread_over_the_bound() {
        let mut r = Registry::new(300_000);
        let dues: Vec<u64> = (0..200u64)
            .map(|i| {
                let d = format!("d{i}");
                r.lookup(&d);
                r.apply(&d, Ok(Fetched::NoPolicy), 0, i);
                r.domains[&d].due_ms
            })
            .collect();
        assert!(dues.iter().all(|&d| d <= 300_000));
        assert!(dues.iter().any(|&d| d < 100_000) && dues.iter().any(|&d| d > 200_000));
    }
}
