//! The module's folder layout and its one direction of dependencies
//! (docs/nginx.md, "Code map"): reads `src/`, builds the folder graph from
//! every `crate::` path (`use crate::x`, `use crate::{a, b}`, inline
//! `crate::x::y`, `super::` that climbs to the crate root) and fails on an
//! import against the layer order or on a cycle between folders.
//!
//! Layers, bottom up: `base` < `conf` < `engine` < `http` < features
//! (`cluster`, `cache`, `policy`) < `lib.rs`. A folder may use its own
//! layer's folders only among features, and those edges must not form a
//! cycle. Nothing imports `lib.rs` (it only wires the module together).
//! What a feature shows other features is its `mod.rs` re-exports; its
//! files are private modules, which the compiler enforces.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every folder of `src/` and its layer; a new folder must be added here.
const LAYERS: &[(&str, u8)] = &[
    ("base", 0),
    ("conf", 1),
    ("engine", 2),
    ("http", 3),
    ("cluster", 4),
    ("cache", 4),
    ("policy", 4),
];

/// The layer of the crate root (`lib.rs`).
const ROOT: &str = "lib";
const ROOT_LAYER: u8 = 5;

/// One reference: the file and line it is on, the folder it names.
#[derive(Clone, Debug)]
struct Ref {
    file: String,
    line: usize,
    to: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/`: `cache/slice/serve.rs` →
/// `[cache, slice, serve]`, `cache/mod.rs` → `[cache]`, `lib.rs` → `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (parts.is_empty() && stem == "lib")) {
        parts.push(stem.to_string());
    }
    parts
}

