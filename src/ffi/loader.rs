//! `cdn_loader`: the groupcache load path (`fill::Loader`) for C. Keys this
//! node owns are produced by the C getter (as in `cdn_cache_fill`); keys
//! other peers own are asked of them through a C peer-fetch callback; both
//! write into a lent `cdn_writer`.

use super::args::{bytes, out, put, text, MAX_TEXT};
use super::cache::{cache_ref, cdn_cache};
use super::fill::cdn_getter;
use super::handle::{self, bad_handle, null, DEAD_MAGIC};
use super::object::{cdn_object, new_object};
use super::purge::cdn_purge_report;
use super::status::{cdn_status, cdn_status::*, guard, FfiError, FfiResult};
use super::writer::{cdn_writer, WriterHandle};
use crate::fill::peer::Peers;
use crate::fill::{group, Fetched, LoadError, Loader, LoaderOptions, Source};
use crate::{now_ms, Cache, Freshness, Meta, Purge};
use std::ffi::c_void;
use std::sync::Arc;

const LOADER_MAGIC: u64 = u64::from_le_bytes(*b"cdnLOADR");
/// Most peers a loader takes.
const MAX_PEERS: usize = 1024;

/// A node's load path: cache, hot cache, owner peers, getter. Opaque.
pub struct cdn_loader {
    _private: [u8; 0],
}

/// Asks the owner peer `peer_id` (at `addr`, as given in the peer list) for
/// `key`: write the body with `cdn_writer_write` and the metadata with
/// `cdn_writer_set_*`/`add_*` (or `cdn_writer_set_meta_header` with the
/// owner's `X-Rcdn-Meta` value), then return 0. Send the request with the
/// hop header (`X-Rcdn-Hop`) so the owner never forwards it, and give up
/// after `timeout_ms`. Any other return value is a failed fetch: the peer is
/// marked down for a while and the key is loaded locally instead.
///
/// The writer is lent as in `cdn_getter` (do not commit, abort or keep it);
/// `peer_id`, `addr` and `key` are valid only during the call.
pub type cdn_peer_fetch = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        peer_id: *const u8,
        peer_id_len: usize,
        addr: *const u8,
        addr_len: usize,
        key: *const u8,
        key_len: usize,
        timeout_ms: u64,
        writer: *mut cdn_writer,
    ) -> i32,
>;

/// Tunables of a loader; pass NULL to `cdn_loader_new` for the defaults
/// (shown). A 0 field also means its default.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct cdn_loader_options {
    /// How long a peer whose fetch failed is skipped (10000).
    pub down_ms: u64,
    /// Passed to the peer fetch as its time limit (2000).
    pub peer_timeout_ms: u64,
    /// Bytes of the hot cache for keys owned elsewhere (1/8 of the cache's `mem`).
    pub hot_mem: u64,
    /// The hot cache admits 1 in this many values fetched from peers (10).
    pub hot_one_in: u64,
}

/// Where a loaded object came from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cdn_load_source {
    /// The cache (a fresh hit).
    CDN_LOAD_CACHE = 0,
    /// The hot cache (a key owned elsewhere, mirrored here).
    CDN_LOAD_HOT = 1,
    /// Fetched from the key's owner peer.
    CDN_LOAD_PEER = 2,
    /// Produced by the getter (this node owns the key, the owner failed, or
    /// the request came from a peer).
    CDN_LOAD_LOCAL = 3,
}

type GetterFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut cdn_writer) -> i32;
type FetchFn = unsafe extern "C" fn(
    *mut c_void,
    *const u8,
    usize,
    *const u8,
    usize,
    *const u8,
    usize,
    u64,
    *mut cdn_writer,
) -> i32;

/// The C callbacks, shared by the getter and fetcher adaptors.
struct Callbacks {
    cache: Cache,
    getter: GetterFn,
    fetch: Option<FetchFn>,
    userdata: *mut c_void,
}

// SAFETY: `cdn_loader_new` documents that the callbacks and `userdata` are
// called from whichever threads call `cdn_loader_load`, concurrently; the C
// caller vouches that this is safe. Nothing here dereferences `userdata`.
unsafe impl Send for Callbacks {}
// SAFETY: as for Send: shared use is the documented contract.
unsafe impl Sync for Callbacks {}

