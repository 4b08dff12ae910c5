#!/bin/sh
# docker-engine.sh -- make sure a Docker engine answers, starting one if not.
#
#   tests/harness/docker-engine.sh && docker info
#
# Installs docker.io (Debian's engine) when dockerd is missing, then, if
# `docker info` gets no answer, starts dockerd in the background:
#   --storage-driver vfs   works on any filesystem, no overlay mounts needed
#                          (DOCKER_STORAGE_DRIVER overrides it)
#   --bridge none          no default docker0 bridge: runs use networks of
#                          their own, created --internal, so nothing is NATed
#   --ip-forward=false     the engine does not turn on routing; containers
#                          on one bridge reach each other without it
# Its log goes to $DOCKER_ENGINE_LOG (default /tmp/tgrun-dockerd.log).  Waits
# at most $DOCKER_ENGINE_WAIT seconds (default 60) for `docker info`.
# Idempotent: an engine that answers already (ours or the system's) is left
# alone.  Exits 0 when an engine answers, else prints one line saying what
# failed and exits 2.
set -u
log=${DOCKER_ENGINE_LOG:-/tmp/tgrun-dockerd.log}
wait_s=${DOCKER_ENGINE_WAIT:-60}
driver=${DOCKER_STORAGE_DRIVER:-vfs}

fail() {
  echo "docker-engine.sh: $*" >&2
  exit 2
}

answers() {
  docker info >/dev/null 2>&1
}

if command -v docker >/dev/null 2>&1 && answers; then
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  # docker.io pulls in containerd, runc, tini and iptables
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends docker.io iptables; } >/tmp/tgrun-docker-install.log 2>&1; then
    fail "apt-get install docker.io failed (see /tmp/tgrun-docker-install.log)"
  fi
  command -v dockerd >/dev/null 2>&1 || fail "docker.io is installed but dockerd is not on PATH"
fi

if answers; then exit 0; fi

# a dockerd of ours that is still starting: wait for it instead of starting a second
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  :
else
  # dockerd starts containerd itself when none runs
  $SUDO sh -c "nohup dockerd --storage-driver '$driver' --bridge none --ip-forward=false \
    --pidfile '$pidfile' >'$log' 2>&1 </dev/null &"
fi

i=0
while [ "$i" -lt "$((wait_s * 5))" ]; do
  if answers; then exit 0; fi
  sleep 0.2
  i=$((i + 1))
done
last=$(grep -i -E 'level=(fatal|error)' "$log" 2>/dev/null | tail -n 1)
fail "no Docker engine answered within ${wait_s} s (dockerd log: $log${last:+; last error: $last})"
