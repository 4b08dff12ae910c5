#!/bin/sh
# examples.sh [TGRUN] -- run every example plan the way its header says, and
# every test case of the Testground packaging through its plan.lua.
#
#   tests/examples.sh build/tgrun
#
# examples/*.lua: each file has a header line "-- tgrun -n N examples/<file>"
# giving its instance count; it is run as `tgrun -n N` with its own private
# redis-server (REDIS_HOST/REDIS_PORT are cleared), its outputs in a temp dir
# and a deadline of $EXAMPLES_TIMEOUT seconds (default 120).
# examples/testground/manifest.toml: each [[testcases]] entry is run as
# `tgrun -n <instances.default> -c <name> examples/testground/plan.lua`,
# with TG_LUA_PATH=examples as the image sets it.
#
# Prints one line per run (ok/FAIL, wall seconds, the command) and, for a
# failure, the last lines of its output.  Exits 1 if any run failed, 2 on bad
# usage (no tgrun, an example without its header line).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
tgrun=${1:-${TGRUN:-$root/build/tgrun}}
timeout=${EXAMPLES_TIMEOUT:-120}
case $tgrun in /*) ;; *) tgrun=$(pwd)/$tgrun ;; esac
if [ ! -x "$tgrun" ]; then
  echo "examples.sh: no tgrun binary at $tgrun (pass its path as the first argument)" >&2
  exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/tg-examples.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

failed=0
total=0
run_env=      # extra VAR=value words for the runs (no spaces inside)

# run LABEL ARGS...: one tgrun run from the repository root, one line of report
run() {
  label=$1
  shift
  total=$((total + 1))
  log="$work/$total.log"
  start=$(date +%s.%N)
  (cd "$root" && env REDIS_HOST= REDIS_PORT= $run_env "$tgrun" --timeout "$timeout" --outputs "$work/out" "$@") \
    >"$log" 2>&1 </dev/null
  rc=$?
  secs=$(echo "$start $(date +%s.%N)" | awk '{ printf "%.2f", $2 - $1 }')
  if [ $rc -eq 0 ]; then
    printf 'ok    %6ss  %s\n' "$secs" "$label"
  else
    printf 'FAIL  %6ss  %s  (exit %d)\n' "$secs" "$label" "$rc"
    grep -v '^{"ts"' "$log" | tail -n 15 | sed 's/^/      | /'
    failed=$((failed + 1))
  fi
}

# the N of an example: from its header line "-- tgrun -n N examples/<file>"
count_of() {
  sed -n 's/^--[[:space:]]*tgrun -n \([0-9][0-9]*\) .*/\1/p' "$1" | head -n 1
}
for f in "$root"/examples/*.lua; do      # every header first: bad usage runs nothing
  if [ -z "$(count_of "$f")" ]; then
    echo "examples.sh: examples/$(basename "$f") has no header line \"-- tgrun -n N examples/$(basename "$f")\"" >&2
    exit 2
  fi
done
for f in "$root"/examples/*.lua; do
  name=examples/$(basename "$f")
  n=$(count_of "$f")
  run "tgrun -n $n $name" -n "$n" "$name"
done

manifest=$root/examples/testground/manifest.toml
if [ -f "$manifest" ]; then
  # "name n" for each [[testcases]] entry: its name and instances.default
  awk '
    /^\[\[testcases\]\]/ { if (name != "") print name, n; name = ""; n = ""; intc = 1; next }
    intc && /^name[[:space:]]*=/ { sub(/^name[[:space:]]*=[[:space:]]*"/, ""); sub(/".*/, ""); name = $0; next }
    intc && /^instances[[:space:]]*=/ { if (match($0, /default[[:space:]]*=[[:space:]]*[0-9]+/)) { s = substr($0, RSTART, RLENGTH); gsub(/[^0-9]/, "", s); n = s } }
    END { if (name != "") print name, n }
  ' "$manifest" > "$work/cases"
  run_env="TG_LUA_PATH=$root/examples"
  while read -r case n; do
    [ -n "$n" ] || n=1
    run "tgrun -n $n -c $case examples/testground/plan.lua (manifest.toml)" \
      -n "$n" -c "$case" examples/testground/plan.lua
  done < "$work/cases"
fi

echo "examples.sh: $((total - failed)) of $total runs passed"
[ $failed -eq 0 ]
