#!/usr/bin/env bash
# Cost of the edge policies on the hit path: the same rcdn node config with
# every policy on (hotlink file policy for the domain, guard with per-URL
# and per-client limits far above the load, traffic stats, JSON request
# log, scheduler with no nodes = serve locally) vs all off. Same nginx
# binary (release), same origin, same 4 KiB objects, all hits, 2 workers
# each; wrk rounds alternate between the two nodes; prints each round and
# the medians' ratio (target >= 0.9). Also the workers' CPU time per
# request (utime+stime / requests), steadier than req/s when the machine
# is shared: its ratio is off/on (1.0 = the policies cost nothing).
# Env: ROUNDS (default 5, at most 20), DURATION (s per round, default 5,
# at most 30), CONNS (default 32), THREADS (default 2), KEYS (default 1000),
# POLICIES (those the "on" node has, default "hotlink guard stats log sched",
# to see what each costs).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-5}
CONNS=${CONNS:-32}; THREADS=${THREADS:-2}; KEYS=${KEYS:-1000}
POLICIES=${POLICIES:-hotlink guard stats log sched}
has() { case " $POLICIES " in *" $1 "*) return 0 ;; esac; return 1; }
. nginx-module/bench/lib.sh
setup /tmp/rcdn-bench-policies.XXXXXX

PREFIX=/o4k/
mkdir -p "$DIR/www/o4k"
head -c 4096 /dev/urandom > "$DIR/www/o4k/0"
for i in $(seq 1 $((KEYS - 1))); do ln "$DIR/www/o4k/0" "$DIR/www/o4k/$i"; done
# wrk sends Host: 127.0.0.1:<port> and no Referer: the policy allows that.
printf '[{"domain": "127.0.0.1", "allow": ["example.com", "*.example.com"], "allow_empty": true}]\n' > "$DIR/hotlink.json"
printf '# no nodes: this node serves every client itself\n' > "$DIR/sched.txt"
chmod 644 "$DIR/hotlink.json" "$DIR/sched.txt"

OP=$(free_port); ON=$(free_port); OFF=$(free_port)
COMMON="daemon off; master_process on; worker_processes 2; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; }"
STORE="max_object=2m default_ttl=1h"
start origin "$COMMON http { access_log off; server { listen 127.0.0.1:$OP; root $DIR/www; } }"
start off "load_module $SO; $COMMON http { access_log off;
  rcdn_store mem=256m $STORE tier=$DIR/off/store,size=256m,region=16m ram=$SHM/off;
  server { listen 127.0.0.1:$OFF reuseport; location / { rcdn_cache on; proxy_pass http://127.0.0.1:$OP; } } }"
HTTP_ON="rcdn_node_name bench-on;"; LOC_ON=""
has stats && HTTP_ON="$HTTP_ON rcdn_stats_zone 4m;"
has log && HTTP_ON="$HTTP_ON log_format rcdn_json escape=none '\$rcdn_log_json';
  access_log logs/requests.json rcdn_json buffer=64k flush=1s;"
has log || HTTP_ON="$HTTP_ON access_log off;"
has guard && HTTP_ON="$HTTP_ON rcdn_guard_zone 4m;" && LOC_ON="$LOC_ON
      rcdn_guard challenge=1000000 block=10000000 window=5m ip_challenge=1000000 ip_block=10000000;"
has hotlink && LOC_ON="$LOC_ON rcdn_hotlink $DIR/hotlink.json; rcdn_hotlink_unknown refuse;"
has sched && LOC_ON="$LOC_ON rcdn_scheduler $DIR/sched.txt;"
start on "load_module $SO; $COMMON http {
  rcdn_store mem=256m $STORE tier=$DIR/on/store,size=256m,region=16m ram=$SHM/on;
  $HTTP_ON
  server { listen 127.0.0.1:$ON reuseport;
    location / { rcdn_cache on; proxy_pass http://127.0.0.1:$OP; $LOC_ON }
    location /stats { rcdn_stats json; } } }"
wait_ports $OP $ON $OFF

# Warm both (several passes: connections land on either worker), then
# check that both hit and answer the object.
for p in $ON $OFF; do
  PREFIX=/o4k/ KEYS=$KEYS wrk -t1 -c8 -d3s -s nginx-module/bench/warm.lua "http://127.0.0.1:$p" >/dev/null
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %header{x-cache}' "http://127.0.0.1:$p/o4k/1")
  [ "${got% *}" = "200 4096" ] || { echo "bench: port $p answered $got" >&2; exit 1; }
done

ab_rounds on "$ON" off "$OFF"
# The policies really ran: requests counted, logged, no guard decisions.
echo "on-node policies: $POLICIES"
if has stats; then
  stats=$(curl -s "http://127.0.0.1:$ON/stats")
  echo "$stats" | python3 -c 'import json,sys; v=json.load(sys.stdin)["all"]["total"]; print("on-node stats: requests=%d hit=%d guard_challenged=%d guard_blocked=%d hotlink_denied=%d" % (v["requests"], v["hit"], v["guard_challenged"], v["guard_blocked"], v["hotlink_denied"]))'
fi
has log && echo "on-node JSON log lines: $(wc -l < "$DIR/on/logs/requests.json")"
echo "ratio = on / off req/s, off/on = CPU per request off / on; medians of $ROUNDS alternating rounds of ${DURATION}s (target >= 0.9)"
