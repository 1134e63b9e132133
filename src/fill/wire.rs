//! The peer protocol's metadata header: an owner's response metadata
//! (status, headers, expiry, validators, tags, surrogate keys, group, mask,
//! stale windows) in one header value (`X-Rcdn-Meta`), so the asking node
//! caches the body exactly as the owner does.
//!
//! Value: `2.` then base64url (no padding) of: the sender's clock (u64 LE),
//! the block record codec's metadata encoding, and an xxh3-64 of both.
//! Version 2 carries the metadata tail (`date`, `initial_age`, `no_stale`);
//! `1.` values from older peers still decode, those fields defaulted. An
//! older peer refuses `2.` (it treats the owner as failed and loads from
//! the origin), so a cluster upgrades all nodes before relying on peers.
//! The receiver shifts `stored_at`/`expires_at` by the clock difference, so
//! a TTL survives skew between nodes. Anything else is a clear error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use xxhash_rust::xxh3::xxh3_64;

use crate::block::record::{decode_meta, encode_meta};
use crate::meta::{Meta, UnixMs};

/// Response header carrying the encoded metadata.
pub const META_HEADER: &str = "X-Rcdn-Meta";
const PREFIX: &str = "2.";
/// Versions accepted: the current one and version 1 (no metadata tail).
const ACCEPTED: [&str; 2] = [PREFIX, "1."];
/// Longest value accepted (the encoded form of 48 KiB of metadata).
pub const MAX_VALUE: usize = 64 << 10;

/// Why a header value is not metadata.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("meta header is {0} bytes, over the limit of {MAX_VALUE}")]
    TooLong(usize),
    #[error("meta header has an unknown version (expected a \"2.\" or \"1.\" prefix)")]
    Version,
    #[error("meta header is not base64url: {0}")]
    Base64(String),
    #[error("meta header is truncated")]
    Truncated,
    #[error("meta header checksum mismatch")]
    Checksum,
    #[error("meta header: {0}")]
    Meta(String),
}

/// Encodes `m` as sent at `now` (the sender's clock).
pub fn encode(m: &Meta, now: UnixMs) -> String {
    let mut b = now.to_le_bytes().to_vec();
    b.extend_from_slice(&encode_meta(m));
    let sum = xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&b))
}

/// Decodes a header value received at `now` (the receiver's clock).
pub fn decode(value: &[u8], now: UnixMs) -> Result<Meta, WireError> {
    if value.len() > MAX_VALUE {
        return Err(WireError::TooLong(value.len()));
    }
    let body = ACCEPTED
        .iter()
        .find_map(|p| value.strip_prefix(p.as_bytes()))
        .ok_or(WireError::Version)?;
    let b = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| WireError::Base64(e.to_string()))?;
    if b.len() < 16 {
        return Err(WireError::Truncated);
    }
    let (payload, sum) = b.split_at(b.len() - 8);
    if xxh3_64(payload).to_le_bytes() != sum {
        return Err(WireError::Checksum);
    }
    let (clock, rest) = payload.split_at(8);
    let mut sent = [0u8; 8];
    sent.copy_from_slice(clock);
    let mut m = decode_meta(rest).map_err(|e| WireError::Meta(e.to_string()))?;
    rebase(&mut m, u64::from_le_bytes(sent), now);
    Ok(m)
}

