//! One origin request per client miss (RFC 9111 §3, issue 13 rule 1): a
//! fill whose response is not stored (`no-store`, `private`, `Set-Cookie`,
//! `Vary: *`, a status nothing makes storable, an origin error, an object
//! the store refuses) streams that response to the client whose miss
//! started it, instead of that client asking the origin a second time.
//!
//! The fill's header filter opens a pass stream ([`stream::open_pass`]) and
//! hands it to the initiating request's context; woken, that request
//! becomes the stream's only reader (`lookup` → [`take`]). Collapsed
//! waiters never see it: the response may be one client's (`private`,
//! `Set-Cookie`), so each of them makes its own origin request, as before.
//! The response goes out as the origin sent it, less the hop-by-hop fields
//! (and `Set-Cookie` is kept: it is this client's).
//!
//! A client slower than the origin never gets it cut: past
//! `rcdn_pass_buffer` bytes not yet sent, the fill stops consuming its
//! upstream's bufs ([`room`]), so nginx's non-buffered upstream reads no
//! more from the origin; the reader posts the fill again as it sends
//! (`stream::release`). Memory stays at about that buffer per client.

use crate::cache::ctx::FillCtx;
use crate::cache::stream;
use crate::cache::ReqCtx;
use crate::conf::{Module, PASS_BUFFER};
use crate::http::reply::push_header;
use bytes::Bytes;
use cdncore::http::date::parse_http_date;
use cdncore::{now_ms, Meta};
use nginx_sys::*;
use ngx::http::HttpModuleLocationConf;

/// Opens the pass stream of a fill whose response will not be stored, if
/// the request that started it waits for it (not a background refresh, a
/// slice, or a peer's fill).
///
/// # Safety
/// `sr` must be the live fill subrequest owning `f`.
pub unsafe fn open(sr: *mut ngx_http_request_t, f: &mut FillCtx) {
    if f.slice.is_some() || f.pass.is_some() {
        return;
    }
    // SAFETY: sr is live; its main request outlives it.
    let main = unsafe { (*sr).main };
    // SAFETY: main is a live main request.
    let Some(ctx) = (unsafe { ReqCtx::get(main) }) else {
        return;
    };
    if !ctx.initiator || !ctx.waiting() || ctx.hit.is_some() || ctx.stream.is_some() {
        return;
    }
    // SAFETY: sr is live.
    let (status, length) = unsafe {
        (
            (*sr).headers_out.status as u16,
            (*sr).headers_out.content_length_n,
        )
    };
    if status == 304 || status < 200 {
        // A 304 answers the fill's own revalidation, not the client (whose
        // conditionals the fill drops); 1xx is no final response.
        return;
    }
    // SAFETY: sr is live.
    let h = unsafe { crate::cache::filter::response_headers(sr) };
    let meta = meta_of(status, &h, now_ms());
    // SAFETY: sr is live.
    let cap = Module::location_conf(unsafe { &*sr }).map_or(PASS_BUFFER, |lc| lc.pass_buffer);
    let s = stream::open_pass(meta, (length >= 0).then_some(length as u64), cap, sr);
    f.pass = Some(s.clone());
    ctx.pass = Some(s);
}

/// The pass stream the fill of `r` opened for it, if any: `r` reads it.
///
/// # Safety
/// `r` must be the live main request owning `ctx`.
pub unsafe fn take(r: *mut ngx_http_request_t, ctx: &mut ReqCtx) -> bool {
    let Some(s) = ctx.pass.take() else {
        return false;
    };
    // SAFETY: forwarded.
    unsafe { stream::attach_pass(r, ctx, s) };
    ctx.source = "origin";
    true
}

/// A chunk of a fill's body for its pass stream.
pub fn push(f: &FillCtx, data: &[u8]) {
    if let Some(s) = &f.pass {
        stream::push_pass(s, data);
    }
}

