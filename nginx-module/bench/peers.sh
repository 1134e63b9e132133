#!/usr/bin/env bash
# Cluster benchmark on loopback, one run, ratios:
# 1. Origin requests per unique object when every object is requested once
#    on each of 3 nodes (requests round-robin over the nodes):
#    3 rcdn nodes (rcdn_peer ring)  vs  3 independent nginx proxy_cache nodes.
#    Target: 1.0 for rcdn (the limit) against ~3.0.
# 2. wrk req/s on one node (A) of hits filled from a peer (A misses, the
#    owner has it: one hop, stored on A) vs local hits on A.
# Same vendored nginx binary, worker_processes 2 everywhere, 4 KiB objects.
# Env: N (objects for part 1, default 2000), M (objects for part 2, default
# 50000: more than the peer-fill run can use up), DURATION (s, default 2), CONNS (default 32), PEER_POOLS (default 1:
# keepalive upstream blocks for the peers; 0: plain addresses).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-2000}
M=${M:-50000}
DURATION=${DURATION:-2}
CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench: python3 is missing" >&2; exit 1; }

cargo build --release -p ngx_http_rcdn_module --features vendored >&2
NGINX=$(ls -t target/release/build/nginx-sys-*/out/objs/nginx | head -1)
SO=$PWD/target/release/libngx_http_rcdn_module.so
DIR=$(mktemp -d /tmp/rcdn-peers-bench.XXXXXX)
SHM=$(mktemp -d /dev/shm/rcdn-bench.XXXXXX) # the RAM tiers (ram=$SHM/<name>)
chmod 755 "$SHM"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR" "$SHM"
}
trap cleanup EXIT INT TERM
chmod 755 "$DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "generating $N + $M objects..." >&2
python3 - "$DIR/www" "$N" "$M" <<'PY'
import os, sys
root, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for name, count in (("a", n), ("b", m), ("c", m)):
    os.makedirs(f"{root}/{name}")
    for i in range(count):
        with open(f"{root}/{name}/{i}", "wb") as f:
            f.write(os.urandom(4096))
PY

start() { # name conf
  mkdir -p "$DIR/$1/logs"
  printf '%s\n' "$2" > "$DIR/$1/nginx.conf"
  "$NGINX" -p "$DIR/$1" -c "$DIR/$1/nginx.conf" &
  PIDS+=($!)
}
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "bench: port $1 not up" >&2; exit 1; }
COMMON="daemon off; master_process on; worker_processes 2; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; }"

# Two origins with the same files, one per system, each logging its requests.
ORP=$(free_port); OPP=$(free_port)
for o in "origin_r $ORP" "origin_p $OPP"; do
  set -- $o
  start "$1" "$COMMON http { log_format o '\$request_uri'; access_log logs/origin.log o; sendfile on;
    server { listen 127.0.0.1:$2; root $DIR/www; } }"
done

# Three rcdn nodes.
RA=$(free_port); RB=$(free_port); RC=$(free_port)
# Peers through upstream blocks with keepalive (upstream=); PEER_POOLS=0
# gives plain addresses (a new connection per peer fill).
if [ "${PEER_POOLS:-1}" = 1 ]; then
  PEERS="rcdn_peer a 127.0.0.1:$RA upstream=pa; rcdn_peer b 127.0.0.1:$RB upstream=pb; rcdn_peer c 127.0.0.1:$RC upstream=pc;
    upstream pa { server 127.0.0.1:$RA; keepalive 32; } upstream pb { server 127.0.0.1:$RB; keepalive 32; }
    upstream pc { server 127.0.0.1:$RC; keepalive 32; }"
else
  PEERS="rcdn_peer a 127.0.0.1:$RA; rcdn_peer b 127.0.0.1:$RB; rcdn_peer c 127.0.0.1:$RC;"
fi
for n in "a $RA" "b $RB" "c $RC"; do
  set -- $n
  start "rcdn_$1" "load_module $SO; $COMMON http { sendfile on;
    log_format p '\$request_uri hop=\$http_x_rcdn_hop'; access_log logs/access.log p;
    rcdn_store mem=256m max_object=2m default_ttl=1h tier=$DIR/rcdn_$1/store,size=1g,region=32m ram=$SHM/rcdn_$1;
    rcdn_node $1; $PEERS rcdn_origin origin;
    upstream origin { server 127.0.0.1:$ORP; keepalive 32; }
    server { listen 127.0.0.1:$2 reuseport; location / { rcdn_cache on;
      proxy_pass http://\$rcdn_upstream; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_set_header Host \$host; } } }"
done

# A lone rcdn node (no cluster): its misses go to the origin, for scale.
SOLO=$(free_port)
start rcdn_solo "load_module $SO; $COMMON http { sendfile on; access_log off;
  rcdn_store mem=256m max_object=2m default_ttl=1h tier=$DIR/rcdn_solo/store,size=1g,region=32m ram=$SHM/rcdn_solo;
  upstream origin { server 127.0.0.1:$ORP; keepalive 32; }
  server { listen 127.0.0.1:$SOLO reuseport; location / { rcdn_cache on;
    proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } } }"

# Three independent proxy_cache nodes.
PA=$(free_port); PB=$(free_port); PC=$(free_port)
for n in "a $PA" "b $PB" "c $PC"; do
  set -- $n
  start "pc_$1" "$COMMON http { access_log off; sendfile on;
    proxy_cache_path $DIR/pc_$1/cache levels=1:2 keys_zone=z:64m max_size=1g inactive=1h;
    upstream origin { server 127.0.0.1:$OPP; keepalive 32; }
    server { listen 127.0.0.1:$2 reuseport; location / { proxy_cache z; proxy_cache_valid 200 1h;
      proxy_cache_lock on; proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } } }"
