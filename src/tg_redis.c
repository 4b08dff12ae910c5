/*
 * tg_redis.c -- the transport's connections, requests and scripts, and
 * getting them back after a connection was lost.  The overview is in
 * tg_redis.h; the stream reader is tg_streams.c.
 *
 * A request is one malloc'd block: the request, then the argument vector as
 * it went to the server (pointers, lengths, bytes), so that it can be sent
 * again unchanged -- after a NOSCRIPT reply (the script is loaded first) or
 * after a reconnect.  Every request the transport holds is on exactly one of
 * two lists: `sent` (handed to hiredis on the current connection) or
 * `queued` (waiting for a connection: resends first, in their original
 * order, then new requests).
 *
 * A dropped connection is not the end: hiredis answers every request it
 * held with NULL, and we move those requests to `queued`, marked as resends
 * (they may have run).  Both connections are made again (with backoff, for
 * at most retry seconds), the session steps run (AUTH, SELECT, names, every
 * script loaded), the probe that the run set-up registered says whether the
 * store still holds the run, and then everything queued goes out.  Only
 * when that fails is the connection lost for good: loss listeners first,
 * then every request's callback with NULL.
 */
#include "tg_redis.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_adapter.h"
#include "tg_embedded.h"
#include "tg_redis_int.h"
#include "tg_sha1.h"

typedef struct req {
    tg_redis_t *r;
    struct req *prev, *next;    /* on r->sent or r->queued */
    tg_redis_cb cb;
    void *data;
    uint64_t tag;
    int script;                 /* TG_SCRIPT_*, or -1 for a plain command */
    int argc, retried, resent;
    int mark;                   /* argv index set to "1" when it is resent, or -1 */
    const char **argv;          /* in this block */
    size_t *lens;
} req_t;

typedef struct rlist {
    req_t *head, *tail;
} rlist_t;

static void lost(tg_redis_t *r, const char *why);
static void begin_reconnect(tg_redis_t *r, const char *why);
static int send_req(tg_redis_t *r, req_t *q);

static void list_add(rlist_t *l, req_t *q) {
    q->next = NULL;
    q->prev = l->tail;
    if (l->tail) l->tail->next = q;
    else l->head = q;
    l->tail = q;
}

static void list_del(rlist_t *l, req_t *q) {
    if (q->prev) q->prev->next = q->next;
    else l->head = q->next;
    if (q->next) q->next->prev = q->prev;
    else l->tail = q->prev;
    q->prev = q->next = NULL;
}

#define SENT(r) ((rlist_t *)&(r)->sent_head)
#define QUEUED(r) ((rlist_t *)&(r)->queued_head)

/* ---- connections ------------------------------------------------------- */

static void startup_fail(tg_redis_t *r, int refused, const char *fmt, const char *detail) {
    if (r->startup_failed) return;
    r->startup_failed = refused ? -2 : -1;
    char d[600];
    snprintf(d, sizeof d, "%.599s", detail);    /* the message's size is known */
    snprintf(r->last_err, sizeof r->last_err, fmt, r->addr, d);
    if (r->startup_err) snprintf(r->startup_err, r->startup_errlen, "%.1000s", r->last_err);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    conn_t *c = ac->data;
    if (status != REDIS_OK) {
        c->ac = NULL;           /* hiredis frees the context after this callback */
        startup_fail(c->r, 0, "cannot connect to Redis at %s: %s", ac->errstr);
        if (c->r->state == TG_REDIS_UP && !c->r->opening) begin_reconnect(c->r, ac->errstr);
        else if (c->r->state == TG_REDIS_RECONNECTING) c->r->attempt_failed = 1;
        return;
    }
    c->connected = 1;
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    conn_t *c = ac->data;
    tg_redis_t *r = c->r;
    c->ac = NULL;
    c->connected = 0;
    if (r->closing) return;
    char why[200];
    snprintf(why, sizeof why, "%s connection closed%s%s", c->name,
             ac->errstr[0] ? ": " : "", ac->errstr);
    (void)status;
    if (r->state == TG_REDIS_UP && !r->opening) begin_reconnect(r, why);
    else if (r->state == TG_REDIS_RECONNECTING) r->attempt_failed = 1;
    else if (r->opening) startup_fail(r, 0, "cannot connect to Redis at %s: %s", why);
}