impl Callbacks {
    /// Lends a writer for `key` to `call` and takes back what it wrote.
    fn with_writer(
        &self,
        key: &[u8],
        call: impl FnOnce(*mut cdn_writer) -> i32,
    ) -> Result<Fetched, String> {
        let ttl = self.cache.config().default_ttl_ms;
        let w = self
            .cache
            .writer(key, Meta::with_ttl(now_ms(), ttl))
            .map_err(|e| e.to_string())?;
        let lent = WriterHandle::lend(w, self.cache.max_object());
        let rc = call(lent);
        // SAFETY: `lent` came from `lend` and the callback has returned.
        let (w, failed) = unsafe { WriterHandle::reclaim(lent) }.map_err(|e| e.msg)?;
        if rc != 0 {
            return Err(format!("callback returned {rc}"));
        }
        if let Some(e) = failed {
            return Err(e.msg);
        }
        w.into_parts().map_err(|e| e.to_string())
    }
}

struct CGetter(Arc<Callbacks>);
struct CFetch(Arc<Callbacks>);

impl group::Getter for CGetter {
    fn get(&self, key: &[u8]) -> Result<Fetched, String> {
        let cb = &self.0;
        cb.with_writer(key, |w| {
            // SAFETY: the cdn_loader_new caller vouches for getter and
            // userdata; key and the lent writer stay valid during the call.
            unsafe { (cb.getter)(cb.userdata, key.as_ptr(), key.len(), w) }
        })
    }
}

impl group::PeerFetcher for CFetch {
    fn fetch(
        &self,
        peer: &str,
        addr: &str,
        key: &[u8],
        timeout_ms: u64,
    ) -> Result<Fetched, String> {
        let cb = &self.0;
        let f = cb.fetch.ok_or("no peer fetch callback")?;
        cb.with_writer(key, |w| {
            // SAFETY: the cdn_loader_new caller vouches for fetch and
            // userdata; every pointer stays valid during the call.
            unsafe {
                f(
                    cb.userdata,
                    peer.as_ptr(),
                    peer.len(),
                    addr.as_ptr(),
                    addr.len(),
                    key.as_ptr(),
                    key.len(),
                    timeout_ms,
                    w,
                )
            }
        })
    }
}

#[repr(C)]
struct LoaderHandle {
    magic: u64,
    loader: Loader,
}

/// # Safety
/// `p` is NULL or a pointer from `cdn_loader_new`.
unsafe fn loader_ref<'a>(p: *const cdn_loader) -> FfiResult<&'a Loader> {
    if p.is_null() {
        return Err(null("loader"));
    }
    if !handle::is_live(p as usize, LOADER_MAGIC) {
        return Err(bad_handle("loader"));
    }
    // SAFETY: registered, so a live LoaderHandle until cdn_loader_free.
    Ok(unsafe { &(*p.cast::<LoaderHandle>()).loader })
}

/// `id=addr` tokens separated by white space.
fn parse_peers(list: &str) -> FfiResult<Vec<(String, String)>> {
    let bad = |m: String| FfiError::new(CDN_INVALID_CONFIG, m);
    let peers = list
        .split_whitespace()
        .map(|t| match t.split_once('=') {
            Some((id, addr)) if !id.is_empty() && !addr.is_empty() => {
                Ok((id.to_string(), addr.to_string()))
            }
            _ => Err(bad(format!("peer {t:?} is not id=address"))),
        })
        .collect::<FfiResult<Vec<_>>>()?;
    if peers.len() > MAX_PEERS {
        return Err(bad(format!("over {MAX_PEERS} peers")));
    }
    Ok(peers)
}

/// Text that may be NULL when its length is 0 (then "").
///
/// # Safety
/// As `text`.
unsafe fn opt_text<'a>(p: *const u8, len: usize, what: &str) -> FfiResult<&'a str> {
    // SAFETY: forwarded caller contract.
    Ok(unsafe { super::policy_out::opt_text(p, len, what)? }.unwrap_or(""))
}

