/*
 * tg_redis.c -- the transport's connections, requests and scripts.  The
 * overview is in tg_redis.h; the stream reader is tg_streams.c.
 *
 * A request is one malloc'd block: the request, then the argument vector as
 * it went to the server (pointers, lengths, bytes), so that a NOSCRIPT
 * reply can resend it unchanged after loading the script again.
 */
#include "tg_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_adapter.h"
#include "tg_embedded.h"
#include "tg_redis_int.h"
#include "tg_sha1.h"

typedef struct req {
    tg_redis_t *r;
    tg_redis_cb cb;
    void *data;
    uint64_t tag;
    int script;                 /* TG_SCRIPT_*, or -1 for a plain command */
    int argc, retried;
    const char **argv;          /* in this block */
    size_t *lens;
} req_t;

static void lost(tg_redis_t *r, const char *why);

/* ---- connections ------------------------------------------------------- */

static void startup_fail(tg_redis_t *r, const char *fmt, const char *detail) {
    if (r->startup_failed) return;
    r->startup_failed = 1;
    if (r->startup_err) snprintf(r->startup_err, r->startup_errlen, fmt, r->addr, detail);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    conn_t *c = ac->data;
    if (status != REDIS_OK) {
        c->ac = NULL;           /* hiredis frees the context after this callback */
        startup_fail(c->r, "cannot connect to Redis at %s: %s", ac->errstr);
        lost(c->r, ac->errstr);
        return;
    }
    c->connected = 1;
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    conn_t *c = ac->data;
    c->ac = NULL;
    c->connected = 0;
    if (status != REDIS_OK || !c->r->closing) {
        char why[200];
        snprintf(why, sizeof why, "%s connection closed%s%s", c->name,
                 ac->errstr[0] ? ": " : "", ac->errstr);
        lost(c->r, why);
    }
}

static int conn_open(tg_redis_t *r, conn_t *c, const tg_redis_addr_t *a, const char *name) {
    c->r = r;
    c->name = name;
    c->ac = a->is_unix ? redisAsyncConnectUnix(a->path) : redisAsyncConnect(a->host, a->port);
    if (!c->ac) {
        startup_fail(r, "cannot connect to Redis at %s: %s", "out of memory");
        return -1;
    }
    if (c->ac->err) {
        startup_fail(r, "cannot connect to Redis at %s: %s", c->ac->errstr);
        redisAsyncFree(c->ac);
        c->ac = NULL;
        return -1;
    }
    c->ac->data = c;
    if (tg_adapter_attach(r->loop, c->ac) < 0) {
        startup_fail(r, "cannot connect to Redis at %s: %s", "cannot watch the socket");
        redisAsyncFree(c->ac);
        c->ac = NULL;
        return -1;
    }
    redisAsyncSetConnectCallback(c->ac, on_connect);
    redisAsyncSetDisconnectCallback(c->ac, on_disconnect);
    return 0;
}

/* The connection is gone for good: tell the listeners (their waits are not
 * requests), then let hiredis call back every pending request with NULL. */
static void lost(tg_redis_t *r, const char *why) {
    if (r->down) return;
    r->down = 1;
    snprintf(r->down_msg, sizeof r->down_msg, "lost the connection to Redis at %s (%s)", r->addr, why);
    tg_streams_stop(r);
    for (listener_t *l = r->listeners, *next; l; l = next) {
        next = l->next;         /* a listener may take itself off */
        l->fn(l->data, r->down_msg);
    }
    /* The other connection would only carry errors from here on. */
    if (r->cmd.ac) redisAsyncDisconnect(r->cmd.ac);
    if (r->blk.ac) redisAsyncDisconnect(r->blk.ac);
}

int tg_redis_on_lost(tg_redis_t *r, tg_redis_lost_fn fn, void *data) {
    listener_t *l = malloc(sizeof *l);
    if (!l) return -1;
    l->fn = fn;
    l->data = data;
    l->next = r->listeners;
    r->listeners = l;
    return 0;
}

