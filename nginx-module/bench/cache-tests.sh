#!/usr/bin/env bash
# The independent HTTP cache test suite (npm `http-cache-tests`, pinned
# 0.4.5, the suite behind cache-tests.fyi) against an rcdn node and, on the
# same nginx binary, stock nginx proxy_cache.
#
#   bash nginx-module/bench/cache-tests.sh [results dir]   (default target/cache-tests)
#
# The suite's own server is the origin (node, one per run); its CLI client
# (node) is pointed at each cache in turn. Both caches are configured as a
# new user would:
#   rcdn:        rcdn_store mem=64m default_ttl=0;  location / { rcdn_cache on; proxy_pass <origin>; }
#   proxy_cache: the suite's own docker/nginx config (keys_zone, proxy_cache,
#                proxy_cache_revalidate on), as for its published nginx figures.
# Output: <results dir>/<impl>.json (the CLI's results, the format of the
# suite's results/*.json), <results dir>/summary.txt (required passed/total
# per implementation, as the suite counts them, then the failed required
# tests of rcdn by theme), and the origin's and caches' logs beside them.
#
# Env:
#   RCDN_MODULE   the module .so (default: this checkout's debug build, built
#                 with `cargo build -p ngx_http_rcdn_module --features vendored`)
#   NGINX_BINARY  the nginx binary (default: this checkout's vendored objs/nginx)
#   IMPLS         which caches (default "rcdn proxy_cache"; "direct" = no cache)
#   RCDN_STORE    rcdn_store tokens (default "mem=64m default_ttl=0")
#   SUITE_DIR     where the suite is installed with npm (default
#                 target/http-cache-tests-0.4.5; never committed)
#   TEST_ID       run one test of the suite (its CLI then dumps the requests
#                 and responses of that test instead of writing JSON)
#   TIME_LIMIT    seconds one implementation's run may take (default 300)
# Needs node >= 14.8 and npm (the npm registry on first run). Every server
# listens on 127.0.0.1 on a free port; everything is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/nginx-module/bench
. "$BENCH/lib.sh"

VERSION=0.4.5
RESULTS=${1:-target/cache-tests}
IMPLS=${IMPLS:-rcdn proxy_cache}
RCDN_STORE=${RCDN_STORE:-mem=64m default_ttl=0}
SUITE_DIR=${SUITE_DIR:-target/http-cache-tests-$VERSION}
TEST_ID=${TEST_ID:-}
TIME_LIMIT=${TIME_LIMIT:-300}
in_range TIME_LIMIT "$TIME_LIMIT" 10 3600
for i in $IMPLS; do
  case $i in rcdn | proxy_cache | direct) ;; *) echo "cache-tests: unknown implementation $i" >&2; exit 1 ;; esac
done
command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "cache-tests: node and npm are needed (apt-get install nodejs npm)" >&2; exit 1; }

# The suite, installed from the npm registry into a scratch dir.
PKG=$SUITE_DIR/node_modules/http-cache-tests
have=$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("") }' "$ROOT/$PKG/package.json" 2>/dev/null || true)
if [ "$have" != "$VERSION" ]; then
  echo "cache-tests: installing http-cache-tests@$VERSION into $SUITE_DIR" >&2
  mkdir -p "$SUITE_DIR"
  # Its own package.json, so npm installs here and not in a parent folder.
  [ -f "$SUITE_DIR/package.json" ] || echo '{ "name": "rcdn-cache-tests", "private": true }' > "$SUITE_DIR/package.json"
  npm install --prefix "$SUITE_DIR" --no-audit --no-fund --no-save --no-package-lock --loglevel=error "http-cache-tests@$VERSION" >&2
fi
PKG=$(realpath "$PKG")

# The build under test.
built=0
build() {
  [ $built = 1 ] && return
  cargo build -p ngx_http_rcdn_module --features vendored >&2
  built=1
}
if [ -z "${RCDN_MODULE:-}" ] && [[ " $IMPLS " == *" rcdn "* ]]; then
  build
  RCDN_MODULE=$ROOT/target/debug/libngx_http_rcdn_module.so
fi
NGINX=""
if [ "$IMPLS" != direct ]; then
  NGINX=${NGINX_BINARY:-$(ls -t target/debug/build/nginx-sys-*/out/objs/nginx 2>/dev/null | head -1 || true)}
  if [ -z "$NGINX" ]; then
    build
    NGINX=$(ls -t target/debug/build/nginx-sys-*/out/objs/nginx | head -1)
  fi
  NGINX=$(realpath "$NGINX")
  [ -x "$NGINX" ] || { echo "cache-tests: no nginx binary at $NGINX" >&2; exit 1; }
fi
if [ -n "${RCDN_MODULE:-}" ]; then
  SO=$(realpath "$RCDN_MODULE")
  [ -f "$SO" ] || { echo "cache-tests: no module at $SO" >&2; exit 1; }
fi

PIDS=()
SHM=""
DIR=$(mktemp -d /tmp/rcdn-cache-tests.XXXXXX)
trap cleanup EXIT INT TERM
# Workers run as nobody when started by root: they must get through.
chmod 755 "$DIR"
mkdir -p "$RESULTS"
RESULTS=$(realpath "$RESULTS")

# The suite's origin. Its server.listen(port) would bind every interface:
# the preload binds it to 127.0.0.1.
OP=$(free_port)
(cd "$PKG" && exec env npm_package_config_protocol=http npm_package_config_port="$OP" \
  npm_package_config_pidfile="$DIR/origin.pid" \
  node --import "$BENCH/cache-tests-loopback.mjs" server/server.mjs) > "$DIR/origin.log" 2>&1 &