fn options(o: Option<&cdn_loader_options>) -> LoaderOptions {
    let d = LoaderOptions::default();
    let pick = |v: u64, dflt: u64| if v == 0 { dflt } else { v };
    let o = o.copied().unwrap_or_default();
    LoaderOptions {
        down_ms: pick(o.down_ms, d.down_ms),
        peer_timeout_ms: pick(o.peer_timeout_ms, d.peer_timeout_ms),
        hot_mem: o.hot_mem,
        hot_one_in: pick(o.hot_one_in, d.hot_one_in),
    }
}

/// Makes a loader over `cache` (which it shares: closing the cache handle
/// later is fine). `peers` lists every node, this one included, as `id=addr`
/// tokens separated by spaces ("a=127.0.0.1:8081 b=127.0.0.1:8082"); `me`
/// is this node's id. With an empty peer list (`peers` may then be NULL,
/// `me` too) every key is loaded locally, and `fetch` may be NULL;
/// otherwise `fetch` is required. `getter` is required; it is called as by
/// `cdn_cache_fill`. `options` may be NULL (defaults).
///
/// Errors: `CDN_INVALID_ARGUMENT` (NULL, non-UTF-8 text), `CDN_INVALID_CONFIG`
/// (a malformed or duplicate peer, `me` not in the list, a bad hot cache size).
/// Ownership: the caller owns the loader (`cdn_loader_free`); `userdata` is
/// passed to every callback untouched and never freed.
/// Thread safety: any thread. The loader may be used from any number of
/// threads at once; the callbacks then run concurrently on the threads that
/// call `cdn_loader_load`, so they and `userdata` must allow that.
///
/// # Safety
/// `cache` is a live cache handle; text pointers point to their lengths of
/// readable bytes; callbacks are valid functions for the loader's lifetime;
/// `options` is NULL or readable; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_loader_new(
    cache: *const cdn_cache,
    peers: *const u8,
    peers_len: usize,
    me: *const u8,
    me_len: usize,
    getter: cdn_getter,
    fetch: cdn_peer_fetch,
    userdata: *mut c_void,
    options_in: *const cdn_loader_options,
    out_loader: *mut *mut cdn_loader,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { cache_ref(cache)? };
        // SAFETY: caller contract.
        let list = parse_peers(unsafe { opt_text(peers, peers_len, "peers")? })?;
        // SAFETY: caller contract.
        let me = unsafe { opt_text(me, me_len, "me")? };
        let getter = getter.ok_or_else(|| FfiError::arg("getter is NULL"))?;
        let out_loader = out(out_loader, "out")?;
        if !list.is_empty() && fetch.is_none() {
            return Err(FfiError::arg("fetch is NULL but peers are given"));
        }
        let peers = match list.is_empty() {
            true => None,
            false => Some(
                Peers::new(me, &list)
                    .map_err(|e| FfiError::new(CDN_INVALID_CONFIG, e.to_string()))?,
            ),
        };
        // SAFETY: NULL or readable by contract.
        let opts = options(unsafe { options_in.as_ref() });
        let cb = Arc::new(Callbacks {
            cache: h.cache.clone(),
            getter,
            fetch,
            userdata,
        });
        let loader = Loader::new(
            h.cache.clone(),
            peers,
            Box::new(CGetter(cb.clone())),
            Some(Box::new(CFetch(cb))),
            opts,
        )?;
        let p = Box::into_raw(Box::new(LoaderHandle {
            magic: LOADER_MAGIC,
            loader,
        }));
        handle::register(p as usize, LOADER_MAGIC);
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_loader, p.cast()) };
        Ok(())
    })
}

