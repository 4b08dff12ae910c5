#!/bin/sh
# with-redis.sh CMD [ARG...] -- run CMD against a private redis-server.
#
# Starts redis-server on a free TCP port (tried at random in 20000-59999) in a
# fresh temp dir, persistence off, exports REDIS_HOST/REDIS_PORT (and
# TG_TEST_REDIS_DIR), runs CMD, stops the server and removes the dir.  Exits
# with CMD's status.  Never uses a system Redis on 6379.
set -u
command -v redis-server >/dev/null 2>&1 || { echo "with-redis.sh: redis-server not found on PATH (apt-get install redis-server)" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/tg-redis.XXXXXX")
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

tries=0
while :; do
  tries=$((tries + 1))
  port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" --maxclients 20000 >/dev/null 2>&1 &
  pid=$!
  i=0
  while [ $i -lt 100 ]; do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break 2; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
    i=$((i + 1))
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=
  if [ $tries -ge 20 ]; then echo "with-redis.sh: could not start redis-server (see $dir/redis.log)" >&2; cat "$dir/redis.log" >&2; exit 2; fi
done

export REDIS_HOST=127.0.0.1 REDIS_PORT="$port" TG_TEST_REDIS_DIR="$dir"
"$@"
rc=$?
exit $rc
