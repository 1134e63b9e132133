# Shared by the A/B benchmarks (policies.sh, iothreads.sh, bighits.sh):
# sourced from the repository root, then `setup <dir template>` builds and
# sets NGINX, SO, DIR, SHM and PIDS. Every server listens on a free 127.0.0.1
# port and is stopped by PID when the script exits.

in_range() { # name value lo hi: exits with a message when out of range
  [ "$2" -ge "$3" ] 2>/dev/null && [ "$2" -le "$4" ] || { echo "bench: $1 must be $3..$4" >&2; exit 1; }
}

cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR" "${SHM:-}"
}

setup() { # mktemp template for DIR (e.g. /var/tmp/rcdn-bench-x.XXXXXX)
  in_range ROUNDS "$ROUNDS" 1 20
  in_range DURATION "$DURATION" 1 30
  command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
  cargo build --release -p ngx_http_rcdn_module --features vendored >&2
  NGINX=$(ls -t target/release/build/nginx-sys-*/out/objs/nginx | head -1)
  SO=$PWD/target/release/libngx_http_rcdn_module.so
  PIDS=()
  DIR=$(mktemp -d "$1")
  # The stores' shared RAM tiers (ram=$SHM/<name>), removed at exit.
  SHM=$(mktemp -d /dev/shm/rcdn-bench.XXXXXX)
  trap cleanup EXIT INT TERM
  chmod 755 "$DIR" "$SHM"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name conf: nginx with prefix $DIR/name
  mkdir -p "$DIR/$1/logs"
  printf '%s\n' "$2" > "$DIR/$1/nginx.conf"
  "$NGINX" -p "$DIR/$1" -c "$DIR/$1/nginx.conf" &
  PIDS+=($!)
}

wait_ports() { # port... (at most 10 s each)
  for p in "$@"; do
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
  done
}

workers_cpu() { # name -> utime+stime ticks of its workers
  local t=0
  for w in $(pgrep -P "$(cat "$DIR/$1/logs/nginx.pid")"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$w/stat")))
  done
  echo $t
}

round() { # name port -> "req/s cpu_us_per_req p99"
  local before; before=$(workers_cpu "$1")
  local out; out=$(PREFIX=$PREFIX KEYS=$KEYS wrk --latency -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s nginx-module/bench/keys.lua "http://127.0.0.1:$2")
  local after; after=$(workers_cpu "$1")
  echo "$out" | grep -E "Socket errors|Non-2xx" | sed "s|^|bench: $1: |" >&2 || true
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local p99; p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  awk -v r="$rps" -v d=$((after - before)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" -v p="$p99" \
    'BEGIN { printf "%s %.2f %s\n", r, d / hz * 1e6 / (n > 0 ? n : 1), p }'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }

ab_rounds() { # name_a port_a name_b port_b: alternating rounds, then medians
  local A=() B=() AC=() BC=() r a b arps acpu ap99 brps bcpu bp99
  printf "%-6s %12s %12s %9s %12s %12s %9s %9s %9s\n" round "$1 req/s" "$3 req/s" ratio "$1 cpu_us" "$3 cpu_us" "$3/$1" "$1 p99" "$3 p99"
  for r in $(seq 1 "$ROUNDS"); do
    # Alternate which goes first, so drift in the machine's load is shared.
    if [ $((r % 2)) -eq 1 ]; then a=$(round "$1" "$2"); b=$(round "$3" "$4"); else b=$(round "$3" "$4"); a=$(round "$1" "$2"); fi
    read -r arps acpu ap99 <<< "$a"; read -r brps bcpu bp99 <<< "$b"
    A+=("$arps"); B+=("$brps"); AC+=("$acpu"); BC+=("$bcpu")
    printf "%-6s %12s %12s %9s %12s %12s %9s %9s %9s\n" "$r" "$arps" "$brps" "$(ratio "$arps" "$brps")" "$acpu" "$bcpu" "$(ratio "$bcpu" "$acpu")" "$ap99" "$bp99"
  done
  local ma mb mca mcb
  ma=$(printf '%s\n' "${A[@]}" | median); mb=$(printf '%s\n' "${B[@]}" | median)
  mca=$(printf '%s\n' "${AC[@]}" | median); mcb=$(printf '%s\n' "${BC[@]}" | median)
  printf "%-6s %12s %12s %9s %12s %12s %9s\n" median "$ma" "$mb" "$(ratio "$ma" "$mb")" "$mca" "$mcb" "$(ratio "$mcb" "$mca")"
}

# The object set of run.sh and memory.sh under $1 (10k x 4 KiB, 10k x 16
# KiB, 100 x 1 MiB), dated 30 days back as on a real origin: the
# Last-Modified heuristic (RFC 9111 §4.2.2) then gives a day of freshness;
# files written just now would be stale at once and every request would
# revalidate. Sets CACHED_KIB.
make_objects() {
  python3 - "$1" <<'PY'
import os, sys, time
root = sys.argv[1]
old = time.time() - 30 * 86400
for name, size, n in (("o4k", 4096, 10000), ("o16k", 16384, 10000), ("o1m", 1 << 20, 100)):
    os.makedirs(f"{root}/{name}")
    for i in range(n):
        with open(f"{root}/{name}/{i}", "wb") as f:
            f.write(os.urandom(size))
        os.utime(f"{root}/{name}/{i}", (old, old))
PY
  CACHED_KIB=$((10000 * 4 + 10000 * 16 + 100 * 1024))
}
