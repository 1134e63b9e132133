//! Edge policies for C, part 1: hotlink protection and the anti-attack
//! guard (`policy::hotlink`, `policy::guard`). Handles are checked against
//! the live-handle registry, so a freed or foreign pointer is refused.

use super::args::{bytes, out, put, text, MAX_TEXT};
use super::handle::{self, bad_handle, check_magic, null, DEAD_MAGIC};
use super::policy_out::{copy_out, opt_text};
use super::status::{cdn_status, cdn_status::*, guard, FfiError, FfiResult};
use crate::policy::guard::{Guard, GuardConfig, Verdict};
use crate::policy::hotlink::{sign, Decision, Hotlink, Request, Unknown};
use crate::policy::PolicyError;
use parking_lot::Mutex;

const HOTLINK_MAGIC: u64 = u64::from_le_bytes(*b"cdnHOTLK");
const GUARD_MAGIC: u64 = u64::from_le_bytes(*b"cdnGUARD");

/// A policy error is a configuration error for the caller.
pub(crate) fn policy_err(e: PolicyError) -> FfiError {
    FfiError::new(CDN_INVALID_CONFIG, e.to_string())
}

/// A policy handle: a magic word naming its kind, written over on free.
pub(crate) trait Tagged {
    const MAGIC: u64;
    const WHAT: &'static str;
    fn magic(&self) -> u64;
    fn set_magic(&mut self, m: u64);
}

/// Boxes a handle and records it as live.
pub(crate) fn new_handle<T: Tagged>(v: T) -> *mut T {
    let p = Box::into_raw(Box::new(v));
    handle::register(p as usize, T::MAGIC);
    p
}

/// Borrows a live handle: its address is registered for its kind, and it
/// carries its kind's magic.
///
/// # Safety
/// `p` is NULL or a pointer returned for a handle (of any kind).
pub(crate) unsafe fn handle_ref<'a, T: Tagged>(p: *const T) -> FfiResult<&'a T> {
    if p.is_null() {
        return Err(null(T::WHAT));
    }
    if !handle::is_live(p as usize, T::MAGIC) {
        return Err(bad_handle(T::WHAT));
    }
    // SAFETY: registered for this kind, so a live Box<T> until freed.
    let h = unsafe { &*p };
    check_magic(h.magic(), T::MAGIC, T::WHAT)?;
    Ok(h)
}

/// Frees a live handle; NULL is a no-op, a second free an error.
///
/// # Safety
/// `p` is NULL or a pointer returned for a handle, not in use.
pub(crate) unsafe fn free_handle<T: Tagged>(p: *mut T) -> FfiResult<()> {
    if p.is_null() {
        return Ok(());
    }
    if !handle::unregister(p as usize, T::MAGIC) {
        return Err(bad_handle(T::WHAT));
    }
    // SAFETY: was registered: a live Box<T>, now ours alone.
    let mut b = unsafe { Box::from_raw(p) };
    b.set_magic(DEAD_MAGIC);
    drop(b);
    Ok(())
}

/// Implements `Tagged` for a handle struct with a `magic` field.
macro_rules! tagged {
    ($t:ty, $magic:expr, $what:expr) => {
        impl $crate::ffi::policy::Tagged for $t {
            const MAGIC: u64 = $magic;
            const WHAT: &'static str = $what;
            fn magic(&self) -> u64 {
                self.magic
            }
            fn set_magic(&mut self, m: u64) {
                self.magic = m;
            }
        }
    };
}
pub(crate) use tagged;

/// Hotlink policies of every known domain. Opaque.
pub struct cdn_hotlink {
    magic: u64,
    policy: Hotlink,
}

/// Loads hotlink policies from JSON text (an array of domain policies; see
/// docs/c-abi.md). `refuse_unknown`: requests for a domain without a policy
/// are refused (else allowed).
/// Errors: `CDN_INVALID_CONFIG` naming the bad domain or JSON position.
/// Ownership: the caller frees the handle with `cdn_hotlink_free`.
/// Thread safety: the handle is immutable; check from any threads at once.
///
/// # Safety
/// `json` readable for `json_len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_hotlink_new(
    json: *const u8,
    json_len: usize,
    refuse_unknown: bool,
    out_h: *mut *mut cdn_hotlink,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let json = unsafe { text(json, json_len, "json")? };
        let out_h = out(out_h, "out")?;
        let unknown = if refuse_unknown {
            Unknown::Refuse
        } else {
            Unknown::Allow
        };
        let policy = Hotlink::from_json(json, unknown).map_err(policy_err)?;
        let p = new_handle(cdn_hotlink {
            magic: HOTLINK_MAGIC,
            policy,
        });
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_h, p) };
        Ok(())
    })
}

