#!/usr/bin/env bash
# What `rcdn_io_threads` costs on the hit path when it cannot win: a
# working set bigger than the memory tier, so most hits are read from a
# block tier on disk (warm in the page cache: no read ever waits, so this
# is the price of the hand-off to a thread and back). Two nodes, same
# nginx binary (release), same origin and objects (16 KiB), 2 workers
# each, `rcdn_io_threads on` vs `off`; wrk rounds alternate; prints each
# round and the medians (req/s ratio on/off, CPU per request off/on, p99).
# What io threads buy (a cold read or a throttled write no longer stalls
# the other requests of the worker) is shown by nginx-module/tests/
# iothreads.rs with injected 1 s disk delays.
# Env: ROUNDS (default 5, at most 20), DURATION (s per round, default 5,
# at most 30), CONNS (default 32), THREADS (default 2), KEYS (default 4000).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-5}
CONNS=${CONNS:-32}; THREADS=${THREADS:-2}; KEYS=${KEYS:-4000}
. nginx-module/bench/lib.sh
in_range KEYS "$KEYS" 1000 20000
# Under /var/tmp: a disk, not tmpfs, on most systems.
setup /var/tmp/rcdn-bench-io.XXXXXX
PREFIX=/o16k/
echo "block tiers on: $(stat -f -c %T "$DIR")"

mkdir -p "$DIR/www/o16k"
head -c 16384 /dev/urandom > "$DIR/www/o16k/0"
for i in $(seq 1 $((KEYS - 1))); do ln "$DIR/www/o16k/0" "$DIR/www/o16k/$i"; done

OP=$(free_port); ON=$(free_port); OFF=$(free_port)
COMMON="daemon off; master_process on; worker_processes 2; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; }"
# 8 MiB of memory per worker for a 16 KiB x KEYS working set.
STORE="mem=8m max_object=1m default_ttl=1h"
start origin "$COMMON http { access_log off; server { listen 127.0.0.1:$OP; root $DIR/www; } }"
for n in on off; do
  port=$ON; [ $n = off ] && port=$OFF
  start $n "load_module $SO; $COMMON http { access_log off; rcdn_io_threads $n;
  rcdn_store $STORE tier=$DIR/$n/store,size=512m,region=16m ram=$SHM/$n;
  server { listen 127.0.0.1:$port reuseport; location / { rcdn_cache on; add_header X-Cache \$rcdn_cache_status; proxy_pass http://127.0.0.1:$OP; } } }"
done
wait_ports $OP $ON $OFF

for p in $ON $OFF; do
  KEYS=$KEYS PREFIX=$PREFIX wrk -t1 -c4 -d4s -s nginx-module/bench/warm.lua "http://127.0.0.1:$p" >/dev/null
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %header{x-cache}' "http://127.0.0.1:$p/o16k/1")
  [ "$got" = "200 16384 HIT" ] || { echo "bench: port $p answered $got" >&2; exit 1; }
done

ab_rounds on "$ON" off "$OFF"
echo "ratio = on / off req/s, off/on = CPU per request off / on; medians of $ROUNDS alternating rounds of ${DURATION}s; $KEYS keys of 16 KiB, 8 MiB memory per worker"
