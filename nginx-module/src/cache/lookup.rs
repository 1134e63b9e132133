//! The precontent phase: look the key up and decide — serve a hit, wait for
//! a fill, or pass the request to the location's `proxy_pass`.

use crate::base::request::{all_fields, header_in, header_lines, joined};
use crate::cache::collapse::{self, Outcome};
use crate::cache::slice::fill::SliceJob;
use crate::cache::CacheStatus;
use crate::cache::ReqCtx;
use crate::conf::{LocConf, MainConf};
use crate::{
    base::guard, cache::fill, cache::serve, cache::slice, cache::stream, cache::variant,
    conf::Module, engine::store,
};
use cdncore::{now_ms, Cache, Lookup, Object};
use nginx_sys::*;
use ngx::core::Status;
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use std::sync::Arc;

/// Wake-ups after which a request stops waiting and goes to the origin.
const MAX_ROUNDS: u8 = 3;

/// `X-Rcdn-Fault: slow-block-read` (fault-injection builds): the block-tier
/// lookup takes 1 s more (on its io thread, or inline with io threads off).
const SLOW_READ: &str = "slow-block-read";

/// # Safety
/// Called by nginx with valid pointers for this callback.
pub unsafe extern "C" fn precontent(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let log = unsafe { (*(*r).connection).log };
    guard::request(
        log,
        "lookup",
        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        || {
            // SAFETY: r is live for the whole phase handler.
            let rc = unsafe { lookup(r) };
            // SAFETY: as above.
            unsafe { drop_unread_pass(r) };
            rc
        },
    )
}

/// A pass stream its fill opened for `r` that this lookup did not take
/// (it served a stale copy, a hit, another stream): nobody will read it,
/// so its fill must not wait for a reader.
///
/// # Safety
/// `r` must be a live request.
unsafe fn drop_unread_pass(r: *mut ngx_http_request_t) {
    // SAFETY: r is live.
    if unsafe { (*r).main } != r {
        return;
    }
    // SAFETY: r is a live main request.
    if let Some(ctx) = unsafe { ReqCtx::get(r) } {
        if ctx.pass.is_some() && !ctx.waiting() && !ctx.io_pending() {
            crate::cache::pass::abandon(ctx);
        }
    }
}

fn declined() -> ngx_int_t {
    Status::NGX_DECLINED.into()
}

/// # Safety
/// `r` must be a live main request.
unsafe fn lookup(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    unsafe { guard::fault(r, "lookup") };
    // SAFETY: r is live.
    if unsafe { (*r).main } != r {
        // SAFETY: r is a live subrequest; a fill's owns its FillCtx.
        if let Some(f) = unsafe { crate::cache::ctx::FillCtx::get(r) } {
            // SAFETY: as above.
            unsafe { crate::cache::interim::install(r, &mut f.interim) };
        }
        return declined(); // fills and other subrequests go to their handler
    }
    // SAFETY: r is live; loc conf always exists for our module.
    let Some(lc) = Module::location_conf(unsafe { &*r }) else {
        return declined();
    };
    if lc.cache != 1 || lc.purge {
        return declined();
    }
    // SAFETY: r is a live main request.
    let Some(ctx) = (unsafe { ReqCtx::get_or_create(r) }) else {
        return Status::NGX_ERROR.into();
    };
    if ctx.waiting() || ctx.io_pending() {
        return Status::NGX_AGAIN.into(); // a spurious re-run while we wait
    }
    // Whatever it becomes, a pass to the origin skips interim responses.
    // SAFETY: r is the live main request owning ctx.
    unsafe { crate::cache::interim::install(r, &mut ctx.interim) };
    // A request with `Authorization` is looked up and filled like any
    // other (RFC 9111 §3.5 and §4): the fill stores its response only when
    // `public`, `s-maxage` or `must-revalidate` allows a shared cache to.
    // SAFETY: r is live.
    if unsafe { (*r).method } & lc.methods == 0 {
        ctx.status = CacheStatus::Bypass;
        return declined();
    }
    let Some(cache) = store::get() else {
        ctx.status = CacheStatus::Bypass;
        return declined();
    };
    if ctx.key.is_empty() {
        // SAFETY: r is live.
        match unsafe { eval_key(r, lc) } {
            Some(k) if !k.is_empty() => ctx.key = k,
            _ => {
                ctx.status = CacheStatus::Bypass;
                return declined();
            }
        }
        // SAFETY: r is a live main request.
        let key = &ctx.key;
        let slice_of = |given: &[u8], m: Option<&[u8]>, range: Option<&[u8]>| {
            slice::PeerSlice::verify(key, given, m, range)
        };
        match unsafe { crate::cluster::peer::owner_checks(r, key, slice_of) } {
            Err(rc) => return rc,
            Ok(Some(ps)) => {
                // A peer asks for one slice: this request is keyed on it.
                ctx.key = ps.key();
                ctx.peer_slice = Some(ps);
            }
            Ok(None) => {}
        }
    }
    // SAFETY: r is live.
    let coding = variant::normalise(unsafe { header_in(r, b"accept-encoding") });
    // SAFETY: r is the live main request owning ctx.
    let Some(found) = (unsafe { find(r, ctx, &cache, coding) }) else {
        return Status::NGX_AGAIN.into(); // on an io thread
    };
    // SAFETY: r is live; ctx belongs to it.
    unsafe { decide(r, lc, ctx, found, coding) }
}