/// Frees hotlink policies. NULL is a no-op; a second free returns
/// `CDN_INVALID_HANDLE`. No check may be running on it.
///
/// # Safety
/// `h` is NULL or from `cdn_hotlink_new`.
#[no_mangle]
pub unsafe extern "C" fn cdn_hotlink_free(h: *mut cdn_hotlink) -> cdn_status {
    // SAFETY: caller contract.
    guard(|| unsafe { free_handle(h) })
}

/// The request facts a hotlink check reads: (pointer, length) pairs.
/// `referer`, `token` and `expires` may be NULL with length 0 (absent).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cdn_hotlink_request {
    pub host: *const u8,
    pub host_len: usize,
    pub path: *const u8,
    pub path_len: usize,
    pub referer: *const u8,
    pub referer_len: usize,
    /// The `token` query argument of a signed URL.
    pub token: *const u8,
    pub token_len: usize,
    /// The `expires` query argument (unix seconds) of a signed URL.
    pub expires: *const u8,
    pub expires_len: usize,
}

/// A hotlink decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cdn_hotlink_decision {
    /// Serve it.
    CDN_HOTLINK_ALLOW = 0,
    /// Answer 403 (the detail buffer holds the reason).
    CDN_HOTLINK_FORBIDDEN = 1,
    /// Answer 410: a correctly signed URL past its expiry.
    CDN_HOTLINK_EXPIRED = 2,
    /// Answer 302 to the URL in the detail buffer.
    CDN_HOTLINK_REDIRECT = 3,
}

/// Judges one request at `now_secs` (unix seconds). Writes the decision to
/// `*decision` and a NUL-terminated detail to `detail` (the redirect URL,
/// the reason of a refusal, or "") with its length to `*detail_len`.
/// Errors: `CDN_INVALID_ARGUMENT` (NULL, non-UTF-8 field);
/// `CDN_BUFFER_TOO_SMALL` writes the needed detail size to `*detail_len`
/// and nothing else (call again with a larger buffer).
/// Thread safety: any thread, concurrently.
///
/// # Safety
/// `h` is a live handle; `req` readable, its pointers readable for their
/// lengths; `decision` writable; `detail` writable for `detail_cap` bytes
/// (NULL when 0); `detail_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_hotlink_check(
    h: *const cdn_hotlink,
    req: *const cdn_hotlink_request,
    now_secs: u64,
    decision: *mut cdn_hotlink_decision,
    detail: *mut u8,
    detail_cap: usize,
    detail_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let h = unsafe { handle_ref(h)? };
        // SAFETY: NULL or readable by contract.
        let r = unsafe { req.as_ref() }.ok_or_else(|| null("req"))?;
        let decision = out(decision, "decision")?;
        // SAFETY: each pair is readable by contract.
        let req = unsafe {
            Request {
                host: text(r.host, r.host_len, "host")?,
                path: text(r.path, r.path_len, "path")?,
                referer: opt_text(r.referer, r.referer_len, "referer")?,
                token: opt_text(r.token, r.token_len, "token")?,
                expires: opt_text(r.expires, r.expires_len, "expires")?,
            }
        };
        let (code, why) = match h.policy.check(&req, now_secs) {
            Decision::Allow => (cdn_hotlink_decision::CDN_HOTLINK_ALLOW, String::new()),
            Decision::Forbidden(w) => (cdn_hotlink_decision::CDN_HOTLINK_FORBIDDEN, w.into()),
            Decision::Expired => (cdn_hotlink_decision::CDN_HOTLINK_EXPIRED, "expired".into()),
            Decision::Redirect(u) => (cdn_hotlink_decision::CDN_HOTLINK_REDIRECT, u),
        };
        // SAFETY: caller contract on detail/detail_len.
        unsafe { copy_out(why.as_bytes(), detail, detail_cap, detail_len)? };
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(decision, code) };
        Ok(())
    })
}

