//! Test harness: the vendored `objs/nginx` with our module, a second nginx
//! as the origin, a tiny HTTP/1.0 client. Every server listens on a free
//! 127.0.0.1 port; every process is stopped by its PID on drop.
#![allow(dead_code)]

pub mod scripted;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary built by nginx-sys (vendored), or `NGINX_BINARY`.
pub fn nginx_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NGINX_BINARY") {
        return p.into();
    }
    let Some(dir) = option_env!("DEP_NGINX_BUILD_DIR") else {
        panic!("build with --features vendored (or set NGINX_BINARY)");
    };
    Path::new(dir).join("nginx")
}

/// The module `cargo test` just built: `target/<profile>/deps/` (beside the
/// test binary; the copy in `target/<profile>/` is only refreshed by
/// `cargo build`), or `RCDN_MODULE` if set.
pub fn module_so() -> PathBuf {
    if let Ok(p) = std::env::var("RCDN_MODULE") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    deps.join("libngx_http_rcdn_module.so")
}

///
/// The port is free once the listener closes, so two test processes (or
/// two tests) could be handed the same one before nginx binds it; each
/// port is also claimed by creating a marker file, so no other test takes
/// it for the next 10 minutes.
pub fn free_port() -> u16 {
    let dir = std::env::temp_dir().join("rcdn-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if claim_port(&dir.join(port.to_string())) {
            return port;
        }
    }
    panic!("no unclaimed free port after 100 tries");
}

/// Creates the marker `f`, or takes it over if older than 10 minutes.
fn claim_port(f: &Path) -> bool {
    let new = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(f);
    if new.is_ok() {
        return true;
    }
    let age = std::fs::metadata(f)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    if age.is_some_and(|a| a > Duration::from_secs(600)) {
        let _ = std::fs::remove_file(f);
        return std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(f)
            .is_ok();
    }
    false
}

/// One nginx master process in its own temp prefix.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// The block-tier store of a CDN node started by `start_cdn`.
    pub store: Option<tempfile::TempDir>,
}

impl Nginx {
    /// Writes `conf` (with `{port}` replaced) and starts nginx on it.
    pub fn start(conf: &str, port: u16) -> Nginx {
        Nginx::launch(tempfile::tempdir().expect("tempdir"), conf, port)
    }

