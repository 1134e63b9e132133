#!/usr/bin/env bash
# What the pass stream's backpressure costs a fast client: a 16 MiB
# response that is not stored (`Cache-Control: private`), downloaded by
# `wrk -c CONNS` through a node (1 worker, release build) running this
# tree's module, and through one running BASE_SO (a module .so from
# another commit, e.g. main before the change), same nginx binary, same
# origin (nginx serving the file). Rounds alternate; prints req/s (each
# request is 16 MiB), CPU per request, and the medians with their ratio.
# A client slower than the origin is what `rcdn_pass_buffer` is for: see
# nginx-module/tests/pass.rs (no timing there: bytes held, RSS, checksum).
# Env: BASE_SO (required), ROUNDS (default 5, at most 20), DURATION (s per
# round, default 5, at most 30), CONNS (default 4), THREADS (default 2),
# PASS_EXTRA (directives for this tree's node, e.g. "rcdn_pass_buffer 64m;").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-5}
CONNS=${CONNS:-4}; THREADS=${THREADS:-2}; KEYS=1; PASS_EXTRA=${PASS_EXTRA:-}
[ -f "${BASE_SO:-}" ] || { echo "bench: BASE_SO must name a module .so" >&2; exit 1; }
. nginx-module/bench/lib.sh
setup /var/tmp/rcdn-bench-pass.XXXXXX
PREFIX=/p/
mkdir -p "$DIR/www/p"
head -c $((16 << 20)) /dev/urandom > "$DIR/www/p/0"

OP=$(free_port); NEW=$(free_port); BASE=$(free_port)
COMMON="daemon off; master_process on; worker_processes 1; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 1024; }"
start origin "$COMMON http { access_log off; server { listen 127.0.0.1:$OP; root $DIR/www;
  location /p/ { add_header Cache-Control private; } } }"
node() { # name port so extra
  start "$1" "load_module $3; $COMMON http { access_log off; rcdn_store mem=64m;
  server { listen 127.0.0.1:$2; location / { rcdn_cache on; $4 proxy_pass http://127.0.0.1:$OP; } } }"
}
node new "$NEW" "$SO" "$PASS_EXTRA"
node base "$BASE" "$BASE_SO" ""
wait_ports "$OP" "$NEW" "$BASE"
for p in "$NEW" "$BASE"; do
  got=$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:$p/p/0")
  [ "$got" = $((16 << 20)) ] || { echo "bench: port $p sent $got bytes" >&2; exit 1; }
done
echo "16 MiB private response, wrk -t$THREADS -c$CONNS, ${DURATION}s rounds; new: ${PASS_EXTRA:-defaults}"
ab_rounds new "$NEW" base "$BASE"
