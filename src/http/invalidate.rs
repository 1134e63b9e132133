//! Invalidation by unsafe requests (RFC 9111 §4.4).

use super::{header, Headers};

/// RFC 9110 §9.2.1 (method names are case-sensitive: `get` is not safe).
pub fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// The paths (with query) on `host` whose stored responses a response to
/// `method` on `path` invalidates: after a 2xx or 3xx to an unsafe (or
/// unknown) method, the target URI, and the `Location` and
/// `Content-Location` URIs when their host is the request's. References
/// are resolved against `path` (RFC 3986 §5.2); fragments are dropped.
pub fn invalidated_paths(
    method: &str,
    status: u16,
    host: &str,
    path: &str,
    response: Headers,
) -> Vec<String> {
    if is_safe_method(method) || !(200..400).contains(&status) {
        return Vec::new();
    }
    let mut out = vec![strip_fragment(path).to_string()];
    for name in ["location", "content-location"] {
        let Some(v) = header(response, name).and_then(|v| std::str::from_utf8(v).ok()) else {
            continue;
        };
        if let Some(p) = resolve(host, path, v.trim()) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn strip_fragment(s: &str) -> &str {
    s.split('#').next().unwrap_or("")
}

/// The host of an authority (`user@host:port`, `[v6]:port`), lowercase.
fn host_of(authority: &str) -> String {
    let a = authority.rsplit('@').next().unwrap_or("");
    let h = match a.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => a.split(':').next().unwrap_or(""),
    };
    h.to_ascii_lowercase()
}

/// `reference` resolved against `http://host/base`: its path and query if
/// it is on the same host.
fn resolve(host: &str, base: &str, reference: &str) -> Option<String> {
    let r = strip_fragment(reference);
    let scheme_len = r
        .find(':')
        .filter(|&i| {
            i > 0
                && r[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        })
        .filter(|&i| r.as_bytes()[0].is_ascii_alphabetic() && !r[..i].contains('/'));
    let rest = match scheme_len {
        Some(i)
            if ["http", "https"]
                .iter()
                .any(|s| r[..i].eq_ignore_ascii_case(s)) =>
        {
            &r[i + 1..]
        }
        Some(_) => return None, // another scheme
        None => r,
    };
    if let Some(net) = rest.strip_prefix("//") {
        let end = net.find(['/', '?']).unwrap_or(net.len());
        if host_of(&net[..end]) != host_of(host) {
            return None;
        }
        let p = &net[end..];
        return Some(if p.starts_with('/') {
            with_query(p)
        } else {
            format!("/{p}")
        });
    }
    if scheme_len.is_some() && !rest.starts_with('/') {
        return None; // "http:relative" is not an http URI with a host
    }
    let base = strip_fragment(base);
    let (base_path, _) = base.split_once('?').unwrap_or((base, ""));
    Some(match rest {
        "" => base.to_string(),
        q if q.starts_with('?') => format!("{base_path}{q}"),
        p if p.starts_with('/') => with_query(p),
        p => {
            let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
            let slash = if dir.starts_with('/') { "" } else { "/" };
            with_query(&format!("{slash}{dir}{p}"))
        }
    })
}

/// Removes dot segments from the path part, keeping the query.
fn with_query(p: &str) -> String {
    let (path, query) = match p.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (p, None),
    };
    let mut out = remove_dot_segments(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// RFC 3986 §5.2.4, for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => {
                if last {
                    stack.push("");
                }
            }
            ".." => {
                stack.pop();
                if last {
                    stack.push("");
                }
            }
            s => stack.push(s),
        }
    }
    format!("/{}", stack.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(method: &str, status: u16, loc: &[(&'static str, &'static str)]) -> Vec<String> {
        let h: Vec<(&str, &[u8])> = loc.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        invalidated_paths(method, status, "Example.com", "/a/b/c?q=1", &h)
    }

    #[test]
    fn unsafe_methods_with_2xx_or_3xx_invalidate_the_target_rfc9111_4_4() {
        for m in ["POST", "PUT", "DELETE", "PATCH", "PURGEX", "get"] {
            assert_eq!(inv(m, 200, &[]), ["/a/b/c?q=1"], "{m}");
        }
        assert_eq!(inv("POST", 303, &[]), ["/a/b/c?q=1"]);
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(inv(m, 200, &[]).is_empty(), "{m} is safe");
        }
        for s in [100, 199, 400, 404, 500, 503] {
            assert!(inv("POST", s, &[]).is_empty(), "{s} is an error");
        }
    }

    #[test]
    fn location_and_content_location_on_the_same_host() {
        let got = inv(
            "POST",
            201,
            &[("Location", "/new"), ("Content-Location", "rel?x=1#frag")],
        );
        assert_eq!(got, ["/a/b/c?q=1", "/new", "/a/b/rel?x=1"]);
        let got = inv(
            "PUT",
            200,
            &[("Location", "http://EXAMPLE.com:8080/x/../y")],
        );
        assert_eq!(got, ["/a/b/c?q=1", "/y"]);
        let got = inv("PUT", 200, &[("Content-Location", "//example.com")]);
        assert_eq!(got, ["/a/b/c?q=1", "/"]);
        let got = inv("PUT", 200, &[("Location", "https://user@example.com/s?t")]);
        assert_eq!(got, ["/a/b/c?q=1", "/s?t"]);
        // Other hosts and schemes are never invalidated.
        for other in [
            "http://evil.com/a",
            "//evil.com/a",
            "mailto:x@example.com",
            "ftp://example.com/a",
        ] {
            assert_eq!(
                inv("POST", 200, &[("Location", other)]),
                ["/a/b/c?q=1"],
                "{other}"
            );
        }
        // The target itself is listed once.
        assert_eq!(
            inv("POST", 200, &[("Content-Location", "")]),
            ["/a/b/c?q=1"]
        );
        assert_eq!(
            inv("POST", 200, &[("Location", "?q=2")]),
            ["/a/b/c?q=1", "/a/b/c?q=2"]
        );
    }

    #[test]
    fn references_resolve_as_rfc3986_5_4() {
        // Base http://a/b/c/d;p?q, the normal examples of RFC 3986 §5.4.1.
        let r = |x: &str| resolve("a", "/b/c/d;p?q", x);
        for (reference, want) in [
            ("g", "/b/c/g"),
            ("./g", "/b/c/g"),
            ("g/", "/b/c/g/"),
            ("/g", "/g"),
            ("//a/g", "/g"),
            ("?y", "/b/c/d;p?y"),
            ("g?y", "/b/c/g?y"),
            ("#s", "/b/c/d;p?q"),
            ("g#s", "/b/c/g"),
            (";x", "/b/c/;x"),
            ("", "/b/c/d;p?q"),
            (".", "/b/c/"),
            ("./", "/b/c/"),
            ("..", "/b/"),
            ("../", "/b/"),
            ("../g", "/b/g"),
            ("../..", "/"),
            ("../../", "/"),
            ("../../g", "/g"),
            ("../../../g", "/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
            ("g.", "/b/c/g."),
            ("..g", "/b/c/..g"),
            ("./../g", "/b/g"),
            ("g/./h", "/b/c/g/h"),
            ("g/../h", "/b/c/h"),
            ("http://a/b/c/g", "/b/c/g"),
        ] {
            assert_eq!(r(reference).as_deref(), Some(want), "{reference:?}");
        }
        assert_eq!(r("http:g"), None, "not a same-host http URI");
        assert_eq!(r("//b/g"), None);
    }
}
