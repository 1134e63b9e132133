//! Judging the response to a slice fill (`Range: bytes=a-b` to the origin).
//!
//! A 206 whose `Content-Range` is the asked slice is stored under the slice
//! key of its identity (validators and total length), and streams to this
//! worker's readers as it arrives. The first slice a URL fetches (no
//! manifest yet) also writes the manifest at the base key, at once, and
//! claims the slice's own key; if it covers the whole object, the object
//! is stored whole instead. A
//! later slice whose identity differs from the manifest's means the object
//! changed on the origin: nothing is stored, the manifest is dropped (the
//! next request refetches) and the fill fails, so its reader aborts.

use crate::cache::collapse::{self, Outcome};
use crate::cache::ctx::FillCtx;
use crate::cache::filter::{apply_extras, header, pairs};
use crate::cache::slice::{self, Manifest};
use crate::cache::stream;
use crate::conf::LocConf;
use bytes::Bytes;
use cdncore::http::{verdict, Verdict};
use cdncore::{now_ms, Cache};
use nginx_sys::{NGX_LOG_INFO, NGX_LOG_WARN};
use ngx::ngx_log_error;

/// Which slice a fill fetches.
#[derive(Clone, Debug)]
pub struct SliceJob {
    /// The URL's base key (where the manifest lives).
    pub base: Vec<u8>,
    pub index: u64,
    /// Slice size (`rcdn_slice`).
    pub size: u64,
    /// The manifest the slice must match; `None` for the first slice.
    pub expect: Option<Manifest>,
}

impl SliceJob {
    /// The `Range` header value sent to the origin.
    pub fn range_header(&self) -> String {
        let start = self.index.saturating_mul(self.size);
        let mut end = start.saturating_add(self.size);
        if let Some(m) = &self.expect {
            end = end.min(m.total);
        }
        format!("bytes={start}-{}", end.saturating_sub(1))
    }
}

/// Judges a slice fill's response and opens its writer. False: not a
/// slice answer (the first slice got a 200 or an error status), to be
/// judged as an ordinary fill.
pub fn judge(
    f: &mut FillCtx,
    job: &SliceJob,
    status: u16,
    h: &[(String, Vec<u8>)],
    cache: &Cache,
    lc: &LocConf,
    wire: Option<cdncore::Meta>,
) -> bool {
    if status != 206 {
        if job.expect.is_none() {
            return false; // origin ignored Range, or an error: whole-object rules
        }
        ngx_log_error!(
            NGX_LOG_WARN,
            f.log,
            "rcdn: slice {} answered {status} instead of 206",
            job.index
        );
        f.outcome = Some(Outcome::Error);
        if (200..300).contains(&status) {
            // The origin now answers otherwise: fetch the object anew.
            let _ = cache.remove(&job.base);
        }
        return true;
    }
    f.outcome = Some(Outcome::Error);
    let Some((a, b, total)) = header(h, "content-range").and_then(slice::content_range) else {
        ngx_log_error!(
            NGX_LOG_WARN,
            f.log,
            "rcdn: slice 206 without a valid Content-Range"
        );
        return true;
    };
    // An owner's answer: its metadata has the origin's validators as sent
    // (nginx rewrites Last-Modified on the way).
    let ident = match &wire {
        Some(w) => slice::ident(
            w.header("etag").map(|v| v.as_ref()).or(w.etag.as_deref()),
            w.header("last-modified").map(|v| v.as_ref()),
            total,
        ),
        None => slice::ident(header(h, "etag"), header(h, "last-modified"), total),
    };
    let m = Manifest {
        size: job.size,
        total,
        ident,
    };
    let (start, end) = m.bounds(job.index);
    if a != start || b + 1 != end {
        ngx_log_error!(
            NGX_LOG_WARN,
            f.log,
            "rcdn: slice {} got bytes {a}-{b}/{total}, wanted {start}-{}",
            job.index,
            end.saturating_sub(1)
        );
        return true;
    }
    if job.expect.is_some_and(|e| e != m) {
        ngx_log_error!(
            NGX_LOG_WARN,
            f.log,
            "rcdn: object changed on the origin during a sliced fill; refetching"
        );
        let _ = cache.remove(&job.base);
        return true;
    }
    f.outcome = Some(Outcome::Uncacheable); // until the body is committed
    let meta = match wire {
        Some(mut w) => {
            w.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case(slice::MARKER));
            Some(w)
        }
        None => slice_meta(h, cache, lc, f.authorized),
    };
    let Some(mut meta) = meta else {
        return true;
    };
    meta.status = 200;
    let whole = job.expect.is_none() && start == 0 && end == total;
    let key = if whole {
        f.base.clone() // one slice is the whole object: store it whole
    } else {
        slice::key(&job.base, job.size, ident, job.index)
    };
    if job.expect.is_none() && !whole {
        // The manifest goes in now, so the waiters can start on the slices
        // (this one streams to them as it arrives).
        let mut mm = meta.clone();
        mm.headers
            .push((slice::MARKER.to_string(), Bytes::from(m.encode())));
        match cache.insert_deferred(&job.base, mm, Bytes::new()) {
            // Queued before the slice's own write, which lands after it.
            Ok((_, t)) => crate::cache::persist::later(t.into_iter().collect(), || {}),
            Err(_) => {
                f.outcome = Some(Outcome::Error);
                return true;
            }
        }
        // This fill is the fill of the slice's own key too.
        match collapse::claim(&key, lc.lock_timeout as u64) {
            collapse::Start::Fill(token) => f.also = Some((key.clone(), token)),
            _ => {
                // Someone fills that slice already: let them; the manifest
                // is what this fill stored.
                f.outcome = Some(Outcome::Stored);
                return true;
            }
        }
    }
    let shared = meta.clone();
    match cache.writer_sized(&key, meta, Some(end - start)) {
        Ok(w) => {
            f.writer = Some(w);
            stream::open(&key, shared, end - start, "identity", false);
            f.stream_key = Some(key.clone());
            collapse::notify(&key);
            if key != f.base {
                collapse::notify(&f.base);
            }
        }
        Err(e) => {
            ngx_log_error!(NGX_LOG_INFO, f.log, "rcdn: not caching a slice: {e}");
        }
    }
    true
}

/// The metadata of a slice (or manifest): the response as if it were the
/// whole 200, without the range framing.
fn slice_meta(
    h: &[(String, Vec<u8>)],
    cache: &Cache,
    lc: &LocConf,
    authorized: bool,
) -> Option<cdncore::Meta> {
    let whole: Vec<(String, Vec<u8>)> = h
        .iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("content-range") && !n.eq_ignore_ascii_case("content-length")
        })
        .cloned()
        .collect();
    let mut policy = crate::cache::rfc::policy(lc, cache.config(), 200);
    policy.authorization = authorized;
    let Verdict::Store(mut meta) = verdict(200, &pairs(&whole), now_ms(), &policy) else {
        return None;
    };
    apply_extras(&mut meta, &whole);
    Some(meta)
}
