//! Header and body filters. They sit at the top of the chain (the module is
//! loaded last), so for a fill subrequest they see the raw upstream status,
//! headers and every body byte. The fill's body is streamed into an engine
//! `Writer` and swallowed (nobody reads a background subrequest's output);
//! every other request passes through untouched.

use crate::cache::collapse::Outcome;
use crate::cache::ctx::FillCtx;
use crate::{base::guard, cache::variant, conf::Module, engine::store};
use bytes::Bytes;
use cdncore::fill::wire;
use cdncore::http::{verdict, Verdict};
use cdncore::{now_ms, Cache, Meta};
use nginx_sys::*;
use ngx::core::Status;
use ngx::http::HttpModuleLocationConf;
use ngx::ngx_log_error;
use std::mem::ManuallyDrop;
use std::os::unix::fs::FileExt;
use std::os::unix::io::FromRawFd;

static mut NEXT_HEADER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY: ngx_http_output_body_filter_pt = None;

/// Puts our filters on top of the chain.
///
/// # Safety
/// Only from postconfiguration (single-threaded, once per cycle).
pub unsafe fn install() {
    // SAFETY: nginx's filter chain globals are only touched during
    // configuration, on one thread.
    unsafe {
        NEXT_HEADER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY = ngx_http_top_body_filter;
        ngx_http_top_body_filter = Some(body_filter);
    }
}

/// Our fill state, for fill subrequests only.
///
/// # Safety
/// `r` must be live.
unsafe fn fill_of(r: *mut ngx_http_request_t) -> Option<&'static mut FillCtx> {
    // SAFETY: r is live; subrequest slots hold a FillCtx or null.
    unsafe {
        if (*r).main == r {
            return None;
        }
        FillCtx::get(r)
    }
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live for the call.
    if let Some(f) = unsafe { fill_of(r) } {
        // SAFETY: as above.
        let log = unsafe { (*(*r).connection).log };
        guard::event(log, "fill header", || {
            // SAFETY: r is live.
            unsafe { on_header(r, f) }
        });
        // SAFETY: r is live; the upstream (if any) is its proxy_pass.
        unsafe { unbuffer(r) };
    // SAFETY: r is live.
    } else if unsafe { crate::cache::invalidate::wants(r) } {
        // SAFETY: as above.
        let log = unsafe { (*(*r).connection).log };
        guard::event(log, "pass-through header", || {
            // SAFETY: r is a live main request sending its header.
            unsafe { crate::cache::invalidate::on_header(r) }
        });
    }
    // SAFETY: NEXT_HEADER was set by install() before any request.
    match unsafe { NEXT_HEADER } {
        // SAFETY: calling the next filter with the same live request.
        Some(next) => unsafe { next(r) },
        None => Status::NGX_ERROR.into(),
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, inp: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: r is live for the call.
    if let Some(f) = unsafe { fill_of(r) } {
        // SAFETY: as above.
        let log = unsafe { (*(*r).connection).log };
        return guard::request(log, "fill body", Status::NGX_ERROR.into(), || {
            // SAFETY: r is the fill owning f; inp is the chain nginx hands us.
            unsafe { capture(r, f, inp) };
            Status::NGX_OK.into()
        });
    }
    // SAFETY: NEXT_BODY was set by install() before any request.
    match unsafe { NEXT_BODY } {
        // SAFETY: calling the next filter with the same arguments.
        Some(next) => unsafe { next(r, inp) },
        None => Status::NGX_ERROR.into(),
    }
}

/// Makes a fill read its upstream unbuffered: the response goes on right
/// after this header filter, and a buffered one would reach our body
/// filter only at the end (the pipe writes only to the connection's
/// active request, never to a background subrequest) and spill to temp
/// files meanwhile. Unbuffered, each read is captured (and streamed) at
/// once. This is what `X-Accel-Buffering: no` does, decided at the same
/// point.
///
/// # Safety
/// `r` must be a live fill subrequest.
unsafe fn unbuffer(r: *mut ngx_http_request_t) {
    // SAFETY: r is live; its upstream is null or live.
    unsafe {
        let u = (*r).upstream;
        if !u.is_null() && (*u).header_sent() == 0 {
            (*u).set_buffering(0);
        }
    }
}

