//! `Vary: Accept-Encoding` variants.
//!
//! A response that varies on `Accept-Encoding` is stored under
//! `<key> ae=<coding>`, with a small marker object at `<key>` that says
//! "look up the variant". The request's `Accept-Encoding` is normalised to
//! one of [`CODINGS`] (and sent to the origin in that form), so a URL has at
//! most that many variants and a purge of the URL can name every one.

/// Normalised codings, best first; `identity` means "none".
const CODINGS: &[&str] = &["br", "gzip", "identity"];
/// Meta header marking a variant marker object (never sent to clients).
pub const MARKER: &str = "x-rcdn-vary";

/// What a `Vary` header allows.
#[derive(Debug, PartialEq, Eq)]
pub enum VaryKind {
    None,
    AcceptEncoding,
    /// `*` or a header we do not key on: not cacheable.
    Unsupported,
}

/// Classifies every `Vary` value of a response.
pub fn classify<'a>(values: impl Iterator<Item = &'a [u8]>) -> VaryKind {
    let mut kind = VaryKind::None;
    for v in values {
        for t in v.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if t.is_empty() {
                continue;
            }
            if t.eq_ignore_ascii_case(b"accept-encoding") {
                kind = VaryKind::AcceptEncoding;
            } else {
                return VaryKind::Unsupported;
            }
        }
    }
    kind
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

/// The key of one variant.
pub fn key(base: &[u8], coding: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(base.len() + 4 + coding.len());
    k.extend_from_slice(base);
    k.extend_from_slice(b" ae=");
    k.extend_from_slice(coding.as_bytes());
    k
}

/// Every key a URL's object can live under: the base and each variant.
pub fn all_keys(base: &[u8]) -> Vec<Vec<u8>> {
    let mut keys = vec![base.to_vec()];
    keys.extend(CODINGS.iter().map(|c| key(base, c)));
    keys
}
