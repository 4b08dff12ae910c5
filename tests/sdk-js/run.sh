#!/usr/bin/env bash
# tests/sdk-js/run.sh [TGRUN] -- mixed runs of real JS SDK instances and
# tgrun Lua instances through `tgrun serve`.
#
# The JS SDK is Testground's own, @testground/sdk 0.1.2 from npm, installed
# with npm into a cache folder ($TG_JS_CACHE, default ~/.cache/tgrun-js;
# nothing of it is in this repository).  Node and npm are Debian's
# packages (installed when missing).  Each run:
#   - starts `tgrun serve` against a private redis-server of its own,
#   - starts a tgrun observer that follows run_events through the service,
#   - starts N node processes (tests/sdk-js/plan.js) and a `tgrun -n M
#     --sync` run of tests/lua/plans/svc.lua with the same run id, plan and
#     case, so that all N + M meet at the same barriers and topic,
#   - checks every instance's outcome: in the observer's view and by reading
#     run_events in Redis (JS instances exit 0 even when they fail: the
#     event is the outcome, as under Testground).
# Every wait is bounded; every process it started is stopped on exit.
# Prints "N passed, N failed" and exits non-zero when a check failed.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TG=${1:-$ROOT/build/tgrun}
TG=$(cd "$(dirname "$TG")" && pwd)/$(basename "$TG")
CACHE=${TG_JS_CACHE:-$HOME/.cache/tgrun-js}
SDK_VERSION=0.1.2
N_JS=${N_JS:-3}
M_LUA=${M_LUA:-3}

say() { printf 'sdk-js: %s\n' "$*" >&2; }
passed=0 failed=0
check() {   # check NAME CONDITION-COMMAND...
    local name=$1; shift
    if "$@"; then passed=$((passed + 1)); say "ok   $name"
    else failed=$((failed + 1)); say "FAIL $name"; fi
}

# ---- node, npm and the SDK -------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Debian's nodejs and npm"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
mkdir -p "$CACHE"
if [ ! -f "$CACHE/node_modules/@testground/sdk/package.json" ] ||
   ! grep -q "\"version\": \"$SDK_VERSION\"" "$CACHE/node_modules/@testground/sdk/package.json"; then
    say "installing @testground/sdk@$SDK_VERSION into $CACHE"
    [ -f "$CACHE/package.json" ] || echo '{"name":"tgrun-js-interop","private":true}' >"$CACHE/package.json"
    (cd "$CACHE" && timeout 600 npm install --no-audit --no-fund "@testground/sdk@$SDK_VERSION" >npm.log 2>&1) ||
        { say "npm install failed (see $CACHE/npm.log)"; cat "$CACHE/npm.log" >&2; exit 1; }
fi
export NODE_PATH=$CACHE/node_modules
say "node $(node --version), @testground/sdk $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$CACHE/node_modules/@testground/sdk/package.json")"

# ---- a private redis-server and tgrun serve --------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tg-sdkjs.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    [ -n "${KEEP:-}" ] && say "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis-server --port 0 --unixsocket "$WORK/redis.sock" --save '' --appendonly no --dir "$WORK" \
    --logfile "$WORK/redis.log" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -s "$WORK/redis.sock" ping >/dev/null 2>&1 && break; sleep 0.05; done
rcli() { redis-cli -s "$WORK/redis.sock" "$@"; }

"$TG" serve --listen 127.0.0.1:0 --redis "unix://$WORK/redis.sock" >"$WORK/serve.out" 2>"$WORK/serve.err" &
PIDS+=($!)
PORT=""
for _ in $(seq 100); do
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/serve.out" 2>/dev/null || true)
    [ -n "$PORT" ] && break
    sleep 0.05
done
[ -n "$PORT" ] || { say "tgrun serve did not start"; cat "$WORK/serve.err" >&2; exit 1; }
say "tgrun serve on 127.0.0.1:$PORT"

