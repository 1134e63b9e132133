#!/usr/bin/env bash
# Installs libcdncore (shared library with its soname links, static library),
# include/cdncore.h and a cdncore.pc pkg-config file under PREFIX.
#   scripts/install.sh [PREFIX]      (default /usr/local; `make install PREFIX=...`)
# Builds the release library first unless CDNCORE_NO_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${1:-${PREFIX:-/usr/local}}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
MAJOR="${VERSION%%.*}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ "${CDNCORE_NO_BUILD:-0}" != 1 ]; then
  CDNCORE_HEADER_STRICT=1 cargo build --release --lib
fi
lib="$PREFIX/lib"; inc="$PREFIX/include"; pc="$lib/pkgconfig"
install -d "$lib" "$inc" "$pc"
install -m 0755 "$TARGET_DIR/release/libcdncore.so" "$lib/libcdncore.so.$VERSION"
ln -sf "libcdncore.so.$VERSION" "$lib/libcdncore.so.$MAJOR"
ln -sf "libcdncore.so.$MAJOR" "$lib/libcdncore.so"
install -m 0644 "$TARGET_DIR/release/libcdncore.a" "$lib/libcdncore.a"
install -m 0644 include/cdncore.h "$inc/cdncore.h"
# Libs.private: what `rustc --print native-static-libs` lists for a static link.
cat > "$pc/cdncore.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: cdncore
Description: rcdn cache engine (C ABI)
Version: $VERSION
Cflags: -I\${includedir}
Libs: -L\${libdir} -lcdncore
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
PC
echo "installed libcdncore $VERSION into $PREFIX"
