#!/bin/sh
# base-image.sh -- make sure the image `debian:12` exists, building it from
# Debian's own packages when it cannot be pulled.
#
#   tests/harness/base-image.sh          # after tests/harness/docker-engine.sh
#
# No image registry is reachable from our machines, so `FROM debian:12` would
# fail.  This script leaves an existing debian:12 alone (and tags it
# debian:12-slim if that tag is missing); otherwise it builds a Debian 12
# (bookworm) root filesystem with mmdebstrap from the same mirror apt uses
# here (read from /etc/apt/sources.list and /etc/apt/sources.list.d), imports
# it with `docker import` and tags it debian:12 and debian:12-slim, so an
# unchanged Dockerfile builds.  Variant minbase (apt, dpkg, bash, coreutils)
# with manuals, docs and locales left out, as in the official slim image.
#
# Environment: BASE_IMAGE_MIRROR overrides the mirror, BASE_IMAGE_SECURITY
# the security mirror (empty: none).  Prints one line and exits 2 on failure.
set -u
tag=debian:12

fail() {
  echo "base-image.sh: $*" >&2
  exit 2
}

docker info >/dev/null 2>&1 || fail "no Docker engine answers (run tests/harness/docker-engine.sh first)"

if docker image inspect "$tag" >/dev/null 2>&1; then
  docker image inspect "$tag-slim" >/dev/null 2>&1 || docker tag "$tag" "$tag-slim" || fail "docker tag $tag $tag-slim failed"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v mmdebstrap >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends mmdebstrap; } \
    >/tmp/tgrun-mmdebstrap-install.log 2>&1 \
    || fail "apt-get install mmdebstrap failed (see /tmp/tgrun-mmdebstrap-install.log)"
fi

# The mirrors apt uses: "URIs:" of deb822 .sources files, "deb URI ..." lines
# of .list files.  The one serving the plain suite is the main mirror; the one
# whose suites end in -security is the security mirror.
sources() {
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^[[:space:]]*deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*\)[[:space:]]\{1,\}\([^[:space:]]*\).*/\2 \3/p' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && awk '
      /^[[:space:]]*$/ { if (u != "") print u, s; u = ""; s = ""; next }
      /^URIs:/ { u = $2 } /^Suites:/ { s = $2 }
      END { if (u != "") print u, s }' "$f"
  done
}
mirror=${BASE_IMAGE_MIRROR:-$(sources | awk '$2 !~ /-security$/ { print $1; exit }')}
security=${BASE_IMAGE_SECURITY-$(sources | awk '$2 ~ /-security$/ { print $1; exit }')}
[ -n "$mirror" ] || fail "found no Debian mirror in /etc/apt/sources.list{,.d} (set BASE_IMAGE_MIRROR)"

work=$(mktemp -d "${TMPDIR:-/tmp}/tg-base-image.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
set -- "deb $mirror bookworm main" "deb $mirror bookworm-updates main"
[ -n "$security" ] && set -- "$@" "deb $security bookworm-security main"

# the merged-usr hook makes /bin etc. links itself: without it bookworm's
# usrmerge package (and perl with it, ~50 MB) would be installed
if ! $SUDO mmdebstrap --variant=minbase --mode=root --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --aptopt='Acquire::Languages "none"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/rootfs.tar" "$@" >"$work/mmdebstrap.log" 2>&1; then
  cp "$work/mmdebstrap.log" /tmp/tgrun-mmdebstrap.log
  fail "mmdebstrap of Debian 12 from $mirror failed (see /tmp/tgrun-mmdebstrap.log)"
fi
docker import --change 'CMD ["bash"]' --message "Debian 12 minbase from $mirror (tests/harness/base-image.sh)" \
  "$work/rootfs.tar" "$tag" >/dev/null || fail "docker import of the Debian 12 root filesystem failed"
docker tag "$tag" "$tag-slim" || fail "docker tag $tag $tag-slim failed"
echo "base-image.sh: built $tag and $tag-slim from $mirror ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
