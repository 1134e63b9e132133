#!/usr/bin/env bash
# Benchmark on loopback, one run, ratios against nginx proxy_cache:
#   rcdn module  vs  nginx proxy_cache (keys_zone + proxy_cache_path)  vs
#   nginx serving the same files statically (sendfile + open_file_cache),
#   and Varnish (malloc storage) when `varnishd` is installed.
# Same nginx binary (vendored), same origin, same objects, worker_processes 2.
# Reports req/s, p99 latency and server CPU time per request (workers'
# utime+stime / requests; steadier than req/s since wrk shares the cores).
# (open_file_cache max=12000: two 10k-file sets would exceed a 20000 fd limit.)
# Env: DURATION (s, default 5), CONNS (default 64), THREADS (default 2),
#   BASE_SO (a module .so built from another commit, e.g. main): also runs
#   it as server "base" with the same config, and prints rcdn/base ratios,
#   PIN (default 1 with 2+ CPUs and taskset): every server (nginx workers,
#   Varnish threads) runs on CPU 0 and wrk on CPU 1. Without pinning the
#   scheduler, not the server, decides req/s: measured on this machine,
#   Varnish's ~100 runnable threads got 2.8x the CPU time of nginx's two
#   workers in the same 4 s, so req/s rewarded thread count.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }

cargo build --release -p ngx_http_rcdn_module --features vendored >&2
NGINX=$(ls -t target/release/build/nginx-sys-*/out/objs/nginx | head -1)
SO=$PWD/target/release/libngx_http_rcdn_module.so
DIR=$(mktemp -d /tmp/rcdn-bench.XXXXXX)
SHM=$(mktemp -d /dev/shm/rcdn-bench.XXXXXX) # the RAM tiers (ram=$SHM/<name>)
chmod 755 "$SHM"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR" "$SHM"
}
trap cleanup EXIT INT TERM

PIN=${PIN:-1}
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  ON_SERVER="taskset -c 0"; ON_CLIENT="taskset -c 1"
  echo "bench: servers pinned to CPU 0, wrk to CPU 1 (PIN=0 to turn off)" >&2
else
  ON_SERVER=""; ON_CLIENT=""
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Workers run as nobody when started by root: they must be able to read.
chmod 755 "$DIR"
echo "generating objects..." >&2
python3 - "$DIR/www" <<'PY'
import os, sys, time
root = sys.argv[1]
# Dated 30 days back, as on a real origin: the Last-Modified heuristic
# (RFC 9111 §4.2.2) then gives a day of freshness; files written just now
# would be stale at once and every request would revalidate.
old = time.time() - 30 * 86400
for name, size, n in (("o4k", 4096, 10000), ("o16k", 16384, 10000), ("o1m", 1 << 20, 100)):
    os.makedirs(f"{root}/{name}")
    data = os.urandom(size)
    for i in range(n):
        with open(f"{root}/{name}/{i}", "wb") as f:
            f.write(data)
        os.utime(f"{root}/{name}/{i}", (old, old))
PY

