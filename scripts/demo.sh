#!/usr/bin/env bash
# `make demo`: builds the nginx module and the vendored nginx, then runs a CDN
# node on 127.0.0.1:8080 in front of a demo origin on 127.0.0.1:8081, in the
# foreground. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PREFIX="$ROOT/target/rcdn-demo"

bash scripts/deps.sh
echo "building the module and nginx (the first build takes a few minutes)..."
cargo build --release -p ngx_http_rcdn_module --features vendored
NGINX=$(ls -t target/release/build/nginx-sys-*/out/objs/nginx 2>/dev/null | head -1)
if [ -z "$NGINX" ]; then
  echo "demo: the vendored nginx binary was not built" >&2
  exit 1
fi

for port in 8080 8081; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: 127.0.0.1:$port is already in use; stop what listens there first" >&2
    exit 1
  fi
done

# The RAM tier and the block tier: in /dev/shm if there is one, else
# directories under the prefix (init_module creates them and gives them to
# the worker user).
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  STORE="/dev/shm/rcdn-demo-$(id -u)"
  RAM="/dev/shm/rcdn-demo-ram-$(id -u)"
else
  STORE="$PREFIX/cache"
  RAM="$PREFIX/ram"
fi
mkdir -p "$PREFIX"
# nginx temp dirs left by an earlier run (maybe as another user) would break fills.
rm -rf "$PREFIX"/*_temp
sed -e "s|/dev/shm/rcdn-demo,|$STORE,|" -e "s|/dev/shm/rcdn-demo-ram|$RAM|" \
  "$ROOT/examples/nginx/nginx.conf" > "$PREFIX/nginx.conf"
CONF="$PREFIX/nginx.conf"

mkdir -p "$PREFIX/modules" "$PREFIX/logs" "$PREFIX/origin/news" "$PREFIX/origin/img" "$PREFIX/origin/private"
cp target/release/libngx_http_rcdn_module.so "$PREFIX/modules/ngx_http_rcdn_module.so"
echo "<h1>rcdn demo origin</h1>" > "$PREFIX/origin/index.html"
echo "today's news, generated $(date -u)" > "$PREFIX/origin/news/today.html"
echo "sport news" > "$PREFIX/origin/news/sport.html"
echo "per-user page" > "$PREFIX/origin/private/me.html"
head -c 262144 /dev/urandom > "$PREFIX/origin/img/logo.bin"
head -c 4194304 /dev/urandom > "$PREFIX/origin/img/big.bin"

"$NGINX" -p "$PREFIX" -c "$CONF" -t -q
"$NGINX" -p "$PREFIX" -c "$CONF" &
PID=$!
stop() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  echo
  echo "rcdn demo stopped."
}
trap stop INT TERM

for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  sleep 0.1
done

cat <<MSG

rcdn CDN node on http://127.0.0.1:8080 (origin http://127.0.0.1:8081), pid $PID.
Logs: $PREFIX/logs/  (access.log shows cache=HIT/MISS, body=memory/sendfile, the worker pid)
Store: $STORE (shared by both workers; kept across reload and restart)

Try:
  curl -sI http://127.0.0.1:8080/news/today.html | grep -i x-cache     # MISS
  curl -sI http://127.0.0.1:8080/news/today.html | grep -i x-cache     # HIT
  curl -s  -o /dev/null -w '%{size_download} bytes %header{x-cache}\n' http://127.0.0.1:8080/img/big.bin
  curl -s  -r 0-99 -o /dev/null -w '%{http_code}\n' http://127.0.0.1:8080/img/big.bin   # 206
  curl -s 'http://127.0.0.1:8080/purge?url=/news/today.html'          # purge one URL
  curl -s 'http://127.0.0.1:8080/purge?url=/news/*'                   # purge a prefix
  curl -s 'http://127.0.0.1:8080/purge?tag=news'                      # purge by Surrogate-Key
  curl -sI http://127.0.0.1:8080/news/today.html | grep -i x-cache     # MISS again

Ctrl-C stops the node.
MSG
wait "$PID" || true
