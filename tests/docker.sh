#!/usr/bin/env bash
# docker.sh -- build the tgrun image and run multi-instance plans in
# containers, each container started the way Testground's local:docker
# runner starts an instance.  What CI's docker stage runs.
#
#   tests/docker.sh            (as root; installs docker.io/mmdebstrap if missing)
#
# 1. a Docker engine (tests/harness/docker-engine.sh) and the base image
#    debian:12 (tests/harness/base-image.sh: built with mmdebstrap when no
#    registry answers);
# 2. examples/testground/Dockerfile's build and runtime stages must equal the
#    top-level Dockerfile's;
# 3. images: tgrun (the top-level Dockerfile), tgrun-examples (Testground's
#    docker:generic packaging, built from a context made by vendor.sh, as the
#    builder does) and tgrun-test-redis (tests/docker/redis.Dockerfile);
# 4. on a fresh `--internal` network with a known subnet, a Redis container,
#    then runs, each container with the environment Testground's runner gives
#    (TEST_PLAN, TEST_CASE, TEST_RUN, TEST_INSTANCE_COUNT, TEST_GROUP_ID,
#    TEST_GROUP_INSTANCE_COUNT, TEST_INSTANCE_PARAMS, TEST_OUTPUTS_PATH=/outputs
#    bind-mounted, TEST_TEMP_PATH=/temp, TEST_SIDECAR, TEST_SUBNET,
#    TEST_START_TIME, REDIS_HOST=<the Redis container's name>, REDIS_PORT):
#      a. tgrun image, examples/addresses.lua mounted read-only, 4 instances,
#         no sidecar: a TCP ring over the container network;
#      b. tgrun-examples image, as Testground runs it (plan baked in),
#         TEST_SIDECAR=true, 4 instances: this script plays the sidecar
#         (INCR network-initialized once per instance) and then counts the
#         success_events in the run's run_events stream, as the daemon does;
#      c. examples/network/splitbrain.lua, 4 instances, --cap-add NET_ADMIN:
#         tg.network partitions and heals the containers' own network;
#      d. one container without --cap-add: tg.network says "unsupported";
#      e. examples/k8s/job.yaml's 8 pods emulated (see k8s_case), with
#         `tgrun observe` in a container of its own following the run.
#    Every container must exit 0 and have a success_event in /outputs/run.out.
#    f. `tgrun -n N --docker`: the busted specs of tests/docker/docker_spec.lua
#       (tgrun's own image built from the binary, runs, deadline, Ctrl-C,
#       SIGKILL, the sweep, bad input; each run checked for leftovers), with
#       build/tgrun and, when it is there, the sanitized build-asan/tgrun
#       (TGRUN / TGRUN_ASAN override them).
# 5. cleanup, also on failure or Ctrl-C: every container and network labelled
#    tgrun.test=<this run> is removed, then checked gone (docker ps -a /
#    docker network ls / docker volume ls --filter label=...); so are the
#    images the run made that nothing needs (tgrun-self, untagged).
#
# Exits 0 when all passed ("docker.sh: N passed, 0 failed"), 1 when a check
# failed, 2 when the engine or an image could not be had; always one line
# saying what.  Knobs: DOCKER_SH_TIMEOUT (seconds per run, default 120),
# DOCKER_SH_KEEP=1 (keep the outputs folder).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
per_run=${DOCKER_SH_TIMEOUT:-120}
id="tgds-$$-$RANDOM"
label="tgrun.test=$id"
work=$(mktemp -d "${TMPDIR:-/tmp}/tg-docker.XXXXXX")
passed=0
failed=0
t_start=$(date +%s.%N)