void tg_redis_off_lost(tg_redis_t *r, tg_redis_lost_fn fn, void *data) {
    for (listener_t **p = &r->listeners; *p; p = &(*p)->next) {
        if ((*p)->fn != fn || (*p)->data != data) continue;
        listener_t *l = *p;
        *p = l->next;
        free(l);
        return;
    }
}

/* ---- start-up ------------------------------------------------------------ */

static void on_startup_reply(redisAsyncContext *ac, void *reply, void *priv) {
    conn_t *c = ac->data;
    tg_redis_t *r = c ? c->r : NULL;
    redisReply *rep = reply;
    const char *step = priv;
    if (!r) return;
    r->startup_pending--;
    if (!rep) {
        startup_fail(r, "cannot connect to Redis at %s: %s", ac->errstr[0] ? ac->errstr : "connection closed");
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char detail[300];
        snprintf(detail, sizeof detail, "%s failed: %s", step, rep->str);
        startup_fail(r, "Redis at %s refused the session: %s", detail);
        return;
    }
    if (strcmp(step, "CLIENT ID") == 0 && rep->type == REDIS_REPLY_INTEGER) r->blk_id = rep->integer;
    if (strncmp(step, "SCRIPT LOAD", 11) == 0) {
        int si = atoi(step + 12);
        if (rep->type != REDIS_REPLY_STRING || strcmp(rep->str, r->sha[si]) != 0)
            startup_fail(r, "Redis at %s refused the session: %s", "SCRIPT LOAD returned an unexpected digest");
    }
}

static void startup_cmd(tg_redis_t *r, conn_t *c, const char *step, int argc, const char **argv,
                        const size_t *lens) {
    if (!c->ac) return;
    if (redisAsyncCommandArgv(c->ac, on_startup_reply, (void *)step, argc, argv, lens) == REDIS_OK)
        r->startup_pending++;
}

static void auth_select(tg_redis_t *r, conn_t *c, const tg_redis_addr_t *a) {
    char db[16];
    if (a->password[0]) {
        if (a->user[0]) startup_cmd(r, c, "AUTH", 3, (const char *[]){"AUTH", a->user, a->password}, NULL);
        else startup_cmd(r, c, "AUTH", 2, (const char *[]){"AUTH", a->password}, NULL);
    }
    if (a->db) {
        snprintf(db, sizeof db, "%d", a->db);
        startup_cmd(r, c, "SELECT", 2, (const char *[]){"SELECT", db}, NULL);
    }
}

static void on_tick(uv_timer_t *h) {
    (void)h;                    /* only bounds one turn of a start-up loop */
}

