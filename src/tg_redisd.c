/* tg_redisd.c -- see tg_redisd.h. */
#define _POSIX_C_SOURCE 200809L
#include "tg_redisd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/hiredis.h>

#include "tg_run.h"

static int find_on_path(const char *name, char *out, size_t len) {
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/%s", *d ? d : ".", name);
        found = access(out, X_OK) == 0;
    }
    free(copy);
    return found ? 0 : -1;
}

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

int tg_redisd_start(tg_redisd_t *d, uv_loop_t *loop, const char *dir, int maxclients, const char *self) {
    char bin[4096], maxc[32], logf[4300];
    memset(d, 0, sizeof *d);
    d->loop = loop;
    if (find_on_path("redis-server", bin, sizeof bin) < 0)
        return tg_usage_error("redis-server is not on PATH: install it (apt-get install redis-server), "
                              "or point tgrun at a Redis with --redis URL or REDIS_HOST");
    snprintf(d->sock, sizeof d->sock, "%s/redis.sock", dir);
    snprintf(maxc, sizeof maxc, "%d", maxclients);
    snprintf(logf, sizeof logf, "%s/redis.log", dir);
    const char *argv[] = {self, "--_guard", bin, "--port", "0", "--unixsocket", d->sock, "--unixsocketperm", "700",
                          "--save", "", "--appendonly", "no", "--dir", dir,
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