# ---- one mixed run -----------------------------------------------------------
# mixed_run CASE SUCCESSES FAILURES: N JS + M Lua instances of CASE
mixed_run() {
    local case=$1 want_s=$2 want_f=$3
    local run=sdkjs-$case-$$ total=$((N_JS + M_LUA)) pids=() i
    local key="run:$run:plan:svc:case:$case:run_events"
    # the observer: a tgrun instance that follows run_events through the service
    TEST_INSTANCE_COUNT=1 TEST_GROUP_ID=observer TEST_PLAN=svc TEST_RUN=$run TEST_OUTPUTS_PATH=$WORK/obs-$case \
        "$TG" --sync "ws://127.0.0.1:$PORT" -c "$case" -p "successes=$want_s" -p "failures=$want_f" \
        --timeout 120 "$HERE/observer.lua" >"$WORK/observer-$case.out" 2>&1 &
    local obs=$!
    for i in $(seq "$N_JS"); do
        # its own folder: the SDK's logger writes a file "stdout" into the current one
        mkdir -p "$WORK/js-$case-$i.d"
        env -u REDIS_HOST -u REDIS_PORT TEST_PLAN=svc TEST_CASE="$case" TEST_RUN="$run" \
            TEST_INSTANCE_COUNT="$total" TEST_GROUP_ID=js TEST_GROUP_INSTANCE_COUNT="$N_JS" \
            TEST_INSTANCE_PARAMS="total=$total" TEST_SUBNET=127.1.0.0/16 TEST_OUTPUTS_PATH="$WORK" \
            SYNC_SERVICE_HOST=127.0.0.1 SYNC_SERVICE_PORT="$PORT" \
            bash -c 'cd "$1" && exec timeout 120 node "$2"' _ "$WORK/js-$case-$i.d" "$HERE/plan.js" \
            >"$WORK/js-$case-$i.out" 2>&1 &
        pids+=($!)
    done
    env -u REDIS_HOST -u REDIS_PORT timeout 150 "$TG" -n "$M_LUA" -g "lua=$M_LUA" --sync "ws://127.0.0.1:$PORT" \
        --run-id "$run" -c "$case" -p "total=$total" --timeout 120 --outputs "$WORK/out-$case" \
        "$ROOT/tests/lua/plans/svc.lua" >"$WORK/lua-$case.out" 2>&1 &
    local lua=$!
    local rc_js=0 rc_lua=0 rc_obs=0
    for p in "${pids[@]}"; do wait "$p" || rc_js=$?; done
    wait "$lua" || rc_lua=$?
    wait "$obs" || rc_obs=$?
    say "$case: $N_JS JS (exit $rc_js) + $M_LUA Lua (exit $rc_lua); observer exit $rc_obs"
    # what Redis holds: every instance's outcome, as tgrun keys it
    local events; events=$(rcli XRANGE "$key" - + | grep -E '_event')
    local s_js s_lua f_js f_lua
    s_js=$(grep -c '"success_event":{"group":"js"' <<<"$events")
    s_lua=$(grep -c '"success_event":{"group":"lua"' <<<"$events")
    f_js=$(grep -c '"failure_event":{"group":"js"' <<<"$events")
    f_lua=$(grep -c '"failure_event":{.*"group":"lua"' <<<"$events")
    echo "$events" >"$WORK/events-$case.txt"
    say "$case: run_events in Redis: js $s_js ok / $f_js failed, lua $s_lua ok / $f_lua failed"
    if [ "$case" = meet ]; then
        check "meet: the JS processes ended (exit 0)" [ "$rc_js" = 0 ]
        check "meet: the Lua instances succeeded" [ "$rc_lua" = 0 ]
        check "meet: every JS instance read the Lua instances' values" \
            bash -c "grep -h 'met $total' $WORK/js-$case-*.out | grep -c 'lua:' | grep -qx $N_JS"
        check "meet: Redis holds $N_JS JS and $M_LUA Lua success events" [ "$s_js:$s_lua:$f_js:$f_lua" = "$N_JS:$M_LUA:0:0" ]
        check "meet: JS start events are in run_events too" \
            bash -c "rcli() { redis-cli -s $WORK/redis.sock \"\$@\"; }; rcli XRANGE $key - + | grep -c '\"start_event\"' | grep -qx $N_JS"
    else
        check "fail: the Lua instances failed (exit 1)" [ "$rc_lua" = 1 ]
        check "fail: Redis holds $N_JS JS and $M_LUA Lua failure events" [ "$s_js:$s_lua:$f_js:$f_lua" = "0:0:$N_JS:$M_LUA" ]
        check "fail: the JS failure carries its error" grep -q 'Error: deliberate js failure' "$WORK/events-$case.txt"
    fi
    check "$case: the tgrun observer saw every outcome through the service" [ "$rc_obs" = 0 ]
    if [ "$rc_obs" != 0 ] || [ "$rc_lua" != "$([ "$case" = meet ] && echo 0 || echo 1)" ]; then
        tail -n 20 "$WORK/observer-$case.out" "$WORK/lua-$case.out" "$WORK"/js-"$case"-1.out >&2
    fi
}

mixed_run meet $((N_JS + M_LUA)) 0
mixed_run fail 0 $((N_JS + M_LUA))

# the server is still healthy, and stops cleanly
kill -TERM "${PIDS[1]}" 2>/dev/null
rc_serve=0
wait "${PIDS[1]}" || rc_serve=$?
check "tgrun serve stopped cleanly on SIGTERM" [ "$rc_serve" = 0 ]
echo "sdk-js: $passed passed, $failed failed"
[ "$failed" = 0 ]