/// Evaluates `rcdn_cache_key` (or the default key).
///
/// # Safety
/// `r` must be live.
pub(crate) unsafe fn eval_key(r: *mut ngx_http_request_t, lc: &LocConf) -> Option<Vec<u8>> {
    let mut cv = lc.key;
    if cv.is_null() {
        // SAFETY: r is live.
        cv = Module::main_conf(unsafe { &*r }).map(|m: &MainConf| m.default_key)?;
    }
    if cv.is_null() {
        return None;
    }
    let mut out = ngx_str_t::default();
    // SAFETY: cv is a compiled complex value from our configuration.
    if unsafe { ngx_http_complex_value(r, cv, &mut out) } != NGX_OK as ngx_int_t {
        return None;
    }
    Some(out.as_bytes().to_vec())
}

/// The lookup of `ctx.key`: inline when it reads only memory, else on an
/// io thread (`None`: the phases re-run with its result in `io_result`).
///
/// # Safety
/// `r` must be the live main request owning `ctx`.
unsafe fn find(
    r: *mut ngx_http_request_t,
    ctx: &mut ReqCtx,
    cache: &Cache,
    coding: &'static str,
) -> Option<Lookup> {
    // SAFETY: r is live for this call.
    let live = unsafe { live_fields(r) };
    let fields: variant::Fields = &live;
    if let Some(l) = ctx.io_result.take() {
        return Some(match l {
            // A fill in this worker may have stored it while the job ran.
            Lookup::Miss => resolve_mem(cache, &ctx.key, coding, fields).unwrap_or(Lookup::Miss),
            l => l,
        });
    }
    // SAFETY: r is live.
    let slow = unsafe { guard::fault_asked(r, SLOW_READ) };
    if !crate::engine::iothread::enabled() {
        guard::injected_delay(slow); // on the event loop (io threads off)
        return Some(resolve(cache, &ctx.key, coding, fields));
    }
    if let Some(l) = resolve_mem(cache, &ctx.key, coding, fields) {
        return Some(l);
    }
    // Being filled and streamed here: not on disk yet; `decide` attaches
    // to the stream.
    if crate::cache::stream::exists(&ctx.key) {
        return Some(Lookup::Miss);
    }
    // An injected slow read always takes the thread.
    if let Some(l) = (!slow)
        .then(|| resolve_resident(cache, &ctx.key, coding, fields))
        .flatten()
    {
        return Some(l);
    }
    // SAFETY: forwarded.
    if unsafe { start_block(r, ctx, cache, coding) } {
        return None;
    }
    Some(resolve(cache, &ctx.key, coding, fields))
}

/// Looks up the base key, following a variant marker to the variant the
/// request's `fields` select.
pub fn resolve(cache: &Cache, base: &[u8], coding: &str, fields: variant::Fields) -> Lookup {
    match cache.get(base) {
        Ok(l) => match l.object().and_then(|o| o.meta().header(variant::MARKER)) {
            Some(m) => cache
                .get(&variant::key_for(base, m, coding, fields))
                .unwrap_or(Lookup::Miss),
            None => l,
        },
        Err(_) => Lookup::Miss,
    }
}