done
for p in $ORP $OPP $RA $RB $RC $PA $PB $PC $SOLO; do wait_port "$p"; done

# fetch.py <prefix> <from> <to> <port>...: GET prefix+i for every i on every
# port (request k goes to port (i + pass) mod ports), 8 client threads;
# fails on any non-200 or short body.
cat > "$DIR/fetch.py" <<'PY'
import http.client, sys, threading
prefix, lo, hi, ports = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(p) for p in sys.argv[4:]]
jobs = [(i, ports[(i + k) % len(ports)]) for k in range(len(ports)) for i in range(lo, hi)]
bad = []
def work(t):
    conns = {}
    for j, (i, port) in enumerate(jobs):
        if j % 8 != t:
            continue
        c = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conns[port] = c
        try:
            c.request("GET", f"{prefix}{i}", headers={"Host": "bench"})
            r = c.getresponse(); body = r.read()
            if r.status != 200 or len(body) != 4096:
                bad.append((i, port, r.status, len(body)))
        except Exception as e:
            bad.append((i, port, str(e))); conns.pop(port, None)
ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
if bad:
    print(f"fetch: {len(bad)} bad answers, e.g. {bad[:3]}", file=sys.stderr); sys.exit(1)
PY

origin_count() { sleep 0.5; grep -c "^$2" "$DIR/$1/logs/origin.log" || true; }

echo "part 1: $N objects, each requested on all 3 nodes..." >&2
python3 "$DIR/fetch.py" /a/ 0 "$N" "$RA" "$RB" "$RC"
python3 "$DIR/fetch.py" /a/ 0 "$N" "$PA" "$PB" "$PC"
R_ORIGIN=$(origin_count origin_r /a/)
P_ORIGIN=$(origin_count origin_p /a/)

echo "part 2: warming $M objects through node b..." >&2
python3 "$DIR/fetch.py" /b/ 0 "$M" "$RB"
# Keys node a owns are the ones b asked a for (hop=b in a's log): leave
# them out, so every request in the peer run is a peer fill on a.
grep -o '^/b/[0-9]* hop=b' "$DIR/rcdn_a/logs/access.log" | cut -d' ' -f1 | sort -u > "$DIR/a_owned"
seq 0 $((M - 1)) | sed 's|^|/b/|' | sort | comm -23 - "$DIR/a_owned" | shuf > "$DIR/peer_paths"
cat > "$DIR/paths.lua" <<'LUA'
-- each wrk thread walks its own share of PATHS once (no repeats)
local paths = {}
for l in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = l end
local n, t, i = 0, 0, 0
local threads = {}
function setup(thread) thread:set("tid", #threads); threads[#threads + 1] = thread end
function init(args) t = tonumber(tid) or 0; n = #paths end
request = function()
  local p = paths[(t + i * 2) % n + 1]
  i = i + 1
  return wrk.format("GET", p, { Host = "bench" })
end
-- ONCE=1: a thread stops once its share is walked, so no key is asked
-- twice (every request is the first for its key).
local done = 0
response = function()
  done = done + 1
  if os.getenv("ONCE") == "1" and done >= n / 2 then wrk.thread:stop() end
end
LUA
seq 0 $((N - 1)) | sed 's|^|/a/|' > "$DIR/local_paths"

wrk_rps() { # paths-file once [port] -> "rps requests"
  local out; out=$(PATHS=$1 ONCE=$2 wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$DIR/paths.lua" "http://127.0.0.1:${3:-$RA}")
  echo "$out" | grep -E "Socket errors|Non-2xx" | sed "s|^|bench: |" >&2 || true
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '/requests in/ {print $1}')"
}
echo "part 2: wrk on node a..." >&2
read -r LOCAL_RPS _ <<< "$(wrk_rps "$DIR/local_paths" 0)"
read -r PEER_RPS PEER_REQS <<< "$(wrk_rps "$DIR/peer_paths" 1)"
seq 0 $((M - 1)) | sed 's|^|/c/|' | shuf > "$DIR/solo_paths"
read -r SOLO_RPS SOLO_REQS <<< "$(wrk_rps "$DIR/solo_paths" 1 "$SOLO")"
PEER_KEYS=$(wc -l < "$DIR/peer_paths")
# wrk measures over the whole duration: a run that used up its keys early
# would understate the rate.
[ "$PEER_REQS" -lt "$PEER_KEYS" ] || echo "bench: warning: the peer run used up its $PEER_KEYS keys; raise M" >&2
[ "$SOLO_REQS" -lt "$M" ] || echo "bench: warning: the lone-node run used up its $M keys; raise M" >&2

echo
printf "%-44s %10s %10s\n" "origin requests per unique object ($N objects)" rcdn proxy_cache
printf "%-44s %10s %10s\n" "" \
  "$(awk -v a="$R_ORIGIN" -v n="$N" 'BEGIN { printf "%.3f", a / n }')" \
  "$(awk -v a="$P_ORIGIN" -v n="$N" 'BEGIN { printf "%.3f", a / n }')"
echo
printf "%-44s %10s %10s\n" "node a, 4 KiB, wrk -c$CONNS ${DURATION}s" req/s ratio
printf "%-44s %10s %10s\n" "local hits" "$LOCAL_RPS" 1.00
printf "%-44s %10s %10s\n" "hits filled from a peer ($PEER_REQS new keys)" "$PEER_RPS" \
  "$(awk -v a="$PEER_RPS" -v b="$LOCAL_RPS" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
printf "%-44s %10s %10s\n" "lone node: misses filled from the origin" "$SOLO_RPS" \
  "$(awk -v a="$SOLO_RPS" -v b="$LOCAL_RPS" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