/// The source with comments, string and char literals blanked out (line
/// breaks kept, so line numbers stay right).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(rest) {
            // r"..", r#".."#, br#".."#
            let open = rest.iter().position(|&c| c == b'"').unwrap_or(0) + 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let mut j = i + open;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            let end = (j + close.len()).min(b.len());
            for &c in &b[i..end] {
                blank(&mut out, c);
            }
            i = end;
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                let n = if b[i] == b'\\' { 2 } else { 1 };
                for &c in &b[i..(i + n).min(b.len())] {
                    blank(&mut out, c);
                }
                i += n;
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\''), or a lifetime ('a).
            let len = if rest.get(1) == Some(&b'\\') {
                // '\n', '\'', '\u{1f}': the closing quote after the escape.
                rest.get(3..)
                    .and_then(|t| t.iter().position(|&c| c == b'\''))
                    .map(|p| p + 4)
            } else {
                // i is at an ASCII quote, so i + 1 is a char boundary.
                src[i + 1..]
                    .chars()
                    .next()
                    .map(char::len_utf8)
                    .filter(|&n| rest.get(1 + n) == Some(&b'\''))
                    .map(|n| n + 2)
            };
            match len {
                Some(n) => {
                    out.extend(std::iter::repeat_n(b' ', n));
                    i += n;
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("blanking keeps ASCII structure")
}

/// `Some(#count)` if `s` opens a raw (byte) string literal.
fn raw_string_start(s: &[u8]) -> Option<usize> {
    let s = s.strip_prefix(b"b").unwrap_or(s);
    let s = s.strip_prefix(b"r")?;
    let hashes = s.iter().take_while(|&&c| c == b'#').count();
    (s.get(hashes) == Some(&b'"')).then_some(hashes)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The identifier starting at `i` (after spaces), and where it ends.
fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    while i < s.len() && is_ident(s[i]) {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

/// The first identifier of each item of a `{a, b::c, d as e}` group that
/// starts at `open` (the `{`).
fn group_heads(s: &[u8], open: usize) -> Vec<(String, usize)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect = true;
    let mut i = open;
    while i < s.len() {
        match s[i] {
            b'{' => {
                depth += 1;
                if depth == 1 {
                    expect = true;
                }
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => expect = true,
            c if depth == 1 && expect && is_ident(c) => {
                let (id, end) = ident_at(s, i);
                heads.push((id, i));
                expect = false;
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

fn line_of(s: &[u8], at: usize) -> usize {
    s[..at].iter().filter(|&&c| c == b'\n').count() + 1
}

/// The top-level name a path from the crate root starts with, as a folder
/// (or `lib` for an item of `lib.rs`).
fn folder_of(head: &str, folders: &BTreeSet<String>) -> String {
    if folders.contains(head) {
        head.to_string()
    } else {
        ROOT.to_string()
    }
}

/// Every folder a file's code names through `crate::` (or a `super::`
/// chain that reaches the crate root).
fn references(file: &str, module: &[String], src: &str, folders: &BTreeSet<String>) -> Vec<Ref> {
    let code = code_only(src);
    let s = code.as_bytes();
    let mut refs = Vec::new();
    let mut push = |head: &str, at: usize| {
        if head.is_empty() || head == "self" {
            return;
        }
        refs.push(Ref {
            file: file.to_string(),
            line: line_of(s, at),
            to: folder_of(head, folders),
        });
    };
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(is_ident(s[i - 1]) || s[i - 1] == b':');
        if !boundary {
            i += 1;
            continue;
        }
        // How many levels up from this module the path starts (crate = all).
        let (climb, after) = if s[i..].starts_with(b"crate")
            && !s.get(i + 5).is_some_and(|&c| is_ident(c))
        {
            (module.len(), i + 5)
        } else if s[i..].starts_with(b"super") && !s.get(i + 5).is_some_and(|&c| is_ident(c)) {
            let mut n = 1;
            let mut j = i + 5;
            while s[j..].starts_with(b"::super") && !s.get(j + 7).is_some_and(|&c| is_ident(c)) {
                n += 1;
                j += 7;
            }
            // `super` in `a/b.rs` climbs from module `a::b` to `a`.
            (n, j)
        } else {
            i += 1;
            continue;
        };
        let mut j = after;
        while j < s.len() && s[j].is_ascii_whitespace() {
            j += 1;
        }
        if !s[j..].starts_with(b"::") {
            i = after;
            continue;
        }
        j += 2;
        while j < s.len() && s[j].is_ascii_whitespace() {
            j += 1;
        }
        let depth = module.len().saturating_sub(climb);
        if depth > 0 {
            // Still inside a top-level folder: its own files.
            i = j;
            continue;
        }
        if s.get(j) == Some(&b'{') {
            for (head, at) in group_heads(s, j) {
                push(&head, at);
            }
        } else {
            let (head, _) = ident_at(s, j);
            push(&head, i);
        }
        i = j;
    }
    refs
}

struct Graph {
    /// from folder → to folder → the references that make the edge.
    edges: BTreeMap<String, BTreeMap<String, Vec<Ref>>>,
}

fn graph_of(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let folders: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(root).ok()?;
            (rel.components().count() > 1).then(|| rel.iter().next())?
        })
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let mut edges: BTreeMap<String, BTreeMap<String, Vec<Ref>>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(root).expect("under src");
        let module = module_path(rel);
        let from = module.first().cloned().unwrap_or_else(|| ROOT.to_string());
        let src =
            std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        let name = rel.display().to_string();
        for r in references(&name, &module, &src, &folders) {
            if r.to != from {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(r.to.clone())
                    .or_default()
                    .push(r);
            }
        }
        edges.entry(from).or_default();
    }
    Graph { edges }
}

fn layer(folder: &str) -> Option<u8> {
    if folder == ROOT {
        return Some(ROOT_LAYER);
    }
    LAYERS.iter().find(|(f, _)| *f == folder).map(|&(_, l)| l)
}

fn show(refs: &[Ref]) -> String {
    refs.iter()
        .map(|r| format!("{}:{}", r.file, r.line))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Imports against the layer order (and folders missing from `LAYERS`).
fn layer_errors(g: &Graph) -> Vec<String> {
    let mut errors = Vec::new();
    for (from, tos) in &g.edges {
        let Some(lf) = layer(from) else {
            errors.push(format!(
                "folder `{from}` is not in LAYERS (tests/layout.rs): give it a layer"
            ));
            continue;
        };
        for (to, refs) in tos {
            let lt = layer(to).unwrap_or(ROOT_LAYER);
            let bad = if to == ROOT {
                Some("nothing may import lib.rs (it only wires the module)")
            } else if lt > lf {
                Some("a lower layer may not use a higher one")
            } else if lt == lf && lf < 4 {
                Some("folders of the same lower layer may not use each other")
            } else {
                None
            };
            if let Some(why) = bad {
                errors.push(format!("`{from}` imports `{to}`: {why} ({})", show(refs)));
            }
        }
    }
    errors
}

/// A cycle in the folder graph, as `a -> b -> a`, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for to in g.edges.get(n).into_iter().flat_map(|t| t.keys()) {
            match state.get(to.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == to).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(to.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(g, to, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.edges.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(g, n, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn cycle_error(g: &Graph, cycle: &[String]) -> String {
    let steps: Vec<String> = cycle
        .windows(2)
        .map(|w| format!("{} -> {} ({})", w[0], w[1], show(&g.edges[&w[0]][&w[1]])))
        .collect();
    format!("import cycle between folders: {}", steps.join("; "))
}

#[test]
fn folders_depend_one_way() {
    let g = graph_of(&src_dir());
    let mut errors = layer_errors(&g);
    if let Some(c) = find_cycle(&g) {
        errors.push(cycle_error(&g, &c));
    }
    assert!(
        errors.is_empty(),
        "layout rule broken:\n{}",
        errors.join("\n")
    );
}

#[test]
fn every_folder_has_a_mod_rs_that_says_what_lives_there() {
    let root = src_dir();
    for (folder, _) in LAYERS {
        let m = root.join(folder).join("mod.rs");
        let text = std::fs::read_to_string(&m)
            .unwrap_or_else(|e| panic!("{}: {e} (every layer folder needs a mod.rs)", m.display()));
        let doc = text.lines().take_while(|l| l.starts_with("//!")).count();
        assert!(
            doc >= 2,
            "{}: start with (at least) two //! lines",
            m.display()
        );
    }
}

/// The checker itself, on a small tree written to a temporary directory:
/// it must see grouped, inline and `super::` paths, and skip comments and
/// strings.
#[test]
fn the_check_sees_every_kind_of_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let write = |p: &str, text: &str| {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(f, text).expect("write");
    };
    write("lib.rs", "mod base; mod conf; mod http; mod cache;\n");
    write(
        "base/mod.rs",
        "//! a\n//! b\n// crate::cache in a comment\nconst S: &str = \"crate::http::x\";\n",
    );
    write("conf/mod.rs", "use crate::{base, http::reply};\n");
    write(
        "http/mod.rs",
        "fn f() { let c = '\"'; crate::cache::lookup(); }\n",
    );
    write("cache/mod.rs", "mod lookup;\n");
    write(
        "cache/lookup.rs",
        "use super::super::conf::X;\nuse super::sibling;\n",
    );
    let g = graph_of(root);
    let tos = |from: &str| -> Vec<&str> {
        g.edges
            .get(from)
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        tos("base"),
        Vec::<&str>::new(),
        "comments and strings are not code"
    );
    assert_eq!(tos("conf"), vec!["base", "http"], "grouped use");
    assert_eq!(
        tos("http"),
        vec!["cache"],
        "inline path after a char literal"
    );
    assert_eq!(tos("cache"), vec!["conf"], "super:: climbing to the root");
    let errors = layer_errors(&g);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`conf` imports `http`") && e.contains("conf/mod.rs:1")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("`http` imports `cache`")),
        "{errors:?}"
    );
    write("cache/lookup.rs", "use crate::http::x;\n");
    write("http/mod.rs", "use crate::cache::y;\n");
    let g = graph_of(root);
    let cycle = find_cycle(&g).expect("http <-> cache is a cycle");
    let text = cycle_error(&g, &cycle);
    assert!(
        text.contains("cache -> http") && text.contains("http -> cache"),
        "{text}"
    );
    assert!(text.contains("cache/lookup.rs:1"), "{text}");
}
