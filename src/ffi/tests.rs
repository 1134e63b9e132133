//! The C ABI called from Rust, so `cargo test` covers it without a C
//! toolchain (ffi-tests/ covers it from C, under valgrind and ASan).

use super::cache::*;
use super::fill::cdn_cache_fill;
use super::object::*;
use super::purge::*;
use super::status::cdn_status::*;
use super::writer::*;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

fn open(cfg: &str) -> *mut cdn_cache {
    let mut c = null_mut();
    // SAFETY: valid text and output pointer.
    assert_eq!(
        unsafe { cdn_cache_open(cfg.as_ptr(), cfg.len(), &mut c) },
        CDN_OK
    );
    c
}

fn body(o: *const cdn_object) -> Vec<u8> {
    let (mut d, mut n) = (null(), 0);
    // SAFETY: o is a live object; d/n are writable; the slice is read before free.
    unsafe {
        assert_eq!(cdn_object_body(o, &mut d, &mut n), CDN_OK);
        std::slice::from_raw_parts(d, n).to_vec()
    }
}

#[test]
fn insert_get_purge_close() {
    let c = open("mem=4m shards=2");
    let k = b"r.com/a";
    // SAFETY: every pointer below is valid for its length; handles are live.
    unsafe {
        assert_eq!(
            cdn_cache_insert(c, k.as_ptr(), k.len(), b"xyz".as_ptr(), 3, 60_000),
            CDN_OK
        );
        let mut o = null_mut();
        assert_eq!(cdn_cache_get(c, k.as_ptr(), k.len(), &mut o), CDN_OK);
        assert_eq!(body(o), b"xyz");
        let mut r = cdn_purge_report::default();
        assert_eq!(cdn_cache_purge_key(c, k.as_ptr(), k.len(), &mut r), CDN_OK);
        assert!(r.covered_known && r.covered == 1);
        // The object outlives the purge and the cache.
        assert_eq!(cdn_cache_close(c), CDN_OK);
        assert_eq!(body(o), b"xyz");
        assert_eq!(cdn_object_free(o), CDN_OK);
        assert_eq!(cdn_cache_close(c), CDN_INVALID_HANDLE);
    }
}

#[test]
fn null_and_oversized_arguments_are_errors() {
    let c = open("mem=4m shards=2 max_key=64");
    let mut o = null_mut();
    // SAFETY: NULLs and oversized lengths are refused before any read.
    unsafe {
        assert_eq!(
            cdn_cache_get(null(), b"k".as_ptr(), 1, &mut o),
            CDN_INVALID_ARGUMENT
        );
        assert_eq!(cdn_cache_get(c, null(), 1, &mut o), CDN_INVALID_ARGUMENT);
        assert_eq!(
            cdn_cache_get(c, b"k".as_ptr(), usize::MAX, &mut o),
            CDN_INVALID_KEY
        );
        assert_eq!(
            cdn_cache_get(c, b"k".as_ptr(), 1, null_mut()),
            CDN_INVALID_ARGUMENT
        );
        assert!(o.is_null());
        assert_eq!(cdn_cache_close(c), CDN_OK);
    }
}

#[test]
fn writer_is_released_once() {
    let c = open("mem=4m shards=2");
    let k = b"r.com/w";
    let mut w = null_mut();
    // SAFETY: valid pointers; the released writer is only passed back to be refused.
    unsafe {
        assert_eq!(cdn_writer_new(c, k.as_ptr(), k.len(), 1000, &mut w), CDN_OK);
        assert_eq!(cdn_writer_write(w, b"ab".as_ptr(), 2), CDN_OK);
        assert_eq!(cdn_writer_add_tag(w, 3), CDN_OK);
        assert_eq!(cdn_writer_commit(w), CDN_OK);
        assert_eq!(cdn_writer_abort(w), CDN_INVALID_HANDLE);
        assert_eq!(cdn_writer_write(w, b"c".as_ptr(), 1), CDN_INVALID_HANDLE);
        assert_eq!(cdn_cache_close(c), CDN_OK);
    }
}

unsafe extern "C" fn count_and_fill(
    ud: *mut c_void,
    key: *const u8,
    len: usize,
    w: *mut cdn_writer,
) -> i32 {
    // SAFETY: ud is the &mut u32 the test passed; key/len and w come from the fill.
    unsafe {
        *ud.cast::<u32>() += 1;
        cdn_writer_write(w, key, len) as i32
    }
}

#[test]
fn fill_calls_the_getter_on_a_miss_only() {
    let c = open("mem=4m shards=2");
    let k = b"r.com/f";
    let mut calls = 0u32;
    let ud = (&mut calls as *mut u32).cast::<c_void>();
    // SAFETY: valid pointers; the getter matches its contract.
    unsafe {
        for _ in 0..3 {
            let mut o = null_mut();
            let st = cdn_cache_fill(c, k.as_ptr(), k.len(), Some(count_and_fill), ud, &mut o);
            assert_eq!(st, CDN_OK);
            assert_eq!(body(o), k);
            assert_eq!(cdn_object_free(o), CDN_OK);
        }
        assert_eq!(cdn_cache_close(c), CDN_OK);
    }
    assert_eq!(calls, 1);
}
