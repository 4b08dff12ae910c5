#!/bin/sh
# vendor.sh -- copy the tgrun sources into examples/testground/tgrun-src, so
# that Testground ships them to its daemon together with the plan (the
# docker:generic build context holds only the plan folder and linked SDKs).
# Run it again after changing tgrun; tgrun-src/ is a build input, not
# something to edit or commit.
#
#   examples/testground/vendor.sh && testground plan import --from examples/testground --name tgrun-examples
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dest="$here/tgrun-src"
rm -rf "$dest"
mkdir -p "$dest"
# what CMakeLists.txt needs to configure and build (tests/c and tests/fuzz
# are referenced by it), plus the example plans; no build trees, no outputs
(cd "$root" && tar cf - CMakeLists.txt cmake src lua scripts tests/c tests/fuzz \
  $(ls examples/*.lua)) | (cd "$dest" && tar xf -)
echo "vendor.sh: tgrun sources copied to $dest"
