//! The JSON request log (MiniCDN): one line per request with the cache key,
//! client, user agent, cache status, bytes, duration, node, and the value of
//! a client-supplied data header (`X-Minicdn-Data`), parsed as JSON when the
//! type header (`X-Minicdn-Type`) says `json`.

use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;

/// Longest data header value logged, so a client cannot bloat the log.
pub const MAX_DATA: usize = 4096;

/// One request, as the server saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Entry<'a> {
    pub time_ms: u64,
    pub key: &'a [u8],
    pub client: &'a str,
    pub user_agent: &'a [u8],
    pub cache_status: &'a str,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub node: &'a str,
    pub data: Option<&'a [u8]>,
    pub data_type: Option<&'a [u8]>,
}

fn text(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// The line's fields in order. A struct rather than a `json!` map: no tree
/// of owned keys and values is built per request (that map made the log the
/// costliest policy on the hit path).
#[derive(Serialize)]
struct Line<'a> {
    time_ms: u64,
    key: Cow<'a, str>,
    client: &'a str,
    user_agent: Cow<'a, str>,
    cache_status: &'a str,
    status: u16,
    bytes_sent: u64,
    duration_ms: u64,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

/// The data header's value: JSON when declared and valid, else a string.
fn data_value(data: &[u8], data_type: Option<&[u8]>) -> Value {
    let data = &data[..data.len().min(MAX_DATA)];
    let is_json = data_type.is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"json"));
    if is_json {
        if let Ok(v) = serde_json::from_slice::<Value>(data) {
            return v;
        }
    }
    Value::String(text(data).into_owned())
}

/// The log line, without the trailing newline. Always valid JSON, whatever
/// bytes the client sent (invalid UTF-8 is replaced, quotes escaped).
pub fn line(e: &Entry) -> String {
    let l = Line {
        time_ms: e.time_ms,
        key: text(e.key),
        client: e.client,
        user_agent: text(e.user_agent),
        cache_status: e.cache_status,
        status: e.status,
        bytes_sent: e.bytes_sent,
        duration_ms: e.duration_ms,
        node: e.node,
        data: e.data.map(|d| data_value(d, e.data_type)),
    };
    // Serializing plain fields and a `Value` into a String cannot fail.
    serde_json::to_string(&l).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(l: &str) -> Value {
        serde_json::from_str(l).expect("log line is JSON")
    }

    #[test]
    fn fields_and_json_data() {
        let e = Entry {
            time_ms: 1,
            key: b"a.com/x",
            client: "127.0.0.1",
            user_agent: b"curl/8 \"quoted\"",
            cache_status: "HIT",
            status: 200,
            bytes_sent: 10,
            duration_ms: 3,
            node: "n1",
            data: Some(br#"{"uid": 42}"#),
            data_type: Some(b" JSON "),
        };
        let v = parse(&line(&e));
        assert_eq!(v["key"], "a.com/x");
        assert_eq!(v["user_agent"], "curl/8 \"quoted\"");
        assert_eq!(v["cache_status"], "HIT");
        assert_eq!(v["data"]["uid"], 42);
        assert!(!line(&e).contains('\n'));
    }

    #[test]
    fn data_is_a_string_unless_valid_declared_json() {
        let base = Entry {
            data: Some(b"{not json"),
            data_type: Some(b"json"),
            ..Entry::default()
        };
        assert_eq!(parse(&line(&base))["data"], "{not json");
        let plain = Entry {
            data: Some(br#"{"a":1}"#),
            data_type: None,
            ..Entry::default()
        };
        assert_eq!(parse(&line(&plain))["data"], r#"{"a":1}"#);
        let none = Entry::default();
        assert!(parse(&line(&none)).get("data").is_none());
    }

    #[test]
    fn hostile_bytes_stay_valid_json_and_bounded() {
        let big = vec![b'x'; 100_000];
        let e = Entry {
            key: b"\xff\xfe\n\"",
            user_agent: b"\x00\x01",
            data: Some(&big),
            ..Entry::default()
        };
        let l = line(&e);
        let v = parse(&l);
        assert_eq!(v["data"].as_str().unwrap().len(), MAX_DATA);
        assert!(!l.contains('\n'));
    }
}
