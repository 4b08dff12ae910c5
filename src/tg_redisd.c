/* tg_redisd.c -- see tg_redisd.h. */
#define _POSIX_C_SOURCE 200809L
#include "tg_redisd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <hiredis/hiredis.h>

#include "tg_run.h"

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
    (void)status; (void)sig;
    tg_redisd_t *d = p->data;
    d->running = 0;
    uv_close((uv_handle_t *)p, NULL);
}

/* Does the server answer PING on its socket? */
static int answers(const char *sock) {
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectUnixWithTimeout(sock, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep) freeReplyObject(rep);
    }
    if (c) redisFree(c);
    return ok;
}

/* A TCP port free on addr right now (the kernel's choice), or -1. */
static int free_port(const char *addr) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int tg_redisd_start(tg_redisd_t *d, uv_loop_t *loop, const char *dir, int maxclients, const char *bind,
                    const char *self) {
    char bin[4096], maxc[32], logf[4300], pidf[4300], port[16] = "0";
    memset(d, 0, sizeof *d);
    d->loop = loop;
    if (tg_find_on_path("redis-server", bin, sizeof bin) < 0)
        return tg_usage_error("redis-server is not on PATH: install it (apt-get install redis-server), "
                              "or point tgrun at a Redis with --redis URL or REDIS_HOST");
    snprintf(d->sock, sizeof d->sock, "%s/redis.sock", dir);
    snprintf(maxc, sizeof maxc, "%d", maxclients);
    snprintf(logf, sizeof logf, "%s/redis.log", dir);
    snprintf(pidf, sizeof pidf, "%s/redis.pid", dir);
    if (bind) {
        int p = free_port(bind);
        if (p < 0) return tg_usage_error("cannot find a free TCP port on %s for the run's Redis: %s", bind, strerror(errno));
        snprintf(port, sizeof port, "%d", p);
        snprintf(d->tcp_url, sizeof d->tcp_url, "redis://%s:%d", bind, p);
    }
    /* bound to the run's own address only, so protected mode has nothing to add */
    const char *argv[] = {self, "--_guard", bin, "--port", port, "--bind", bind ? bind : "127.0.0.1", "--protected-mode", "no",
                          "--unixsocket", d->sock, "--unixsocketperm", "700",
                          "--save", "", "--appendonly", "no", "--dir", dir, "--pidfile", pidf,
                          "--logfile", logf, "--maxclients", maxc, NULL};
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = self;
    po.args = (char **)argv;
    po.exit_cb = on_exit_cb;
    po.flags = UV_PROCESS_DETACHED;     /* Ctrl-C reaches tgrun, which stops it last */
    d->proc.data = d;
    int rc = uv_spawn(loop, &d->proc, &po);
    if (rc < 0) return tg_usage_error("cannot start redis-server: %s", uv_strerror(rc));
    d->running = 1;
    for (int i = 0; i < 250 && d->running; i++) {
        if (answers(d->sock)) {
            snprintf(d->url, sizeof d->url, "unix://%s", d->sock);
            return 0;
        }
        uv_run(loop, UV_RUN_NOWAIT);
        struct timespec pause = {0, 20000000};
        nanosleep(&pause, NULL);
    }
    return tg_usage_error("redis-server did not come up within 5 s (see %s)", logf);
}

static void on_timer(uv_timer_t *h) {
    tg_redisd_t *d = h->data;
    if (d->running) uv_process_kill(&d->proc, SIGKILL);
}

void tg_redisd_stop(tg_redisd_t *d) {
    if (!d->running) return;
    uv_process_kill(&d->proc, SIGTERM);
    uv_timer_init(d->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, on_timer, 5000, 0);   /* bounds the wait: SIGKILL then */
    while (d->running) uv_run(d->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&d->timer, NULL);
    uv_run(d->loop, UV_RUN_NOWAIT);
}