    /// Starts nginx with prefix `dir` (whose other files the caller has
    /// prepared) on `conf`, and waits until it listens on `port`.
    pub fn launch(dir: tempfile::TempDir, conf: &str, port: u16) -> Nginx {
        Nginx::try_launch(dir, conf, port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Nginx::launch`], or why nginx did not come up on `port`.
    pub fn try_launch(dir: tempfile::TempDir, conf: &str, port: u16) -> Result<Nginx, String> {
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("write conf");
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            dir,
            port,
            child: Some(child),
            store: None,
        };
        n.wait_up()?;
        Ok(n)
    }

    /// Waits until this nginx listens on `port`.
    ///
    /// A successful connect alone proves nothing: between `free_port` and
    /// nginx's bind another program can take the port (a test's own
    /// listener, another engineer's server); nginx then fails to bind and
    /// exits, while our connect reaches the other listener, usually before
    /// nginx has even written its bind error, and the test's first request
    /// is reset or answered by a stranger. nginx writes its pid file only
    /// after it has bound every listening socket, so the file holding our
    /// child's PID is the proof that the port is ours.
    fn wait_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = self.pid().map(|p| p.to_string());
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "nginx for port {} exited ({st}) before it was up: {}",
                    self.port,
                    self.error_log()
                ));
            }
            let ours = self.log("logs/nginx.pid").trim() == pid.as_deref().unwrap_or("-");
            if ours && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "nginx did not come up on {}: {}",
            self.port,
            self.error_log()
        ))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.path("logs/error.log")).unwrap_or_default()
    }

    pub fn log(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// Fails on alerts, critical errors, or a worker killed by a signal.
    pub fn check_log(&self) {
        let log = self.error_log();
        for bad in ["[alert]", "[crit]", "[emerg]", "exited on signal", "panic"] {
            assert!(!log.contains(bad), "error.log has {bad}:\n{log}");
        }
    }

    /// Stops nginx (fast shutdown) and waits for it, by PID.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_child(&mut child, libc::SIGTERM);
    }

    /// Sends a signal to the master process.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the PID of the child we spawned.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits (bounded) for the master to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        // A test that fails on a request (a reset, a bad status) drops the
        // prefix and its logs with it: show the error log, where a worker
        // crash or an alert would be.
        if std::thread::panicking() {
            let log = self.error_log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- error.log of nginx on port {} (last {} lines) ---",
                self.port,
                tail.len()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Writes the origin's files: `small.txt`, `big.bin` (3 MiB), and the
/// given extra (path, bytes) pairs. Each is dated 30 days back, as a file
/// on a real origin would be: its `Last-Modified` then gives heuristic
/// freshness (RFC 9111 §4.2.2: a tenth of its age, capped by the store's
/// `heuristic_max`, 1 day by default), where a file written just now would
/// be stale at once.
pub fn origin_files(root: &Path, extra: &[(&str, Vec<u8>)]) {
    std::fs::create_dir_all(root).expect("www");
    let mut all: Vec<(&str, Vec<u8>)> = vec![
        ("small.txt", b"hello, small world\n".to_vec()),
        ("big.bin", pattern(3 << 20, 7)),
    ];
    all.extend(extra.iter().cloned());
    for (p, data) in all {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("dirs");
        std::fs::write(&f, data).expect("origin file");
        backdate(&f, Duration::from_secs(30 * 86_400));
    }
}

/// Backdates every file under `root` by 30 days (see [`origin_files`]).
pub fn backdate_tree(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            backdate_tree(&p);
        } else {
            backdate(&p, Duration::from_secs(30 * 86_400));
        }
    }
}

/// Sets the modification time of `f` to `by` ago.
pub fn backdate(f: &Path, by: Duration) {
    let t = std::time::SystemTime::now() - by;
    std::fs::File::options()
        .write(true)
        .open(f)
        .and_then(|h| h.set_modified(t))
        .expect("set mtime");
}

/// Deterministic pseudo-random bytes.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The origin: a second nginx serving `www/` with header-setting locations.
/// Its access log `logs/origin.log` lists every request it got.
pub fn start_origin(extra_files: &[(&str, Vec<u8>)], extra_locations: &str) -> Nginx {
    let port = free_port();
    let dir_hint = ""; // root is relative to the prefix
    let conf = format!(
        r#"daemon off; master_process on; worker_processes 1;
error_log logs/error.log info; pid logs/nginx.pid;
events {{ worker_connections 512; }}
http {{
  log_format o '$request_method $request_uri ims=$http_if_modified_since inm=$http_if_none_match ae=$http_accept_encoding range=$http_range';
  access_log logs/origin.log o;
  server {{
    listen 127.0.0.1:{port};
    root www{dir_hint};
    location / {{ }}
    location /slow/ {{ limit_rate 100k; }}
    location /nostore/ {{ add_header Cache-Control no-store; }}
    location /private/ {{ add_header Cache-Control "private, max-age=60"; }}
    location /cookie/ {{ add_header Set-Cookie "session=1"; }}
    location /short/ {{ add_header Cache-Control "max-age=1, stale-if-error=60"; }}
    location /shortnosie/ {{ add_header Cache-Control "max-age=1"; }}
    location /swr/ {{ add_header Cache-Control "max-age=1, stale-while-revalidate=30"; }}
    location /gz/ {{ gzip on; gzip_vary on; gzip_http_version 1.0; gzip_min_length 1; gzip_types *; gzip_proxied any; }}
    location /tagged/ {{ add_header Surrogate-Key "news sport"; add_header X-Rcdn-Tags "42"; add_header X-Rcdn-Mask "0x10"; add_header X-Rcdn-Group "teamA"; }}
    location /missing/ {{ return 404; }}
    location /err/ {{ return 503; }}
    {extra_locations}
  }}
}}
"#
    );
    let dir = tempfile::tempdir().expect("tempdir");
    origin_files(&dir.path().join("www"), extra_files);
    Nginx::launch(dir, &conf, port)
}

/// Requests the origin logged for a path (exact `$request_uri` match).
///
/// The origin writes its log line after sending the response, so a client
/// can be served before the line exists (seen on a loaded machine: the
/// origin worker was descheduled between the two). Wait until the log has
/// not grown for 100 ms (at most 3 s) before counting.
pub fn origin_hits(origin: &Nginx, uri: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut text = origin.log("logs/origin.log");
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = origin.log("logs/origin.log");
        if now.len() == text.len() || Instant::now() > deadline {
            text = now;
            break;
        }
        text = now;
    }
    text.lines()
        .filter(|l| l.split(' ').nth(1) == Some(uri))
        .map(String::from)
        .collect()
}

/// A directory for a block-tier store that the workers (`nobody` when the
/// tests run as root) can reach: the module's init_module gives the tier
/// directory itself to the worker user, but cannot open up its parents.
pub fn store_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("store tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// The `rcdn_store` tokens of the test nodes: the shared RAM tier and one
/// block tier under `dir` (slices of 4 MiB, so the 3 MiB test object is one
/// record and can go out with sendfile; `ram=` so nothing is left in
/// /dev/shm).
pub fn store_tokens(dir: &Path) -> String {
    format!(
        "mem=256m max_object=16m default_ttl=2m tier={0}/shm,size=64m,region=16m,slice=4m ram={0}/ram",
        dir.display()
    )
}

/// The CDN node: our module in front of `origin_port`, on a fresh shared
/// store. `http_extra` goes in `http{}`, `loc_extra` in the caching
/// `location /`.
pub fn start_cdn(workers: u32, origin_port: u16, http_extra: &str, loc_extra: &str) -> Nginx {
    let store = store_dir();
    let mut n = start_cdn_on(store.path(), workers, origin_port, http_extra, loc_extra);
    n.store = Some(store);
    n
}

/// The CDN node on the store in `store` (kept by the caller, so a second
/// node can reopen it).
pub fn start_cdn_on(
    store: &Path,
    workers: u32,
    origin_port: u16,
    http_extra: &str,
    loc_extra: &str,
) -> Nginx {
    start_cdn_tokens(
        &store_tokens(store),
        workers,
        origin_port,
        http_extra,
        loc_extra,
    )
}

/// The CDN node on a store given by its `rcdn_store` tokens.
pub fn start_cdn_tokens(
    tokens: &str,
    workers: u32,
    origin_port: u16,
    http_extra: &str,
    loc_extra: &str,
) -> Nginx {
    let port = free_port();
    let so = module_so();
    // reuseport spreads connections over the workers (by source port).
    let listen_opts = if workers > 1 { " reuseport" } else { "" };
    // Every suite runs with block-tier lookups on io threads, whatever
    // filesystem the temp dir is on, unless the test chooses.
    let io = if http_extra.contains("rcdn_io_threads") {
        ""
    } else {
        "rcdn_io_threads on;"
    };
    let conf = format!(
        r#"load_module {so};
daemon off; master_process on; worker_processes {workers};
error_log logs/error.log info; pid logs/nginx.pid;
events {{ worker_connections 512; }}
http {{
  access_log logs/access.log;
  rcdn_store {tokens};
  {io}
  {http_extra}
  server {{
    listen 127.0.0.1:{port}{listen_opts};
    location / {{
      rcdn_cache on;
      proxy_pass http://127.0.0.1:{origin_port};
      add_header X-Cache $rcdn_cache_status always;
      {loc_extra}
    }}
    location /purge {{
      cdn_purge;
    }}
    location /purge-secret {{
      cdn_purge;
      rcdn_purge_secret s3cret;
    }}
    location /purge-denied {{
      cdn_purge;
      deny all;
    }}
  }}
}}
"#,
        so = so.display()
    );
    Nginx::start(&conf, port)
}

/// A response read to EOF.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn cache(&self) -> &str {
        self.header("x-cache").unwrap_or("")
    }
}

/// One HTTP/1.0 request (the server closes; we read to EOF).
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    request_host(port, "localhost", method, path, headers)
}

/// [`request`] with another `Host`.
pub fn request_host(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse(&raw)
}

pub fn get(port: u16, path: &str) -> Resp {
    request(port, "GET", path, &[])
}

fn parse(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Runs `nginx -t` on a config; returns (success, stderr).
pub fn config_test(conf: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("logs");
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("conf");
    let out = Command::new(nginx_bin())
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .output()
        .expect("nginx -t");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends `n` concurrent GETs for `uri`; every answer must be a 200 with
/// `want` as body. Returns their `$rcdn_cache_status` values.
pub fn concurrent_gets(port: u16, uri: &'static str, n: usize, want: &[u8]) -> Vec<String> {
    let threads: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || get(port, uri)))
        .collect();
    threads
        .into_iter()
        .map(|t| {
            let r = t.join().expect("client thread");
            assert_eq!(r.status, 200);
            assert!(r.body == want, "body differs");
            r.cache().to_string()
        })
        .collect()
}

/// [`get`] from source address `src` (a loopback address such as
/// 127.0.0.2: the client socket is bound to it before connecting).
pub fn get_from(src: std::net::Ipv4Addr, port: u16, path: &str) -> Resp {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; the sockaddr
    // structs are fully initialised and their sizes passed.
    let mut s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sa(src, 0);
        let stream = TcpStream::from_raw_fd(fd);
        let rc = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "bind {src}");
        let remote = sa(std::net::Ipv4Addr::LOCALHOST, port);
        let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "connect from {src}");
        stream
    };
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse(&raw)
}

/// A node on `store` whose memory is empty while its block tier holds
/// `path`: a first node (1 worker) fills it and stops, a second starts.
pub fn cdn_with_block_copy(
    store: &Path,
    origin: &Nginx,
    http_extra: &str,
    loc_extra: &str,
    path: &str,
) -> Nginx {
    let mut first = start_cdn_on(store, 1, origin.port, http_extra, loc_extra);
    let a = get(first.port, path);
    assert_eq!((a.status, a.cache()), (200, "MISS"), "{path}");
    first.check_log();
    first.stop();
    start_cdn_on(store, 1, origin.port, http_extra, loc_extra)
}

/// A slow request and a memory hit sent 150 ms after it, each timed from
/// the slow one's start.
pub struct Race {
    pub fast: Resp,
    pub fast_at: Duration,
    pub slow: Resp,
    pub slow_at: Duration,
}

/// Puts `/small.txt` in memory (a MISS, then a HIT), sends `slow_path`
/// with `X-Rcdn-Fault: fault`, and a hit of `/small.txt` while it runs.
pub fn race(port: u16, slow_path: &str, fault: &str) -> Race {
    assert_eq!(get(port, "/small.txt").cache(), "MISS");
    assert_eq!(get(port, "/small.txt").cache(), "HIT"); // now in memory
    let (path, fault) = (slow_path.to_string(), fault.to_string());
    let t0 = Instant::now();
    let slow = std::thread::spawn(move || {
        let r = request(port, "GET", &path, &[("X-Rcdn-Fault", &fault)]);
        (r, t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(150));
    let fast = get(port, "/small.txt");
    let fast_at = t0.elapsed();
    let (slow, slow_at) = slow.join().expect("slow request");
    Race {
        fast,
        fast_at,
        slow,
        slow_at,
    }
}

/// Three clients ask `path` with `X-Rcdn-Fault: fault` and leave 100 ms
/// later, while their (1 s) jobs run; returns once those are done.
pub fn leave_during(port: u16, path: &str, fault: &str) {
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nX-Rcdn-Fault: {fault}\r\n\r\n");
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(req.as_bytes()).expect("send");
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(1300)); // the jobs finish
}

/// Waits until `n` client connections to `port` have been accepted by the
/// server and their request bytes read (the server's side of each is
/// ESTABLISHED with an empty receive queue, and nothing waits in the
/// listener's accept queue), as `/proc/net/tcp` shows. nginx parses a
/// request in the event handler that reads it, so this proves the requests
/// reached the module, where a fixed sleep only hopes so on a loaded machine.
/// False after `timeout`.
pub fn wait_requests_read(port: u16, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let (mut read, mut pending) = (0, false);
        for line in tcp.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(queues)) = (f.get(1), f.get(3), f.get(4)) else {
                continue;
            };
            let lport = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if lport != Some(port) {
                continue;
            }
            let rx = queues
                .rsplit(':')
                .next()
                .and_then(|q| u64::from_str_radix(q, 16).ok());
            match *state {
                "0A" => pending |= rx != Some(0), // LISTEN: rx_queue is the accept backlog
                "01" if rx == Some(0) => read += 1,
                "01" => pending = true,
                _ => {}
            }
        }
        if read >= n && !pending {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Stops `child` by its PID: `sig`, up to 10 s to exit, then SIGKILL.
pub fn stop_child(child: &mut Child, sig: i32) {
    // SAFETY: kill(2) on the PID of a child we spawned and not yet reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The worker processes (not shutting down) of the nginx master `master`,
/// from /proc.
pub fn workers_of(master: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(master) && cmd.contains("worker process") && !cmd.contains("shutting") {
            out.push(pid);
        }
    }
    out
}