static int conn_open(tg_redis_t *r, conn_t *c, const char *name) {
    const tg_redis_addr_t *a = &r->a;
    c->r = r;
    c->name = name;
    c->connected = 0;
    c->ac = a->is_unix ? redisAsyncConnectUnix(a->path) : redisAsyncConnect(a->host, a->port);
    if (!c->ac) {
        startup_fail(r, 0, "cannot connect to Redis at %s: %s", "out of memory");
        return -1;
    }
    if (c->ac->err) {
        startup_fail(r, 0, "cannot connect to Redis at %s: %s", c->ac->errstr);
        redisAsyncFree(c->ac);
        c->ac = NULL;
        return -1;
    }
    c->ac->data = c;
    if (tg_adapter_attach(r->loop, c->ac) < 0) {
        startup_fail(r, 0, "cannot connect to Redis at %s: %s", "cannot watch the socket");
        redisAsyncFree(c->ac);
        c->ac = NULL;
        return -1;
    }
    redisAsyncSetConnectCallback(c->ac, on_connect);
    redisAsyncSetDisconnectCallback(c->ac, on_disconnect);
    return 0;
}

/* Free c's context now: its pending requests come back with NULL (and are
 * queued for a resend while reconnecting). */
static void free_conn(conn_t *c) {
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    c->connected = 0;
    if (ac) redisAsyncFree(ac);
}

/* Give every request still held its callback with NULL, in order. */
static void fail_all(tg_redis_t *r) {
    req_t *q;
    while ((q = QUEUED(r)->head)) {
        list_del(QUEUED(r), q);
        r->inflight--;
        q->cb(r, NULL, q->data, q->tag);
        free(q);
    }
}

/* The connection is gone for good: tell the listeners (their waits are not
 * requests), then every request held gets its callback with NULL. */
static void lost_as(tg_redis_t *r, const char *msg);

static void lost(tg_redis_t *r, const char *why) {
    char msg[1400];
    snprintf(msg, sizeof msg, "lost the connection to Redis at %.300s (%.1000s)", r->addr, why);
    lost_as(r, msg);
}

/* Gone for good, and msg says why (the whole sentence). */
static void lost_as(tg_redis_t *r, const char *msg) {
    if (r->state == TG_REDIS_DOWN) return;
    r->state = TG_REDIS_DOWN;
    snprintf(r->down_msg, sizeof r->down_msg, "%s", msg);
    tg_streams_stop(r);
    uv_timer_stop(&r->rtimer);
    for (listener_t *l = r->listeners, *next; l; l = next) {
        next = l->next;         /* a listener may take itself off */
        if (l->lost) l->lost(l->data, r->down_msg);
    }
    /* hiredis calls back what it holds with NULL; with the state DOWN the
     * callbacks are passed on, not queued for a resend */
    free_conn(&r->cmd);
    free_conn(&r->blk);
    fail_all(r);
}

int tg_redis_on_lost(tg_redis_t *r, tg_redis_lost_fn fn, void *data) {
    return tg_redis_listen(r, fn, NULL, data);
}

int tg_redis_listen(tg_redis_t *r, tg_redis_lost_fn lost_fn, tg_redis_restored_fn restored_fn, void *data) {
    listener_t *l = malloc(sizeof *l);
    if (!l) return -1;
    l->lost = lost_fn;
    l->restored = restored_fn;
    l->data = data;
    l->next = r->listeners;
    r->listeners = l;
    return 0;
}

void tg_redis_off_lost(tg_redis_t *r, tg_redis_lost_fn fn, void *data) {
    for (listener_t **p = &r->listeners; *p; p = &(*p)->next) {
        if ((*p)->lost != fn || (*p)->data != data) continue;
        listener_t *l = *p;
        *p = l->next;
        free(l);
        return;
    }
}

/* ---- the session steps of a connection --------------------------------- */

