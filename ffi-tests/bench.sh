#!/usr/bin/env bash
# get-hit through the C ABI vs the same loop in Rust, in one run on one
# machine; prints medians and the ratio (`make bench-ffi`). GETS per round
# (default 1000000) is the first argument.
set -euo pipefail
cd "$(dirname "$0")/.."
GETS="${1:-1000000}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cdn-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
bash scripts/install.sh "$WORK/prefix" >/dev/null
cargo build --release --example ffi_get_bench -q
export PKG_CONFIG_PATH="$WORK/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -o "$WORK/bench_get" ffi-tests/bench_get.c \
  $(pkg-config --cflags --libs cdncore) -Wl,-rpath,"$WORK/prefix/lib"
# Alternate the two programs so machine noise hits both alike.
for _ in 1 2 3; do
  "$WORK/bench_get" "$GETS" 2>/dev/null
  target/release/examples/ffi_get_bench "$GETS" 2>/dev/null
done >"$WORK/results"
median() { awk -v k="$1" '$1 == k { print $2 }' "$WORK/results" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
rust=$(median rust_get_ns)
zc=$(median c_get_zero_copy_ns)
cp=$(median c_get_copy_ns)
awk -v r="$rust" -v z="$zc" -v c="$cp" 'BEGIN {
  printf "rust get-hit             %6.1f ns  (median of 3 runs, each the median of 9 rounds)\n", r
  printf "C ABI get + body + free  %6.1f ns  ratio C/Rust %.2f\n", z, z / r
  printf "C ABI get_copy (1 KiB)   %6.1f ns  ratio C/Rust %.2f\n", c, c / r
}'