/// Frees a loader. NULL is a no-op; a second free returns
/// `CDN_INVALID_HANDLE` without touching it. Objects it returned stay valid.
/// Thread safety: no other call may be using the loader (now or later).
///
/// # Safety
/// `loader` is NULL or a pointer from `cdn_loader_new`.
#[no_mangle]
pub unsafe extern "C" fn cdn_loader_free(loader: *mut cdn_loader) -> cdn_status {
    guard(|| {
        if loader.is_null() {
            return Ok(());
        }
        if !handle::unregister(loader as usize, LOADER_MAGIC) {
            return Err(bad_handle("loader"));
        }
        // SAFETY: was registered: a live Box<LoaderHandle>, now ours alone.
        let mut b = unsafe { Box::from_raw(loader.cast::<LoaderHandle>()) };
        b.magic = DEAD_MAGIC;
        drop(b);
        Ok(())
    })
}

fn load_error(e: LoadError) -> FfiError {
    match e {
        LoadError::Getter(m) => FfiError::new(CDN_GETTER_FAILED, m),
        LoadError::Cache(e) => e.into(),
        LoadError::Reentrant => FfiError::new(CDN_WOULD_DEADLOCK, LoadError::Reentrant.to_string()),
        e @ LoadError::PurgedDuringFill(_) => FfiError::new(CDN_PURGED_DURING_FILL, e.to_string()),
    }
}

/// Loads `key`: a fresh copy in the cache or hot cache; else, when another
/// peer owns the key and is not marked down, from that peer (`fetch`); else
/// from the getter, storing the result in the cache. `from_peer`: the
/// request came from another node (it carried `X-Rcdn-Hop`), so it is loaded
/// here and never forwarded. Concurrent loads of one key share one callback
/// call.
///
/// On success writes a new object handle to `*out` (`cdn_object_free`) and,
/// if `source` is not NULL, where it came from.
/// Errors: `CDN_INVALID_KEY`, `CDN_GETTER_FAILED` (the getter returned
/// non-zero or wrote too much), `CDN_WOULD_DEADLOCK` (a callback loading its
/// own key), `CDN_PURGED_DURING_FILL`.
/// Thread safety: any thread, concurrently.
///
/// # Safety
/// `loader` is a live loader; `key` points to `key_len` readable bytes;
/// `out` is writable; `source` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_loader_load(
    loader: *const cdn_loader,
    key: *const u8,
    key_len: usize,
    from_peer: bool,
    out_obj: *mut *mut cdn_object,
    source: *mut cdn_load_source,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let l = unsafe { loader_ref(loader)? };
        let max = l.cache().config().max_key;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, max, "key", CDN_INVALID_KEY)? };
        let out_obj = out(out_obj, "out")?;
        let got = l.load(key, from_peer).map_err(load_error)?;
        let fresh = got.object.meta().freshness(now_ms()) == Freshness::Fresh;
        let src = match got.source {
            Source::Cache => cdn_load_source::CDN_LOAD_CACHE,
            Source::Hot => cdn_load_source::CDN_LOAD_HOT,
            Source::Peer(_) => cdn_load_source::CDN_LOAD_PEER,
            Source::Local => cdn_load_source::CDN_LOAD_LOCAL,
        };
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_obj, new_object(got.object, fresh)) };
        if !source.is_null() {
            // SAFETY: non-NULL, writable by contract.
            unsafe { put(source, src) };
        }
        Ok(())
    })
}

/// Purge kinds for `cdn_loader_purge`.
pub const CDN_PURGE_KEY: u32 = 0;
pub const CDN_PURGE_PREFIX: u32 = 1;
pub const CDN_PURGE_GROUP: u32 = 2;
pub const CDN_PURGE_TAG: u32 = 3;
pub const CDN_PURGE_SURROGATE_KEY: u32 = 4;
pub const CDN_PURGE_MASK: u32 = 5;
pub const CDN_PURGE_REGEX: u32 = 6;
pub const CDN_PURGE_ALL: u32 = 7;

