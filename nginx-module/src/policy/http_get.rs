//! A tiny blocking HTTP/1.0 GET for the module's helper threads (policy
//! fetches, node status probes). Never called on the event loop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest body read (policies and status documents are small).
const MAX_BODY: usize = 1 << 20;

/// `GET url` (http only) with `timeout` per connect/read/write; returns the
/// status and body.
pub fn get(url: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (host, port) =
        crate::policy::schedule::authority(url).ok_or_else(|| format!("bad URL: {url}"))?;
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut s = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, timeout).ok())
        .ok_or_else(|| format!("cannot connect to {host}:{port}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: rcdn\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take((MAX_BODY + 16 * 1024) as u64)
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete header in the answer")?;
    let line = String::from_utf8_lossy(&raw[..end.min(64)]).into_owned();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
    let body = raw[end + 4..].to_vec();
    if body.len() > MAX_BODY {
        return Err(format!("answer larger than {MAX_BODY} bytes"));
    }
    Ok((status, body))
}