OP=$(free_port); RP=$(free_port); PP=$(free_port); SP=$(free_port)
start() { # name conf
  mkdir -p "$DIR/$1/logs"
  printf '%s\n' "$2" > "$DIR/$1/nginx.conf"
  $ON_SERVER "$NGINX" -p "$DIR/$1" -c "$DIR/$1/nginx.conf" &
  PIDS+=($!)
}
COMMON="daemon off; master_process on; worker_processes 2; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; }"
start origin "$COMMON http { access_log off; sendfile on; server { listen 127.0.0.1:$OP; root $DIR/www; } }"
rcdn_conf() { # so name port
  echo "load_module $1; $COMMON http { access_log off; sendfile on;
  rcdn_store mem=1g max_object=2m default_ttl=1h tier=$DIR/$2/store,size=2g,region=32m ram=$SHM/$2;
  server { listen 127.0.0.1:$3; location / { rcdn_cache on; proxy_pass http://127.0.0.1:$OP; add_header X-Cache \$rcdn_cache_status; } } }"
}
start rcdn "$(rcdn_conf "$SO" rcdn "$RP")"
start proxy_cache "$COMMON http { access_log off; sendfile on;
  proxy_cache_path $DIR/proxy_cache/cache levels=1:2 keys_zone=z:64m max_size=2g inactive=1h;
  server { listen 127.0.0.1:$PP; location / { proxy_cache z; proxy_cache_valid 200 1h; proxy_pass http://127.0.0.1:$OP; } } }"
start static "$COMMON http { access_log off; sendfile on; tcp_nopush on; open_file_cache max=12000 inactive=1h; open_file_cache_valid 1h;
  server { listen 127.0.0.1:$SP; root $DIR/www; } }"
SERVERS="proxy_cache rcdn static"
BP=$(free_port)
if [ -n "${BASE_SO:-}" ]; then
  start base "$(rcdn_conf "$BASE_SO" base "$BP")"
  SERVERS="proxy_cache base rcdn static"
fi
VP=$(free_port)
if command -v varnishd >/dev/null; then
  mkdir -p "$DIR/varnish/logs"
  $ON_SERVER varnishd -F -a "127.0.0.1:$VP" -b "127.0.0.1:$OP" -s malloc,1G -n "$DIR/varnish/work" \
    -p default_ttl=3600 >"$DIR/varnish/logs/out.log" 2>&1 &
  PIDS+=($!)
  echo $! > "$DIR/varnish/logs/nginx.pid"
  SERVERS="$SERVERS varnish"
fi
ALL_PORTS="$OP $RP $PP $SP"
case $SERVERS in *varnish*) ALL_PORTS="$ALL_PORTS $VP" ;; esac
case $SERVERS in *base*) ALL_PORTS="$ALL_PORTS $BP" ;; esac
for p in $ALL_PORTS; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done

# Every server must answer 200 with the object's size (and rcdn must hit).
for p in $ALL_PORTS; do
  for _ in 1 2 3; do got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$p/o4k/1"); done
  [ "$got" = "200 4096" ] || { echo "bench: port $p answered $got" >&2; exit 1; }
done
for p in $RP ${BASE_SO:+$BP}; do
  [ "$(curl -s -o /dev/null -w '%header{x-cache}' "http://127.0.0.1:$p/o4k/1")" = HIT ] || echo "bench: warning: rcdn on $p did not HIT" >&2
done

workers_cpu() { # name -> total utime+stime ticks of its workers (varnish: its child)
  local master; master=$(cat "$DIR/$1/logs/nginx.pid")
  local t=0
  for w in $(pgrep -P "$master"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$w/stat")))
  done
  echo $t
}

run() { # name port prefix keys -> prints "rps p99 cpu_us_per_req"
  local name=$1 port=$2 prefix=$3 keys=$4
  # Warm every key, several passes: the module's caches are per worker
  # until the shared tiers land, and connections land on either worker.
  PREFIX=$prefix KEYS=$keys wrk -t1 -c16 -d"$(( keys > 1000 ? 8 : 2 ))s" -s nginx-module/bench/warm.lua "http://127.0.0.1:$port" >/dev/null
  local before; before=$(workers_cpu "$name")
  local out; out=$(PREFIX=$prefix KEYS=$keys $ON_CLIENT wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s nginx-module/bench/keys.lua "http://127.0.0.1:$port")
  local after; after=$(workers_cpu "$name")
  echo "$out" | grep -E "Socket errors|Non-2xx" | sed "s|^|bench: $name $prefix: |" >&2 || true
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local p99; p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local hz; hz=$(getconf CLK_TCK)
  local cpu; cpu=$(awk -v d=$((after - before)) -v n="$reqs" -v hz="$hz" 'BEGIN { printf "%.1f", d / hz * 1e6 / (n > 0 ? n : 1) }')
  echo "$rps $p99 $cpu"
}

printf "\n%-22s %-12s %12s %10s %12s %10s %10s\n" scenario server req/s p99 cpu_us/req rps_ratio cpu_ratio
for sc in "4KiB-1key /o4k/ 1" "4KiB-10k /o4k/ 10000" "16KiB-1key /o16k/ 1" "16KiB-10k /o16k/ 10000" "1MiB-100 /o1m/ 100"; do
  set -- $sc
  declare -A R=()
  for s in $SERVERS; do
    case $s in rcdn) p=$RP ;; base) p=$BP ;; proxy_cache) p=$PP ;; static) p=$SP ;; varnish) p=$VP ;; esac
    R[$s]=$(run "$s" "$p" "$2" "$3")
  done
  read -r brps _ bcpu <<< "${R[proxy_cache]}"
  for s in $SERVERS; do
    read -r rps p99 cpu <<< "${R[$s]}"
    rr=$(awk -v a="$rps" -v b="$brps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    cr=$(awk -v a="$cpu" -v b="$bcpu" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf "%-22s %-12s %12s %10s %12s %10s %10s\n" "$1" "$s" "$rps" "$p99" "$cpu" "$rr" "$cr"
  done
  if [ -n "${BASE_SO:-}" ]; then
    read -r arps _ acpu <<< "${R[rcdn]}"
    read -r zrps _ zcpu <<< "${R[base]}"
    awk -v n="$1" -v a="$arps" -v b="$zrps" -v c="$acpu" -v d="$zcpu" \
      'BEGIN { printf "%-22s %-12s %12s %10s %12s %10.3f %10.3f\n", n, "rcdn/base", "", "", "", (b > 0 ? a / b : 0), (d > 0 ? c / d : 0) }'
  fi
done
echo
echo "ratios are against proxy_cache in the same run (rps: higher is better; cpu: lower is better)"
