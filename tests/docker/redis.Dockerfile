# redis.Dockerfile -- the run's Redis for tests/docker.sh: Debian 12's
# redis-server (and redis-cli, with which the test plays Testground's
# sidecar), built FROM the same debian:12 as the tgrun image, since no
# registry (and so no `redis` image) is reachable here.
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
ENTRYPOINT ["redis-server"]
CMD ["--protected-mode", "no", "--save", "", "--appendonly", "no"]