/// The upstream response headers as (name, value) pairs, in order.
///
/// # Safety
/// `r` must be live.
pub(crate) unsafe fn response_headers(r: *mut ngx_http_request_t) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // SAFETY: headers_out.headers is a list of ngx_table_elt_t.
    unsafe {
        let ho = &(*r).headers_out;
        if ho.content_type.len > 0 {
            out.push((
                "Content-Type".to_string(),
                ho.content_type.as_bytes().to_vec(),
            ));
        }
        let mut part: *const ngx_list_part_t = &ho.headers.part;
        while !part.is_null() {
            let elts =
                core::slice::from_raw_parts((*part).elts as *const ngx_table_elt_t, (*part).nelts);
            for h in elts.iter().filter(|h| h.hash != 0) {
                let name = String::from_utf8_lossy(h.key.as_bytes()).into_owned();
                out.push((name, h.value.as_bytes().to_vec()));
            }
            part = (*part).next;
        }
        // proxy_pass hides the origin's Date from headers_out (nginx would
        // write its own), and its Connection (the fields it names are
        // still there): the cache needs both (RFC 9111 §3.1, §4.2.3).
        let u = (*r).upstream;
        if !u.is_null() {
            let have_date = out.iter().any(|(n, _)| n.eq_ignore_ascii_case("date"));
            let mut part: *const ngx_list_part_t = &(*u).headers_in.headers.part;
            // Not initialised when nginx answers itself (502, timeout).
            while !part.is_null() && !(*part).elts.is_null() {
                let elts = core::slice::from_raw_parts(
                    (*part).elts as *const ngx_table_elt_t,
                    (*part).nelts,
                );
                for h in elts.iter().filter(|h| h.hash != 0) {
                    let k = h.key.as_bytes();
                    if k.eq_ignore_ascii_case(b"connection")
                        || !have_date && k.eq_ignore_ascii_case(b"date")
                    {
                        let name = String::from_utf8_lossy(k).into_owned();
                        out.push((name, h.value.as_bytes().to_vec()));
                    }
                }
                part = (*part).next;
            }
        }
    }
    out
}

pub(crate) fn pairs(h: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    h.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect()
}

pub(crate) fn header<'a>(h: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Integer tags, mask and group the origin can set (`X-Rcdn-Tags: 1,2`,
/// `X-Rcdn-Mask: 0x10`, `X-Rcdn-Group: name`); malformed values are ignored.
pub(crate) fn apply_extras(meta: &mut Meta, h: &[(String, Vec<u8>)]) {
    if let Some(v) = header(h, "x-rcdn-tags") {
        let s = String::from_utf8_lossy(v);
        meta.tags = s
            .split(',')
            .filter_map(|t| t.trim().parse::<u16>().ok())
            .collect();
    }
    if let Some(v) = header(h, "x-rcdn-mask") {
        meta.mask = crate::cache::purge::parse_u64(&String::from_utf8_lossy(v)).unwrap_or(0);
    }
    if let Some(v) = header(h, "x-rcdn-group").filter(|v| !v.is_empty()) {
        meta.group = Some(Bytes::copy_from_slice(v));
    }
}

/// Decides what to do with a fill's response and opens its writer.
///
/// # Safety
/// `r` must be the live fill subrequest owning `f`.
unsafe fn on_header(r: *mut ngx_http_request_t, f: &mut FillCtx) {
    // SAFETY: forwarded.
    unsafe { judge(r, f) };
    let not_stored = matches!(
        f.outcome,
        Some(Outcome::Uncacheable | Outcome::Personal | Outcome::Error)
    );
    if f.writer.is_none() && not_stored {
        // Not stored: the client that started the fill gets it streamed
        // (one origin request per miss).
        // SAFETY: r is the live fill subrequest owning f.
        unsafe { crate::cache::pass::open(r, f) };
    }
    if f.writer.is_none() {
        // Nothing to store: release the waiters now (they pass to the
        // origin or use a stale copy) instead of after the whole body.
        f.finish();
    }
}

