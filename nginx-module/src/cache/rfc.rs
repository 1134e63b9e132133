//! The engine's HTTP caching rules (`cdncore::http`) as a location
//! configures them: `rcdn_cache_valid` is the fallback table for responses
//! without freshness information (RFC 9111 §4.2.1 comes first, then the
//! `Last-Modified` heuristic of §4.2.2 capped by the store's
//! `heuristic_max`), `rcdn_cdn_cache_control` names the targeted fields
//! (RFC 9213), the store's `cache_set_cookie` decides `Set-Cookie`.

use crate::conf::LocConf;
use cdncore::http::{FallbackTtl, HttpPolicy, DEFAULT_TARGETS};

/// The policy for a response with `status` in location `lc`.
///
/// Without `rcdn_cache_valid` the table is the engine's default
/// ([`FallbackTtl::defaults`]: 200 203 204 300 301 308 for the store's
/// `default_ttl`). An `any` rule does not cover 5xx: a server error is
/// stored only with its own freshness or when its status is listed, so a
/// stale copy can still be served on an error (`stale-if-error`).
pub fn policy(lc: &LocConf, cfg: &cdncore::Config, status: u16) -> HttpPolicy {
    let mut fallback: Vec<FallbackTtl> = match &lc.valid {
        Some(rules) => rules
            .iter()
            .map(|v| FallbackTtl {
                status: (v.code != 0).then_some(v.code),
                ttl_ms: v.ttl_ms,
            })
            .collect(),
        None => FallbackTtl::defaults(cfg.default_ttl_ms),
    };
    if status >= 500 {
        fallback.retain(|r| r.status.is_some());
    }
    HttpPolicy {
        fallback,
        heuristic_max_ms: cfg.heuristic_max_ms,
        targets: match &lc.targets {
            Some(t) => t.clone(),
            None => DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect(),
        },
        cache_set_cookie: cfg.cache_set_cookie,
        ..HttpPolicy::from_config(cfg)
    }
}
