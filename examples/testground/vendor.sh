#!/bin/sh
# vendor.sh [CTX] -- copy the tgrun sources next to this plan, so that
# Testground ships them to its daemon together with the plan (the
# docker:generic build context holds only the plan folder and linked SDKs).
#
#   examples/testground/vendor.sh && testground plan import --from examples/testground --name tgrun-examples
#       copies them to examples/testground/tgrun-src (ignored by git)
#   examples/testground/vendor.sh /tmp/ctx
#       makes a whole build context instead: /tmp/ctx/plan is this folder
#       with tgrun-src/ inside; then docker build -f /tmp/ctx/plan/Dockerfile /tmp/ctx
#
# Run it again after changing tgrun; tgrun-src/ is a build input, not
# something to edit or commit.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ $# -ge 1 ]; then
  mkdir -p "$1"
  ctx=$(cd "$1" && pwd)
  rm -rf "$ctx/plan"
  mkdir -p "$ctx/plan"
  (cd "$here" && tar cf - --exclude=./tgrun-src .) | (cd "$ctx/plan" && tar xf -)
  dest="$ctx/plan/tgrun-src"
else
  dest="$here/tgrun-src"
fi
rm -rf "$dest"
mkdir -p "$dest"
# what the Dockerfile's build stage copies (CMakeLists.txt references tests/c
# and tests/fuzz), plus the example plans; no build trees, no outputs
(cd "$root" && tar cf - CMakeLists.txt cmake src lua scripts assets tests/c tests/fuzz \
  $(ls examples/*.lua)) | (cd "$dest" && tar xf -)
echo "vendor.sh: tgrun sources copied to $dest"