/// # Safety
/// `r` must be the live fill subrequest owning `f`.
unsafe fn judge(r: *mut ngx_http_request_t, f: &mut FillCtx) {
    // SAFETY: r is live.
    unsafe { crate::base::guard::fault(r, "filter") };
    // SAFETY: r is live.
    let (status, length) = unsafe {
        (
            (*r).headers_out.status as u16,
            (*r).headers_out.content_length_n,
        )
    };
    // SAFETY: r is live.
    let lc = Module::location_conf(unsafe { &*r });
    let (Some(cache), Some(lc)) = (store::get(), lc) else {
        f.outcome = Some(Outcome::Uncacheable);
        return;
    };
    // SAFETY: r is live.
    let h = unsafe { response_headers(r) };
    // SAFETY: r is the live fill subrequest owning f.
    if f.peer.is_some() && f.slice.is_some() && unsafe { owner_failed(r, f, status, &h) } {
        return;
    }
    let slice_answer = status == 206 || f.slice.as_ref().is_some_and(|j| j.expect.is_some());
    if let (Some(job), true) = (f.slice.clone(), slice_answer) {
        // A slice from its owner carries the owner's metadata.
        let wire = match header(&h, crate::cluster::peer::META).filter(|_| f.peer.is_some()) {
            Some(v) => match wire::decode(v, now_ms()) {
                Ok(m) => Some(m),
                Err(e) => {
                    // SAFETY: r owns f and is live.
                    unsafe {
                        crate::cache::fill::peer_failed(r, f, &format!("sent bad metadata ({e})"))
                    };
                    return;
                }
            },
            None => None,
        };
        if crate::cache::slice::fill::judge(f, &job, status, &h, &cache, lc, wire) {
            return;
        }
    }
    if f.peer.is_some() && unsafe { from_owner(r, f, status, &h, &cache, length) } {
        return;
    }
    if let Some(job) = f.slice.clone() {
        if crate::cache::slice::fill::judge(f, &job, status, &h, &cache, lc, None) {
            return;
        }
    }
    if status == 304 && f.stale.is_some() {
        refresh(&cache, lc, f, &h);
        return;
    }
    // A server error with a stale copy to fall back on stays an error
    // (stale-if-error); 1xx is not a final response.
    if !(200..600).contains(&status) || status >= 500 && f.stale.is_some() {
        f.outcome = Some(Outcome::Error);
        return;
    }
    // Until the body is committed.
    f.outcome = Some(match status {
        500.. => Outcome::Error,
        _ if f.authorized => Outcome::Personal,
        _ => Outcome::Uncacheable,
    });
    let vary = variant::classify(
        h.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("vary"))
            .map(|(_, v)| v.as_slice()),
    );
    if vary == variant::VaryKind::Unsupported {
        return;
    }
    let mut policy = crate::cache::rfc::policy(lc, cache.config(), status);
    policy.authorization = f.authorized;
    let Verdict::Store(mut meta) = verdict(status, &pairs(&h), now_ms(), &policy) else {
        return;
    };
    apply_extras(&mut meta, &h);
    // SAFETY: r is live.
    unsafe { open_writer(r, &cache, f, meta, vary, length) };
}

/// Opens the writer of a fill, under the variant key the fill's request
/// selects when the response varies (with the marker to store at the base
/// key).
///
/// # Safety
/// `r` must be the live fill subrequest owning `f`.
unsafe fn open_writer(
    r: *mut ngx_http_request_t,
    cache: &Cache,
    f: &mut FillCtx,
    mut meta: Meta,
    vary: variant::VaryKind,
    length: off_t,
) {
    let key = match vary.marker() {
        Some(fields) => {
            if let variant::VaryKind::Fields(_) = vary {
                let tag = variant::url_tag(&f.base);
                if !meta.surrogate_keys.contains(&tag) {
                    meta.surrogate_keys.push(tag);
                }
            }
            let mut marker = meta.clone();
            marker.headers = vec![(variant::MARKER.to_string(), fields.clone())];
            marker.surrogate_keys.clear();
            marker.expires_at = marker.expires_at.saturating_add(86_400_000);
            f.marker = Some(marker);
            // The fill's own fields: what the origin answered.
            // SAFETY: r is live for this call.
            let live = unsafe { crate::cache::lookup::live_fields(r) };
            variant::key_for(&f.base, &fields, f.coding, &live)
        }
        None => f.base.clone(),
    };
    // Readers in this worker share a stream by coding: only the
    // `Accept-Encoding` variants (and unvaried objects) can be streamed.
    let streamable = !matches!(vary, variant::VaryKind::Fields(_));
    let size = (length >= 0).then_some(length as u64);
    let shared = meta.clone();
    match cache.writer_sized(&key, meta, size) {
        Ok(w) => {
            f.writer = Some(w);
            // Known length within the store's limit: readers in this worker
            // can take the body as it arrives.
            if let (Some(len), true) = (size, streamable) {
                crate::cache::stream::open(&f.base, shared, len, f.coding, f.marker.is_some());
                f.stream_key = Some(f.base.clone());
                crate::cache::collapse::notify(&f.base);
            }
        }
        Err(e) => {
            ngx_log_error!(NGX_LOG_INFO, f.log, "rcdn: not caching: {e}");
        }
    }
}