/// [`resolve`] in the memory tier only: `None` when the block tiers must
/// be asked (on an io thread: they may read from disk).
fn resolve_mem(
    cache: &Cache,
    base: &[u8],
    coding: &str,
    fields: variant::Fields,
) -> Option<Lookup> {
    let now = now_ms();
    match cache.get_mem_at(base, now) {
        Ok(Some(l)) => match l.object().and_then(|o| o.meta().header(variant::MARKER)) {
            Some(m) => match cache.get_mem_at(&variant::key_for(base, m, coding, fields), now) {
                Ok(found) => found,
                Err(_) => Some(Lookup::Miss),
            },
            None => Some(l),
        },
        Ok(None) => None,
        Err(_) => Some(Lookup::Miss),
    }
}

/// [`resolve`] when it reads only memory: the object (and its variant)
/// are in the memory tier or in page-cache pages of the first block tier
/// (`mincore`). `None`: a read might wait for the disk.
fn resolve_resident(
    cache: &Cache,
    base: &[u8],
    coding: &str,
    fields: variant::Fields,
) -> Option<Lookup> {
    let now = now_ms();
    let l = cache.get_resident_at(base, now).ok()??;
    match l.object().and_then(|o| o.meta().header(variant::MARKER)) {
        Some(m) => {
            let v = variant::key_for(base, m, coding, fields);
            match cache.get_mem_at(&v, now) {
                Ok(Some(found)) => Some(found),
                _ => cache.get_resident_at(&v, now).ok()?,
            }
        }
        None => Some(l),
    }
}

/// The request's fields a variant marker may name, read from `r`.
///
/// # Safety
/// `r` must be live while the closure is used.
pub(crate) unsafe fn live_fields(r: *mut ngx_http_request_t) -> impl Fn(&[u8]) -> Option<Vec<u8>> {
    // SAFETY: the caller keeps r live while the closure runs.
    move |name| unsafe { header_lines(r, name) }
}

/// Runs the whole lookup of `ctx.key` on an io thread. False: no thread
/// (the caller looks up inline).
///
/// # Safety
/// `r` must be the live main request owning `ctx`.
unsafe fn start_block(
    r: *mut ngx_http_request_t,
    ctx: &mut ReqCtx,
    cache: &Cache,
    coding: &'static str,
) -> bool {
    let (cache, key) = (cache.clone(), ctx.key.clone());
    // SAFETY: r is live.
    let slow = unsafe { guard::fault_asked(r, SLOW_READ) };
    // The thread cannot read the request: it gets a copy of its fields.
    // SAFETY: r is live.
    let copy = unsafe { all_fields(r) };
    let job = move || {
        guard::injected_delay(slow);
        let fields = |name: &[u8]| joined(&copy, name);
        Box::new(resolve(&cache, &key, coding, &fields)) as crate::engine::iothread::Done
    };
    // SAFETY: forwarded.
    unsafe { ctx.start_io(r, Box::new(job)) }
}

