//! The test harness itself (tests/common): `Nginx::launch` must not take
//! another program's listener on the port for the nginx it started.

mod common;
use common::*;

/// Between `free_port` and nginx's bind another program can take the port.
/// nginx then cannot bind and exits; the old check (a connect succeeds and
/// the error log has no bind error yet) took the stranger for nginx, and
/// the test's first request was reset (`read response: ConnectionReset`,
/// seen once on CI in tests/attack.rs).
#[test]
fn a_port_taken_before_nginx_binds_is_not_taken_for_nginx() {
    let port = free_port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let conf = format!(
        "daemon off; master_process on; worker_processes 1;\n\
         error_log logs/error.log info; pid logs/nginx.pid;\n\
         events {{}}\n\
         http {{ server {{ listen 127.0.0.1:{port}; location / {{ return 200 ok; }} }} }}\n"
    );
    let up = Nginx::try_launch(tempfile::tempdir().expect("tempdir"), &conf, port);
    drop(squatter);
    let Err(e) = up else {
        panic!("launch reported nginx up on {port}, which another listener held");
    };
    assert!(e.contains(&format!("bind() to 127.0.0.1:{port}")), "{e}");
}

/// The same nginx starts normally on a port of its own, and answers.
#[test]
fn launch_waits_for_its_own_nginx() {
    let port = free_port();
    let conf = format!(
        "daemon off; master_process on; worker_processes 1;\n\
         error_log logs/error.log info; pid logs/nginx.pid;\n\
         events {{}}\n\
         http {{ server {{ listen 127.0.0.1:{port}; location / {{ return 200 ok; }} }} }}\n"
    );
    let n = Nginx::start(&conf, port);
    let r = get(n.port, "/");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    n.check_log();
}
