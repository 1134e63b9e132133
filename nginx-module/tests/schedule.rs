//! Request scheduler: `rcdn_scheduler <table>` answers with a 302 to the
//! best node for the client (127.0.0.1 here) plus the request URI, falls
//! back to any node outside the zones, serves locally with no nodes.

mod common;
use common::*;
use std::path::Path;

fn node(table: &str) -> (Nginx, Nginx, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("sched.txt");
    std::fs::write(&f, table).expect("table");
    let origin = start_origin(&[], "");
    let cdn = start_cdn(
        2,
        origin.port,
        "",
        &format!("rcdn_scheduler {};", f.display()),
    );
    (origin, cdn, dir)
}

#[test]
fn client_goes_to_its_zone_node() {
    let (near, far) = (free_port(), free_port());
    let table = format!(
        "node near http://127.0.0.1:{near}/\nnode far http://127.0.0.1:{far}\n\
         zone local 127.0.0.0/8 ::1/128\nzone remote 10.0.0.0/8\n\
         levels local near far\nlevels remote far\n"
    );
    let (_o, cdn, _d) = node(&table);
    for _ in 0..10 {
        let r = get(cdn.port, "/small.txt?a=1");
        assert_eq!(r.status, 302);
        assert_eq!(
            r.header("location"),
            Some(format!("http://127.0.0.1:{near}/small.txt?a=1").as_str())
        );
    }
    cdn.check_log();
}

#[test]
fn outside_every_zone_any_node() {
    let (a, b) = (free_port(), free_port());
    let table = format!(
        "node a http://127.0.0.1:{a}\nnode b http://127.0.0.1:{b}\n\
         zone remote 10.0.0.0/8\nlevels remote a\n"
    );
    let (_o, cdn, _d) = node(&table);
    let want = [
        format!("http://127.0.0.1:{a}/small.txt"),
        format!("http://127.0.0.1:{b}/small.txt"),
    ];
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let r = get(cdn.port, "/small.txt");
        assert_eq!(r.status, 302);
        let l = r.header("location").expect("location").to_string();
        assert!(want.contains(&l), "{l}");
        seen.insert(l);
    }
    assert_eq!(seen.len(), 2, "random among equals: {seen:?}");
    cdn.check_log();
}

#[test]
fn no_nodes_serves_locally() {
    let (_o, cdn, _d) = node("# the manager alone\n");
    let r = get(cdn.port, "/small.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello, small world\n");
    cdn.check_log();
}

fn conf_with(table: &Path) -> String {
    format!(
        "load_module {};\nerror_log logs/error.log;\nevents {{}}\nhttp {{\nserver {{ listen 127.0.0.1:{};\nlocation / {{ rcdn_scheduler {}; proxy_pass http://127.0.0.1:9; }}\n}}\n}}\n",
        module_so().display(),
        free_port(),
        table.display()
    )
}

#[test]
fn bad_tables_fail_nginx_t() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text, want) in [
        (
            "cidr.txt",
            "node a http://127.0.0.1:1\nzone z 10.0.0.0/33\n",
            "10.0.0.0/33",
        ),
        ("url.txt", "node a ftp://x\n", "ftp://x"),
        ("word.txt", "nodes a http://127.0.0.1:1\n", "nodes"),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, text).expect("table");
        let (ok, err) = config_test(&conf_with(&f));
        assert!(!ok, "{name} accepted");
        assert!(err.contains("rcdn_scheduler"), "{name}: {err}");
        assert!(err.contains(&f.display().to_string()), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
    let (ok, err) = config_test(&conf_with(&dir.path().join("missing.txt")));
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn unhealthy_node_is_skipped() {
    // `down` listens nowhere; `up` is a real nginx (the origin).
    let origin = start_origin(&[], "");
    let down = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("sched.txt");
    std::fs::write(
        &f,
        format!(
            "node down http://127.0.0.1:{down}\nnode up http://127.0.0.1:{}\n\
             zone local 127.0.0.0/8\nlevels local down up\n",
            origin.port
        ),
    )
    .expect("table");
    let cdn = start_cdn(
        2,
        origin.port,
        "",
        &format!("rcdn_scheduler {} check=100ms;", f.display()),
    );
    let up = format!("http://127.0.0.1:{}/small.txt", origin.port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut in_a_row = 0;
    while in_a_row < 10 && std::time::Instant::now() < deadline {
        let r = get(cdn.port, "/small.txt");
        assert_eq!(r.status, 302);
        in_a_row = if r.header("location") == Some(up.as_str()) {
            in_a_row + 1
        } else {
            0
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(in_a_row, 10, "every worker skips the dead node");
    let (ok, err) = config_test(&conf_with(&f).replace(".txt;", ".txt check=soon;"));
    assert!(!ok);
    assert!(err.contains("check=soon"), "{err}");
    cdn.check_log();
}

#[test]
fn overloaded_node_is_skipped_by_its_status_load() {
    // `busy` reports load 0.95 at its status path; `spare` is an rcdn node
    // serving its own `rcdn_node_status`.
    let busy = start_origin(
        &[],
        r#"location = /rcdn-status { default_type application/json; return 200 '{"load": 0.95}'; }"#,
    );
    let origin = start_origin(&[], "");
    let sp = free_port();
    let spare = start_cdn(
        1,
        origin.port,
        &format!(
            "rcdn_node_name spare-1;\n  server {{ listen 127.0.0.1:{sp}; location = /rcdn-status {{ rcdn_node_status; }} }}"
        ),
        "",
    );
    let st = get(sp, "/rcdn-status");
    assert_eq!(st.status, 200);
    assert_eq!(st.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&st.body).expect("status JSON");
    assert_eq!(v["node"], "spare-1");
    let load = v["load"].as_f64().expect("load");
    assert!(load > 0.0 && load < 0.1, "{v}");
    assert!(v["worker_connections"].as_u64().expect("n") >= 512, "{v}");

    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("sched.txt");
    std::fs::write(
        &f,
        format!(
            "node busy http://127.0.0.1:{}\nnode spare http://127.0.0.1:{sp}\n\
             zone local 127.0.0.0/8\nlevels local busy spare\n",
            busy.port
        ),
    )
    .expect("table");
    let cdn = start_cdn(
        2,
        origin.port,
        "",
        &format!(
            "rcdn_scheduler {} check=100ms status=/rcdn-status;",
            f.display()
        ),
    );
    let want = format!("http://127.0.0.1:{sp}/small.txt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut in_a_row = 0;
    while in_a_row < 10 && std::time::Instant::now() < deadline {
        let r = get(cdn.port, "/small.txt");
        assert_eq!(r.status, 302);
        in_a_row = if r.header("location") == Some(want.as_str()) {
            in_a_row + 1
        } else {
            0
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(in_a_row, 10, "every worker skips the overloaded node");
    // Without status= the load is not read: busy (level 1) gets them.
    let plain = start_cdn(
        1,
        origin.port,
        "",
        &format!("rcdn_scheduler {} check=100ms;", f.display()),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = get(plain.port, "/small.txt");
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:{}/small.txt", busy.port).as_str())
    );
    for (args, want) in [
        ("check=1s status=rcdn-status", "status=rcdn-status"),
        ("status=/s", "needs check="),
    ] {
        let (ok, err) = config_test(&conf_with(&f).replace(".txt;", &format!(".txt {args};")));
        assert!(!ok, "accepted: {args}");
        assert!(
            err.contains("rcdn_scheduler") && err.contains(want),
            "{args}: {err}"
        );
    }
    cdn.check_log();
    spare.check_log();
}