/// # Safety
/// `r` must be the live main request owning `ctx`.
unsafe fn decide(
    r: *mut ngx_http_request_t,
    lc: &LocConf,
    ctx: &mut ReqCtx,
    found: Lookup,
    coding: &'static str,
) -> ngx_int_t {
    let now = now_ms();
    if ctx.woken {
        ctx.rounds += 1;
    }
    if let Some(ps) = ctx.peer_slice.clone() {
        // SAFETY: forwarded.
        return unsafe { peer_slice(r, lc, ctx, found, &ps) };
    }
    let manifest = found
        .object()
        .and_then(|o| o.meta().header(slice::MARKER))
        .and_then(|v| slice::Manifest::decode(v));
    if let Some(m) = manifest {
        return match found {
            Lookup::Fresh(o) => {
                ctx.manifest = Some(m);
                let st = fetched_status(ctx);
                ctx.status = st;
                ctx.hit = Some(o);
                // SAFETY: r is live; a sliced hit has its own content handler.
                unsafe { (*r).content_handler = Some(slice::serve::handler) };
                declined()
            }
            // An expired manifest is fetched again (its slices are keyed
            // by the validators, so unchanged slices are hits).
            _ => {
                ctx.had_stale = true;
                // SAFETY: forwarded.
                unsafe { miss(r, lc, ctx, coding, None) }
            }
        };
    }
    if !found.is_fresh() {
        let key = ctx.key.clone();
        // SAFETY: r is the live main request owning ctx.
        if unsafe { stream::attach(r, ctx, &key, coding) } {
            // A fill of this key is streaming in this worker: read it.
            ctx.status = match (ctx.initiator, ctx.had_stale) {
                (false, _) => CacheStatus::Hit,
                (true, false) => CacheStatus::Miss,
                (true, true) => CacheStatus::Expired,
            };
            return declined();
        }
    }
    match found {
        Lookup::Fresh(o) => {
            let st = fetched_status(ctx);
            // SAFETY: forwarded.
            unsafe { hit(r, ctx, o, st) }
        }
        Lookup::Stale(o) => {
            let sie_ok = o.meta().within_stale_if_error(now)
                || now < o.meta().expires_at + lc.stale_if_error as u64;
            if ctx.woken && matches!(ctx.outcome, Some(Outcome::Stored | Outcome::Refreshed)) {
                // Just fetched, already stale (no-cache, max-age=0): serve it once.
                let st = fetched_status(ctx);
                // SAFETY: forwarded.
                return unsafe { hit(r, ctx, o, st) };
            }
            let failed = collapse::recent(&ctx.key, collapse::ERROR_MS) == Some(Outcome::Error);
            if sie_ok && (failed || ctx.woken) {
                // SAFETY: forwarded.
                return unsafe { hit(r, ctx, o, CacheStatus::Stale) };
            }
            // SAFETY: r is live.
            let authorized = unsafe { header_in(r, b"authorization") }.is_some();
            let refresh = !authorized
                || store::get()
                    .is_some_and(|c| crate::cache::rfc::may_update(lc, c.config(), o.meta(), true));
            if o.meta().within_stale_while_revalidate(now) {
                if !refresh {
                    // Served stale; the refresh is left to an anonymous request.
                } else if let collapse::Start::Fill(token) =
                    collapse::claim(&ctx.key, lc.lock_timeout as u64)
                {
                    // SAFETY: forwarded.
                    if unsafe { fill::start(r, lc, &ctx.key, coding, Some(o.clone()), token, None) }
                        .is_none()
                    {
                        collapse::release_shared(&ctx.key, token);
                        collapse::abandon(&ctx.key);
                    }
                }
                // SAFETY: forwarded.
                return unsafe { hit(r, ctx, o, CacheStatus::Updating) };
            }
            ctx.had_stale = true;
            // SAFETY: forwarded.
            unsafe { miss(r, lc, ctx, coding, refresh.then_some(o)) }
        }
        // SAFETY: forwarded.
        Lookup::Miss => unsafe { miss(r, lc, ctx, coding, None) },
    }
}

/// A peer's slice request: the slice from the cache (206), or exactly this
/// slice filled from the origin (never another slice, never forwarded).
///
/// # Safety
/// `r` must be the live main request owning `ctx`.
unsafe fn peer_slice(
    r: *mut ngx_http_request_t,
    lc: &LocConf,
    ctx: &mut ReqCtx,
    found: Lookup,
    ps: &slice::PeerSlice,
) -> ngx_int_t {
    let (s, e) = ps.m.bounds(ps.index);
    match found {
        Lookup::Fresh(o) if o.size() == e - s => {
            ctx.status = fetched_status(ctx);
            ctx.hit = Some(o);
            if ctx.source.is_empty() || !ctx.initiator {
                ctx.source = "cache";
            }
            // SAFETY: r is live; the slice goes out as a 206 of its range.
            unsafe { (*r).content_handler = Some(crate::cache::slice::peer::handler) };
            declined()
        }
        // SAFETY: forwarded.
        _ => unsafe { miss(r, lc, ctx, "identity", None) },
    }
}

/// Status of a request served from the cache: HIT, or what its own fill did.
fn fetched_status(ctx: &ReqCtx) -> CacheStatus {
    if !ctx.woken || !ctx.initiator {
        CacheStatus::Hit
    } else if ctx.outcome == Some(Outcome::Refreshed) {
        CacheStatus::Revalidated
    } else if ctx.had_stale {
        CacheStatus::Expired
    } else {
        CacheStatus::Miss
    }
}

/// # Safety
/// `r` must be the live main request owning `ctx`.
unsafe fn hit(
    r: *mut ngx_http_request_t,
    ctx: &mut ReqCtx,
    o: Arc<Object>,
    st: CacheStatus,
) -> ngx_int_t {
    ctx.status = st;
    ctx.hit = Some(o);
    if ctx.source.is_empty() || !ctx.initiator {
        ctx.source = "cache";
    }
    // SAFETY: r is live; swapping the content handler serves this request
    // from the cache instead of the location's proxy_pass.
    unsafe { (*r).content_handler = Some(serve::handler) };
    declined()
}

