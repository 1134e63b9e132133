#!/usr/bin/env bash
# Large objects that do not fit the memory tier: 1 MiB hits over a working
# set (KEYS x 1 MiB, default 100 MiB) bigger than the module's memory (16
# MiB per worker), so most hits come from the block tier on disk (warm in
# the page cache) and are sent with sendfile, as nginx's proxy_cache sends
# every hit. The module, with the default promotion (a hot block-tier hit
# is copied into memory) and with `promote_max=32k` (1 MiB hits stay in
# the page cache), each vs proxy_cache: same nginx binary (release), same
# origin and objects, 2 workers each; wrk rounds alternate; prints each
# round and the medians (req/s ratio, CPU per request ratio, p99).
# Env: ROUNDS (default 5, at most 20), DURATION (s per round, default 5, at
# most 30), CONNS (default 32), THREADS (default 2), KEYS (default 100).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-5}
CONNS=${CONNS:-32}; THREADS=${THREADS:-2}; KEYS=${KEYS:-100}
. nginx-module/bench/lib.sh
in_range KEYS "$KEYS" 40 1000
# Under /var/tmp: a disk, not tmpfs, on most systems.
setup /var/tmp/rcdn-bench-big.XXXXXX
PREFIX=/o1m/
echo "caches on: $(stat -f -c %T "$DIR")"

mkdir -p "$DIR/www/o1m"
for i in $(seq 0 $((KEYS - 1))); do head -c 1048576 /dev/urandom > "$DIR/www/o1m/$i"; done

OP=$(free_port); RP=$(free_port); NP=$(free_port); PP=$(free_port)
COMMON="daemon off; master_process on; worker_processes 2; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; }"
start origin "$COMMON http { access_log off; sendfile on; server { listen 127.0.0.1:$OP; root $DIR/www; } }"
# 16 MiB of memory per worker; slice=2m keeps a 1 MiB object one record
# in the tier, so it can be sent with sendfile.
for n in rcdn rcdn_pm; do
  port=$RP; extra=""
  [ $n = rcdn_pm ] && { port=$NP; extra="promote_max=32k"; }
  start $n "load_module $SO; $COMMON http { access_log off; sendfile on;
  rcdn_store mem=16m shards=4 max_object=2m $extra default_ttl=1h tier=$DIR/$n/store,size=1g,region=32m,slice=2m ram=$SHM/$n;
  server { listen 127.0.0.1:$port; location / { rcdn_cache on; add_header X-Cache \$rcdn_cache_status; proxy_pass http://127.0.0.1:$OP; } } }"
done
start proxy_cache "$COMMON http { access_log off; sendfile on;
  proxy_cache_path $DIR/proxy_cache/cache levels=1:2 keys_zone=z:16m max_size=1g inactive=1h;
  server { listen 127.0.0.1:$PP; location / { proxy_cache z; proxy_cache_valid 200 1h; add_header X-Cache \$upstream_cache_status; proxy_pass http://127.0.0.1:$OP; } } }"
wait_ports $OP $RP $NP $PP

for p in $RP $NP $PP; do
  KEYS=$KEYS PREFIX=$PREFIX wrk -t1 -c4 -d4s -s nginx-module/bench/warm.lua "http://127.0.0.1:$p" >/dev/null
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %header{x-cache}' "http://127.0.0.1:$p/o1m/1")
  [ "$got" = "200 1048576 HIT" ] || { echo "bench: port $p answered $got" >&2; exit 1; }
done

ab_rounds rcdn "$RP" proxy_cache "$PP"
echo
ab_rounds rcdn_pm "$NP" proxy_cache "$PP"
echo "rcdn_pm: promote_max=32k"
echo "ratio = rcdn / proxy_cache req/s, proxy_cache/rcdn = CPU per request proxy_cache / rcdn; medians of $ROUNDS alternating rounds of ${DURATION}s; $KEYS keys of 1 MiB, 16 MiB memory per worker"