/// The token of a signed URL for `path` expiring at `expires` (unix
/// seconds), as `cdn_hotlink_check` verifies it; NUL-terminated into `buf`
/// (44 bytes suffice), length to `*out_len`; `CDN_BUFFER_TOO_SMALL` writes
/// the needed size. Thread safety: any thread.
///
/// # Safety
/// `secret`/`path` readable for their lengths; `buf` writable for `buf_len`
/// (NULL when 0); `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_hotlink_sign(
    secret: *const u8,
    secret_len: usize,
    path: *const u8,
    path_len: usize,
    expires: u64,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let secret =
            unsafe { bytes(secret, secret_len, MAX_TEXT, "secret", CDN_INVALID_ARGUMENT)? };
        // SAFETY: caller contract.
        let path = unsafe { text(path, path_len, "path")? };
        let token = sign(secret, path, expires);
        // SAFETY: caller contract.
        unsafe { copy_out(token.as_bytes(), buf, buf_len, out_len) }
    })
}

/// The anti-attack guard's state. Opaque.
pub struct cdn_guard {
    magic: u64,
    guard: Mutex<Guard>,
}

/// Guard thresholds (requests per second over the current window).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct cdn_guard_config {
    /// Above this rate an item's requests get a 302 challenge.
    pub challenge_rps: f64,
    /// Above this rate (at least `challenge_rps`), or on a failed
    /// challenge, they are blocked.
    pub block_rps: f64,
    /// Window after which flags are re-examined (>= 1000).
    pub window_ms: u64,
    /// Counters of the heavy-hitter sketch (16..=1048576).
    pub capacity: usize,
    /// How long a challenge token stays valid.
    pub token_ttl_ms: u64,
}

/// Buffer size that always holds a challenge token and its NUL.
pub const CDN_GUARD_TOKEN_MAX: usize = 64;

/// A guard decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cdn_guard_verdict {
    CDN_GUARD_PASS = 0,
    /// Answer 302 to the same URL with `rcdn_challenge=<token>`.
    CDN_GUARD_CHALLENGE = 1,
    /// Answer 403 (or 429).
    CDN_GUARD_BLOCK = 2,
}

/// Decision counts of a guard.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct cdn_guard_counters {
    pub passed: u64,
    pub challenged: u64,
    pub challenge_passed: u64,
    pub challenge_failed: u64,
    pub blocked: u64,
    pub lifted: u64,
}

/// Makes a guard with thresholds `cfg` (NULL: 100 and 1000 req/s, 5 min
/// windows, 4096 counters, 60 s tokens) and a challenge-signing `secret`
/// (not empty), starting its first window at `now_ms`.
/// Errors: `CDN_INVALID_CONFIG` naming the bad threshold.
/// Ownership: free with `cdn_guard_free`. Thread safety: the handle may be
/// used from any threads at once (checks are serialised inside).
///
/// # Safety
/// `cfg` NULL or readable; `secret` readable for `secret_len`; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_guard_new(
    cfg: *const cdn_guard_config,
    secret: *const u8,
    secret_len: usize,
    now_ms: u64,
    out_g: *mut *mut cdn_guard,
) -> cdn_status {
    guard(|| {
        // SAFETY: NULL or readable by contract.
        let c = unsafe { cfg.as_ref() }.map_or_else(GuardConfig::default, |c| GuardConfig {
            challenge_rps: c.challenge_rps,
            block_rps: c.block_rps,
            window_ms: c.window_ms,
            capacity: c.capacity,
            token_ttl_ms: c.token_ttl_ms,
        });
        // SAFETY: caller contract.
        let secret =
            unsafe { bytes(secret, secret_len, MAX_TEXT, "secret", CDN_INVALID_ARGUMENT)? };
        let out_g = out(out_g, "out")?;
        let g = Guard::new(c, secret, now_ms).map_err(policy_err)?;
        let p = new_handle(cdn_guard {
            magic: GUARD_MAGIC,
            guard: Mutex::new(g),
        });
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(out_g, p) };
        Ok(())
    })
}

