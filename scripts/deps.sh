#!/usr/bin/env bash
# Installs the system packages the build and the tests need, if any is missing.
# Debian/Ubuntu; run as root (CI is). Safe to run again: it does nothing when
# everything is present.
set -euo pipefail
PKGS=(build-essential pkg-config valgrind libssl-dev libpcre2-dev zlib1g-dev libclang-dev curl wrk strace)
PKGS+=(golang-go) # C ABI: Go tests through cgo (ffi-tests/go)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
