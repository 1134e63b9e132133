//! Hotlink protection: `rcdn_hotlink <policy.json>` and
//! `rcdn_hotlink_unknown`, on a 2-worker node in front of a real origin.

mod common;
use cdncore::policy::hotlink::sign;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const POLICY: &str = r#"[
  {"domain": "localhost", "allow": ["good.example"], "allow_empty": false},
  {"domain": "signed.test", "secret": "k3y"},
  {"domain": "redir.test", "allow": ["good.example"], "redirect": "http://example.com/no.png"}
]"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn node(policy: &Path) -> (Nginx, Nginx) {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(
        2,
        origin.port,
        "rcdn_hotlink_unknown refuse;",
        &format!("rcdn_hotlink {};", policy.display()),
    );
    (origin, cdn)
}

fn with_referer(port: u16, host: &str, path: &str, referer: &str) -> Resp {
    request_host(port, host, "GET", path, &[("Referer", referer)])
}

#[test]
fn referers_are_judged_per_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("hotlink.json");
    std::fs::write(&policy, POLICY).expect("policy");
    let (_origin, cdn) = node(&policy);
    let p = cdn.port;

    let ok = with_referer(p, "localhost", "/small.txt", "https://good.example/page");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, b"hello, small world\n");
    let evil = with_referer(p, "localhost", "/small.txt", "https://evil.example/page");
    assert_eq!(evil.status, 403);
    assert_eq!(get(p, "/small.txt").status, 403, "empty referer refused");
    // A referer from the domain itself is always fine.
    assert_eq!(
        with_referer(p, "localhost", "/small.txt", "http://localhost/x").status,
        200
    );
    // Redirect action.
    let r = with_referer(p, "redir.test", "/small.txt", "https://evil.example/");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://example.com/no.png"));
    // Unknown domain with `rcdn_hotlink_unknown refuse`.
    assert_eq!(
        request_host(p, "other.test", "GET", "/small.txt", &[]).status,
        403
    );
    assert!(cdn.error_log().contains("hotlink refused: unknown domain"));
    cdn.check_log();
}

#[test]
fn signed_urls_ok_bad_expired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("hotlink.json");
    std::fs::write(&policy, POLICY).expect("policy");
    let (_origin, cdn) = node(&policy);
    let p = cdn.port;
    let signed = |path: &str, exp: u64, tok: &str| {
        request_host(
            p,
            "signed.test",
            "GET",
            &format!("{path}?expires={exp}&token={tok}"),
            &[],
        )
        .status
    };
    let exp = now() + 600;
    assert_eq!(
        signed("/small.txt", exp, &sign(b"k3y", "/small.txt", exp)),
        200
    );
    // Signed for another path, with another key, or tampered expiry.
    assert_eq!(
        signed("/small.txt", exp, &sign(b"k3y", "/big.bin", exp)),
        403
    );
    assert_eq!(
        signed("/small.txt", exp, &sign(b"nope", "/small.txt", exp)),
        403
    );
    assert_eq!(
        signed("/small.txt", exp + 1, &sign(b"k3y", "/small.txt", exp)),
        403
    );
    assert_eq!(
        request_host(p, "signed.test", "GET", "/small.txt", &[]).status,
        403,
        "unsigned"
    );
    let past = now() - 10;
    assert_eq!(
        signed("/small.txt", past, &sign(b"k3y", "/small.txt", past)),
        410
    );
    cdn.check_log();
}

#[test]
fn reload_rereads_the_policy_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("hotlink.json");
    std::fs::write(&policy, POLICY).expect("policy");
    let (_origin, cdn) = node(&policy);
    let evil = || with_referer(cdn.port, "localhost", "/small.txt", "https://evil.example/").status;
    assert_eq!(evil(), 403);
    std::fs::write(
        &policy,
        r#"[{"domain": "localhost", "allow": ["evil.example"]}]"#,
    )
    .expect("new policy");
    cdn.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(15);
    // New workers answer once the reload is done; old ones drain.
    let mut allowed = 0;
    while Instant::now() < deadline && allowed < 6 {
        allowed = if evil() == 200 { allowed + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(allowed, 6, "the reloaded policy allows evil.example");
    cdn.check_log();
}

fn conf_with(policy: &Path) -> String {
    format!(
        "load_module {};\nerror_log logs/error.log;\nevents {{}}\nhttp {{\nserver {{ listen 127.0.0.1:{};\nlocation / {{ rcdn_hotlink {}; proxy_pass http://127.0.0.1:9; }}\n}}\n}}\n",
        module_so().display(),
        free_port(),
        policy.display()
    )
}

#[test]
fn bad_policy_files_fail_nginx_t() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.json");
    std::fs::write(&good, POLICY).expect("good");
    let (ok, err) = config_test(&conf_with(&good));
    assert!(ok, "{err}");

    let cases: &[(&str, &str, &str)] = &[
        ("notjson.json", "[{\"domain\": ", "bad policy file"),
        (
            "unknown.json",
            r#"[{"domain": "a", "colour": 1}]"#,
            "colour",
        ),
        (
            "regex.json",
            r#"[{"domain": "a", "allow": ["~("]}]"#,
            "bad policy file",
        ),
        (
            "twice.json",
            r#"[{"domain": "a"}, {"domain": "a"}]"#,
            "twice",
        ),
    ];
    for (name, text, why) in cases {
        let f = dir.path().join(name);
        std::fs::write(&f, text).expect("policy");
        let (ok, err) = config_test(&conf_with(&f));
        assert!(!ok, "{name} accepted");
        assert!(err.contains("rcdn_hotlink"), "{name}: {err}");
        assert!(err.contains(&f.display().to_string()), "{name}: {err}");
        assert!(err.contains(why), "{name}: {err}");
    }
    let missing = dir.path().join("missing.json");
    let (ok, err) = config_test(&conf_with(&missing));
    assert!(!ok);
    assert!(
        err.contains("cannot read") && err.contains("missing.json"),
        "{err}"
    );
    let (ok, err) = config_test(
        &conf_with(&good).replace("proxy_pass", "rcdn_hotlink_unknown maybe; proxy_pass"),
    );
    assert!(!ok);
    assert!(
        err.contains("rcdn_hotlink_unknown") && err.contains("maybe"),
        "{err}"
    );
}
