//! Hotlink protection per domain (UpCDN): referer allow/block lists, empty
//! referers, and signed URLs (`secure_link`-style, HMAC-SHA256 over expiry and
//! path with a per-domain secret).
//!
//! Policies are JSON, one object per domain, in a file (an array) or fetched
//! from a policy URL the first time a domain is seen:
//!
//! ```json
//! [{"domain": "img.example.com",
//!   "allow": ["example.com", "*.example.com", "~^https://partner\\.net/"],
//!   "block": ["evil.example.org"],
//!   "allow_empty": true,
//!   "secret": "s3cret",
//!   "redirect": "https://example.com/no-hotlinking.png"}]
//! ```
//!
//! `allow`/`block` entries are exact hosts, `*.suffix` wildcards (subdomains
//! only), or `~regex` over the whole referer. A referer from the domain itself
//! is always allowed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::HashMap;

use super::PolicyError;

/// One domain's policy as written by the operator.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DomainPolicy {
    pub domain: String,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub block: Vec<String>,
    #[serde(default = "yes")]
    pub allow_empty: bool,
    /// When set, every request needs a valid `token` and `expires`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Violations get a 302 here instead of a 403.
    #[serde(default)]
    pub redirect: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
enum HostRule {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
    Regex(regex::Regex),
}

impl HostRule {
    fn parse(domain: &str, s: &str) -> Result<Self, PolicyError> {
        if let Some(re) = s.strip_prefix('~') {
            let re = regex::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| PolicyError::new(domain, format!("bad referer regex {s:?}: {e}")))?;
            return Ok(HostRule::Regex(re));
        }
        let s = s.to_ascii_lowercase();
        if let Some(suffix) = s.strip_prefix("*.") {
            return Ok(HostRule::Suffix(format!(".{suffix}")));
        }
        if s.is_empty() || s.contains(['/', ' ', '*']) {
            return Err(PolicyError::new(domain, format!("bad referer host {s:?}")));
        }
        Ok(HostRule::Exact(s))
    }

    fn matches(&self, host: &str, referer: &str) -> bool {
        match self {
            HostRule::Exact(h) => host == h,
            HostRule::Suffix(s) => host.ends_with(s.as_str()),
            HostRule::Regex(re) => re.is_match(referer),
        }
    }
}

#[derive(Debug)]
struct Compiled {
    domain: String,
    allow: Vec<HostRule>,
    block: Vec<HostRule>,
    allow_empty: bool,
    secret: Option<Vec<u8>>,
    redirect: Option<String>,
}

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 403, with the reason for the log.
    Forbidden(&'static str),
    /// 410: a correctly signed URL past its expiry.
    Expired,
    /// 302 to the domain's configured URL.
    Redirect(String),
}

/// What to do with a domain that has no policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    Allow,
    Refuse,
}

/// The request facts a check needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub referer: Option<&'a str>,
    /// Query arguments `token` and `expires`, if present.
    pub token: Option<&'a str>,
    pub expires: Option<&'a str>,
}

/// Policies of every known domain.
#[derive(Debug)]
pub struct Hotlink {
    domains: HashMap<String, Compiled>,
    unknown: Unknown,
}

/// Normalises a Host header: lower case, no port (`[v6]:port` kept as `[v6]`).
fn host_only(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if h.starts_with('[') {
        return match h.find(']') {
            Some(i) => h[..=i].to_string(),
            None => h,
        };
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => h,
    }
}

