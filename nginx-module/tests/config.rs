//! Bad directive arguments fail `nginx -t`, naming the directive and value.

mod common;
use common::*;

fn conf(http: &str, loc: &str) -> String {
    format!(
        "load_module {};\nerror_log logs/error.log;\nevents {{}}\nhttp {{\n{http}\nserver {{ listen 127.0.0.1:{};\nlocation / {{ rcdn_cache on; proxy_pass http://127.0.0.1:9; {loc} }}\nlocation /purge {{ cdn_purge; }}\n}}\n}}\n",
        module_so().display(),
        free_port()
    )
}

#[test]
fn good_config_passes() {
    let (ok, err) = config_test(&conf(
        "rcdn_store mem=64m shards=4 default_ttl=5m;",
        "rcdn_cache_key $scheme$host$request_uri; rcdn_cache_valid 200 301 10m; \
         rcdn_cache_valid any 1m; rcdn_cache_methods GET HEAD; rcdn_stale_if_error 1h; \
         rcdn_cache_lock_timeout 3s; rcdn_purge_secret x; rcdn_pass_buffer 256k;",
    ));
    assert!(ok, "{err}");
}

#[test]
fn bad_arguments_are_rejected_with_directive_and_value() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("rcdn_store mem=lots;", "", &["rcdn_store", "mem=lots"]),
        ("rcdn_store colour=blue;", "", &["rcdn_store", "colour"]),
        (
            "rcdn_store mem=1m; rcdn_store mem=2m;",
            "",
            &["rcdn_store", "duplicate"],
        ),
        ("rcdn_cache maybe;", "", &["rcdn_cache", "maybe"]),
        ("", "rcdn_cache_valid 999 1m;", &["rcdn_cache_valid", "999"]),
        (
            "",
            "rcdn_cache_valid 200 forever;",
            &["rcdn_cache_valid", "forever"],
        ),
        (
            "",
            "rcdn_cache_methods GET POST;",
            &["rcdn_cache_methods", "POST"],
        ),
        (
            "",
            "rcdn_stale_if_error soon;",
            &["rcdn_stale_if_error", "soon"],
        ),
        (
            "",
            "rcdn_cache_lock_timeout -1;",
            &["rcdn_cache_lock_timeout"],
        ),
        ("", "rcdn_cache_key \"\";", &["rcdn_cache_key"]),
        ("", "rcdn_cache_key $nosuchvar;", &["nosuchvar"]),
        ("", "rcdn_purge_secret \"\";", &["rcdn_purge_secret"]),
        ("", "rcdn_pass_buffer 1k;", &["rcdn_pass_buffer", "1k"]),
        ("", "rcdn_pass_buffer lots;", &["rcdn_pass_buffer", "lots"]),
        (
            "",
            "rcdn_pass_buffer 1m; rcdn_pass_buffer 2m;",
            &["rcdn_pass_buffer", "duplicate"],
        ),
        ("", "cdn_purge extra;", &["cdn_purge"]),
        ("", "rcdn_store mem=1m;", &["rcdn_store", "not allowed"]),
    ];
    for (http, loc, words) in cases {
        let (ok, err) = config_test(&conf(http, loc));
        assert!(!ok, "accepted: http[{http}] loc[{loc}]");
        for w in *words {
            assert!(
                err.contains(w),
                "message for [{http}{loc}] lacks {w:?}: {err}"
            );
        }
    }
}

#[test]
fn several_workers_need_a_shared_tier() {
    let with_workers = |n: u32, store: &str| format!("worker_processes {n};\n{}", conf(store, ""));
    let (ok, err) = config_test(&with_workers(2, "rcdn_store mem=64m;"));
    assert!(!ok, "a memory-only store with 2 workers was accepted");
    assert!(
        err.contains("rcdn_store") && err.contains("block tier"),
        "{err}"
    );
    let (ok, err) = config_test(&with_workers(1, "rcdn_store mem=64m;"));
    assert!(ok, "one worker may use a memory-only store: {err}");
    let dir = store_dir();
    let (ok, err) = config_test(&with_workers(
        2,
        &format!("rcdn_store {};", store_tokens(dir.path())),
    ));
    assert!(ok, "2 workers on a block tier: {err}");
}