static void on_startup_reply(redisAsyncContext *ac, void *reply, void *priv) {
    conn_t *c = ac->data;
    tg_redis_t *r = c ? c->r : NULL;
    redisReply *rep = reply;
    const char *step = priv;
    if (!r || r->closing) return;
    r->startup_pending--;
    if (!rep) {
        startup_fail(r, 0, "cannot connect to Redis at %s: %s", ac->errstr[0] ? ac->errstr : "connection closed");
        if (r->state == TG_REDIS_RECONNECTING) r->attempt_failed = 1;
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char detail[300];
        snprintf(detail, sizeof detail, "%s failed: %s", step, rep->str);
        startup_fail(r, 1, "Redis at %s refused the session: %s", detail);
        if (r->state == TG_REDIS_RECONNECTING) r->attempt_failed = 1;
        return;
    }
    if (strcmp(step, "CLIENT ID") == 0 && rep->type == REDIS_REPLY_INTEGER) r->blk_id = rep->integer;
    if (strncmp(step, "SCRIPT LOAD", 11) == 0) {
        int si = atoi(step + 12);
        if (rep->type != REDIS_REPLY_STRING || strcmp(rep->str, r->sha[si]) != 0)
            startup_fail(r, 1, "Redis at %s refused the session: %s", "SCRIPT LOAD returned an unexpected digest");
    }
    if (strcmp(step, "probe") == 0 && r->probe_check) {
        char why[600] = "";
        if (r->probe_check(r->probe_data, rep, why, sizeof why) < 0) {
            r->probe_failed = 1;
            snprintf(r->last_err, sizeof r->last_err, "%.1300s", why);
        }
    }
}

static void startup_cmd(tg_redis_t *r, conn_t *c, const char *step, int argc, const char **argv,
                        const size_t *lens) {
    if (!c->ac) return;
    if (redisAsyncCommandArgv(c->ac, on_startup_reply, (void *)step, argc, argv, lens) == REDIS_OK)
        r->startup_pending++;
}