/// An owner's failure (5xx, a refusal): marks the peer down and ends the
/// fill as `PeerFailed`.
///
/// # Safety
/// `r` must be the live fill subrequest owning `f`.
unsafe fn owner_failed(
    r: *mut ngx_http_request_t,
    f: &mut FillCtx,
    status: u16,
    h: &[(String, Vec<u8>)],
) -> bool {
    let refused = status == 400 && header(h, "x-rcdn-error").is_some();
    if !(status >= 500 || status == 0 || refused) {
        return false;
    }
    if f.finished {
        return true; // already given up on (timed out)
    }
    let why = match header(h, "x-rcdn-draining") {
        Some(_) => "is draining".to_string(),
        None => format!("answered {status}"),
    };
    // SAFETY: r owns f and is live (caller's contract).
    unsafe { crate::cache::fill::peer_failed(r, f, &why) };
    true
}

/// The answer of an owner peer. A failure (5xx, a refusal, bad metadata)
/// marks the peer down and ends the fill as `PeerFailed`; an answer with
/// `X-Rcdn-Meta` is stored with the owner's metadata. Returns false for an
/// answer without it (the owner passed the origin's response through, e.g.
/// an uncacheable one): that is judged like the origin's.
///
/// # Safety
/// `r` must be the live fill subrequest owning `f`.
unsafe fn from_owner(
    r: *mut ngx_http_request_t,
    f: &mut FillCtx,
    status: u16,
    h: &[(String, Vec<u8>)],
    cache: &Cache,
    length: off_t,
) -> bool {
    // SAFETY: forwarded.
    if unsafe { owner_failed(r, f, status, h) } {
        return true;
    }
    let Some(value) = header(h, crate::cluster::peer::META) else {
        return false;
    };
    let meta = match wire::decode(value, now_ms()) {
        Ok(m) => m,
        Err(e) => {
            // SAFETY: as above.
            unsafe { crate::cache::fill::peer_failed(r, f, &format!("sent bad metadata ({e})")) };
            return true;
        }
    };
    f.outcome = Some(Outcome::Uncacheable); // until the body is committed
    if status == 304 {
        if let Some(old) = f.stale.clone() {
            refreshed(cache, f, &old, meta);
        }
        return true;
    }
    let vary = variant::classify(
        meta.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("vary"))
            .map(|(_, v)| v.as_ref()),
    );
    if vary != variant::VaryKind::Unsupported {
        // SAFETY: r is the live fill subrequest owning f.
        unsafe { open_writer(r, cache, f, meta, vary, length) };
    }
    true
}

/// A 304 for a stale copy: store its body again with the headers and
/// freshness the 304 updates (RFC 9111 §4.3.4). A 304 that selects another
/// response, or forbids storing, drops the copy (the waiters then fetch).
fn refresh(cache: &Cache, lc: &crate::conf::LocConf, f: &mut FillCtx, h: &[(String, Vec<u8>)]) {
    f.outcome = Some(Outcome::Error);
    let Some(old) = f.stale.clone() else { return };
    match crate::cache::rfc::freshened(lc, cache.config(), old.meta(), h, f.authorized) {
        Ok(mut meta) => {
            apply_extras(&mut meta, h); // only what the 304 itself sets
            variant::keep_tag(old.meta(), &mut meta);
            refreshed(cache, f, &old, meta);
        }
        Err(why) => {
            ngx_log_error!(NGX_LOG_INFO, f.log, "rcdn: stale copy dropped: {why}");
            let _ = cache.remove(old.key());
        }
    }
}

/// Stores a stale copy's body again under refreshed metadata.
fn refreshed(cache: &Cache, f: &mut FillCtx, old: &cdncore::Object, meta: Meta) {
    if let Ok((_, through)) = cache.insert_deferred(old.key(), meta, old.body().clone()) {
        f.outcome = Some(Outcome::Refreshed);
        crate::cache::persist::fill_writes(f, through.into_iter().collect());
    }
}

