//! Large hits go out as file bufs over the tier's region files, so nginx
//! sends them with `sendfile` (checked with `strace` attached to the
//! workers, and with `$rcdn_body`): from the shared RAM tier, from a disk
//! tier, and for objects stored as slices, whole, one range and several
//! ranges, byte for byte; small hits stay memory bufs; a send that
//! outlives the recycling of its region still sends the right bytes.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Logs the body kind of every request.
const LOG: &str = "log_format b '$uri $status $rcdn_cache_status $rcdn_body'; \
                   access_log logs/b.log b; sendfile on;";

/// The worker pids of the nginx whose master is `cdn`.
fn workers(cdn: &Nginx) -> Vec<u32> {
    let master = cdn.pid().expect("master pid");
    let out = workers_of(master);
    assert!(!out.is_empty(), "no workers under master {master}");
    out
}

/// `strace` attached to some processes, tracing `sendfile` and `writev`
/// into a file; stopped by its PID.
struct Trace {
    child: Option<Child>,
    out: tempfile::NamedTempFile,
    pids: Vec<u32>,
}

impl Trace {
    fn attach(pids: &[u32]) -> Trace {
        let out = tempfile::NamedTempFile::new().expect("trace file");
        let mut cmd = Command::new("strace");
        cmd.args(["-qq", "-f", "-e", "trace=sendfile,writev", "-o"])
            .arg(out.path());
        for p in pids {
            cmd.arg("-p").arg(p.to_string());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace must be installed to check that large hits use sendfile");
        let t = Trace {
            child: Some(child),
            out,
            pids: pids.to_vec(),
        };
        // Attached once every pid names a tracer (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pids.iter().all(|p| traced(*p)) {
            assert!(
                Instant::now() < deadline,
                "strace did not attach to {pids:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    /// Detaches (SIGINT) and returns the traced calls.
    fn stop(mut self) -> Calls {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGINT);
        }
        let text = std::fs::read_to_string(self.out.path()).unwrap_or_default();
        Calls::parse(&text, &self.pids)
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of the strace we spawned.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}

fn traced(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
}

/// What the workers sent with `sendfile` (bytes and the files read) and
/// how many `writev` calls they made.
#[derive(Debug, Default)]
struct Calls {
    sendfile_bytes: u64,
    /// The paths of the files sendfile read (`/proc/<pid>/fd/<in_fd>`).
    files: Vec<String>,
    writev: usize,
}

impl Calls {
    fn parse(text: &str, pids: &[u32]) -> Calls {
        let mut c = Calls::default();
        for line in text.lines() {
            // "<pid> sendfile(<out>, <in>, [off] => [..], len) = n"
            let mut it = line.splitn(2, ' ');
            let (pid, call) = (it.next().unwrap_or(""), it.next().unwrap_or("").trim());
            let ret = call
                .rsplit_once(" = ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(-1);
            if let Some(args) = call.strip_prefix("sendfile(") {
                if ret > 0 {
                    c.sendfile_bytes += ret as u64;
                }
                let fd = args.split(',').nth(1).map(str::trim).unwrap_or("");
                let pid = if pid.parse::<u32>().is_ok() {
                    pid.to_string()
                } else {
                    pids[0].to_string()
                };
                if let Ok(p) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
                    let p = p.display().to_string();
                    if !c.files.contains(&p) {
                        c.files.push(p);
                    }
                }
            } else if call.starts_with("writev(") {
                c.writev += 1;
            }
        }
        c
    }
}

/// The `$rcdn_body` of the last logged request for `uri` (waits, bounded,
/// for the line: nginx logs after the client got its bytes).
fn last_body_kind(cdn: &Nginx, uri: &str, lines_before: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = cdn.log("logs/b.log");
        let lines: Vec<&str> = log.lines().collect();
        if lines.len() > lines_before {
            if let Some(l) = lines
                .iter()
                .rev()
                .find(|l| l.split(' ').next() == Some(uri))
            {
                return l.rsplit(' ').next().unwrap_or("").to_string();
            }
        }
        if Instant::now() > deadline {
            return String::new();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_lines(cdn: &Nginx) -> usize {
    cdn.log("logs/b.log").lines().count()
}

/// GETs `uri` (a HIT with `want`) until its body went out as `kind`: a
/// fill is served from the filling worker's heap until its write into the
/// RAM tier lands (bounded).
fn hit_as(cdn: &Nginx, uri: &str, want: &[u8], kind: &str) {
    for i in 0..200 {
        let before = log_lines(cdn);
        let r = get(cdn.port, uri);
        assert_eq!(r.status, 200, "{uri}");
        assert!(
            r.body == want,
            "{uri}: body differs ({} bytes)",
            r.body.len()
        );
        if r.cache() == "HIT" && last_body_kind(cdn, uri, before) == kind {
            return;
        }
        assert!(i < 199, "{uri}: never a HIT sent as {kind}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The parts of a `multipart/byteranges` body: (Content-Range, bytes).
fn multipart(r: &Resp) -> Vec<(String, Vec<u8>)> {
    let ct = r.header("content-type").unwrap_or("");
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .unwrap_or_else(|| panic!("no boundary in {ct:?}"));
    let delim = format!("\r\n--{boundary}");
    let body = &r.body;
    let mut parts = Vec::new();
    let mut at = find(body, delim.as_bytes(), 0).expect("first boundary");
    loop {
        let after = at + delim.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let head_end = find(body, b"\r\n\r\n", after).expect("part header end");
        let head = String::from_utf8_lossy(&body[after..head_end]).into_owned();
        let cr = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("part Content-Range")
            .to_string();
        let next = find(body, delim.as_bytes(), head_end + 4).expect("next boundary");
        parts.push((cr, body[head_end + 4..next].to_vec()));
        at = next;
    }
    parts
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Whole, one range, a small range and several ranges of
/// `uri`, all byte-exact. A body stored as one record answers several
/// ranges as multipart; one stored as slices answers them with the whole
/// body (nginx's multipart needs one buf; RFC 9110 lets a server ignore
/// Range). Returns the large-body bytes sent (for the sendfile count).
fn check_ranges(cdn: &Nginx, uri: &str, want: &[u8], sliced: bool) -> u64 {
    let n = want.len();
    let mut large = 0u64;
    let r = get(cdn.port, uri);
    assert_eq!((r.status, r.cache()), (200, "HIT"), "{uri}");
    assert!(r.body == want, "{uri}: whole body differs");
    large += n as u64;

    let (a, b) = (60_000, n - 70_001); // crosses every 64 KiB slice boundary
    let r = request(
        cdn.port,
        "GET",
        uri,
        &[("Range", &format!("bytes={a}-{b}"))],
    );
    assert_eq!(r.status, 206, "{uri}");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {a}-{b}/{n}").as_str())
    );
    assert!(r.body == want[a..=b], "{uri}: range body differs");
    large += (b - a + 1) as u64;

    // A small range of a large hit: nginx's range filter trims the file
    // bufs, so it is a short sendfile.
    let r = request(cdn.port, "GET", uri, &[("Range", "bytes=65530-65545")]);
    assert_eq!(r.status, 206, "{uri}");
    assert!(r.body == want[65530..=65545], "{uri}: small range differs");
    large += 16;

    let r = request(
        cdn.port,
        "GET",
        uri,
        &[("Range", "bytes=0-99,300000-500000")],
    );
    if sliced {
        assert_eq!(r.status, 200, "{uri}: several ranges of a sliced body");
        assert!(
            r.body == want,
            "{uri}: whole body for several ranges differs"
        );
        large += n as u64;
    } else {
        assert_eq!(r.status, 206, "{uri}");
        let parts = multipart(&r);
        assert_eq!(parts.len(), 2, "{uri}");
        assert_eq!(parts[0].0, format!("bytes 0-99/{n}"));
        assert!(parts[0].1 == want[..100]);
        assert_eq!(parts[1].0, format!("bytes 300000-500000/{n}"));
        assert!(parts[1].1 == want[300_000..=500_000]);
        large += 100 + 200_001;
    }
    large
}

fn all_in(files: &[String], dir: &Path) -> bool {
    let d = dir.display().to_string();
    !files.is_empty()
        && files
            .iter()
            .all(|f| f.starts_with(&d) && f.contains("region."))
}

/// A 1 MiB and an 8 KiB object on a node with the test store plus
/// `extra` tokens: the large hits go out with `sendfile` from the region
/// files of `tier` (a directory of the store), the small ones from memory.
fn large_by_sendfile_from(extra: &str, tier: &str) {
    let big = pattern(MIB, 21);
    let small = pattern(8 * KIB, 22);
    let origin = start_origin(
        &[("b/1m.bin", big.clone()), ("b/8k.bin", small.clone())],
        "",
    );
    let store = store_dir();
    let tokens = format!("{} {extra}", store_tokens(store.path()));
    let cdn = start_cdn_tokens(&tokens, 2, origin.port, LOG, "");
    assert_eq!(get(cdn.port, "/b/1m.bin").cache(), "MISS");
    assert_eq!(get(cdn.port, "/b/8k.bin").cache(), "MISS");
    hit_as(&cdn, "/b/1m.bin", &big, "sendfile");
    hit_as(&cdn, "/b/8k.bin", &small, "memory");

    let trace = Trace::attach(&workers(&cdn));
    let large = check_ranges(&cdn, "/b/1m.bin", &big, false);
    for _ in 0..3 {
        let before = log_lines(&cdn);
        let r = get(cdn.port, "/b/8k.bin");
        assert_eq!((r.status, r.cache()), (200, "HIT"));
        assert!(r.body == small);
        assert_eq!(last_body_kind(&cdn, "/b/8k.bin", before), "memory");
    }
    let calls = trace.stop();
    // Every large body byte went out with sendfile, and nothing else did
    // (the small hits were written from memory).
    assert_eq!(calls.sendfile_bytes, large, "{calls:?}");
    assert!(calls.writev >= 3, "{calls:?}");
    assert!(all_in(&calls.files, &store.path().join(tier)), "{calls:?}");
    cdn.check_log();
}

/// The sendfile threshold (`cache/body.rs` FILE_MIN, 16 KiB): a 16 KiB hit
/// in the shared RAM tier goes out as a file buf (sendfile from tmpfs, no
/// copy into the socket), one byte less from memory (one writev).
#[test]
fn hits_of_16_kib_go_out_with_sendfile_and_smaller_from_memory() {
    let at = pattern(16 * KIB, 23);
    let below = pattern(16 * KIB - 1, 24);
    let origin = start_origin(
        &[("t/16k.bin", at.clone()), ("t/below.bin", below.clone())],
        "",
    );
    let store = store_dir();
    let cdn = start_cdn_tokens(&store_tokens(store.path()), 2, origin.port, LOG, "");
    assert_eq!(get(cdn.port, "/t/16k.bin").cache(), "MISS");
    assert_eq!(get(cdn.port, "/t/below.bin").cache(), "MISS");
    hit_as(&cdn, "/t/16k.bin", &at, "sendfile");
    hit_as(&cdn, "/t/below.bin", &below, "memory");
    cdn.check_log();
}

/// By default (`ram_max` 256 KiB, the block tier on a disk) a 1 MiB object
/// is stored in the block tier and sent from its page cache.
#[test]
fn large_hits_go_out_with_sendfile_from_the_disk_tier_small_ones_from_memory() {
    large_by_sendfile_from("", "shm");
}

/// With `ram_max` above it, from the shared RAM tier's region files.
#[test]
fn large_ram_tier_hits_go_out_with_sendfile_small_ones_from_memory() {
    large_by_sendfile_from("ram_max=16m", "ram");
}

/// A node whose RAM tier is tiny (4 MiB: 256 KiB regions, 64 KiB slices,
/// so a 1 MiB object is 16 slices there; `ram_max=4m` keeps it there) over
/// a disk tier, and no promotion of large disk hits into RAM.
fn tiny_ram(store: &Path, origin: &Nginx, workers: u32) -> Nginx {
    let tokens = format!(
        "mem=4m shards=1 max_object=4m ram_max=4m promote_max=32k default_ttl=2m tier={0}/disk,size=64m,region=4m ram={0}/ram",
        store.display()
    );
    start_cdn_tokens(&tokens, workers, origin.port, LOG, "")
}

#[test]
fn sliced_ram_tier_hits_and_disk_tier_hits_use_sendfile_and_are_byte_exact() {
    let target = pattern(MIB, 31);
    let fresh = pattern(MIB, 32);
    let mut files = vec![
        ("t/target.bin", target.clone()),
        ("t/fresh.bin", fresh.clone()),
    ];
    let others: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("t/o{i}.bin"), pattern(MIB, 100 + i)))
        .collect();
    for (p, b) in &others {
        files.push((p.as_str(), b.clone()));
    }
    let origin = start_origin(&files, "");
    let store = store_dir();
    let cdn = tiny_ram(store.path(), &origin, 1);

    // The target is filled once, then pushed out of the RAM tier by 12 MiB
    // of other fills: demoted to the disk tier.
    assert_eq!(get(cdn.port, "/t/target.bin").cache(), "MISS");
    for (p, b) in &others {
        let r = get(cdn.port, &format!("/{p}"));
        assert_eq!(r.status, 200);
        assert!(r.body == *b);
    }
    let trace = Trace::attach(&workers(&cdn));
    // It keeps the RAM tier's 64 KiB slices there.
    let large = check_ranges(&cdn, "/t/target.bin", &target, true);
    let calls = trace.stop();
    assert_eq!(calls.sendfile_bytes, large, "{calls:?}");
    assert!(
        all_in(&calls.files, &store.path().join("disk")),
        "{calls:?}"
    );

    // A fresh fill stays in the RAM tier, stored as 64 KiB slices.
    assert_eq!(get(cdn.port, "/t/fresh.bin").cache(), "MISS");
    hit_as(&cdn, "/t/fresh.bin", &fresh, "sendfile");
    let trace = Trace::attach(&workers(&cdn));
    let large = check_ranges(&cdn, "/t/fresh.bin", &fresh, true);
    let calls = trace.stop();
    assert_eq!(calls.sendfile_bytes, large, "{calls:?}");
    assert!(all_in(&calls.files, &store.path().join("ram")), "{calls:?}");
    cdn.check_log();
}

/// A client socket with a tiny receive buffer, so nginx can push only a
/// few KiB ahead of what the client read.
fn slow_client(port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; the option value
    // and the sockaddr are fully initialised and their sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let stream = TcpStream::from_raw_fd(fd);
        let size: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF");
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "connect");
        stream
    }
}

/// The inode of every RAM tier region file.
fn inodes(ram: &Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<(String, u64)> = std::fs::read_dir(ram)
        .expect("ram dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("region."))
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().ok()?.ino(),
            ))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_send_outlives_the_recycling_of_the_regions_it_reads() {
    let target = pattern(2 * MIB, 41);
    let mut files = vec![("r/target.bin", target.clone())];
    let others: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| (format!("r/o{i}.bin"), pattern(MIB, 200 + i)))
        .collect();
    for (p, b) in &others {
        files.push((p.as_str(), b.clone()));
    }
    let origin = start_origin(&files, "");
    let store = store_dir();
    let tokens = format!(
        "mem=8m shards=1 max_object=4m ram_max=4m default_ttl=2m tier={0}/disk,size=64m,region=4m ram={0}/ram",
        store.path().display()
    );
    // nginx's send buffer is small too (sndbuf=16k): what the client has
    // not read is still in the region files, not in the kernel.
    let port = free_port();
    let conf = format!(
        r#"load_module {so};
daemon off; master_process on; worker_processes 1;
error_log logs/error.log info; pid logs/nginx.pid;
events {{ worker_connections 512; }}
http {{
  rcdn_store {tokens};
  {LOG}
  server {{
    listen 127.0.0.1:{port} sndbuf=16k;
    location / {{
      rcdn_cache on;
      proxy_pass http://127.0.0.1:{origin};
      add_header X-Cache $rcdn_cache_status always;
    }}
  }}
}}
"#,
        so = module_so().display(),
        origin = origin.port
    );
    let cdn = Nginx::start(&conf, port);
    assert_eq!(get(cdn.port, "/r/target.bin").cache(), "MISS");
    hit_as(&cdn, "/r/target.bin", &target, "sendfile");
    let ram = store.path().join("ram");
    let before = inodes(&ram);

    let mut s = slow_client(cdn.port);
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(b"GET /r/target.bin HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut got = vec![0u8; 64 * KIB];
    s.read_exact(&mut got).expect("first 64 KiB");

    // 24 MiB of fills through an 8 MiB RAM tier: every region recycled.
    for (p, b) in &others {
        let r = get(cdn.port, &format!("/{p}"));
        assert_eq!(r.status, 200);
        assert!(r.body == *b);
    }
    let after = inodes(&ram);
    let renewed = before
        .iter()
        .filter(|(n, i)| after.iter().any(|(m, j)| m == n && j != i))
        .count();
    assert_eq!(
        renewed,
        before.len(),
        "regions not all recycled: {before:?} {after:?}"
    );
    // The worker still holds region files that were renamed over: the
    // slow response reads them.
    let w = workers(&cdn)[0];
    let deleted = std::fs::read_dir(format!("/proc/{w}/fd"))
        .expect("fds")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|p| {
            let p = p.display().to_string();
            p.contains("region.") && p.ends_with("(deleted)")
        })
        .count();
    assert!(
        deleted > 0,
        "no recycled region file held open by the worker"
    );

    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("rest");
    got.extend_from_slice(&rest);
    let head_end = find(&got, b"\r\n\r\n", 0).expect("header end") + 4;
    assert!(
        String::from_utf8_lossy(&got[..head_end]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got[..head_end])
    );
    let body = &got[head_end..];
    assert_eq!(body.len(), target.len());
    assert!(
        body == target.as_slice(),
        "body sent across the recycling differs"
    );
    cdn.check_log();
}

#[test]
fn rcdn_slice_parts_of_slices_stored_as_engine_slices_go_out_with_sendfile() {
    let want = pattern(3 * MIB, 51);
    let origin = start_origin(&[("s/obj.bin", want.clone())], "");
    let store = store_dir();
    let tokens = format!(
        "mem=4m shards=1 max_object=4m default_ttl=2m tier={0}/disk,size=64m,region=4m ram={0}/ram",
        store.path().display()
    );
    // Each 1 MiB slice object is itself 16 engine slices of 64 KiB.
    let cdn = start_cdn_tokens(&tokens, 1, origin.port, LOG, "rcdn_slice 1m;");
    let a = get(cdn.port, "/s/obj.bin");
    assert_eq!((a.status, a.cache()), (200, "MISS"));
    assert!(a.body == want, "MISS body differs");
    // Until every slice's write-through landed, some go out from the heap.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let trace = Trace::attach(&workers(&cdn));
        let r = get(cdn.port, "/s/obj.bin");
        let (c, b) = (1000, 2_500_000);
        let p = request(
            cdn.port,
            "GET",
            "/s/obj.bin",
            &[("Range", &format!("bytes={c}-{b}"))],
        );
        let calls = trace.stop();
        assert_eq!((r.status, r.cache()), (200, "HIT"));
        assert!(r.body == want, "HIT body differs");
        assert_eq!(p.status, 206);
        assert!(p.body == want[c..=b], "range body differs");
        let all = (want.len() + b - c + 1) as u64;
        if calls.sendfile_bytes == all {
            assert!(all_in(&calls.files, store.path()), "{calls:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slices never all sent with sendfile: {calls:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cdn.check_log();
}
