#!/usr/bin/env bash
# Where a node's memory goes after warm-up, per process and per mapping.
# Starts the module's node as run.sh's rcdn front (rcdn_store mem=256m
# tier=<disk dir>,size=2g,region=32m ram=/dev/shm/..., sendfile on) and,
# beside it, nginx proxy_cache as run.sh configures it (the stock per-worker
# growth to compare with), on one origin; warms the same objects as run.sh
# (10k x 4 KiB, 10k x 16 KiB, 100 x 1 MiB, every key twice) and prints, from
# /proc/<pid>/smaps, Rss, Pss, Shared, Private_Clean and Private_Dirty (MiB)
# of each process by kind of mapping (heap, anonymous, the RAM tier's
# regions, its index and ARC directory, the disk tier's regions and index,
# nginx's shared zones, binaries), the node's totals, recycled RAM-tier
# region files still held, and the footprint: PSS outside the RAM tier's
# regions + the RAM tier's tmpfs use + recycled regions still held (every
# RAM-tier page once, mapped or not; PSS leaves out the pages no process
# maps at that moment). For each of WORKERS (default "2 4"), then the
# criterion: the footprint grows from the first to the last worker count
# by no more than stock nginx adds (proxy_cache's PSS per worker process
# in the same run, times the added workers), and the target: footprint
# (and so PSS) <= 1.5x the cached bytes.
# Env: WORKERS (default "2 4"), RCDN_EXTRA (more rcdn_store tokens),
#   PEERS (default proxy_cache; empty: rcdn only, no criterion). ~4 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=1; DURATION=1
WORKERS=${WORKERS:-"2 4"}; PEERS=${PEERS-proxy_cache}
. nginx-module/bench/lib.sh
setup /var/tmp/rcdn-bench-mem.XXXXXX
make_objects "$DIR/www"
ROWS=("/o4k/ 10000" "/o16k/ 10000" "/o1m/ 100")
FAST="access_log off; sendfile on; tcp_nopush on;"
OFC="open_file_cache max=12000 inactive=1h; open_file_cache_valid 1h;"
OP=$(free_port)
start origin "daemon off; master_process on; worker_processes 2; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; } http { $FAST server { listen 127.0.0.1:$OP; root $DIR/www; } }"