/// How many more body bytes the fill of `sr` may take from its upstream
/// now; `None`: all it has. A fill with a pass stream that its client has
/// not taken up to `rcdn_pass_buffer` bytes stops there: its body filter
/// leaves the rest of nginx's bufs unconsumed, and nginx's non-buffered
/// upstream reads no more once its buffer is full (the origin then waits
/// on TCP flow control).
///
/// # Safety
/// `sr` must be the live fill subrequest owning `f`.
pub unsafe fn room(sr: *mut ngx_http_request_t, f: &FillCtx) -> Option<u64> {
    let s = f.pass.as_ref()?;
    // SAFETY: sr is live (caller's contract).
    if !unsafe { pausable(sr) } {
        return None;
    }
    stream::pass_room(s)
}

/// The fill of `sr` left bufs unconsumed: it is posted again when its
/// client has taken half of what is held.
pub fn pause(f: &FillCtx) {
    if let Some(s) = &f.pass {
        stream::pause_pass(s);
    }
}

/// The request that started the fill will not read its pass stream.
pub fn abandon(ctx: &mut ReqCtx) {
    if let Some(s) = ctx.pass.take() {
        stream::abandon_pass(&s);
    }
}

/// Whether the body of `sr` comes from its upstream's non-buffered reads
/// (the only producer that stops when its bufs stay busy and goes on when
/// the subrequest is posted again): the upstream sent the header and still
/// has its connection. Not for a body nginx makes itself (an error page).
///
/// # Safety
/// `sr` must be a live subrequest.
unsafe fn pausable(sr: *mut ngx_http_request_t) -> bool {
    // SAFETY: sr is live; its upstream is null or live.
    unsafe {
        let u = (*sr).upstream;
        !u.is_null()
            && (*u).header_sent() != 0
            && (*u).buffering() == 0
            && !(*u).peer.connection.is_null()
    }
}

/// Ends the pass stream of a fill (complete, or cut short).
pub fn end(f: &mut FillCtx, ok: bool) {
    if let Some(s) = f.pass.take() {
        stream::end_pass(&s, ok);
    }
}

/// Sets the status and the fields of a pass response: as the origin sent
/// them (its `Date` too, so nginx adds none), never the peer metadata (a
/// peer must not store what this node does not).
///
/// # Safety
/// `r` must be a live main request whose header was not sent.
pub unsafe fn put_headers(r: *mut ngx_http_request_t, meta: &Meta) -> bool {
    // SAFETY: r is live; every string set below is copied into its pool.
    unsafe {
        let out = &mut (*r).headers_out;
        out.status = ngx_uint_t::from(meta.status);
        let lm_time = crate::cache::serve::lm_by_time(meta.status);
        out.last_modified_time = match meta.last_modified {
            Some(t) if lm_time => t as time_t,
            _ => -1,
        };
        for (name, value) in &meta.headers {
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "content-type" => {
                    let Some(ct) = ngx_str_t::from_bytes((*r).pool, value) else {
                        return false;
                    };
                    (*r).headers_out.content_type = ct;
                    (*r).headers_out.content_type_len = ct.len;
                    continue;
                }
                "content-length" => continue,
                "last-modified" if lm_time => continue,
                _ => {}
            }
            let Some(h) = push_header(r, name.as_bytes(), value) else {
                return false;
            };
            match lower.as_str() {
                "etag" => (*r).headers_out.etag = h,
                "date" => (*r).headers_out.date = h,
                _ => {}
            }
        }
        true
    }
}

/// The response as the client gets it: status, validators, every
/// end-to-end field (its `Date` and `Age` too).
fn meta_of(status: u16, h: &[(String, Vec<u8>)], now: u64) -> Meta {
    let first = |name: &str| {
        h.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };
    let named: Vec<String> = h
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let headers = h
        .iter()
        .filter(|(n, _)| {
            let l = n.to_ascii_lowercase();
            !cdncore::http::HOP_BY_HOP.contains(&l.as_str()) && !named.contains(&l)
        })
        .map(|(n, v)| (n.clone(), Bytes::copy_from_slice(v)))
        .collect();
    let secs = now / 1000;
    Meta {
        status,
        stored_at: now,
        expires_at: now,
        etag: first("etag").map(Bytes::copy_from_slice),
        last_modified: first("last-modified").and_then(|v| parse_http_date(v, secs)),
        headers,
        ..Meta::default()
    }
}