/// The host of a referer URL (`https://a.com:8443/x` -> `a.com`).
fn referer_host(referer: &str) -> Option<String> {
    let rest = referer.split_once("://").map_or(referer, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_only(authority);
    (!host.is_empty()).then_some(host)
}

/// Delay before a domain's policy is fetched again: uniform in `0..=max_ms`
/// (UpCDN: 0-5 minutes), so thousands of nodes never refresh at once.
/// `entropy` is anything that differs between nodes and domains, e.g. a hash
/// of node id, domain and current time.
pub fn refresh_delay_ms(max_ms: u64, entropy: u64) -> u64 {
    match max_ms {
        0 => 0,
        m => xxhash_rust::xxh3::xxh3_64(&entropy.to_le_bytes()) % (m + 1),
    }
}

/// The token a signed URL carries: base64url(HMAC-SHA256(secret, expires + path)).
pub fn sign(secret: &[u8], path: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(expires.to_string().as_bytes());
    mac.update(path.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn verify(secret: &[u8], req: &Request, now_secs: u64) -> Decision {
    let (Some(token), Some(expires)) = (req.token, req.expires) else {
        return Decision::Forbidden("unsigned");
    };
    let Ok(exp) = expires.parse::<u64>() else {
        return Decision::Forbidden("bad expires");
    };
    let Ok(raw) = URL_SAFE_NO_PAD.decode(token) else {
        return Decision::Forbidden("bad token");
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(expires.as_bytes());
    mac.update(req.path.as_bytes());
    if mac.verify_slice(&raw).is_err() {
        return Decision::Forbidden("bad signature");
    }
    if exp < now_secs {
        return Decision::Expired;
    }
    Decision::Allow
}

impl Compiled {
    fn new(p: DomainPolicy) -> Result<Self, PolicyError> {
        let domain = host_only(&p.domain);
        if domain.is_empty() {
            return Err(PolicyError::new(&p.domain, "empty domain"));
        }
        let rules = |list: &[String]| -> Result<Vec<HostRule>, PolicyError> {
            list.iter().map(|s| HostRule::parse(&domain, s)).collect()
        };
        Ok(Compiled {
            allow: rules(&p.allow)?,
            block: rules(&p.block)?,
            allow_empty: p.allow_empty,
            secret: p.secret.map(String::into_bytes),
            redirect: p.redirect,
            domain,
        })
    }

    fn referer_ok(&self, referer: Option<&str>) -> Result<(), &'static str> {
        let referer = referer.map(str::trim).filter(|r| !r.is_empty());
        let Some(referer) = referer else {
            return if self.allow_empty {
                Ok(())
            } else {
                Err("empty referer")
            };
        };
        let Some(host) = referer_host(referer) else {
            return Err("malformed referer");
        };
        if self.block.iter().any(|r| r.matches(&host, referer)) {
            return Err("blocked referer");
        }
        let own = host == self.domain;
        if own || self.allow.is_empty() || self.allow.iter().any(|r| r.matches(&host, referer)) {
            Ok(())
        } else {
            Err("referer not allowed")
        }
    }

    fn check(&self, req: &Request, now_secs: u64) -> Decision {
        if let Some(secret) = &self.secret {
            let d = verify(secret, req, now_secs);
            if d != Decision::Allow {
                return d;
            }
        }
        match (self.referer_ok(req.referer), &self.redirect) {
            (Ok(()), _) => Decision::Allow,
            (Err(_), Some(url)) => Decision::Redirect(url.clone()),
            (Err(why), None) => Decision::Forbidden(why),
        }
    }
}

impl Hotlink {
    pub fn new(unknown: Unknown) -> Self {
        Hotlink {
            domains: HashMap::new(),
            unknown,
        }
    }

    /// Loads a policy file: a JSON array of domain policies.
    pub fn from_json(text: &str, unknown: Unknown) -> Result<Self, PolicyError> {
        let list: Vec<DomainPolicy> = serde_json::from_str(text)
            .map_err(|e| PolicyError::new("policy file", e.to_string()))?;
        let mut h = Hotlink::new(unknown);
        for p in list {
            let name = p.domain.clone();
            if !h.upsert(p)? {
                return Err(PolicyError::new(&name, "domain appears twice"));
            }
        }
        Ok(h)
    }

    /// Adds or replaces one domain's policy (e.g. fetched from a policy URL).
    /// Returns whether the domain was new.
    pub fn upsert(&mut self, p: DomainPolicy) -> Result<bool, PolicyError> {
        let c = Compiled::new(p)?;
        Ok(self.domains.insert(c.domain.clone(), c).is_none())
    }

    pub fn knows(&self, host: &str) -> bool {
        self.domains.contains_key(&host_only(host))
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Judges one request at `now_secs` (unix seconds).
    pub fn check(&self, req: &Request, now_secs: u64) -> Decision {
        match self.domains.get(&host_only(req.host)) {
            Some(c) => c.check(req, now_secs),
            None if self.unknown == Unknown::Allow => Decision::Allow,
            None => Decision::Forbidden("unknown domain"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"[
      {"domain": "img.example.com",
       "allow": ["example.com", "*.example.com", "~^https://partner\\.net/"],
       "block": ["bad.example.com"],
       "allow_empty": false},
      {"domain": "dl.example.com", "secret": "k3y", "redirect": "https://example.com/hl.png",
       "allow": ["example.com"]}
    ]"#;

    fn req<'a>(host: &'a str, referer: Option<&'a str>) -> Request<'a> {
        Request {
            host,
            path: "/a.png",
            referer,
            ..Request::default()
        }
    }

    #[test]
    fn referer_rules() {
        let h = Hotlink::from_json(FILE, Unknown::Refuse).unwrap();
        let d = |r: Option<&str>| h.check(&req("IMG.example.com:8080", r), 0);
        assert_eq!(d(Some("https://example.com/page")), Decision::Allow);
        assert_eq!(d(Some("http://www.example.com/")), Decision::Allow);
        assert_eq!(d(Some("https://partner.net/x")), Decision::Allow);
        assert_eq!(d(Some("https://img.example.com/self")), Decision::Allow);
        assert_eq!(
            d(Some("https://bad.example.com/")),
            Decision::Forbidden("blocked referer")
        );
        assert_eq!(
            d(Some("https://evil.org/")),
            Decision::Forbidden("referer not allowed")
        );
        assert_eq!(
            d(Some("https://notexample.com/")),
            Decision::Forbidden("referer not allowed")
        );
        assert_eq!(d(None), Decision::Forbidden("empty referer"));
        assert_eq!(d(Some("  ")), Decision::Forbidden("empty referer"));
    }

    #[test]
    fn unknown_domains() {
        let refuse = Hotlink::from_json(FILE, Unknown::Refuse).unwrap();
        let allow = Hotlink::from_json(FILE, Unknown::Allow).unwrap();
        let r = req("other.com", None);
        assert_eq!(refuse.check(&r, 0), Decision::Forbidden("unknown domain"));
        assert_eq!(allow.check(&r, 0), Decision::Allow);
    }

    #[test]
    fn signed_urls_ok_bad_expired_and_redirect() {
        let h = Hotlink::from_json(FILE, Unknown::Refuse).unwrap();
        let token = sign(b"k3y", "/a.png", 1_000);
        let mut r = req("dl.example.com", Some("https://example.com/"));
        r.token = Some(&token);
        r.expires = Some("1000");
        assert_eq!(h.check(&r, 999), Decision::Allow);
        assert_eq!(h.check(&r, 1_001), Decision::Expired);
        let r2 = Request {
            path: "/b.png",
            ..r
        };
        assert_eq!(h.check(&r2, 0), Decision::Forbidden("bad signature"));
        let r3 = Request {
            expires: Some("2000"),
            ..r
        };
        assert_eq!(h.check(&r3, 0), Decision::Forbidden("bad signature"));
        let r4 = Request {
            token: Some("!!"),
            ..r
        };
        assert_eq!(h.check(&r4, 0), Decision::Forbidden("bad token"));
        let r5 = Request { token: None, ..r };
        assert_eq!(h.check(&r5, 0), Decision::Forbidden("unsigned"));
        // Signed, but hotlinked: the domain redirects instead of 403.
        let r6 = Request {
            referer: Some("https://evil.org/"),
            ..r
        };
        assert_eq!(
            h.check(&r6, 0),
            Decision::Redirect("https://example.com/hl.png".into())
        );
    }

    #[test]
    fn bad_policy_files_are_clear_errors() {
        let e = |t: &str| {
            Hotlink::from_json(t, Unknown::Allow)
                .unwrap_err()
                .to_string()
        };
        assert!(e("not json").contains("policy file"));
        assert!(e(r#"[{"domain": "a", "colour": 1}]"#).contains("colour"));
        assert!(e(r#"[{"domain": "a", "allow": ["~("]}]"#).contains("bad referer regex"));
        assert!(e(r#"[{"domain": "a", "allow": ["a/b"]}]"#).contains("bad referer host"));
        assert!(e(r#"[{"domain": ""}]"#).contains("empty domain"));
        assert!(e(r#"[{"domain": "a"}, {"domain": "A"}]"#).contains("twice"));
    }

    #[test]
    fn refresh_delays_spread_over_the_window() {
        let delays: Vec<u64> = (0..1000).map(|i| refresh_delay_ms(300_000, i)).collect();
        assert!(delays.iter().all(|&d| d <= 300_000));
        // Every fifth of the window gets a fair share: no thundering herd.
        for k in 0..5 {
            let n = delays.iter().filter(|&&d| d / 60_001 == k).count();
            assert!((120..280).contains(&n), "fifth {k}: {n}");
        }
        assert_eq!(refresh_delay_ms(0, 7), 0);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(host_only("Example.COM:443"), "example.com");
        assert_eq!(host_only("[::1]:8080"), "[::1]");
        assert_eq!(
            referer_host("https://u:p@A.com:8/x?y"),
            Some("a.com".into())
        );
        assert_eq!(referer_host("a.com/x"), Some("a.com".into()));
        assert_eq!(referer_host("https:///x"), None);
    }
}