/// Streams a chain into the writer, marks it consumed, commits at the end.
/// Bufs a full pass stream has no room for stay unconsumed, queued in
/// `f.unread` before the next chain's (see `pass::room`).
///
/// # Safety
/// `r` must be the live fill owning `f`; `inp` must be a valid chain.
unsafe fn capture(r: *mut ngx_http_request_t, f: &mut FillCtx, inp: *mut ngx_chain_t) {
    let mut cl = inp;
    while !cl.is_null() {
        // SAFETY: cl is a link of the valid chain.
        let b = unsafe { (*cl).buf };
        cl = unsafe { (*cl).next };
        if !b.is_null() {
            f.unread.push_back(b);
        }
    }
    let mut last = false;
    while let Some(&b) = f.unread.front() {
        // SAFETY: r owns f and is live.
        let room = unsafe { crate::cache::pass::room(r, f) };
        // SAFETY: b is a live buf of this fill (its pool is the request's).
        unsafe {
            if (*b).temporary() != 0 || (*b).memory() != 0 || (*b).mmap() != 0 {
                let len = (*b).last.offset_from((*b).pos).max(0) as usize;
                let take = room.map_or(len, |n| len.min(n as usize));
                if take > 0 {
                    write(f, core::slice::from_raw_parts((*b).pos, take));
                    (*b).pos = (*b).pos.add(take);
                }
                if take < len {
                    crate::cache::pass::pause(f);
                    break;
                }
            } else if (*b).in_file() != 0 && !(*b).file.is_null() {
                read_file(f, (*b).file, (*b).file_pos, (*b).file_last);
                (*b).file_pos = (*b).file_last;
            }
            last |= (*b).last_buf() != 0 || (*b).last_in_chain() != 0;
        }
        f.unread.pop_front();
    }
    if last {
        commit(f);
        crate::cache::pass::end(f, true);
    }
}

fn write(f: &mut FillCtx, data: &[u8]) {
    crate::cache::pass::push(f, data);
    if let Some(w) = f.writer.as_mut() {
        if let Err(e) = w.write(data) {
            ngx_log_error!(NGX_LOG_INFO, f.log, "rcdn: not caching: {e}");
            f.writer = None;
            if let Some(k) = f.stream_key.take() {
                crate::cache::stream::end(&k, false);
            }
        } else if let Some(k) = &f.stream_key {
            crate::cache::stream::push(k, data);
        }
    }
}

/// Reads a file region of a buf (proxy spilled to a temp file).
///
/// # Safety
/// `file` must be the buf's open file.
unsafe fn read_file(f: &mut FillCtx, file: *mut ngx_file_t, from: off_t, to: off_t) {
    if f.writer.is_none() && f.pass.is_none() {
        return;
    }
    // SAFETY: the fd belongs to nginx; ManuallyDrop keeps us from closing it.
    let file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd((*file).fd) });
    let mut pos = from.max(0) as u64;
    let end = to.max(0) as u64;
    let mut buf = vec![0u8; 64 * 1024];
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        match file.read_at(&mut buf[..want], pos) {
            Ok(0) | Err(_) => {
                f.writer = None; // cannot read it back: do not store a hole
                crate::cache::pass::end(f, false);
                return;
            }
            Ok(n) => {
                write(f, &buf[..n]);
                pos += n as u64;
            }
        }
    }
}

fn commit(f: &mut FillCtx) {
    let Some(w) = f.writer.take() else { return };
    match w.commit_deferred() {
        Ok((_, through)) => {
            f.outcome = Some(Outcome::Stored);
            if let Some(k) = f.stream_key.take() {
                crate::cache::stream::end(&k, true);
            }
            let mut writes: Vec<_> = through.into_iter().collect();
            if let (Some(m), Some(cache)) = (f.marker.take(), store::get()) {
                if let Ok((_, t)) = cache.insert_deferred(&f.base, m, Bytes::new()) {
                    writes.extend(t);
                }
            }
            crate::cache::persist::fill_writes(f, writes);
        }
        Err(e) => {
            ngx_log_error!(NGX_LOG_INFO, f.log, "rcdn: not caching: {e}");
            if let Some(k) = f.stream_key.take() {
                crate::cache::stream::end(&k, false);
            }
        }
    }
}