/* Run the loop until done(r) or the deadline; 0, or -1 after a failure. */
static int run_until(tg_redis_t *r, int (*done)(tg_redis_t *), double timeout) {
    uint64_t end = uv_hrtime() + (uint64_t)(timeout * 1e9);
    while (!done(r) && !r->startup_failed && !r->down) {
        if (uv_hrtime() > end) {
            char d[64];
            snprintf(d, sizeof d, "no answer within %g s", timeout);
            startup_fail(r, "cannot connect to Redis at %s: %s", d);
            break;
        }
        uv_timer_start(&r->tick, on_tick, 50, 0);
        uv_run(r->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&r->tick);
    if (r->down && !r->startup_failed) startup_fail(r, "cannot connect to Redis at %s: %s", r->down_msg);
    return r->startup_failed ? -1 : 0;
}

static int startup_done(tg_redis_t *r) { return r->startup_pending == 0; }
static int settled(tg_redis_t *r) { return r->inflight == 0; }

int tg_redis_open(tg_redis_t **out, uv_loop_t *loop, const tg_redis_addr_t *addr,
                  double timeout, char *err, size_t errlen) {
    tg_redis_t *r = calloc(1, sizeof *r);
    *out = r;
    if (!r) { snprintf(err, errlen, "out of memory"); return -1; }
    r->loop = loop;
    r->startup_err = err;
    r->startup_errlen = errlen;
    tg_redis_addr_str(addr, r->addr, sizeof r->addr);
    uv_timer_init(loop, &r->tick);
    tg_streams_init(r);
    for (int i = 0; i < TG_NSCRIPTS; i++)
        tg_sha1_hex(tg_embedded_scripts[i].data, tg_embedded_scripts[i].len, r->sha[i]);

    int rc = 0;
    if (conn_open(r, &r->cmd, addr, "command") < 0 || conn_open(r, &r->blk, addr, "blocking") < 0) rc = -1;
    if (rc == 0) {
        auth_select(r, &r->cmd, addr);
        auth_select(r, &r->blk, addr);
        startup_cmd(r, &r->cmd, "CLIENT SETNAME", 3, (const char *[]){"CLIENT", "SETNAME", "tgrun-cmd"}, NULL);
        startup_cmd(r, &r->blk, "CLIENT SETNAME", 3, (const char *[]){"CLIENT", "SETNAME", "tgrun-blk"}, NULL);
        startup_cmd(r, &r->blk, "CLIENT ID", 2, (const char *[]){"CLIENT", "ID"}, NULL);
        /* every script once on this connection: EVALSHA from here on */
        static char steps[TG_NSCRIPTS][24];
        for (int i = 0; i < TG_NSCRIPTS; i++) {
            snprintf(steps[i], sizeof steps[i], "SCRIPT LOAD %d", i);
            const char *argv[3] = {"SCRIPT", "LOAD", tg_embedded_scripts[i].data};
            size_t lens[3] = {6, 4, tg_embedded_scripts[i].len};
            startup_cmd(r, &r->cmd, steps[i], 3, argv, lens);
        }
        rc = run_until(r, startup_done, timeout);
    }
    r->startup_err = NULL;
    if (rc < 0) {
        tg_redis_close(r);
        *out = NULL;
    }
    return rc;
}

int tg_redis_settle(tg_redis_t *r, double timeout, char *err, size_t errlen) {
    r->startup_err = err;
    r->startup_errlen = errlen;
    r->startup_failed = 0;
    int rc = run_until(r, settled, timeout);
    r->startup_err = NULL;
    return rc;
}

void tg_redis_close(tg_redis_t *r) {
    if (!r) return;
    r->closing = 1;
    r->down = 1;
    snprintf(r->down_msg, sizeof r->down_msg, "the runtime is shutting down");
    tg_streams_stop(r);
    if (r->cmd.ac) redisAsyncFree(r->cmd.ac);  /* pending callbacks run with NULL */
    if (r->blk.ac) redisAsyncFree(r->blk.ac);
    tg_streams_free(r);
    while (r->listeners) {
        listener_t *l = r->listeners;
        r->listeners = l->next;
        free(l);
    }
    uv_close((uv_handle_t *)&r->tick, NULL);
    /* The timers are inside r: run the loop so their close callbacks are done. */
    uv_run(r->loop, UV_RUN_NOWAIT);
    free(r);
}

/* ---- requests ------------------------------------------------------------- */

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

static void on_reload(redisAsyncContext *ac, void *reply, void *priv) {
    (void)ac; (void)reply; (void)priv;          /* the resent EVALSHA says how it went */
}

static int send_req(tg_redis_t *r, req_t *q) {
    if (r->down || !r->cmd.ac) return -1;
    return redisAsyncCommandArgv(r->cmd.ac, on_reply, q, q->argc, q->argv, q->lens) == REDIS_OK ? 0 : -1;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
    (void)ac;
    req_t *q = priv;
    redisReply *rep = reply;
    tg_redis_t *r = q->r;
    if (rep && rep->type == REDIS_REPLY_ERROR && q->script >= 0 && !q->retried
        && strncmp(rep->str, "NOSCRIPT", 8) == 0 && !r->down && r->cmd.ac) {
        /* The server lost its script cache (restart, SCRIPT FLUSH): load
         * the script again, then send the same EVALSHA once more.  One
         * connection keeps the order, so the load runs first. */
        const tg_embedded_t *sc = &tg_embedded_scripts[q->script];
        const char *argv[3] = {"SCRIPT", "LOAD", sc->data};
        size_t lens[3] = {6, 4, sc->len};
        q->retried = 1;
        r->stats.reloads++;
        if (redisAsyncCommandArgv(r->cmd.ac, on_reload, NULL, 3, argv, lens) == REDIS_OK
            && send_req(r, q) == 0) return;
    }
    r->inflight--;
    q->cb(r, rep, q->data, q->tag);
    free(q);
}

/* One block: the request, the pointers, the lengths, the bytes; the first
 * `head` arguments come from head/hlens, the rest from argv/lens. */
static req_t *req_new(tg_redis_t *r, int nhead, const char **head, const size_t *hlens,
                      int argc, const char **argv, const size_t *lens) {
    int total = nhead + argc;
    size_t bytes = 0;
    for (int i = 0; i < nhead; i++) bytes += hlens[i] + 1;
    for (int i = 0; i < argc; i++) bytes += (lens ? lens[i] : strlen(argv[i])) + 1;
    req_t *q = malloc(sizeof *q + (size_t)total * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (!q) return NULL;
    q->r = r;
    q->argc = total;
    q->retried = 0;
    q->argv = (const char **)(q + 1);
    q->lens = (size_t *)(q->argv + total);
    char *d = (char *)(q->lens + total);
    for (int i = 0; i < total; i++) {
        const char *s = i < nhead ? head[i] : argv[i - nhead];
        size_t n = i < nhead ? hlens[i] : (lens ? lens[i - nhead] : strlen(s));
        memcpy(d, s, n);
        d[n] = '\0';
        q->argv[i] = d;
        q->lens[i] = n;
        d += n + 1;
    }
    return q;
}

static int submit(tg_redis_t *r, req_t *q, tg_redis_cb cb, void *data, uint64_t tag, int script) {
    q->cb = cb;
    q->data = data;
    q->tag = tag;
    q->script = script;
    if (send_req(r, q) < 0) {
        free(q);
        return -1;
    }
    r->inflight++;
    r->stats.commands++;
    return 0;
}

int tg_redis_cmd(tg_redis_t *r, tg_redis_cb cb, void *data, uint64_t tag,
                 int argc, const char **argv, const size_t *lens) {
    if (r->down || argc < 1) return -1;
    req_t *q = req_new(r, 0, NULL, NULL, argc, argv, lens);
    return q ? submit(r, q, cb, data, tag, -1) : -1;
}

int tg_redis_eval(tg_redis_t *r, int script, tg_redis_cb cb, void *data, uint64_t tag,
                  int nkeys, int argc, const char **argv, const size_t *lens) {
    if (r->down || script < 0 || script >= TG_NSCRIPTS || nkeys < 0 || nkeys > argc) return -1;
    char nk[16];
    int nl = snprintf(nk, sizeof nk, "%d", nkeys);
    const char *head[3] = {"EVALSHA", r->sha[script], nk};
    size_t hlens[3] = {7, 40, (size_t)nl};
    req_t *q = req_new(r, 3, head, hlens, argc, argv, lens);
    return q ? submit(r, q, cb, data, tag, script) : -1;
}

void tg_redis_flush(tg_redis_t *r) {
    if (r && !r->down && r->cmd.ac && r->cmd.connected) redisAsyncHandleWrite(r->cmd.ac);
}

const char *tg_redis_down(const tg_redis_t *r) {
    return r->down ? r->down_msg : NULL;
}

const char *tg_redis_addr(const tg_redis_t *r) {
    return r->addr;
}

size_t tg_redis_inflight(const tg_redis_t *r) {
    return r->inflight;
}

const char *tg_redis_script_name(int script) {
    return script >= 0 && script < TG_NSCRIPTS ? tg_embedded_scripts[script].name : "?";
}

const tg_redis_stats_t *tg_redis_stats(const tg_redis_t *r) {
    return &r->stats;
}
