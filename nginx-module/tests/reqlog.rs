//! `$rcdn_log_json` in a `log_format ... escape=none`: every line parses as
//! JSON and carries the request's facts and the `X-Minicdn-Data` header.

mod common;
use common::*;
use serde_json::Value;

const LOG: &str = "log_format rcdn_json escape=none '$rcdn_log_json';
  access_log logs/json.log rcdn_json;";

fn lines(n: &Nginx) -> Vec<Value> {
    n.log("logs/json.log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn json_lines_carry_the_data_header() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(2, origin.port, &format!("{LOG} rcdn_node_name edge-1;"), "");
    let p = cdn.port;
    let r = request(
        p,
        "GET",
        "/small.txt?x=1",
        &[
            ("X-Minicdn-Data", r#"{"user": 42, "tags": ["a"]}"#),
            ("X-Minicdn-Type", "json"),
            ("User-Agent", "test \"agent\" \\ 1"),
        ],
    );
    assert_eq!(r.status, 200);
    let r = request(
        p,
        "GET",
        "/small.txt?x=1",
        &[("X-Minicdn-Data", "plain \"text\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(p, "/missing/y").status, 404);

    let l = lines(&cdn);
    assert_eq!(l.len(), 3, "{l:?}");
    let first = &l[0];
    assert_eq!(first["key"], "localhost/small.txt?x=1");
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["user_agent"], "test \"agent\" \\ 1");
    assert_eq!(first["cache_status"], "MISS");
    assert_eq!(first["status"], 200);
    assert!(first["bytes_sent"].as_u64().expect("bytes") > 19, "{first}");
    assert!(first["duration_ms"].is_u64());
    assert_eq!(first["node"], "edge-1");
    assert_eq!(first["data"]["user"], 42);
    assert_eq!(first["data"]["tags"][0], "a");
    let second = &l[1];
    assert_eq!(second["cache_status"], "HIT");
    assert_eq!(second["data"], "plain \"text\"");
    assert_eq!(l[2]["status"], 404);
    assert!(l[2].get("data").is_none());
    cdn.check_log();
}

#[test]
fn node_name_defaults_to_the_host_name() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(1, origin.port, LOG, "");
    assert_eq!(get(cdn.port, "/small.txt").status, 200);
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0);
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let host = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let l = lines(&cdn);
    assert_eq!(l[0]["node"], host.as_str());
    let (ok, err) = config_test(&format!(
        "load_module {};\nevents {{}}\nhttp {{ rcdn_node_name \"\"; }}\n",
        module_so().display()
    ));
    assert!(!ok);
    assert!(err.contains("rcdn_node_name"), "{err}");
}