say() { echo "docker.sh: $*"; }
die() { say "$*" >&2; exit "${2:-1}"; }
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local cs ns vs
  cs=$(docker ps -aq --filter "label=$label" 2>/dev/null)
  [ -n "$cs" ] && docker rm -f $cs >/dev/null 2>&1
  ns=$(docker network ls -q --filter "label=$label" 2>/dev/null)
  [ -n "$ns" ] && docker network rm $ns >/dev/null 2>&1
  vs=$(docker volume ls -q --filter "label=$label" 2>/dev/null)
  [ -n "$vs" ] && docker volume rm $vs >/dev/null 2>&1
  local left
  left="$(docker ps -aq --filter "label=$label")$(docker network ls -q --filter "label=$label")$(docker volume ls -q --filter "label=$label")"
  if [ -n "$left" ]; then
    say "FAIL: left behind with label $label: $left" >&2
    rc=1
  fi
  # images this run made that nothing needs: the tgrun-self images of the
  # binaries it ran (each build of tgrun has its own) and what its builds
  # left untagged.  On a vfs engine every image is a full copy: a day of
  # runs filled 70 GB before this.  tgrun:latest, tgrun-examples:latest and
  # tgrun-test-redis:latest stay (the next run's builds reuse their layers).
  if [ -n "${images_before+x}" ]; then
    local img made=()
    for img in $( { docker images -q --no-trunc --filter label=tgrun.self;
                    docker images -q --no-trunc --filter dangling=true; } 2>/dev/null | sort -u); do
      # new, or one of our images that a rebuild has just replaced
      if ! grep -qxF "$img" <<<"$images_before" || grep -qxF "$img" <<<"$ours_before"; then made+=("$img"); fi
    done
    [ ${#made[@]} -gt 0 ] && docker rmi "${made[@]}" >/dev/null 2>&1
  fi
  if [ "${DOCKER_SH_KEEP:-0}" = 1 ]; then say "outputs kept in $work"; else rm -rf "$work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# -- 1. engine and base image
t=$(date +%s.%N)
tests/harness/docker-engine.sh || exit 2
tests/harness/base-image.sh || exit 2
say "engine and debian:12 ready ($(secs "$t") s)"
# the images there now; what this run adds and leaves unused goes at the end
images_before=$(docker images -qa --no-trunc 2>/dev/null | sort -u)
ours_before=$(for r in tgrun tgrun-examples tgrun-test-redis; do docker images -q --no-trunc "$r"; done 2>/dev/null)

# -- 2. the Testground Dockerfile shares the top-level one's stages
stages() { sed -n '/^FROM debian:12 AS build/,/^CMD /p' "$1" | sed 's#^COPY plan/tgrun-src/#COPY #'; }
if ! diff <(stages Dockerfile) <(stages examples/testground/Dockerfile) >"$work/stages.diff"; then
  sed 's/^/    /' "$work/stages.diff" >&2
  die "examples/testground/Dockerfile's build/runtime stages differ from the top-level Dockerfile's (above)"
fi

# -- 3. images (--network host: apt-get inside the build reaches the mirror as the host does)
build() {   # build TAG ARGS...
  local tag=$1 t
  shift
  t=$(date +%s.%N)
  if ! docker build --network host -t "$tag" "$@" >"$work/build-$tag.log" 2>&1; then
    tail -n 20 "$work/build-$tag.log" >&2
    die "docker build of $tag failed (last lines above)" 2
  fi
  say "built $tag ($(secs "$t") s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
}
export DOCKER_BUILDKIT=0     # the engine is Debian's 20.10 without buildx: say so, no warning
build tgrun:latest .
examples/testground/vendor.sh "$work/ctx" >/dev/null || die "examples/testground/vendor.sh failed" 2
build tgrun-examples:latest -f "$work/ctx/plan/Dockerfile" "$work/ctx"
build tgrun-test-redis:latest -f tests/docker/redis.Dockerfile tests/docker

# -- 4. the network and the Redis
net="$id"
subnet=
for _ in 1 2 3 4 5 6 7 8; do
  subnet="10.213.$((RANDOM % 250 + 1)).0/24"
  if docker network create --internal --subnet "$subnet" --label "$label" "$net" >"$work/net.log" 2>&1; then
    break
  fi
  subnet=
done
[ -n "$subnet" ] || die "could not create an internal docker network: $(tail -n 1 "$work/net.log")" 2
redis="$id-redis"
docker run -d --name "$redis" --network "$net" --network-alias tgrun-redis --label "$label" tgrun-test-redis:latest >/dev/null 2>"$work/redis.err" \
  || die "could not start the Redis container: $(grep -v WARNING "$work/redis.err" | tail -n 1)" 2
redis_cli() { docker exec "$redis" redis-cli "$@"; }
i=0
until redis_cli ping 2>/dev/null | grep -q PONG; do
  i=$((i + 1))
  [ $i -lt 100 ] || die "the Redis container did not answer within 10 s" 2
  sleep 0.1
done
say "network $net ($subnet, internal) and Redis container $redis up"

# run_case NAME IMAGE N SIDECAR CASE GROUPS PARAMS EXTRA-DOCKER-ARGS -- [ARGS...]
#   Starts N containers; GROUPS is "g1:n1,g2:n2" (counts add up to N).
#   With SIDECAR=true, INCRs network-initialized N times once all started.
#   Then waits for each (bounded) and checks exit code and run.out.
run_case() {
  local name=$1 image=$2 n=$3 sidecar=$4 case=$5 groups=$6 params=$7 extra=$8
  shift 9
  local run="${name}-$RANDOM$RANDOM" t i g gn k ok=1 out code
  local plan=tgrun-examples
  [ "$image" = tgrun:latest ] && plan=$name
  t=$(date +%s.%N)
  local start_time
  start_time=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ids=() outs=() names=()
  IFS=, read -ra gl <<<"$groups"
  for entry in "${gl[@]}"; do
    g=${entry%%:*} gn=${entry##*:}
    for ((i = 0; i < gn; i++)); do
      out="$work/out/$run/$g/$i"
      mkdir -p "$out" "$work/temp/$run/$g/$i"
      chmod 0777 "$work/temp/$run/$g/$i"
      # the plain image runs as uid 10001: its outputs folder must be its own
      [ "$image" = tgrun:latest ] && chown 10001:10001 "$out"
      local cid
      # shellcheck disable=SC2086
      if ! cid=$(docker run -d --label "$label" --network "$net" --name "$id-$name-$g-$i" \
          -v "$out:/outputs" -v "$work/temp/$run/$g/$i:/temp" $extra \
          -e TEST_PLAN="$plan" -e TEST_CASE="$case" -e TEST_RUN="$run" \
          -e TEST_INSTANCE_COUNT="$n" -e TEST_GROUP_ID="$g" -e TEST_GROUP_INSTANCE_COUNT="$gn" \
          -e TEST_INSTANCE_PARAMS="$params" -e TEST_OUTPUTS_PATH=/outputs -e TEST_TEMP_PATH=/temp \
          -e TEST_SIDECAR="$sidecar" -e TEST_SUBNET="$subnet" -e TEST_START_TIME="$start_time" \
          -e REDIS_HOST="$redis" -e REDIS_PORT=6379 \
          "$image" "$@" 2>"$work/run.err"); then
        say "FAIL  $name: docker run failed: $(tail -n 1 "$work/run.err")"
        failed=$((failed + 1))
        [ ${#ids[@]} -gt 0 ] && docker rm -f "${ids[@]}" >/dev/null 2>&1
        return
      fi
      ids+=("$cid")
      outs+=("$out")
      names+=("$id-$name-$g-$i")
    done
  done
  if [ "$sidecar" = true ]; then
    # the sidecars' part: one INCR per instance, after every container started
    for ((i = 0; i < n; i++)); do
      redis_cli INCR "run:$run:plan:$plan:case:$case:states:network-initialized" >/dev/null
    done
  fi
  local deadline=$(($(date +%s) + per_run))
  for ((k = 0; k < ${#ids[@]}; k++)); do
    local left=$((deadline - $(date +%s))) cid=${ids[$k]} cname=${names[$k]} runout=${outs[$k]}/run.out
    [ $left -gt 0 ] || left=1
    code=$(timeout "$left" docker wait "$cid" 2>/dev/null) || code="timeout"
    if [ "$code" != 0 ] || ! grep -q '"success_event"' "$runout" 2>/dev/null; then
      ok=0
      say "FAIL  $name: container $cname exit ${code}; last lines:" >&2
      docker logs --tail 8 "$cid" 2>&1 | cut -c1-300 | sed 's/^/      | /' >&2
    fi
  done
  if [ "$sidecar" = true ] && [ $ok = 1 ]; then
    local got
    got=$(redis_cli XRANGE "run:$run:plan:$plan:case:$case:run_events" - + | grep -c '"success_event"')
    if [ "$got" != "$n" ]; then
      ok=0
      say "FAIL  $name: run_events holds $got success_events, expected $n" >&2
    fi
  fi
  if [ $ok = 1 ]; then
    passed=$((passed + 1))
    printf 'ok    %6ss  %s\n' "$(secs "$t")" "$name ($n containers, $image${case:+, case $case})"
  else
    failed=$((failed + 1))
  fi
  # this run's containers go now; the label sweep at exit catches the rest
  docker rm -f "${ids[@]}" >/dev/null 2>&1
}

plans="-v $root/examples:/plan:ro"
run_case addresses tgrun:latest 4 false "" "single:4" "" "$plans" -- /plan/addresses.lua
run_case testground-sidecar tgrun-examples:latest 4 true addresses "single:4" "" "" --
run_case testground-phases tgrun-examples:latest 4 true phases "single:4" "phase_timeout=30" "" --
run_case splitbrain tgrun:latest 4 false "" "left:2,right:2" "" "$plans --cap-add NET_ADMIN" -- /plan/network/splitbrain.lua
run_case network-nocap tgrun:latest 1 false nocap "single:1" "" "-v $root/tests/lua/plans:/specplans:ro" -- /specplans/network.lua

# e. examples/k8s/job.yaml's pods, emulated: check.py's offline checks, then
#    for every completion index a container with that pod's env and shell
#    script (status.podIP from `hostname -i`), the plan mounted as the
#    ConfigMap would be, REDIS_HOST=tgrun-redis (the Redis container's alias)
k8s_case() {
  local t n i k ok=1 run="k8s-$RANDOM$RANDOM" ids=() code
  t=$(date +%s.%N)
  if ! /usr/bin/python3 examples/k8s/check.py >"$work/k8s-check.log" 2>&1; then
    say "FAIL  k8s-job: examples/k8s/check.py: $(grep FAIL "$work/k8s-check.log" | head -n 3)" >&2
    failed=$((failed + 1))
    return
  fi
  n=$(/usr/bin/python3 examples/k8s/check.py --pod 0 | sed -n 's/^TEST_INSTANCE_COUNT=//p')
  # tgrun observe, as docs/kubernetes.md runs it in the cluster: started
  # before the pods, it must follow the run to exit 0 from run_events alone
  local obs
  if ! obs=$(docker run -d --label "$label" --network "$net" --name "$id-k8s-observe" tgrun:latest \
      observe --redis "redis://$redis:6379" --run "$run" --timeout "$per_run" 2>"$work/run.err"); then
    say "FAIL  k8s-job: docker run of tgrun observe failed: $(tail -n 1 "$work/run.err")" >&2
    failed=$((failed + 1))
    return
  fi
  for ((i = 0; i < n; i++)); do
    /usr/bin/python3 examples/k8s/check.py --pod "$i" >"$work/pod$i"
    sed '/^--$/,$d' "$work/pod$i" | grep -v '=@' | sed "s/^TEST_RUN=.*/TEST_RUN=$run/" >"$work/pod$i.env"
    { sed -n 's/^\([A-Z_]*\)=@status.podIP$/export \1=$(hostname -i)/p' "$work/pod$i"
      sed '1,/^--$/d' "$work/pod$i"; } >"$work/pod$i.sh"
    mkdir -p "$work/out/$run/$i" "$work/temp/$run/$i"
    chown 10001:10001 "$work/out/$run/$i" "$work/temp/$run/$i"
    local cid
    if ! cid=$(docker run -d --label "$label" --network "$net" --name "$id-k8s-$i" \
        -v "$root/examples/addresses.lua:/plan/addresses.lua:ro" -v "$work/out/$run/$i:/outputs" \
        -v "$work/temp/$run/$i:/temp" --env-file "$work/pod$i.env" \
        --entrypoint /bin/sh tgrun:latest -c "$(cat "$work/pod$i.sh")" 2>"$work/run.err"); then
      say "FAIL  k8s-job: docker run failed: $(tail -n 1 "$work/run.err")" >&2
      ok=0
      break
    fi
    ids+=("$cid")
  done
  local deadline=$(($(date +%s) + per_run))
  for ((k = 0; k < ${#ids[@]}; k++)); do
    local left=$((deadline - $(date +%s)))
    [ $left -gt 0 ] || left=1
    code=$(timeout "$left" docker wait "${ids[$k]}" 2>/dev/null) || code="timeout"
    if [ "$code" != 0 ] || ! grep -qs '"success_event"' "$work/out/$run/$k"/*/*/run.out; then
      ok=0
      say "FAIL  k8s-job: pod index $k exit $code; last lines:" >&2
      docker logs --tail 8 "${ids[$k]}" 2>&1 | cut -c1-300 | sed 's/^/      | /' >&2
    fi
  done
  # the groups the indexes were mapped to: 2 seeds and 6 leeches
  local seeds leeches
  seeds=$(ls -d "$work/out/$run"/*/seeds/* 2>/dev/null | wc -l)
  leeches=$(ls -d "$work/out/$run"/*/leeches/* 2>/dev/null | wc -l)
  if [ $ok = 1 ] && { [ "$seeds" != 2 ] || [ "$leeches" != 6 ]; }; then
    ok=0
    say "FAIL  k8s-job: expected outputs of 2 seeds and 6 leeches, got $seeds and $leeches" >&2
  fi
  local left=$((deadline - $(date +%s)))
  [ $left -gt 0 ] || left=1
  code=$(timeout "$left" docker wait "$obs" 2>/dev/null) || code="timeout"
  docker logs "$obs" >"$work/k8s-observe.log" 2>&1
  if [ "$code" != 0 ] || ! grep -q "8 instances (observed), 8 succeeded, 0 failed" "$work/k8s-observe.log" \
      || ! grep -q "group seeds: 2 succeeded, 0 failed" "$work/k8s-observe.log" \
      || ! grep -q "group leeches: 6 succeeded, 0 failed" "$work/k8s-observe.log" \
      || ! grep -q '^seeds\[0\]@' "$work/k8s-observe.log" || ! grep -q '^leeches\[5\]@' "$work/k8s-observe.log"; then
    ok=0
    say "FAIL  k8s-job: tgrun observe exit $code; last lines:" >&2
    tail -n 12 "$work/k8s-observe.log" | sed 's/^/      | /' >&2
  fi
  docker rm -f "$obs" >/dev/null 2>&1
  [ ${#ids[@]} -gt 0 ] && docker rm -f "${ids[@]}" >/dev/null 2>&1
  if [ $ok = 1 ]; then
    passed=$((passed + 1))
    printf 'ok    %6ss  %s\n' "$(secs "$t")" "k8s-job ($n containers as examples/k8s/job.yaml's pods, followed by tgrun observe, after check.py's $(sed -n 's/^check.py: \([0-9]*\) passed.*/\1/p' "$work/k8s-check.log") offline checks)"
  else
    failed=$((failed + 1))
  fi
}
k8s_case

# f. tgrun -n --docker, as its specs drive it (each spec run is one case)
spec_case() {   # spec_case NAME BINARY [ENV...]
  local name=$1 bin=$2 t
  shift 2
  t=$(date +%s.%N)
  if [ ! -x "$bin" ]; then
    say "FAIL  $name: no tgrun binary at $bin (build it first: cmake --build build)" >&2
    failed=$((failed + 1))
    return
  fi
  if env "$@" TGRUN="$bin" timeout 1200 tests/harness/with-redis.sh "$bin" tests/lua/run_specs.lua \
      -p dir="$root/tests/docker" -p output=plainTerminal >"$work/$name.log" 2>&1; then
    passed=$((passed + 1))
    printf 'ok    %6ss  %s\n' "$(secs "$t")" "$name ($(grep -o '^[0-9]* successes' "$work/$name.log" | tail -n 1) in tests/docker/docker_spec.lua)"
  else
    failed=$((failed + 1))
    say "FAIL  $name: tests/docker/docker_spec.lua; last lines:" >&2
    grep -v '^{"ts"' "$work/$name.log" | tail -n 40 | sed 's/^/      | /' >&2
  fi
}
spec_case docker-runner "${TGRUN:-$root/build/tgrun}"
asan=${TGRUN_ASAN:-$root/build-asan/tgrun}
if [ -x "$asan" ]; then
  spec_case docker-runner-asan "$asan" ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  say "note: no sanitized build at $asan, so docker-runner-asan is not run"
fi

say "total $(secs "$t_start") s"
say "$passed passed, $failed failed"
[ $failed -eq 0 ]
