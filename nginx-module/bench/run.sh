#!/usr/bin/env bash
# Node benchmark on loopback, one run, three fronts on one origin and one
# set of objects (10k x 4 KiB, 10k x 16 KiB, 100 x 1 MiB):
#   rcdn       the module, configured as in the README: rcdn_store mem=256m
#              tier=<disk dir>,size=2g,region=32m (the shared RAM tier in
#              /dev/shm, the block tier on disk), sendfile on, tcp_nopush on
#   proxy_cache nginx proxy_cache (keys_zone + proxy_cache_path on disk) with
#              open_file_cache, sendfile on, tcp_nopush on
#   static     nginx serving the same files (sendfile, open_file_cache)
# Same nginx binary (release, vendored). For worker_processes 2 and then 4
# (WORKERS): start, warm every key, measure memory after warm-up (RSS and
# PSS summed over master + workers from /proc/<pid>/smaps_rollup; the RAM
# tier's tmpfs use; rcdn's footprint: PSS outside the RAM tier's region
# mappings + its tmpfs use, i.e. every RAM-tier page once, mapped or not;
# nginx-module/bench/memory.sh breaks it down), then ROUNDS rounds of every row (4 KiB over 10k URLs,
# 16 KiB over 10k URLs, 1 MiB hot hits over 100 URLs; each row DURATION s
# of `wrk -t2 -c64`), the three fronts in a rotating order, first unpinned
# (as a user runs it), then pinned (servers on CPU 0, wrk on CPU 1, moved
# with taskset). Prints every round and the medians: req/s and CPU
# microseconds per request (utime+stime of master + workers over the
# round, from /proc/<pid>/stat), machine CPU per request (busy time of
# all CPUs from /proc/stat: servers, wrk and softirqs wherever they ran;
# wrk is the same client for every front) and, pinned, the servers' core
# 0 per request, with ratios against proxy_cache. Why machine CPU: on
# loopback the kernel transmits a socket's queued data in the softirq of
# whichever CPU handles the peer's ACK, so part of a server's sending can
# be charged to the client's process (docs/nginx.md §Benchmark).
# Env: ROUNDS (default 3, 1..20), DURATION (s per row, default 5, 1..30),
#   WORKERS (default "2 4"), PINS (default "unpinned pinned"), CONNS (64),
#   THREADS (2), RCDN_EXTRA (more rcdn_store tokens, e.g. promote_max=8m),
#   BASE_SO (a module .so built from another commit, e.g. main before a
#   change): also runs it as front "base" with rcdn's config, and prints
#   rcdn/base ratios (the "no regression" check of a change).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-5}
CONNS=${CONNS:-64}; THREADS=${THREADS:-2}
WORKERS=${WORKERS:-"2 4"}; PINS=${PINS:-"unpinned pinned"}
. nginx-module/bench/lib.sh
# The block tier and proxy_cache's files under /var/tmp: a disk, not tmpfs,
# on most systems.
setup /var/tmp/rcdn-bench.XXXXXX
command -v taskset >/dev/null || PINS=unpinned
[ "$(nproc)" -ge 2 ] || PINS=unpinned
echo "bench: caches on $(stat -f -c %T "$DIR"), RAM tier on $(stat -f -c %T "$SHM")" >&2
echo "generating objects..." >&2
make_objects "$DIR/www"