/// The purge of a kind: `value` for the byte and text kinds, `number` for
/// tag and mask.
///
/// # Safety
/// As `bytes` for `value`/`len` (unused kinds do not read them).
unsafe fn purge_of(kind: u32, value: *const u8, len: usize, number: u64) -> FfiResult<Purge> {
    // SAFETY: caller contract.
    let raw =
        || unsafe { bytes(value, len, MAX_TEXT, "value", CDN_INVALID_PURGE) }.map(<[u8]>::to_vec);
    // SAFETY: caller contract.
    let txt = || unsafe { text(value, len, "value") }.map(str::to_string);
    Ok(match kind {
        CDN_PURGE_KEY => Purge::Key(raw()?),
        CDN_PURGE_PREFIX => Purge::Prefix(raw()?),
        CDN_PURGE_GROUP => Purge::Group(raw()?),
        CDN_PURGE_TAG => Purge::Tag(u16::try_from(number).map_err(|_| {
            FfiError::new(CDN_INVALID_PURGE, format!("tag {number} is over 65535"))
        })?),
        CDN_PURGE_SURROGATE_KEY => Purge::SurrogateKey(txt()?),
        CDN_PURGE_MASK => Purge::Mask(number),
        CDN_PURGE_REGEX => Purge::Regex(txt()?),
        CDN_PURGE_ALL => Purge::All,
        k => {
            return Err(FfiError::new(
                CDN_INVALID_PURGE,
                format!("unknown purge kind {k}"),
            ))
        }
    })
}

/// Purges the loader's cache and its hot cache: `kind` is a `CDN_PURGE_*`
/// value; `value`/`value_len` is the key, prefix, group, surrogate key or
/// regex (ignored, may be NULL, for tag, mask and all); `number` is the tag
/// or mask (ignored otherwise). Writes the cache's report to `*report`.
/// Errors: `CDN_INVALID_PURGE` (unknown kind, tag over 65535, empty or too
/// long pattern), `CDN_INVALID_REGEX`.
/// Thread safety: any thread, concurrently with loads.
///
/// # Safety
/// `loader` is a live loader; `value` points to `value_len` readable bytes
/// when the kind uses it; `report` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_loader_purge(
    loader: *const cdn_loader,
    kind: u32,
    value: *const u8,
    value_len: usize,
    number: u64,
    report: *mut cdn_purge_report,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let l = unsafe { loader_ref(loader)? };
        let report = out(report, "report")?;
        // SAFETY: caller contract.
        let p = unsafe { purge_of(kind, value, value_len, number)? };
        let r = l.purge(&p)?;
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(report, r.into()) };
        Ok(())
    })
}

/// Copies the id of the peer owning `key` into `buf` (not NUL-terminated)
/// and its length to `*out_len`. `CDN_NOT_FOUND` without peers;
/// `CDN_BUFFER_TOO_SMALL` writes the needed length (`buf` may be NULL when
/// `buf_len` is 0).
/// Thread safety: any thread.
///
/// # Safety
/// `loader` is a live loader; `key` readable for `key_len`; `buf` writable
/// for `buf_len`; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_loader_owner(
    loader: *const cdn_loader,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let l = unsafe { loader_ref(loader)? };
        let max = l.cache().config().max_key;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, max, "key", CDN_INVALID_KEY)? };
        let id = l
            .owner(key)
            .ok_or_else(|| FfiError::new(CDN_NOT_FOUND, "the loader has no peers"))?;
        // SAFETY: caller contract.
        unsafe { super::policy_out::copy_out(id.as_bytes(), buf, buf_len, out_len) }
    })
}

/// Is peer `id` marked down now (after a failed fetch)? Writes the answer
/// to `*down` (false for an unknown id or a loader without peers).
///
/// # Safety
/// `loader` is a live loader; `id` readable for `id_len`; `down` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_loader_peer_down(
    loader: *const cdn_loader,
    id: *const u8,
    id_len: usize,
    down: *mut bool,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let l = unsafe { loader_ref(loader)? };
        // SAFETY: caller contract.
        let id = unsafe { text(id, id_len, "id")? };
        let down = out(down, "down")?;
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(down, l.is_down(id, now_ms())) };
        Ok(())
    })
}

/// Writes the loader's counters to `*out`.
///
/// # Safety
/// `loader` is a live loader; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_loader_get_counters(
    loader: *const cdn_loader,
    out_c: *mut crate::fill::LoaderCounters,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let l = unsafe { loader_ref(loader)? };
        let out_c = out(out_c, "out")?;
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_c, l.counters()) };
        Ok(())
    })
}