/// Frees a guard. NULL is a no-op; a second free returns `CDN_INVALID_HANDLE`.
///
/// # Safety
/// `g` is NULL or from `cdn_guard_new`, not in use.
#[no_mangle]
pub unsafe extern "C" fn cdn_guard_free(g: *mut cdn_guard) -> cdn_status {
    // SAFETY: caller contract.
    guard(|| unsafe { free_handle(g) })
}

/// Judges one request for `item` (a URL, or a client address) at `now_ms`.
/// `token` is the `rcdn_challenge` value the client sent back (NULL with
/// length 0 if none). Writes the verdict to `*verdict`; for a challenge,
/// the token to send (NUL-terminated) to `token_out` and its length to
/// `*token_len` (0 otherwise). `token_cap` must be at least
/// `CDN_GUARD_TOKEN_MAX`, checked before the request is counted (else
/// `CDN_BUFFER_TOO_SMALL` with the needed size in `*token_len`).
/// Thread safety: any thread, concurrently.
///
/// # Safety
/// `g` live; `item`/`token` readable for their lengths; `verdict` writable;
/// `token_out` writable for `token_cap` bytes; `token_len` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_guard_check(
    g: *const cdn_guard,
    item: *const u8,
    item_len: usize,
    token: *const u8,
    token_len_in: usize,
    now_ms: u64,
    verdict: *mut cdn_guard_verdict,
    token_out: *mut u8,
    token_cap: usize,
    token_len: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let g = unsafe { handle_ref(g)? };
        // SAFETY: caller contract.
        let item = unsafe { bytes(item, item_len, MAX_TEXT, "item", CDN_INVALID_ARGUMENT)? };
        // SAFETY: caller contract.
        let token = unsafe { opt_text(token, token_len_in, "token")? };
        let verdict = out(verdict, "verdict")?;
        let token_len = out(token_len, "token_len")?;
        if token_out.is_null() || token_cap < CDN_GUARD_TOKEN_MAX {
            // SAFETY: checked non-NULL, writable by contract.
            unsafe { put(token_len, CDN_GUARD_TOKEN_MAX) };
            return Err(FfiError::new(
                CDN_BUFFER_TOO_SMALL,
                format!("token buffer must hold {CDN_GUARD_TOKEN_MAX} bytes"),
            ));
        }
        let id = xxhash_rust::xxh3::xxh3_64(item);
        let v = g.guard.lock().check(id, token, now_ms);
        let (code, tok) = match v {
            Verdict::Pass => (cdn_guard_verdict::CDN_GUARD_PASS, String::new()),
            Verdict::Challenge(t) => (cdn_guard_verdict::CDN_GUARD_CHALLENGE, t),
            Verdict::Block => (cdn_guard_verdict::CDN_GUARD_BLOCK, String::new()),
        };
        // SAFETY: token_out holds token_cap >= 64 writable bytes (a token is
        // at most 45); token_len checked.
        unsafe { copy_out(tok.as_bytes(), token_out, token_cap, token_len)? };
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { put(verdict, code) };
        Ok(())
    })
}

/// Writes the guard's decision counts and the number of items flagged now.
///
/// # Safety
/// `g` live; `out` and `flagged` writable.
#[no_mangle]
pub unsafe extern "C" fn cdn_guard_get_counters(
    g: *const cdn_guard,
    out_c: *mut cdn_guard_counters,
    flagged: *mut usize,
) -> cdn_status {
    guard(|| {
        // SAFETY: caller contract.
        let g = unsafe { handle_ref(g)? };
        let out_c = out(out_c, "out")?;
        let flagged = out(flagged, "flagged")?;
        let s = g.guard.lock();
        let c = s.counters;
        let v = cdn_guard_counters {
            passed: c.passed,
            challenged: c.challenged,
            challenge_passed: c.challenge_passed,
            challenge_failed: c.challenge_failed,
            blocked: c.blocked,
            lifted: c.lifted,
        };
        // SAFETY: both checked non-NULL, writable by contract.
        unsafe {
            put(out_c, v);
            put(flagged, s.flagged());
        }
        Ok(())
    })
}

tagged!(cdn_hotlink, HOTLINK_MAGIC, "hotlink");
tagged!(cdn_guard, GUARD_MAGIC, "guard");