/// Whether a request that just claimed a fill should look again first: it
/// polled another worker's fill, or its lookup found nothing and the
/// object is in the block tier now (an inline, memory-only check; a stale
/// copy being refreshed does not count).
fn landed_meanwhile(ctx: &ReqCtx, stale: bool) -> bool {
    ctx.wait_until.is_some()
        || (!stale && !ctx.had_stale && store::get().is_some_and(|c| c.block_resident(&ctx.key)))
}

/// # Safety
/// `r` must be the live main request owning `ctx`.
unsafe fn miss(
    r: *mut ngx_http_request_t,
    lc: &LocConf,
    ctx: &mut ReqCtx,
    coding: &'static str,
    stale: Option<Arc<Object>>,
) -> ngx_int_t {
    ctx.status = if ctx.had_stale {
        CacheStatus::Expired
    } else {
        CacheStatus::Miss
    };
    // SAFETY: r is the live main request owning ctx.
    if unsafe { crate::cache::pass::take(r, ctx) } {
        return declined(); // its own fill's response, not stored
    }
    // Another authorised client's response was not stored: this one's
    // would not be either.
    // SAFETY: r is live.
    let personal = ctx.outcome == Some(Outcome::Personal)
        && unsafe { header_in(r, b"authorization") }.is_some();
    let pass = ctx.timed_out
        || ctx.rounds >= MAX_ROUNDS
        || personal
        || matches!(ctx.outcome, Some(Outcome::Uncacheable | Outcome::Error))
        || collapse::recent(&ctx.key, collapse::PASS_MS) == Some(Outcome::Uncacheable);
    if pass {
        ctx.source = "origin";
        return declined(); // to the origin directly, like a plain proxy
    }
    match collapse::claim(&ctx.key, lc.lock_timeout as u64) {
        collapse::Start::Fill(token)
            if !ctx.rechecked && landed_meanwhile(ctx, stale.is_some()) =>
        {
            // Another worker's fill may have ended between this request's
            // last lookup and this claim: it polled that fill, whose
            // marker has gone, or the object is in the block tier now
            // (its write landed while our lookup ran on an io thread). Look
            // once more before asking the origin (one origin request per
            // miss).
            collapse::release_shared(&ctx.key, token);
            collapse::abandon(&ctx.key);
            ctx.rechecked = true;
            // SAFETY: r is the live main request owning ctx.
            unsafe { ctx.start_poll(r, lc.lock_timeout) };
            return Status::NGX_AGAIN.into();
        }
        collapse::Start::Fill(token) => {
            // SAFETY: r is live.
            let job = unsafe { head_job(r, lc, ctx, stale.is_some()) };
            let stale = if job.is_some() { None } else { stale };
            // SAFETY: forwarded.
            match unsafe { fill::start(r, lc, &ctx.key, coding, stale, token, job) } {
                Some(source) => ctx.source = source,
                None => {
                    collapse::release_shared(&ctx.key, token);
                    collapse::abandon(&ctx.key);
                    return declined();
                }
            }
            ctx.initiator = true;
        }
        collapse::Start::Local => ctx.initiator = false,
        collapse::Start::OtherWorker => {
            ctx.initiator = false;
            // SAFETY: r is the live main request owning ctx.
            unsafe { ctx.start_poll(r, lc.lock_timeout) };
            return Status::NGX_AGAIN.into();
        }
    }
    ctx.outcome = None;
    // SAFETY: r is the live main request owning ctx.
    unsafe { ctx.start_wait(r, lc.lock_timeout) };
    Status::NGX_AGAIN.into()
}

/// The first slice fill of a URL in a sliced location: the slice holding
/// the start of the client's range. A stale whole object is revalidated
/// as a whole instead.
///
/// # Safety
/// `r` must be live.
unsafe fn head_job(
    r: *mut ngx_http_request_t,
    lc: &LocConf,
    ctx: &ReqCtx,
    stale_whole: bool,
) -> Option<SliceJob> {
    if let Some(ps) = &ctx.peer_slice {
        return Some(SliceJob {
            base: ps.base.clone(),
            index: ps.index,
            size: ps.m.size,
            expect: Some(ps.m),
        });
    }
    if lc.slice == 0 || stale_whole {
        return None;
    }
    // SAFETY: r is live.
    let range = unsafe { header_in(r, b"range") };
    Some(SliceJob {
        base: ctx.key.clone(),
        index: slice::first_slice(range, lc.slice),
        size: lc.slice,
        expect: None,
    })
}
