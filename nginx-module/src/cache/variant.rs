//! Responses with `Vary` (RFC 9111 §4.1): each variant is stored under its
//! own key, with a small marker object at `<key>` naming the fields the
//! URL varies on (`x-rcdn-vary: abc, accept-encoding`), so a lookup knows
//! which request fields select its variant.
//!
//! - `Vary: Accept-Encoding` alone: `<key> ae=<coding>`. The request's
//!   `Accept-Encoding` is normalised to one of [`CODINGS`] (and sent to the
//!   origin in that form), so a URL has at most that many of these and a
//!   purge names every one.
//! - Any other field list: `<key> vary=<hash>`, the 128-bit hash of the
//!   fields' names and the request's values (combined and trimmed;
//!   `Accept-Encoding` as its coding; an absent field differs from an
//!   empty one). These variants carry the internal surrogate key
//!   [`url_tag`], which a purge or an invalidation of the URL purges.

use bytes::Bytes;
use cdncore::KeyHash;

/// Normalised codings, best first; `identity` means "none".
const CODINGS: &[&str] = &["br", "gzip", "identity"];
/// Meta header marking a variant marker object (never sent to clients).
pub const MARKER: &str = "x-rcdn-vary";
/// Longest field list a stored response may vary on.
const MAX_FIELDS: usize = 16;

/// What a `Vary` header allows.
#[derive(Debug, PartialEq, Eq)]
pub enum VaryKind {
    None,
    AcceptEncoding,
    /// Other request fields: lower case, sorted, each once (it may include
    /// `accept-encoding`).
    Fields(Vec<String>),
    /// `*`, a field the fill does not send to the origin as the client
    /// sent it (`Range`, a conditional, `Cache-Control`...), or too many:
    /// not cacheable.
    Unsupported,
}

/// Classifies every `Vary` value of a response.
pub fn classify<'a>(values: impl Iterator<Item = &'a [u8]>) -> VaryKind {
    let mut fields: Vec<String> = Vec::new();
    for v in values {
        for t in v.split(|&b| b == b',') {
            let t = t.trim_ascii().to_ascii_lowercase();
            if t.is_empty() {
                continue;
            }
            if t == b"*"
                || crate::cache::fill::DROP.contains(&t.as_slice()) && t != b"accept-encoding"
            {
                return VaryKind::Unsupported;
            }
            let Ok(name) = String::from_utf8(t) else {
                return VaryKind::Unsupported;
            };
            if !fields.contains(&name) {
                fields.push(name);
            }
        }
    }
    fields.sort();
    match fields.len() {
        0 => VaryKind::None,
        1 if fields[0] == "accept-encoding" => VaryKind::AcceptEncoding,
        n if n > MAX_FIELDS => VaryKind::Unsupported,
        _ => VaryKind::Fields(fields),
    }
}

impl VaryKind {
    /// The marker's value for this kind (`None`: no marker).
    pub fn marker(&self) -> Option<Bytes> {
        match self {
            VaryKind::AcceptEncoding => Some(Bytes::from_static(b"accept-encoding")),
            VaryKind::Fields(f) => Some(Bytes::from(f.join(", "))),
            VaryKind::None | VaryKind::Unsupported => None,
        }
    }
}

/// The coding a request gets, from its `Accept-Encoding` (absent: identity).
pub fn normalise(accept_encoding: Option<&[u8]>) -> &'static str {
    let Some(ae) = accept_encoding else {
        return "identity";
    };
    let accepts = |name: &[u8]| {
        ae.split(|&b| b == b',').any(|item| {
            let mut parts = item.split(|&b| b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let q_zero = parts.any(|p| {
                let p = p.trim_ascii();
                p.starts_with(b"q=0") && p.iter().skip(3).all(|&c| c == b'0' || c == b'.')
            });
            coding.eq_ignore_ascii_case(name) && !q_zero
        })
    };
    if accepts(b"br") {
        "br"
    } else if accepts(b"gzip") {
        "gzip"
    } else {
        "identity"
    }
}

/// The key of one `Accept-Encoding` variant.
pub fn key(base: &[u8], coding: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(base.len() + 4 + coding.len());
    k.extend_from_slice(base);
    k.extend_from_slice(b" ae=");
    k.extend_from_slice(coding.as_bytes());
    k
}

/// A request's value of a field: every line, joined (`None`: absent).
pub type Fields<'a> = &'a dyn Fn(&[u8]) -> Option<Vec<u8>>;

/// The key of the variant a request selects, given the marker's value
/// (the field list) at `base`.
pub fn key_for(base: &[u8], marker: &[u8], coding: &str, fields: Fields) -> Vec<u8> {
    if marker == b"accept-encoding" {
        return key(base, coding);
    }
    let mut sel = Vec::new();
    for name in marker.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        sel.extend_from_slice(name);
        if name == b"accept-encoding" {
            sel.push(b'=');
            sel.extend_from_slice(coding.as_bytes());
        } else if let Some(v) = fields(name) {
            sel.push(b'=');
            let members = v.split(|&b| b == b',').map(<[u8]>::trim_ascii);
            for (i, m) in members.enumerate() {
                if i > 0 {
                    sel.push(b',');
                }
                sel.extend_from_slice(m);
            }
        }
        sel.push(0); // names and values hold no NUL: one encoding per selection
    }
    let mut k = base.to_vec();
    k.extend_from_slice(format!(" vary={:032x}", KeyHash::of(&sel).0).as_bytes());
    k
}

/// The internal surrogate key of a URL's field variants (the `Fields`
/// kind): purged with the URL.
pub fn url_tag(base: &[u8]) -> String {
    format!("{TAG}{}", String::from_utf8_lossy(base))
}

/// How [`url_tag`]s begin.
const TAG: &str = "rcdn-vary ";

/// Keeps the [`url_tag`] of `old` on its update `new` (a 304 or HEAD
/// response rebuilds the surrogate keys from the fields only).
pub fn keep_tag(old: &cdncore::Meta, new: &mut cdncore::Meta) {
    for t in old.surrogate_keys.iter().filter(|t| t.starts_with(TAG)) {
        if !new.surrogate_keys.contains(t) {
            new.surrogate_keys.push(t.clone());
        }
    }
}

/// Every key a URL's `Accept-Encoding` variants and unvaried object can
/// live under (its field variants go with [`url_tag`]).
pub fn all_keys(base: &[u8]) -> Vec<Vec<u8>> {
    let mut keys = vec![base.to_vec()];
    keys.extend(CODINGS.iter().map(|c| key(base, c)));
    keys
}