PIDS+=($!)

COMMON="daemon off; master_process on; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 1024; }"
declare -A PORT
for impl in $IMPLS; do
  case $impl in
    rcdn)
      PORT[$impl]=$(free_port)
      start rcdn "load_module $SO; $COMMON http { access_log logs/access.log;
  rcdn_store $RCDN_STORE;
  server { listen 127.0.0.1:${PORT[$impl]}; location / { rcdn_cache on; proxy_pass http://127.0.0.1:$OP; } } }"
      ;;
    proxy_cache)
      PORT[$impl]=$(free_port)
      start proxy_cache "$COMMON http { access_log logs/access.log;
  proxy_cache_path $DIR/proxy_cache/cache levels=1:2 keys_zone=my-cache:8m max_size=1000m inactive=600m;
  server { listen 127.0.0.1:${PORT[$impl]}; location / { proxy_pass http://127.0.0.1:$OP; proxy_cache my-cache; proxy_cache_revalidate on; } } }"
      ;;
    direct) PORT[$impl]=$OP ;;
  esac
done
wait_ports "$OP" "${PORT[@]}"
for p in "$OP" "${PORT[@]}"; do
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
    echo "cache-tests: nothing listens on $p" >&2
    cat "$DIR/origin.log" "$DIR"/*/logs/error.log >&2 2>/dev/null || true
    exit 1
  }
done
# Someone listens: make sure it is ours, not another program on that port.
if grep -hs "bind() to" "$DIR"/*/logs/error.log "$DIR/origin.log" >&2; then exit 1; fi
if grep -s EADDRINUSE "$DIR/origin.log" >&2; then exit 1; fi

# One run of the suite's CLI against port $2, bounded by TIME_LIMIT.
run_cli() { # impl port -> $RESULTS/impl.json (or the dump of TEST_ID on stdout)
  local out=$RESULTS/$1.json
  if [ -n "$TEST_ID" ]; then out=$RESULTS/$1.$TEST_ID.txt; fi
  (cd "$PKG" && exec env npm_config_base="http://127.0.0.1:$2" npm_package_config_base="" \
    npm_config_id="$TEST_ID" npm_package_config_id="" \
    timeout --kill-after=5 "$TIME_LIMIT" node --no-warnings cli.mjs) > "$out.tmp" 2> "$RESULTS/$1.stderr" &
  local pid=$!
  PIDS+=($pid)
  local rc=0
  wait "$pid" || rc=$?
  if [ $rc != 0 ]; then
    echo "cache-tests: $1: the suite's client exited with $rc (124: over TIME_LIMIT=${TIME_LIMIT}s)" >&2
    tail -5 "$RESULTS/$1.stderr" >&2
    return 1
  fi
  mv "$out.tmp" "$out"
}

SUMMARY=$RESULTS/summary.txt
{
  echo "http-cache-tests $VERSION, $(date -u '+%Y-%m-%d %H:%M UTC')${NGINX:+, nginx $("$NGINX" -v 2>&1 | sed 's|.*/||') ($NGINX)}"
  if [ -n "${SO:-}" ]; then
    echo "rcdn module: $SO (built from $(git -C "$(dirname "$SO")" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  fi
} > "$SUMMARY"
status=0
for impl in $IMPLS; do
  echo "cache-tests: running the suite against $impl (127.0.0.1:${PORT[$impl]})" >&2
  t0=$(date +%s)
  if ! run_cli "$impl" "${PORT[$impl]}"; then status=1; continue; fi
  echo "cache-tests: $impl done in $(($(date +%s) - t0)) s" >&2
  if [ -n "$TEST_ID" ]; then cat "$RESULTS/$impl.$TEST_ID.txt"; continue; fi
  node "$BENCH/cache-tests-summary.mjs" "$PKG" "$RESULTS/$impl.json" "$impl" >> "$SUMMARY" || status=1
done
if [ -z "$TEST_ID" ]; then
  # The suite's published results (its results/*.json: ATS 8.0.8, httpd
  # 2.4.46, Squid 4.13, nginx 1.18.0, Varnish 6.4.0), counted the same way.
  echo "published with the suite, counted the same way:" >> "$SUMMARY"
  for f in trafficserver apache squid nginx varnish; do
    node "$BENCH/cache-tests-summary.mjs" "$PKG" "$PKG/results/$f.json" "  $f" >> "$SUMMARY" || status=1
  done
fi
if [ -z "$TEST_ID" ] && [ -f "$RESULTS/rcdn.json" ] && [[ " $IMPLS " == *" rcdn "* ]]; then
  echo "failed required tests of rcdn, by the suite's test file:" >> "$SUMMARY"
  node "$BENCH/cache-tests-summary.mjs" "$PKG" "$RESULTS/rcdn.json" rcdn --failed | tail -n +2 >> "$SUMMARY" || status=1
fi
# Logs for a closer look (the temp dir goes at exit).
for impl in $IMPLS; do
  for f in error access; do
    if [ -f "$DIR/$impl/logs/$f.log" ]; then cp "$DIR/$impl/logs/$f.log" "$RESULTS/$impl.$f.log"; fi
  done
done
cp "$DIR/origin.log" "$RESULTS/origin.log"
if [ -z "$TEST_ID" ]; then cat "$SUMMARY"; fi
echo "cache-tests: results in $RESULTS" >&2
exit $status