# name -> master pid and its workers
procs() { local m; m=$(cat "$DIR/$1/logs/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
cpu_ticks() { # name -> utime+stime of master + workers (all their threads)
  local t=0 p
  for p in $(procs "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $t
}
mem_kib() { # name -> "rss_kib pss_kib"
  local rss=0 pss=0 p
  for p in $(procs "$1"); do
    read -r r s < <(awk '/^Rss:/ {r=$2} /^Pss:/ {s=$2} END {print r, s}' "/proc/$p/smaps_rollup")
    rss=$((rss + r)); pss=$((pss + s))
  done
  echo "$rss $pss"
}
ram_pss_kib() { # name -> PSS of its RAM-tier region mappings
  local t=0 p
  for p in $(procs "$1"); do
    t=$((t + $(awk -v d="$SHM/$1/region." 'index($0, d) && !/\(deleted\)$/ && /^[0-9a-f]+-/ {m=1; next} /^[0-9a-f]+-/ {m=0} m && /^Pss:/ {s+=$2} END {print s+0}' "/proc/$p/smaps")))
  done
  echo $t
}
pin() { # name cpus: move master, workers and all their threads
  local p
  for p in $(procs "$1"); do taskset -a -p -c "$2" "$p" >/dev/null; done
}

busy_ticks() { # cpu line of /proc/stat ("cpu" = all) -> user+nice+system+irq+softirq+steal
  awk -v c="$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}
one() { # name port prefix keys client_prefix -> "req/s cpu_us machine_us core0_us" (per request)
  local before after mb ma cb ca out reqs rps
  before=$(cpu_ticks "$1"); mb=$(busy_ticks cpu); cb=$(busy_ticks cpu0)
  out=$(PREFIX=$3 KEYS=$4 $5 wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s nginx-module/bench/keys.lua "http://127.0.0.1:$2")
  after=$(cpu_ticks "$1"); ma=$(busy_ticks cpu); ca=$(busy_ticks cpu0)
  echo "$out" | grep -E "Socket errors|Non-2xx" | sed "s|^|bench: $1 $3: |" >&2 || true
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  awk -v r="$rps" -v d=$((after - before)) -v m=$((ma - mb)) -v c=$((ca - cb)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { k = 1e6 / hz / (n > 0 ? n : 1); printf "%s %.1f %.1f %.1f\n", r, d * k, m * k, c * k }'
}

ROWS=("4KiB-10k /o4k/ 10000" "16KiB-10k /o16k/ 10000" "1MiB-hot /o1m/ 100")
FRONTS=(rcdn proxy_cache static)
[ -n "${BASE_SO:-}" ] && FRONTS+=(base)
SUMMARY=()
FAST="access_log off; sendfile on; tcp_nopush on;"
OFC="open_file_cache max=12000 inactive=1h; open_file_cache_valid 1h;"
OP=$(free_port)
start origin "daemon off; master_process on; worker_processes 2; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; } http { $FAST server { listen 127.0.0.1:$OP; root $DIR/www; } }"

for W in $WORKERS; do
  in_range WORKERS "$W" 1 16
  rm -rf "$DIR/rcdn" "$DIR/base" "$DIR/proxy_cache" "$DIR/static" "$SHM"/rcdn* "$SHM"/base
  RP=$(free_port); PP=$(free_port); SP=$(free_port); BP=$(free_port)
  COMMON="daemon off; master_process on; worker_processes $W; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; }"
  rcdn_conf() { # so name port
    echo "load_module $1; $COMMON http { $FAST
  rcdn_store mem=256m ${RCDN_EXTRA:-} tier=$DIR/$2/store,size=2g,region=32m ram=$SHM/$2;
  server { listen 127.0.0.1:$3; location / { rcdn_cache on; proxy_pass http://127.0.0.1:$OP; add_header X-Cache \$rcdn_cache_status; } } }"
  }
  start rcdn "$(rcdn_conf "$SO" rcdn "$RP")"
  [ -n "${BASE_SO:-}" ] && start base "$(rcdn_conf "$BASE_SO" base "$BP")"
  start proxy_cache "$COMMON http { $FAST $OFC
  proxy_cache_path $DIR/proxy_cache/cache levels=1:2 keys_zone=z:64m max_size=2g inactive=1h;
  server { listen 127.0.0.1:$PP; location / { proxy_cache z; proxy_cache_valid 200 1h; proxy_pass http://127.0.0.1:$OP; add_header X-Cache \$upstream_cache_status; } } }"
  start static "$COMMON http { $FAST $OFC server { listen 127.0.0.1:$SP; root $DIR/www; } }"
  wait_ports "$OP" "$RP" "$PP" "$SP" ${BASE_SO:+"$BP"}
  declare -A PORT=([rcdn]=$RP [proxy_cache]=$PP [static]=$SP [base]=$BP)

  echo "bench: $W workers: warming..." >&2
  for s in "${FRONTS[@]}"; do
    for row in "${ROWS[@]}"; do
      set -- $row
      # Every key twice, in order (a fill, then a hit).
      for _ in 1 2; do
        PREFIX=$2 KEYS=$3 wrk -t1 -c16 -d"$(( $3 > 1000 ? 6 : 2 ))s" -s nginx-module/bench/warm.lua "http://127.0.0.1:${PORT[$s]}" >/dev/null
      done
      [ "$s" = static ] && continue
      for k in 0 $(( $3 / 2 )) $(( $3 - 1 )); do
        got=$(curl -s -o /dev/null -w '%{http_code} %header{x-cache}' "http://127.0.0.1:${PORT[$s]}$2$k")
        [ "$got" = "200 HIT" ] || echo "bench: warning: $s $2$k answered $got after warm-up" >&2
      done
    done
  done
  read -r rss pss <<< "$(mem_kib rcdn)"
  read -r prss ppss <<< "$(mem_kib proxy_cache)"
  tmpfs=$(du -sk "$SHM/rcdn" | awk '{print $1}')
  foot=$((pss - $(ram_pss_kib rcdn) + tmpfs))
  MEM="workers=$W cached=$((CACHED_KIB / 1024))MiB rcdn: RSS $((rss / 1024))MiB PSS $((pss / 1024))MiB (PSS/cached $(ratio "$pss" "$CACHED_KIB")) RAM-tier tmpfs $((tmpfs / 1024))MiB footprint $((foot / 1024))MiB ($(ratio "$foot" "$CACHED_KIB")x cached); proxy_cache: RSS $((prss / 1024))MiB PSS $((ppss / 1024))MiB"
  echo "$MEM"
  SUMMARY+=("$MEM")

  for P in $PINS; do
    CLIENT=""
    if [ "$P" = pinned ]; then
      for s in "${FRONTS[@]}"; do pin "$s" 0; done
      CLIENT="taskset -c 1"
    fi
    declare -A RPS=() CPU=() MCH=() CORE=()
    printf "\n%-8s %-7s %-6s %-12s %-12s %10s %10s %10s %10s\n" workers pin round row front req/s cpu_us machine_us core0_us
    for r in $(seq 1 "$ROUNDS"); do
      for row in "${ROWS[@]}"; do
        set -- $row
        # Rotate the order of the fronts each round, so drift is shared.
        for i in "${!FRONTS[@]}"; do
          s=${FRONTS[$(( (i + r) % ${#FRONTS[@]} ))]}
          read -r rps cpu mch core <<< "$(one "$s" "${PORT[$s]}" "$2" "$3" "$CLIENT")"
          RPS[$1,$s]="${RPS[$1,$s]:-} $rps"; CPU[$1,$s]="${CPU[$1,$s]:-} $cpu"
          MCH[$1,$s]="${MCH[$1,$s]:-} $mch"; CORE[$1,$s]="${CORE[$1,$s]:-} $core"
          printf "%-8s %-7s %-6s %-12s %-12s %10s %10s %10s %10s\n" "$W" "$P" "$r" "$1" "$s" "$rps" "$cpu" "$mch" "$core"
        done
      done
    done
    for row in "${ROWS[@]}"; do
      set -- $row
      declare -A MR=() MC=() MM=() M0=()
      for s in "${FRONTS[@]}"; do
        MR[$s]=$(printf '%s\n' ${RPS[$1,$s]} | median); MC[$s]=$(printf '%s\n' ${CPU[$1,$s]} | median)
        MM[$s]=$(printf '%s\n' ${MCH[$1,$s]} | median); M0[$s]=$(printf '%s\n' ${CORE[$1,$s]} | median)
      done
      line=$(printf "median workers=%s %-8s %-10s rcdn %9.0f req/s %7.1f us (machine %7.1f) | proxy_cache %9.0f %7.1f (%7.1f) | static %9.0f %7.1f (%7.1f) | rcdn/proxy_cache req/s %s cpu %s machine %s | static/proxy_cache req/s %s cpu %s machine %s" \
        "$W" "$P" "$1" "${MR[rcdn]}" "${MC[rcdn]}" "${MM[rcdn]}" "${MR[proxy_cache]}" "${MC[proxy_cache]}" "${MM[proxy_cache]}" \
        "${MR[static]}" "${MC[static]}" "${MM[static]}" \
        "$(ratio "${MR[rcdn]}" "${MR[proxy_cache]}")" "$(ratio "${MC[rcdn]}" "${MC[proxy_cache]}")" "$(ratio "${MM[rcdn]}" "${MM[proxy_cache]}")" \
        "$(ratio "${MR[static]}" "${MR[proxy_cache]}")" "$(ratio "${MC[static]}" "${MC[proxy_cache]}")" "$(ratio "${MM[static]}" "${MM[proxy_cache]}")")
      [ "$P" = pinned ] && line+=$(printf " | servers' core 0: rcdn %.1f proxy_cache %.1f static %.1f us, rcdn/proxy_cache %s" \
        "${M0[rcdn]}" "${M0[proxy_cache]}" "${M0[static]}" "$(ratio "${M0[rcdn]}" "${M0[proxy_cache]}")")
      echo "$line"; SUMMARY+=("$line")
      if [ -n "${BASE_SO:-}" ]; then
        line=$(printf "median workers=%s %-8s %-10s rcdn/base req/s %s cpu %s machine %s" "$W" "$P" "$1" \
          "$(ratio "${MR[rcdn]}" "${MR[base]}")" "$(ratio "${MC[rcdn]}" "${MC[base]}")" "$(ratio "${MM[rcdn]}" "${MM[base]}")")
        echo "$line"; SUMMARY+=("$line")
      fi
    done
    if [ "$P" = pinned ]; then
      all=$(seq -s, 0 $(( $(nproc) - 1 )))
      for s in "${FRONTS[@]}"; do pin "$s" "$all"; done
    fi
  done
  # Stop this worker count's fronts (by PID; the origin stays).
  for s in "${FRONTS[@]}"; do
    m=$(cat "$DIR/$s/logs/nginx.pid"); kill -TERM "$m"
    for _ in $(seq 1 100); do kill -0 "$m" 2>/dev/null || break; sleep 0.1; done
  done
done

echo
echo "== summary (medians of $ROUNDS rounds of ${DURATION}s, wrk -t$THREADS -c$CONNS; cpu = us of server CPU per request; ratios vs proxy_cache in the same run)"
printf '%s\n' "${SUMMARY[@]}"
echo "targets: 1MiB-hot rcdn/proxy_cache cpu (machine; per process beside it) <= 1.0 and req/s >= 1.0; 4KiB-10k cpu <= 0.8; rcdn footprint (>= PSS) <= 1.5x cached with 2 workers and growing with 4 by no more than proxy_cache's PSS"
