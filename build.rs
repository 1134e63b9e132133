//! Regenerates `include/cdncore.h` from `src/ffi` with cbindgen, and gives
//! the shared library a versioned soname.
//!
//! The header is committed; CI rebuilds it and fails if it changed
//! (`git diff --exit-code include/`). Generation problems only warn (a
//! downstream build never fails because of the header), unless
//! `CDNCORE_HEADER_STRICT=1`, which `make` sets so CI sees real errors.

use std::path::{Path, PathBuf};

/// Major version of the C ABI; bump with `CDN_ABI_VERSION` on breaking changes.
const SONAME_MAJOR: &str = "0";

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/stats.rs");
    println!("cargo:rerun-if-changed=src/fill/group.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    // A hand edit of the header is undone (and then caught by `git diff`).
    println!("cargo:rerun-if-changed=include/cdncore.h");
    println!("cargo:rerun-if-env-changed=CDNCORE_HEADER_STRICT");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcdncore.so.{SONAME_MAJOR}");
    }
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    if let Err(e) = write_header(&dir) {
        if std::env::var("CDNCORE_HEADER_STRICT").as_deref() == Ok("1") {
            panic!("cdncore.h: {e}");
        }
        println!("cargo:warning=cdncore.h not regenerated: {e}");
    }
}

fn write_header(dir: &Path) -> Result<(), String> {
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .map_err(|e| format!("cbindgen.toml: {e}"))?;
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi/mod.rs"))
        .with_src(dir.join("src/stats.rs"))
        .with_src(dir.join("src/fill/group.rs"))
        .generate()
        .map_err(|e| format!("cbindgen: {e}"))?;
    let mut text = Vec::new();
    bindings.write(&mut text);
    let path = dir.join("include/cdncore.h");
    // Rewrite only on change: an untouched header keeps its mtime, and a
    // read-only source tree (a vendored dependency) is fine when it is current.
    if std::fs::read(&path).ok().as_deref() == Some(&text[..]) {
        return Ok(());
    }
    std::fs::create_dir_all(dir.join("include")).map_err(|e| format!("include/: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}