static void auth_select(tg_redis_t *r, conn_t *c) {
    const tg_redis_addr_t *a = &r->a;
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

/* Open both connections and send their session steps (and, on a
 * reconnect, the probe).  0, or -1 when a connection could not even start. */
static int start_session(tg_redis_t *r, int with_probe) {
    static char steps[TG_NSCRIPTS][24];
    r->startup_pending = 0;
    if (conn_open(r, &r->cmd, "command") < 0 || conn_open(r, &r->blk, "blocking") < 0) return -1;
    auth_select(r, &r->cmd);
    auth_select(r, &r->blk);
    startup_cmd(r, &r->cmd, "CLIENT SETNAME", 3, (const char *[]){"CLIENT", "SETNAME", "tgrun-cmd"}, NULL);
    startup_cmd(r, &r->blk, "CLIENT SETNAME", 3, (const char *[]){"CLIENT", "SETNAME", "tgrun-blk"}, NULL);
    startup_cmd(r, &r->blk, "CLIENT ID", 2, (const char *[]){"CLIENT", "ID"}, NULL);
    /* every script once on this connection: EVALSHA from here on */
    for (int i = 0; i < TG_NSCRIPTS; i++) {
        snprintf(steps[i], sizeof steps[i], "SCRIPT LOAD %d", i);
        const char *argv[3] = {"SCRIPT", "LOAD", tg_embedded_scripts[i].data};
        size_t lens[3] = {6, 4, tg_embedded_scripts[i].len};
        startup_cmd(r, &r->cmd, steps[i], 3, argv, lens);
    }
    if (with_probe && r->probe_argc)
        startup_cmd(r, &r->cmd, "probe", r->probe_argc, (const char **)r->probe_argv, r->probe_lens);
    return 0;
}

static void on_tick(uv_timer_t *h) {
    (void)h;                    /* only bounds one turn of a start-up loop */
}

/* Run the loop until done(r) or the deadline; 0, or <0 after a failure. */
static int run_until(tg_redis_t *r, int (*done)(tg_redis_t *), double timeout) {
    uint64_t end = uv_hrtime() + (uint64_t)(timeout * 1e9);
    while (!done(r) && !r->startup_failed && r->state != TG_REDIS_DOWN) {
        if (uv_hrtime() > end) {
            char d[64];
            snprintf(d, sizeof d, "no answer within %g s", timeout);
            startup_fail(r, 0, "cannot connect to Redis at %s: %s", d);
            break;
        }
        uv_timer_start(&r->tick, on_tick, 50, 0);
        uv_run(r->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&r->tick);
    if (r->state == TG_REDIS_DOWN && !r->startup_failed)
        startup_fail(r, 0, "cannot connect to Redis at %s: %s", r->down_msg);
    return r->startup_failed;
}

static int startup_done(tg_redis_t *r) { return r->startup_pending == 0; }
static int settled(tg_redis_t *r) { return r->inflight == 0; }

int tg_redis_open(tg_redis_t **out, uv_loop_t *loop, const tg_redis_addr_t *addr,
                  double timeout, char *err, size_t errlen) {
    tg_redis_t *r = calloc(1, sizeof *r);
    *out = r;
    if (!r) { snprintf(err, errlen, "out of memory"); return -1; }
    r->loop = loop;
    r->a = *addr;
    r->retry_secs = 5;
    r->startup_err = err;
    r->startup_errlen = errlen;
    r->opening = 1;
    tg_redis_addr_str(addr, r->addr, sizeof r->addr);
    uv_timer_init(loop, &r->tick);
    uv_timer_init(loop, &r->rtimer);
    r->rtimer.data = r;
    tg_streams_init(r);
    for (int i = 0; i < TG_NSCRIPTS; i++)
        tg_sha1_hex(tg_embedded_scripts[i].data, tg_embedded_scripts[i].len, r->sha[i]);
    int rc = start_session(r, 0) < 0 ? -1 : run_until(r, startup_done, timeout);
    r->startup_err = NULL;
    r->opening = 0;
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
    return rc < 0 ? -1 : 0;
}

void tg_redis_set_retry(tg_redis_t *r, double secs) {
    r->retry_secs = secs;
}

int tg_redis_set_probe(tg_redis_t *r, int argc, const char **argv, const size_t *lens,
                       int (*check)(void *data, const redisReply *rep, char *why, size_t whylen),
                       void *data) {
    size_t bytes = 0;
    for (int i = 0; i < argc; i++) bytes += lens[i] + 1;
    char *blk = malloc((size_t)argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (!blk) return -1;
    free(r->probe_block);
    r->probe_block = blk;
    r->probe_argv = (char **)blk;
    r->probe_lens = (size_t *)(r->probe_argv + argc);
    char *d = (char *)(r->probe_lens + argc);
    for (int i = 0; i < argc; i++) {
        memcpy(d, argv[i], lens[i]);
        d[lens[i]] = '\0';
        r->probe_argv[i] = d;
        r->probe_lens[i] = lens[i];
        d += lens[i] + 1;
    }
    r->probe_argc = argc;
    r->probe_check = check;
    r->probe_data = data;
    return 0;
}

/* ---- reconnecting -------------------------------------------------------- */

static void attempt(uv_timer_t *h);

static void drop_conns(tg_redis_t *r) {
    free_conn(&r->cmd);
    free_conn(&r->blk);
}

/* A connection dropped: try to get both back within retry seconds. */
static void begin_reconnect(tg_redis_t *r, const char *why) {
    if (r->state != TG_REDIS_UP) return;
    if (r->retry_secs <= 0) {
        lost(r, why);
        return;
    }
    r->state = TG_REDIS_RECONNECTING;
    r->reconnects++;
    snprintf(r->last_err, sizeof r->last_err, "%.1000s", why);
    r->reconnect_end = uv_hrtime() + (uint64_t)(r->retry_secs * 1e9);
    r->backoff_ms = 0;
    r->xread_inflight = 0;
    r->unblock_pending = 0;
    tg_streams_stop(r);
    drop_conns(r);              /* the other one too: both start over */
    uv_timer_start(&r->rtimer, attempt, 0, 0);
}

static void next_attempt(tg_redis_t *r) {
    drop_conns(r);
    if (uv_hrtime() >= r->reconnect_end) {
        char why[1100];
        snprintf(why, sizeof why, "could not reconnect within %g s: %.1000s", r->retry_secs, r->last_err);
        lost(r, why);
        return;
    }
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 50;
    if (r->backoff_ms > 1000) r->backoff_ms = 1000;
    uv_timer_start(&r->rtimer, attempt, r->backoff_ms, 0);
}

/* The connections are back and the store still holds the run: send what
 * waited, then let the readers and the users go on. */
static void restored(tg_redis_t *r) {
    r->state = TG_REDIS_UP;
    req_t *q;
    rlist_t pending = *QUEUED(r);
    QUEUED(r)->head = QUEUED(r)->tail = NULL;
    while ((q = pending.head)) {
        list_del(&pending, q);
        if (q->resent && q->mark >= 0) {
            q->argv[q->mark] = "1";     /* the script answers as for a retry */
            q->lens[q->mark] = 1;
        }
        if (send_req(r, q) < 0) {
            list_add(QUEUED(r), q);     /* dropped again meanwhile */
            continue;
        }
        list_add(SENT(r), q);
    }
    tg_streams_resume(r);
    for (listener_t *l = r->listeners, *next; l; l = next) {
        next = l->next;
        if (l->restored) l->restored(l->data);
    }
}

static void on_check(uv_timer_t *h);

/* One try: connect, run the session steps, probe; on_check decides. */
static void attempt(uv_timer_t *h) {
    tg_redis_t *r = h->data;
    if (r->state != TG_REDIS_RECONNECTING) return;
    r->startup_failed = 0;
    r->attempt_failed = 0;
    r->probe_failed = 0;
    if (start_session(r, 1) < 0) {
        next_attempt(r);
        return;
    }
    uv_timer_start(&r->rtimer, on_check, 10, 10);
}

static void on_check(uv_timer_t *h) {
    tg_redis_t *r = h->data;
    if (r->state != TG_REDIS_RECONNECTING) {
        uv_timer_stop(h);
        return;
    }
    if (r->probe_failed) {
        uv_timer_stop(h);
        lost_as(r, r->last_err);        /* the store lost the run: no point retrying */
        return;
    }
    if (r->attempt_failed || r->startup_failed || !r->cmd.ac || !r->blk.ac) {
        uv_timer_stop(h);
        next_attempt(r);
        return;
    }
    if (r->startup_pending > 0) {
        if (uv_hrtime() >= r->reconnect_end) {
            uv_timer_stop(h);
            next_attempt(r);
        }
        return;
    }
    uv_timer_stop(h);
    restored(r);
}

/* ---- closing --------------------------------------------------------------- */

void tg_redis_close(tg_redis_t *r) {
    if (!r) return;
    r->closing = 1;
    r->state = TG_REDIS_DOWN;
    snprintf(r->down_msg, sizeof r->down_msg, "the runtime is shutting down");
    tg_streams_stop(r);
    uv_timer_stop(&r->rtimer);
    free_conn(&r->cmd);         /* pending callbacks run with NULL */
    free_conn(&r->blk);
    fail_all(r);
    tg_streams_free(r);
    while (r->listeners) {
        listener_t *l = r->listeners;
        r->listeners = l->next;
        free(l);
    }
    free(r->probe_block);
    uv_close((uv_handle_t *)&r->tick, NULL);
    uv_close((uv_handle_t *)&r->rtimer, NULL);
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
    if (r->state != TG_REDIS_UP || !r->cmd.ac) return -1;
    return redisAsyncCommandArgv(r->cmd.ac, on_reply, q, q->argc, q->argv, q->lens) == REDIS_OK ? 0 : -1;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
    (void)ac;
    req_t *q = priv;
    redisReply *rep = reply;
    tg_redis_t *r = q->r;
    list_del(SENT(r), q);
    if (!rep && !r->closing && r->state != TG_REDIS_DOWN && r->retry_secs > 0) {
        /* The connection dropped with this request unanswered: it may have
         * run.  Keep it for the reconnect, marked as a resend. */
        q->resent = 1;
        list_add(QUEUED(r), q);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_ERROR && q->script >= 0 && !q->retried
        && strncmp(rep->str, "NOSCRIPT", 8) == 0 && r->state == TG_REDIS_UP && r->cmd.ac) {
        /* The server lost its script cache (restart, SCRIPT FLUSH): load
         * the script again, then send the same EVALSHA once more.  One
         * connection keeps the order, so the load runs first. */
        const tg_embedded_t *sc = &tg_embedded_scripts[q->script];
        const char *argv[3] = {"SCRIPT", "LOAD", sc->data};
        size_t lens[3] = {6, 4, sc->len};
        q->retried = 1;
        r->stats.reloads++;
        if (redisAsyncCommandArgv(r->cmd.ac, on_reload, NULL, 3, argv, lens) == REDIS_OK
            && send_req(r, q) == 0) {
            list_add(SENT(r), q);
            return;
        }
    }
    r->inflight--;
    q->cb(r, rep, q->data, q->tag);
    free(q);
}

/* One block: the request, the pointers, the lengths, the bytes; the first
 * nhead arguments come from head/hlens, the rest from argv/lens. */
static req_t *req_new(tg_redis_t *r, int nhead, const char **head, const size_t *hlens,
                      int argc, const char **argv, const size_t *lens) {
    int total = nhead + argc;
    size_t bytes = 0;
    for (int i = 0; i < nhead; i++) bytes += hlens[i] + 1;
    for (int i = 0; i < argc; i++) bytes += (lens ? lens[i] : strlen(argv[i])) + 1;
    req_t *q = malloc(sizeof *q + (size_t)total * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (!q) return NULL;
    q->r = r;
    q->prev = q->next = NULL;
    q->argc = total;
    q->retried = q->resent = 0;
    q->mark = -1;
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
    if (r->state == TG_REDIS_RECONNECTING) {
        list_add(QUEUED(r), q);         /* goes out once the connection is back */
    } else if (send_req(r, q) == 0) {
        list_add(SENT(r), q);
    } else {
        free(q);
        return -1;
    }
    r->inflight++;
    r->stats.commands++;
    return 0;
}

int tg_redis_cmd(tg_redis_t *r, tg_redis_cb cb, void *data, uint64_t tag,
                 int argc, const char **argv, const size_t *lens) {
    if (r->state == TG_REDIS_DOWN || argc < 1) return -1;
    req_t *q = req_new(r, 0, NULL, NULL, argc, argv, lens);
    return q ? submit(r, q, cb, data, tag, -1) : -1;
}

int tg_redis_eval_marked(tg_redis_t *r, int script, tg_redis_cb cb, void *data, uint64_t tag,
                         int nkeys, int argc, const char **argv, const size_t *lens, int mark) {
    if (r->state == TG_REDIS_DOWN || script < 0 || script >= TG_NSCRIPTS || nkeys < 0 || nkeys > argc
        || mark >= argc)
        return -1;
    char nk[16];
    int nl = snprintf(nk, sizeof nk, "%d", nkeys);
    const char *head[3] = {"EVALSHA", r->sha[script], nk};
    size_t hlens[3] = {7, 40, (size_t)nl};
    req_t *q = req_new(r, 3, head, hlens, argc, argv, lens);
    if (!q) return -1;
    q->mark = mark >= 0 ? 3 + mark : -1;
    return submit(r, q, cb, data, tag, script);
}

int tg_redis_eval(tg_redis_t *r, int script, tg_redis_cb cb, void *data, uint64_t tag,
                  int nkeys, int argc, const char **argv, const size_t *lens) {
    return tg_redis_eval_marked(r, script, cb, data, tag, nkeys, argc, argv, lens, -1);
}

void tg_redis_flush(tg_redis_t *r) {
    if (r && r->state == TG_REDIS_UP && r->cmd.ac && r->cmd.connected) redisAsyncHandleWrite(r->cmd.ac);
}

/* Everything the socket of c holds now: hiredis reads 16 KB per call (and
 * the loop one call per turn), so thousands of replies that a busy turn
 * left waiting take many reads.  Bounded, in case they keep coming. */
static void read_all(conn_t *c) {
    for (int i = 0; i < 4096; i++) {
        if (!c->ac || !c->connected) return;        /* a callback may drop it (EOF) */
        struct pollfd p = {.fd = c->ac->c.fd, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) return;
        redisAsyncHandleRead(c->ac);
    }
}

void tg_redis_catch_up(tg_redis_t *r) {
    if (!r || r->closing) return;
    read_all(&r->cmd);
    read_all(&r->blk);
}

const char *tg_redis_down(const tg_redis_t *r) {
    return r->state == TG_REDIS_DOWN ? r->down_msg : NULL;
}

int tg_redis_reconnecting(const tg_redis_t *r) {
    return r->state == TG_REDIS_RECONNECTING;
}

const char *tg_redis_addr(const tg_redis_t *r) {
    return r->addr;
}

const tg_redis_addr_t *tg_redis_address(const tg_redis_t *r) {
    return &r->a;
}

size_t tg_redis_inflight(const tg_redis_t *r) {
    return r->inflight;
}

const char *tg_redis_script_name(int script) {
    return script >= 0 && script < TG_NSCRIPTS ? tg_embedded_scripts[script].name : "?";
}

const char *tg_redis_script_text(int script, size_t *len) {
    if (script < 0 || script >= TG_NSCRIPTS) { *len = 0; return ""; }
    *len = tg_embedded_scripts[script].len;
    return tg_embedded_scripts[script].data;
}

const char *tg_redis_script_sha(const tg_redis_t *r, int script) {
    return script >= 0 && script < TG_NSCRIPTS ? r->sha[script] : "";
}

unsigned tg_redis_reconnects(const tg_redis_t *r) {
    return r->reconnects;
}

const tg_redis_stats_t *tg_redis_stats(const tg_redis_t *r) {
    return &r->stats;
}
