# Dockerfile -- the tgrun image: one tgrun binary (lua/, scripts/ and assets/ are
# compiled into it) on a slim Debian 12, as a non-root user.
#
#   docker build -t tgrun .
#   docker run --rm -v "$PWD/examples:/plan:ro" -e REDIS_HOST=... -e TEST_RUN=... tgrun /plan/addresses.lua
#
# The entrypoint is tgrun, so the arguments are tgrun's: a plan path inside
# the container, and options.  Plans are mounted (read-only), not baked in:
# changing a plan needs no rebuild.  examples/testground/Dockerfile is this
# file plus a stage that bakes in the Testground plan; its build and runtime
# stages must stay identical to these (tests/docker.sh checks).  The two
# images share the package layers and, the build being reproducible, the
# runtime stage; tgrun is compiled once for each (the legacy builder keys a
# COPY by its path in the context, and the paths differ).
#
# tg.network needs `--cap-add NET_ADMIN` (nothing more): tc and iptables
# carry that capability as file capabilities, so the non-root user can shape
# and partition its own container's network.  Without the flag the container
# cannot, and tg.network says so ("unsupported").

# -- build: the Debian packages of .ci/deps that building needs; tgrun only
FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config liblua5.4-dev libhiredis-dev libuv1-dev libwslay-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY src/ src/
COPY lua/ lua/
COPY scripts/ scripts/
COPY assets/ assets/
COPY tests/c/ tests/c/
COPY tests/fuzz/ tests/fuzz/
# TG_WERROR=OFF: another compiler's new warning must not break the image
ARG BUILD_TYPE=Release
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DTG_WERROR=OFF >/dev/null \
 && cmake --build build -j"$(nproc)" --target tgrun \
 && strip build/tgrun

# -- runtime: shared libraries, and iproute2 + iptables for tg.network
# (libcap2-bin, for setcap, stays: iproute2 depends on it)
FROM debian:12-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      liblua5.4-0 libhiredis0.14 libuv1 libwslay1 iproute2 iptables libcap2-bin \
 && setcap cap_net_admin+ep /usr/sbin/tc \
 && setcap cap_net_admin,cap_net_raw+ep "$(readlink -f /usr/sbin/iptables)" \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && useradd --uid 10001 --user-group --create-home --home-dir /home/tgrun --shell /usr/sbin/nologin tgrun
COPY --from=build /src/build/tgrun /usr/local/bin/tgrun
USER tgrun
WORKDIR /home/tgrun
ENTRYPOINT ["tgrun"]
CMD ["--help"]