/// Moves the times by the receiver's clock minus the sender's.
fn rebase(m: &mut Meta, sent: UnixMs, now: UnixMs) {
    let shift = |t: u64| {
        if now >= sent {
            t.saturating_add(now - sent)
        } else {
            t.saturating_sub(sent - now)
        }
    };
    m.stored_at = shift(m.stored_at);
    m.expires_at = shift(m.expires_at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sample() -> Meta {
        let mut m = Meta::with_ttl(1_000_000, 60_000);
        m.status = 206;
        m.headers = vec![
            ("Content-Type".into(), Bytes::from_static(b"image/png")),
            ("X-Bin".into(), Bytes::from_static(b"\x00\xff\r\n")),
        ];
        m.stale_while_revalidate = 30;
        m.stale_if_error = 600;
        m.etag = Some(Bytes::from_static(b"\"v1\""));
        m.last_modified = Some(1_700_000_000);
        m.tags = vec![3, 65535];
        m.surrogate_keys = vec!["brand".into(), "product-9".into()];
        m.group = Some(Bytes::from_static(b"img"));
        m.mask = 0b1010;
        m.date = 999;
        m.initial_age = 7;
        m.no_stale = true;
        m
    }

    /// A value of the version-1 encoder, captured from it (sender clock
    /// 1_700_000_000_500, metadata `record::tests::v1_sample`).
    const V1_VALUE: &str =
        "1.9Gnlz4sBAACUAQBo5c-LAQAAYFLmz4sBAAAFAAAAAAAAAAsAAAAAAAAA782rAAAAAAAeA\
        AAAWAIAAAAQXl8AAAAABAAAACJ2MSIBAAAAZwEAAAAHAAEAAAABAAAAawEAAAAMAAAAQ29udGVudC1UeXBlCgAAAHR\
        leHQvcGxhaW4eimL8gPVtfg";

    #[test]
    fn version_1_values_from_older_peers_still_decode() {
        let m = decode(V1_VALUE.as_bytes(), 1_700_000_000_500).unwrap();
        assert_eq!(m, crate::block::record::tests::v1_sample());
        assert_eq!((m.date, m.initial_age, m.no_stale), (0, 0, false));
        assert!(encode(&m, 5).starts_with("2."));
    }

    #[test]
    fn round_trips_every_field_and_is_header_safe() {
        let v = encode(&sample(), 1_000_500);
        assert!(v
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)));
        assert_eq!(decode(v.as_bytes(), 1_000_500).unwrap(), sample());
    }

    #[test]
    fn times_follow_the_receivers_clock() {
        let v = encode(&sample(), 1_000_000);
        let later = decode(v.as_bytes(), 1_005_000).unwrap();
        assert_eq!(later.expires_at - later.stored_at, 60_000, "TTL kept");
        assert_eq!(later.expires_at, 1_065_000);
        let earlier = decode(v.as_bytes(), 999_000).unwrap();
        assert_eq!(earlier.expires_at, 1_059_000);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let v = encode(&sample(), 5);
        assert_eq!(decode(b"", 5), Err(WireError::Version));
        assert_eq!(decode(b"3.AAAA", 5), Err(WireError::Version));
        assert_eq!(decode(b"AAAA", 5), Err(WireError::Version));
        assert!(matches!(decode(b"2.!!!", 5), Err(WireError::Base64(_))));
        assert_eq!(decode(b"2.AAAA", 5), Err(WireError::Truncated));
        assert_eq!(decode(b"1.AAAA", 5), Err(WireError::Truncated));
        let long = vec![b'A'; MAX_VALUE + 1];
        assert_eq!(decode(&long, 5), Err(WireError::TooLong(MAX_VALUE + 1)));
        // A valid checksum over nonsense metadata is still refused.
        let mut b = 5u64.to_le_bytes().to_vec();
        b.extend_from_slice(&[0xff; 40]);
        let sum = xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        let forged = format!("2.{}", URL_SAFE_NO_PAD.encode(&b));
        assert!(matches!(
            decode(forged.as_bytes(), 5),
            Err(WireError::Meta(_))
        ));
        assert!(decode(v.as_bytes(), 5).is_ok());
    }

    #[test]
    fn every_truncation_and_mutation_is_an_error_or_the_same_meta() {
        let v = encode(&sample(), 7).into_bytes();
        for cut in 0..v.len() {
            assert!(decode(&v[..cut], 7).is_err(), "cut at {cut}");
        }
        let mut changed = 0;
        for i in 0..v.len() {
            for byte in [b'A', b'z', b'-', b'_', b'=', b'.', 0, 0xff, v[i] ^ 1] {
                let mut m = v.clone();
                m[i] = byte;
                match decode(&m, 7) {
                    Ok(meta) => assert_eq!(meta, sample(), "mutation at {i} accepted"),
                    Err(_) => changed += 1,
                }
            }
        }
        assert!(changed > v.len() * 5, "most mutations rejected: {changed}");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..400 {
            let mut b = b"2.".to_vec();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                        [(x % 64) as usize],
                );
            }
            assert!(decode(&b, 0).is_err(), "random value of {len} decoded");
        }
    }
}