# pids of a front: master first, then its workers and helpers
procs() { local m; m=$(cat "$DIR/$1/logs/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }

report() { # name -> per-process table on stdout, "rss_kib pss_kib" in $DIR/mem
  python3 - "$1" "$DIR" "$SHM" "$CACHED_KIB" $(procs "$1") <<'PY'
import os, re, sys
name, top, shm, cached = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pids = [int(p) for p in sys.argv[5:]]
FIELDS = ("Rss", "Pss", "Shared", "Private_Clean", "Private_Dirty")

def kind(path):
    if path == "":
        return "anon"
    if path == "[heap]":
        return "heap"
    if path.startswith("["):
        return "stack/vdso"
    if path.startswith(shm + "/"):
        base = os.path.basename(path.split(" (deleted)")[0])
        if base.startswith("region."):
            # A recycled region is a new file renamed over the old one:
            # a process still mapping the old one keeps its pages alive.
            return "ram-tier old regions" if path.endswith(" (deleted)") else "ram-tier regions"
        return "ram-tier " + base
    if path.startswith(top + "/") and "/store/" in path:
        base = os.path.basename(path.split(" (deleted)")[0])
        return "disk-tier regions" if base.startswith("region.") else "disk-tier " + base
    if path.startswith("/dev/zero") or path.startswith("/SYSV") or path.startswith("/dev/shm/"):
        return "nginx shm zones"
    if path.endswith(".so") or ".so." in path:
        return "module .so" if "ngx_http_rcdn" in path else "libraries"
    if path.endswith("/nginx"):
        return "nginx binary"
    return "other files"

def held_old_regions():
    """Unlinked RAM-tier region files the node's processes keep open or
    mapped: (count, KiB allocated), each inode counted once. Their pages
    are memory outside the tmpfs directory's usage (du)."""
    seen = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(shm + "/") and target.endswith(" (deleted)"):
                    st = os.stat(f"/proc/{pid}/fd/{fd}")
                    seen[st.st_ino] = st.st_blocks // 2
            except OSError:
                pass
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) > 5 and parts[5].startswith(shm + "/") and parts[5].rstrip().endswith(" (deleted)"):
                    seen.setdefault(int(parts[4]), 0)
    return len(seen), sum(seen.values())

node, rows = {}, []
for i, pid in enumerate(pids):
    role = "master" if i == 0 else "worker"
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"cache " in f.read():
            role = "helper"  # proxy_cache's cache manager and loader
    per = {}
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = per.setdefault(kind(head[5].strip() if len(head) > 5 else ""), dict.fromkeys(FIELDS, 0))
            elif cur is not None:
                k = head[0].rstrip(":")
                if k in ("Shared_Clean", "Shared_Dirty"):
                    cur["Shared"] += int(head[1])
                elif k in FIELDS:
                    cur[k] += int(head[1])
    for k, v in per.items():
        n = node.setdefault(k, dict.fromkeys(FIELDS, 0))
        for fld in FIELDS:
            n[fld] += v[fld]
    rows.append((f"{role} {pid}", per))

mib = lambda kib: f"{kib / 1024:9.1f}"
print(f"{'process':<16} {'mapping':<22}" + "".join(f"{f:>14}" for f in FIELDS))
for who, per in rows + [("node total", node)]:
    tot = dict.fromkeys(FIELDS, 0)
    for k in sorted(per, key=lambda k: -per[k]["Pss"]):
        v = per[k]
        for fld in FIELDS:
            tot[fld] += v[fld]
        if v["Rss"] >= 256 or who == "node total":
            print(f"{who:<16} {k:<22}" + "".join(f"{mib(v[f]):>14}" for f in FIELDS))
    print(f"{who:<16} {'= all':<22}" + "".join(f"{mib(tot[f]):>14}" for f in FIELDS))
    print()
    if who == "node total":
        n, kib = held_old_regions()
        print(f"recycled RAM-tier regions still held (open or mapped): {n}, {kib / 1024:.1f} MiB allocated")
        with open(f"{top}/mem", "w") as f:
            ram = sum(v["Pss"] for k, v in node.items() if k.endswith("regions") and k.startswith("ram-tier"))
            workers = [sum(v["Pss"] for v in per.values()) for who, per in rows if who.startswith("worker")]
            per_worker = sum(workers) // max(len(workers), 1)
            f.write(f"{tot['Rss']} {tot['Pss']} {ram} {kib} {per_worker}\n")
PY
}

declare -A PSS=() FOOT=() WPSS=()
for W in $WORKERS; do
  in_range WORKERS "$W" 1 16
  rm -rf "$DIR/rcdn" "$DIR/proxy_cache" "$SHM"/rcdn
  RP=$(free_port); PP=$(free_port)
  COMMON="daemon off; master_process on; worker_processes $W; error_log logs/error.log warn; pid logs/nginx.pid;
events { worker_connections 4096; }"
  start rcdn "load_module $SO; $COMMON http { $FAST
  rcdn_store mem=256m ${RCDN_EXTRA:-} tier=$DIR/rcdn/store,size=2g,region=32m ram=$SHM/rcdn;
  server { listen 127.0.0.1:$RP; location / { rcdn_cache on; proxy_pass http://127.0.0.1:$OP; add_header X-Cache \$rcdn_cache_status; } } }"
  declare -A PORT=([rcdn]=$RP [proxy_cache]=$PP)
  [ -n "$PEERS" ] && start proxy_cache "$COMMON http { $FAST $OFC
  proxy_cache_path $DIR/proxy_cache/cache levels=1:2 keys_zone=z:64m max_size=2g inactive=1h;
  server { listen 127.0.0.1:$PP; location / { proxy_cache z; proxy_cache_valid 200 1h; proxy_pass http://127.0.0.1:$OP; add_header X-Cache \$upstream_cache_status; } } }"
  wait_ports "$OP" "$RP" ${PEERS:+"$PP"}
  echo "memory: $W workers: warming..." >&2
  for s in rcdn $PEERS; do
    for row in "${ROWS[@]}"; do
      set -- $row
      for _ in 1 2; do # every key twice, in order: a fill, then a hit
        PREFIX=$1 KEYS=$2 wrk -t1 -c16 -d"$(($2 > 1000 ? 6 : 2))s" -s nginx-module/bench/warm.lua "http://127.0.0.1:${PORT[$s]}" >/dev/null
      done
    done
  done
  sleep 2 # the once-a-second housekeeping of each worker has run
  for s in rcdn $PEERS; do
    echo "== $s, worker_processes $W (MiB; Shared = Shared_Clean + Shared_Dirty)"
    report "$s"
    read -r rss pss ram_pss held per_worker < "$DIR/mem"
    PSS[$s,$W]=$pss; WPSS[$s,$W]=$per_worker
    echo "$s workers=$W: node RSS $((rss / 1024)) MiB, PSS $((pss / 1024)) MiB, PSS/cached $(ratio "$pss" "$CACHED_KIB") (cached $((CACHED_KIB / 1024)) MiB)"
    if [ "$s" = rcdn ]; then
      # Every RAM-tier page once, mapped or not: PSS without the region
      # mappings, plus the tmpfs directory, plus old regions still held.
      tmpfs=$(du -sk "$SHM/rcdn" | awk '{print $1}')
      foot=$((pss - ram_pss + tmpfs + held))
      FOOT[$W]=$foot
      echo "rcdn workers=$W: RAM tier tmpfs $((tmpfs / 1024)) MiB; footprint (PSS outside the RAM tier + its tmpfs + old regions held) $((foot / 1024)) MiB, $(ratio "$foot" "$CACHED_KIB")x cached"
    else
      echo "$s workers=$W: PSS per worker process $((per_worker / 1024)) MiB"
    fi
    echo
  done
  for s in rcdn $PEERS; do
    m=$(cat "$DIR/$s/logs/nginx.pid"); kill -TERM "$m"
    for _ in $(seq 1 100); do kill -0 "$m" 2>/dev/null || break; sleep 0.1; done
  done
done

set -- $WORKERS
first=$1; last=${!#}
# PSS counts a tmpfs page only while some process maps it, so the RAM
# tier's share of PSS moves with which pages the workers happened to map
# (up to the tmpfs size); the footprint counts each RAM-tier page once.
# Criterion: the footprint grows by no more than what stock nginx adds per
# worker (proxy_cache's PSS per worker process) times the added workers.
if [ "$first" != "$last" ] && [ -n "$PEERS" ]; then
  dr=$(( (PSS[rcdn,$last] - PSS[rcdn,$first]) / 1024 ))
  df=$(( (FOOT[$last] - FOOT[$first]) / 1024 ))
  stock=$(( WPSS[proxy_cache,$last] * (last - first) / 1024 ))
  verdict=met; [ "$df" -le "$stock" ] || verdict=missed
  echo "criterion: from $first to $last workers rcdn's footprint grows by $df MiB (PSS by $dr MiB), stock nginx adds $stock MiB ($((last - first)) x proxy_cache's PSS per worker): $verdict"
fi
for W in $WORKERS; do
  echo "target: footprint <= 1.5x cached with $W workers: $(ratio "${FOOT[$W]}" "$CACHED_KIB")x (PSS $(ratio "${PSS[rcdn,$W]}" "$CACHED_KIB")x)"
done
