/*
 * tg_serve.c -- see tg_serve.h.
 *
 * Layout of the state:
 *   srv_t ─┬─ conns: conn_t (a websocket client) ── items: its waiters and
 *          │                                        subscriptions (by id too)
 *          ├─ runs: run_t (per key prefix P; watches P:tg:notify while any
 *          │        barrier of the run waits) ── states: state_t ── waiters
 *          └─ topics: topic_t (per topic key; one watch of its stream, one
 *                     log of its values) ── subs: cursors into the log
 *
 * Requests to Redis carry their own small context (tg_redis.h: callback,
 * data); a context that names a connection holds a reference on it, so a
 * reply that comes after the client left only frees memory.  A waiter
 * whose await.lua has not answered yet is only marked dead when its
 * client leaves; the reply frees it.
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include "tg_serve.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tg_keys.h"
#include "tg_map.h"
#include "tg_redis.h"
#include "tg_sargs.h"
#include "tg_redisd.h"
#include "tg_run.h"
#include "tg_scalar.h"
#include "tg_scripts.h"
#include "tg_syncmsg.h"
#include "tg_tlog.h"
#include "tg_ws.h"
#include "tg_wshs.h"

#define TICK_MS 1000

typedef struct srv srv_t;
typedef struct conn conn_t;
typedef struct run run_t;
typedef struct state state_t;

typedef struct serve_opts {
    char host[256];
    int port;
    const char *redis_url;
    size_t max_message, max_backlog;
    double stall;
    char ttl[24];
} serve_opts_t;

enum { IT_WAITER = 1, IT_SUB };

/* A request that stays: a barrier wait or a subscription. */
typedef struct item {
    int type;
    conn_t *c;
    struct item *cprev, *cnext;   /* in its connection's list */
    size_t idlen;
    char *id;
} item_t;

typedef struct waiter {
    item_t it;
    state_t *st;                /* NULL once dead */
    long long target;
    int awaiting;               /* await.lua has not answered */
    int replied, released, dead;
    struct waiter *prev, *next;
} waiter_t;

struct state {
    run_t *run;
    long long count;            /* the highest count seen */
    waiter_t *head;
    size_t klen;
    char key[];
};

struct run {
    srv_t *s;
    tg_map_t states;            /* state key -> state_t with waiters */
    char *P, *notify;
    size_t plen, nlen;
    int watched;                /* the notify stream is watched (or about to be) */
};

typedef struct topic topic_t;

typedef struct sub {
    item_t it;
    topic_t *tp;
    size_t pos;
    struct sub *prev, *next;
} sub_t;

struct topic {
    srv_t *s;
    char *key;
    size_t klen;
    tg_tlog_t log;              /* every value read, for the subscriptions to replay */
    sub_t *subs;
};

struct conn {
    srv_t *s;
    tg_ws_t *ws;                /* NULL once closed */
    int refs;                   /* the websocket, and each request in flight */
    conn_t *prev, *next;
    item_t *items;
    tg_map_t byid;              /* id -> item, for is_cancel */
    int blocked;                /* over --max-backlog: deliveries wait for `drained` */
    double blocked_since;
    size_t blocked_backlog;
};

struct srv {
    uv_loop_t *loop;
    serve_opts_t o;
    char proc_id[16];           /* publish op ids: "<proc_id>:s<n>" */
    unsigned long long seq;
    uv_tcp_t listener;
    uv_signal_t sigint, sigterm;
    uv_timer_t tick;
    tg_redis_t *r;
    tg_redisd_t redisd;
    char tmpdir[4096];
    tg_map_t runs, topics;
    conn_t *conns;
    long nconns, accepted;
    tg_sbuf_t out;              /* responses are formatted here */
    int stopping, listening, exit_code, signals;
    int close_code;
    char close_why[124];
};

static void shutdown_begin(srv_t *s, int code, const char *why);

/* ---- connections ------------------------------------------------------------ */

static void conn_unref(conn_t *c) {
    if (--c->refs > 0) return;
    tg_map_free(&c->byid);
    free(c);
}

static void respond(conn_t *c, const char *id, size_t idlen, int kind, long long seq,
                    const char *payload, size_t plen, const char *error) {
    srv_t *s = c->s;
    if (!c->ws) return;
    s->out.len = 0;
    if (tg_syncmsg_format_response(&s->out, id, idlen, kind, seq, payload, plen, error) < 0
        || tg_ws_send(c->ws, s->out.p, s->out.len) < 0) {
        tg_ws_close(c->ws, 1011, "out of memory");
    }
    /* one 20 MB delivery must not pin 20 MB of scratch for every later 200-byte answer */
    if (s->out.cap > (1u << 20)) tg_sbuf_free(&s->out);
}

static void item_link(conn_t *c, item_t *it, int type, const char *id, size_t idlen) {
    it->type = type;
    it->c = c;
    it->idlen = idlen;
    if ((it->id = malloc(idlen + 1))) {
        memcpy(it->id, id, idlen);
        it->id[idlen] = '\0';
        tg_map_set(&c->byid, id, idlen, it);    /* a reused id: the newest request wins */
    }
    it->cnext = c->items;
    if (c->items) c->items->cprev = it;
    c->items = it;
}

static void item_unlink(item_t *it) {
    conn_t *c = it->c;
    if (it->id && tg_map_get(&c->byid, it->id, it->idlen) == it) tg_map_del(&c->byid, it->id, it->idlen);
    if (it->cprev) it->cprev->cnext = it->cnext;
    else c->items = it->cnext;
    if (it->cnext) it->cnext->cprev = it->cprev;
    free(it->id);
    it->id = NULL;
}

/* ---- barriers ------------------------------------------------------------------ */

static void run_free(run_t *run) {
    srv_t *s = run->s;
    if (run->watched) tg_redis_unwatch(s->r, run->notify, run->nlen);
    tg_map_del(&s->runs, run->P, run->plen);
    tg_map_free(&run->states);
    free(run->P);
    free(run->notify);
    free(run);
}

/* Take w out of its state (and the state, and the run, when they empty). */
static void waiter_remove(waiter_t *w) {
    state_t *st = w->st;
    item_unlink(&w->it);
    if (st) {
        if (w->prev) w->prev->next = w->next;
        else st->head = w->next;
        if (w->next) w->next->prev = w->prev;
        w->st = NULL;
        if (!st->head) {
            run_t *run = st->run;
            tg_map_del(&run->states, st->key, st->klen);
            free(st);
            if (run->states.len == 0) run_free(run);
        }
    }
    if (w->awaiting) {
        w->dead = 1;                            /* the await.lua reply frees it */
        return;
    }
    conn_unref(w->it.c);
    free(w);
}

static void release(waiter_t *w) {
    respond(w->it.c, w->it.id, w->it.idlen, TG_SM_BARRIER, 0, NULL, 0, NULL);
    waiter_remove(w);
}

/* The state's count is known to be at least n. */
static void count_is(state_t *st, long long n) {
    if (n > st->count) st->count = n;
    /* releasing may free st: walk with the next pointer and stop when the
     * last waiter went */
    for (waiter_t *w = st->head, *next; w; w = next) {
        next = w->next;
        if (w->target > st->count) continue;
        w->released = 1;
        if (w->replied) {
            int last = !w->next && w == st->head;
            release(w);
            if (last) return;
        }
    }
}

static state_t *find_state(srv_t *s, const char *P, size_t plen, const char *key, size_t klen) {
    run_t *run = tg_map_get(&s->runs, P, plen);
    return run ? tg_map_get(&run->states, key, klen) : NULL;
}

/* A notify entry: s=<state key> n=<count>; d=<sid> (a death: not ours). */
static void on_notify(void *data, const char *id, const redisReply *fields) {
    run_t *run = data;
    size_t slen, nlen;
    (void)id;
    const char *sk = tg_stream_field(fields, 's', &slen);
    const char *n = tg_stream_field(fields, 'n', &nlen);
    if (!sk || !n) return;
    state_t *st = tg_map_get(&run->states, sk, slen);
    if (st) count_is(st, strtoll(n, NULL, 10));
}

static const tg_stream_ops_t notify_ops = {on_notify, NULL, NULL};

/* Where the notify stream ends now: watching from there misses nothing
 * that an await.lua sent after this request can cause. */
static void on_notify_tail(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    char *P = data;
    (void)tag;
    srv_t *s = *(srv_t **)P;
    const char *p = P + sizeof(srv_t *);
    run_t *run = rep ? tg_map_get(&s->runs, p, strlen(p)) : NULL;
    if (run) {
        const char *from = "0-0";
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements && rep->element[0]->type == REDIS_REPLY_ARRAY
            && rep->element[0]->elements >= 1 && rep->element[0]->element[0]->type == REDIS_REPLY_STRING)
            from = rep->element[0]->element[0]->str;
        tg_redis_watch(r, run->notify, run->nlen, from, &notify_ops, run);
    }
    free(P);
}

static run_t *run_of(srv_t *s, const char *P, size_t plen) {
    run_t *run = tg_map_get(&s->runs, P, plen);
    if (run) return run;
    if (!(run = calloc(1, sizeof *run))) return NULL;
    run->s = s;
    run->plen = plen;
    if (!(run->P = malloc(plen + 1)) || !(run->notify = tg_key_new(P, plen, TG_KEY_NOTIFY, NULL, 0, &run->nlen))
        || tg_map_set(&s->runs, P, plen, run) < 0) {
        free(run->P);
        free(run->notify);
        free(run);
        return NULL;
    }
    memcpy(run->P, P, plen);
    run->P[plen] = '\0';
    /* [srv pointer][P NUL]: the reply finds the run again by name (it may be gone) */
    char *ctx = malloc(sizeof(srv_t *) + plen + 1);
    if (ctx) {
        *(srv_t **)ctx = s;
        memcpy(ctx + sizeof(srv_t *), P, plen);
        ctx[sizeof(srv_t *) + plen] = '\0';
        const char *argv[6] = {"XREVRANGE", run->notify, "+", "-", "COUNT", "1"};
        size_t lens[6] = {9, run->nlen, 1, 1, 5, 1};
        if (tg_redis_cmd(s->r, on_notify_tail, ctx, 0, 6, argv, lens) == 0) run->watched = 1;
        else free(ctx);
    }
    return run;
}

static void on_awaited(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    waiter_t *w = data;
    (void)r; (void)tag;
    w->awaiting = 0;
    if (w->dead) {
        conn_unref(w->it.c);
        free(w);
        return;
    }
    if (!rep) return;                           /* Redis is lost: the server is closing */
    if (rep->type == REDIS_REPLY_INTEGER) {
        w->replied = 1;
        if (rep->integer >= w->target) w->released = 1;
        if (w->released) release(w);
        else count_is(w->st, rep->integer);
        return;
    }
    char why[300];
    snprintf(why, sizeof why, "barrier: Redis replied: %s", rep->type == REDIS_REPLY_ERROR ? rep->str : "?");
    respond(w->it.c, w->it.id, w->it.idlen, TG_SM_BARRIER, 0, NULL, 0, why);
    waiter_remove(w);
}

static void do_barrier(conn_t *c, const tg_syncmsg_t *m, size_t plen, size_t noff) {
    srv_t *s = c->s;
    if (m->target <= 0) {                       /* as the reference: at once */
        respond(c, m->id, m->idlen, TG_SM_BARRIER, 0, NULL, 0, NULL);
        return;
    }
    run_t *run = run_of(s, m->key, plen);
    state_t *st = run ? tg_map_get(&run->states, m->key, m->klen) : NULL;
    if (run && !st && (st = calloc(1, sizeof *st + m->klen + 1))) {
        st->run = run;
        st->klen = m->klen;
        memcpy(st->key, m->key, m->klen);
        if (tg_map_set(&run->states, m->key, m->klen, st) < 0) {
            free(st);
            st = NULL;
        }
    }
    waiter_t *w = st ? calloc(1, sizeof *w) : NULL;
    if (!w) {
        if (run && run->states.len == 0) run_free(run);
        respond(c, m->id, m->idlen, TG_SM_BARRIER, 0, NULL, 0, "the server is out of memory");
        return;
    }
    w->st = st;
    w->target = m->target;
    w->next = st->head;
    if (st->head) st->head->prev = w;
    st->head = w;
    c->refs++;
    item_link(c, &w->it, IT_WAITER, m->id, m->idlen);
    /* registered before the script runs: a notification that overtakes
     * the reply finds it */
    tg_await_args_t a;
    w->awaiting = 1;
    if (tg_await_args(&a, m->key, plen, m->key + noff, m->klen - noff, m->target, s->o.ttl) < 0
        || tg_redis_eval(s->r, TG_SCRIPT_AWAIT, on_awaited, w, 0, TG_AWAIT_NKEYS, TG_AWAIT_ARGC, a.argv,
                         a.lens) < 0) {
        w->awaiting = 0;
        respond(c, m->id, m->idlen, TG_SM_BARRIER, 0, NULL, 0, "the state's key is too long");
        waiter_remove(w);
    }
}

/* The safety net: MGET of every state with waiters, per run, once a
 * second.  It releases barriers entered by clients that only INCR (Go SDK
 * v0.2 instances on Redis) and anything a lost hint left waiting. */
typedef struct mget {
    srv_t *s;
    char *P;
    size_t plen;
    int n;
    char **keys;
    size_t *lens;
} mget_t;

static void mget_free(mget_t *g) {
    for (int i = 1; i < g->n; i++) free(g->keys[i]);
    free(g->keys);
    free(g->lens);
    free(g->P);
    free(g);
}

static void on_mget(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    mget_t *g = data;
    (void)r; (void)tag;
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements && (int)i + 1 < g->n; i++) {
            const redisReply *e = rep->element[i];
            if (e->type != REDIS_REPLY_STRING) continue;
            state_t *st = find_state(g->s, g->P, g->plen, g->keys[i + 1], g->lens[i + 1]);
            if (st) count_is(st, strtoll(e->str, NULL, 10));
        }
    }
    mget_free(g);
}

static void safety_check(srv_t *s) {
    size_t b;
    for (tg_map_ent_t *e = tg_map_next(&s->runs, NULL, &b); e; e = tg_map_next(&s->runs, e, &b)) {
        run_t *run = e->value;
        int n = (int)run->states.len + 1;
        mget_t *g = calloc(1, sizeof *g);
        if (!g || !(g->keys = calloc((size_t)n, sizeof *g->keys)) || !(g->lens = calloc((size_t)n, sizeof *g->lens))
            || !(g->P = malloc(run->plen + 1))) {
            if (g) { free(g->keys); free(g->lens); free(g); }
            return;
        }
        g->s = s;
        memcpy(g->P, run->P, run->plen + 1);
        g->plen = run->plen;
        g->keys[0] = (char *)"MGET";
        g->lens[0] = 4;
        g->n = 1;
        size_t sb;
        for (tg_map_ent_t *se = tg_map_next(&run->states, NULL, &sb); se; se = tg_map_next(&run->states, se, &sb)) {
            if (!(g->keys[g->n] = malloc(se->klen + 1))) break;
            memcpy(g->keys[g->n], se->key, se->klen + 1);
            g->lens[g->n++] = se->klen;
        }
        if (g->n == 1 || tg_redis_cmd(s->r, on_mget, g, 0, g->n, (const char **)g->keys, g->lens) < 0) mget_free(g);
    }
}

/* ---- topics ---------------------------------------------------------------------- */

static void topic_free(topic_t *tp) {
    srv_t *s = tp->s;
    tg_redis_unwatch(s->r, tp->key, tp->klen);
    tg_map_del(&s->topics, tp->key, tp->klen);
    tg_tlog_free(&tp->log);
    free(tp->key);
    free(tp);
}

static void block(conn_t *c) {
    if (c->blocked) return;
    c->blocked = 1;
    c->blocked_since = tg_rt_now();
    c->blocked_backlog = tg_ws_backlog(c->ws);
    tg_ws_pause(c->ws, 1);                      /* and read no more requests meanwhile */
}

/* Hand u what its topic has, while its client's backlog allows. */
static void deliver_sub(sub_t *u) {
    conn_t *c = u->it.c;
    topic_t *tp = u->tp;
    while (c->ws && u->pos < tp->log.n) {
        if (tg_ws_backlog(c->ws) >= c->s->o.max_backlog) {
            block(c);
            return;
        }
        tg_tmsg_t *m = tp->log.v[u->pos++];
        respond(c, u->it.id, u->it.idlen, TG_SM_SUBSCRIBE, 0, m->data, m->len, NULL);
    }
}

static void on_topic_entry(void *data, const char *id, const redisReply *fields) {
    topic_t *tp = data;
    (void)id;
    size_t plen;
    const char *pv = tg_stream_field(fields, 'p', &plen);
    if (!pv) { pv = "null"; plen = 4; }
    if (!tg_tlog_append(&tp->log, pv, plen))
        fprintf(stderr, "tgrun serve: out of memory: a value of topic %.*s was dropped\n", (int)tp->klen, tp->key);
}

static void on_topic_batch(void *data) {
    topic_t *tp = data;
    for (sub_t *u = tp->subs; u; u = u->next)
        if (!u->it.c->blocked) deliver_sub(u);
}

static void on_topic_error(void *data, const char *msg) {
    topic_t *tp = data;
    char why[300];
    snprintf(why, sizeof why, "subscribe: Redis replied: %s", msg);
    for (sub_t *u = tp->subs; u; u = u->next) respond(u->it.c, u->it.id, u->it.idlen, TG_SM_SUBSCRIBE, 0, NULL, 0, why);
}

static const tg_stream_ops_t topic_ops = {on_topic_entry, on_topic_batch, on_topic_error};

static void sub_remove(sub_t *u) {
    topic_t *tp = u->tp;
    item_unlink(&u->it);
    if (u->prev) u->prev->next = u->next;
    else tp->subs = u->next;
    if (u->next) u->next->prev = u->prev;
    if (!tp->subs) topic_free(tp);
    conn_unref(u->it.c);
    free(u);
}

static void do_subscribe(conn_t *c, const tg_syncmsg_t *m) {
    srv_t *s = c->s;
    topic_t *tp = tg_map_get(&s->topics, m->key, m->klen);
    if (!tp) {
        if (!(tp = calloc(1, sizeof *tp)) || !(tp->key = malloc(m->klen + 1))
            || tg_map_set(&s->topics, m->key, m->klen, tp) < 0) {
            if (tp) free(tp->key);
            free(tp);
            respond(c, m->id, m->idlen, TG_SM_SUBSCRIBE, 0, NULL, 0, "the server is out of memory");
            return;
        }
        tp->s = s;
        memcpy(tp->key, m->key, m->klen);
        tp->key[m->klen] = '\0';
        tp->klen = m->klen;
        if (tg_redis_watch(s->r, tp->key, tp->klen, "0-0", &topic_ops, tp) < 0) {
            tg_map_del(&s->topics, tp->key, tp->klen);
            free(tp->key);
            free(tp);
            respond(c, m->id, m->idlen, TG_SM_SUBSCRIBE, 0, NULL, 0, "the server is out of memory");
            return;
        }
    }
    sub_t *u = calloc(1, sizeof *u);
    if (!u) {
        if (!tp->subs) topic_free(tp);
        respond(c, m->id, m->idlen, TG_SM_SUBSCRIBE, 0, NULL, 0, "the server is out of memory");
        return;
    }
    u->tp = tp;
    u->next = tp->subs;
    if (tp->subs) tp->subs->prev = u;
    tp->subs = u;
    c->refs++;
    item_link(c, &u->it, IT_SUB, m->id, m->idlen);
    if (!c->blocked) deliver_sub(u);            /* what the process already read */
}

/* ---- one-answer requests: signal_entry, publish, count ------------------------ */

typedef struct reqctx {
    conn_t *c;
    int kind;
    size_t idlen;
    char id[];
} reqctx_t;

static void on_answer(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    reqctx_t *q = data;
    (void)r; (void)tag;
    if (rep && q->c->ws) {
        if (rep->type == REDIS_REPLY_INTEGER) {
            respond(q->c, q->id, q->idlen, q->kind, rep->integer, NULL, 0, NULL);
        } else if (q->kind == TG_SM_COUNT && (rep->type == REDIS_REPLY_NIL || rep->type == REDIS_REPLY_STRING)) {
            respond(q->c, q->id, q->idlen, q->kind, rep->str ? strtoll(rep->str, NULL, 10) : 0, NULL, 0, NULL);
        } else {
            char why[300];
            snprintf(why, sizeof why, "Redis replied: %s", rep->type == REDIS_REPLY_ERROR ? rep->str : "something unexpected");
            respond(q->c, q->id, q->idlen, q->kind, 0, NULL, 0, why);
        }
    }
    conn_unref(q->c);
    free(q);
}

static reqctx_t *reqctx(conn_t *c, const tg_syncmsg_t *m) {
    reqctx_t *q = malloc(sizeof *q + m->idlen + 1);
    if (!q) return NULL;
    q->c = c;
    q->kind = m->kind;
    q->idlen = m->idlen;
    memcpy(q->id, m->id, m->idlen);
    q->id[m->idlen] = '\0';
    c->refs++;
    return q;
}

static void send_or_fail(conn_t *c, const tg_syncmsg_t *m, reqctx_t *q, int rc) {
    if (rc == 0) return;
    respond(c, m->id, m->idlen, m->kind, 0, NULL, 0, tg_redis_down(c->s->r) ? tg_redis_down(c->s->r) : "out of memory");
    conn_unref(c);
    free(q);
}

static void do_signal(conn_t *c, const tg_syncmsg_t *m, size_t plen, size_t noff) {
    srv_t *s = c->s;
    tg_enter_args_t e;
    reqctx_t *q = reqctx(c, m);
    /* no target of its own, no instance number (not a tgrun instance), no op id */
    int bad = tg_enter_args(&e, m->key, plen, m->key + noff, m->klen - noff, -1, s->o.ttl, "", 0, "", 0) < 0;
    if (!q || bad) {
        if (q) { conn_unref(c); free(q); }
        respond(c, m->id, m->idlen, m->kind, 0, NULL, 0, q ? "the state's key is too long" : "the server is out of memory");
        return;
    }
    send_or_fail(c, m, q, tg_redis_eval_marked(s->r, TG_SCRIPT_ENTER, on_answer, q, 0, TG_ENTER_NKEYS,
                                               TG_ENTER_ARGC, e.argv, e.lens, TG_ENTER_RESEND));
}

static void do_publish(conn_t *c, const tg_syncmsg_t *m, size_t plen) {
    srv_t *s = c->s;
    reqctx_t *q = reqctx(c, m);
    char op[48];
    snprintf(op, sizeof op, "%s:s%llu", s->proc_id, ++s->seq);
    /* the payload as it came: a subscriber gets these very bytes */
    tg_publish_args_t a;
    int bad = tg_publish_args(&a, m->key, plen, m->key, m->klen, m->payload, m->plen, s->o.ttl, op) < 0;
    if (!q || bad) {
        if (q) { conn_unref(c); free(q); }
        respond(c, m->id, m->idlen, m->kind, 0, NULL, 0, q ? "the topic's key is too long" : "the server is out of memory");
        return;
    }
    send_or_fail(c, m, q, tg_redis_eval_marked(s->r, TG_SCRIPT_PUBLISH, on_answer, q, 0, TG_PUBLISH_NKEYS,
                                               TG_PUBLISH_ARGC, a.argv, a.lens, TG_PUBLISH_RESEND));
}

static void do_count(conn_t *c, const tg_syncmsg_t *m) {
    reqctx_t *q = reqctx(c, m);
    if (!q) {
        respond(c, m->id, m->idlen, m->kind, 0, NULL, 0, "the server is out of memory");
        return;
    }
    const char *argv[2] = {"GET", m->key};
    size_t lens[2] = {3, m->klen};
    send_or_fail(c, m, q, tg_redis_cmd(c->s->r, on_answer, q, 0, 2, argv, lens));
}

static void do_cancel(conn_t *c, const tg_syncmsg_t *m) {
    item_t *it = tg_map_get(&c->byid, m->id, m->idlen);
    if (!it) return;                            /* already over: nothing to say */
    if (it->type == IT_WAITER) waiter_remove((waiter_t *)it);
    else sub_remove((sub_t *)it);
}

/* ---- the websocket's callbacks ---------------------------------------------------- */

static void on_open(tg_ws_t *ws, void *data) {
    (void)ws; (void)data;
}

static void on_message(tg_ws_t *ws, void *data, const char *msg, size_t len) {
    conn_t *c = data;
    tg_syncmsg_t m;
    char err[300];
    int rc = tg_syncmsg_parse_request(msg, len, &m, err, sizeof err);
    if (rc == TG_SM_ENOTJSON) {
        tg_ws_close(ws, 1007, err);
    } else if (rc == -3) {
        tg_ws_close(ws, 1011, "the server is out of memory");
    } else if (rc == TG_SM_EBAD) {
        if (m.has_id) respond(c, m.id, m.idlen, m.kind ? m.kind : TG_SM_BARRIER, 0, NULL, 0, err);
        else tg_ws_close(ws, 1008, err);        /* nobody to address an answer to */
    } else if (m.kind == TG_SM_CANCEL) {
        do_cancel(c, &m);
    } else {
        size_t plen, noff;
        int kk;
        int ok = tg_syncmsg_split_key(m.key, m.klen, &plen, &kk, &noff) == 0;
        int want_state = m.kind == TG_SM_SIGNAL_ENTRY || m.kind == TG_SM_BARRIER || m.kind == TG_SM_COUNT;
        if (!ok || (want_state && kk != TG_SM_KEY_STATE) || (!want_state && kk == TG_SM_KEY_STATE)) {
            snprintf(err, sizeof err, "\"%.*s\" is not a %s key: expected run:<run>:plan:<plan>:case:<case>:%s",
                     (int)(m.klen > 100 ? 100 : m.klen), m.key, want_state ? "state" : "topic",
                     want_state ? "states:<state>" : "topics:<topic> or ...:run_events");
            respond(c, m.id, m.idlen, m.kind, 0, NULL, 0, err);
        } else if (m.kind == TG_SM_SIGNAL_ENTRY) {
            do_signal(c, &m, plen, noff);
        } else if (m.kind == TG_SM_BARRIER) {
            do_barrier(c, &m, plen, noff);
        } else if (m.kind == TG_SM_PUBLISH) {
            do_publish(c, &m, plen);
        } else if (m.kind == TG_SM_SUBSCRIBE) {
            do_subscribe(c, &m);
        } else {
            do_count(c, &m);
        }
    }
    tg_syncmsg_free(&m);
}

static void on_drained(tg_ws_t *ws, void *data) {
    conn_t *c = data;
    if (!c->blocked) return;
    c->blocked = 0;
    tg_ws_pause(ws, 0);
    for (item_t *it = c->items, *next; it && c->ws && !c->blocked; it = next) {
        next = it->cnext;
        if (it->type == IT_SUB) deliver_sub((sub_t *)it);
    }
}

static void on_closed(tg_ws_t *ws, void *data, int code, const char *reason) {
    conn_t *c = data;
    srv_t *s = c->s;
    (void)ws; (void)code; (void)reason;
    c->ws = NULL;
    /* its waiters and subscriptions go; a waiter already counted stays
     * counted (an entry is an entry), as with the reference server */
    while (c->items) {
        item_t *it = c->items;
        if (it->type == IT_WAITER) waiter_remove((waiter_t *)it);
        else sub_remove((sub_t *)it);
    }
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    conn_unref(c);
    if (s->stopping && s->nconns == 0) uv_stop(s->loop);
}

static const tg_ws_ops_t conn_ops = {on_open, on_message, on_drained, on_closed};

static void on_connection(uv_stream_t *server, int status) {
    srv_t *s = server->data;
    if (status < 0 || s->stopping) return;
    conn_t *c = calloc(1, sizeof *c);
    if (!c) return;
    c->s = s;
    c->refs = 1;
    if (tg_ws_accept(&c->ws, server, s->o.max_message, &conn_ops, c) < 0) {
        free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    s->accepted++;
}

/* ---- the tick, signals, Redis loss, shutdown -------------------------------------- */

static void on_tick(uv_timer_t *t) {
    srv_t *s = t->data;
    if (s->stopping || tg_redis_down(s->r)) return;
    safety_check(s);
    double now = tg_rt_now();
    for (conn_t *c = s->conns; c; c = c->next) {
        if (!c->blocked || !c->ws) continue;
        size_t backlog = tg_ws_backlog(c->ws);
        if (backlog < c->blocked_backlog) {     /* it reads, slowly: that is fine */
            c->blocked_backlog = backlog;
            c->blocked_since = now;
        } else if (now - c->blocked_since >= s->o.stall) {
            char why[124];
            snprintf(why, sizeof why, "closing: this client read nothing for %g s with %zu bytes waiting (--stall)",
                     s->o.stall, backlog);
            tg_ws_close(c->ws, 1008, why);
        }
    }
}

static void shutdown_begin(srv_t *s, int code, const char *why) {
    if (s->stopping) return;
    s->stopping = 1;
    s->close_code = code;
    snprintf(s->close_why, sizeof s->close_why, "%s", why);
    if (s->listening) uv_close((uv_handle_t *)&s->listener, NULL);
    s->listening = 0;
    for (conn_t *c = s->conns; c; c = c->next)
        if (c->ws) tg_ws_close(c->ws, code, why);
    if (s->nconns == 0) uv_stop(s->loop);
}

static void on_signal(uv_signal_t *h, int signum) {
    srv_t *s = h->data;
    if (++s->signals > 1) {
        fprintf(stderr, "tgrun serve: second %s: exiting now\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
        tg_redisd_stop(&s->redisd);
        _exit(1);
    }
    fprintf(stderr, "tgrun serve: %s: closing %ld connection(s)\n", signum == SIGINT ? "SIGINT" : "SIGTERM",
            s->nconns);
    shutdown_begin(s, 1001, "the sync service is shutting down");
}

static void on_lost(void *data, const char *why) {
    srv_t *s = data;
    fprintf(stderr, "tgrun serve: %s: closing every connection\n", why);
    s->exit_code = 1;
    char reason[124];
    snprintf(reason, sizeof reason, "the sync service lost its Redis");
    shutdown_begin(s, 1011, reason);
}

/* ---- options and main -------------------------------------------------------------- */

static void usage(FILE *f) {
    fputs(
"usage: tgrun serve [options]\n"
"  a Testground sync service (websocket, port 5050 by default) backed by Redis\n"
"  in tgrun's key layout: SDK instances pointed at it with SYNC_SERVICE_HOST/\n"
"  SYNC_SERVICE_PORT meet tgrun instances on the same Redis\n"
"\n"
"      --listen HOST:PORT    where to listen (default 0.0.0.0:5050; port 0: any free one)\n"
"      --redis URL           redis://[:password@]host[:port][/db] or unix:///path\n"
"                            (default REDIS_HOST/REDIS_PORT; neither: a private\n"
"                            redis-server, stopped on exit)\n"
"      --max-message BYTES   largest message a client may send (default 67108864 =\n"
"                            64 MiB; past it: close 1009)\n"
"      --max-backlog BYTES   bytes that may wait for a client that does not read\n"
"                            before its deliveries pause (default 67108864)\n"
"      --stall SECONDS       close a client that read nothing for that long while\n"
"                            paused (default 60)\n"
"      --ttl SECONDS         lifetime of every key a request creates (default 86400)\n"
"  -h, --help\n", f);
}

static int parse_size(const char *s, size_t *out) {
    long long v;
    if (tg_parse_int(s, &v) < 0 || v < 1024 || v > (1LL << 40)) return -1;
    *out = (size_t)v;
    return 0;
}

static int parse_opts(int argc, char **argv, serve_opts_t *o) {
    static const struct option longs[] = {
        {"listen", required_argument, 0, 'L'},
        {"redis", required_argument, 0, 'R'},
        {"max-message", required_argument, 0, 'M'},
        {"max-backlog", required_argument, 0, 'B'},
        {"stall", required_argument, 0, 'S'},
        {"ttl", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    char err[300];
    double d;
    long long n;
    int c;
    snprintf(o->host, sizeof o->host, "0.0.0.0");
    o->port = 5050;
    o->max_message = o->max_backlog = 64u << 20;
    o->stall = 60;
    snprintf(o->ttl, sizeof o->ttl, "86400");
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 'L':
            if (tg_wshs_parse_hostport(optarg, o->host, sizeof o->host, &o->port, err, sizeof err) < 0)
                return tg_usage_error("serve --listen: %s", err);
            if (!o->host[0]) snprintf(o->host, sizeof o->host, "0.0.0.0");
            break;
        case 'R': o->redis_url = optarg; break;
        case 'M':
            if (parse_size(optarg, &o->max_message) < 0)
                return tg_usage_error("serve --max-message needs a number of bytes from 1024 up, got \"%s\"", optarg);
            break;
        case 'B':
            if (parse_size(optarg, &o->max_backlog) < 0)
                return tg_usage_error("serve --max-backlog needs a number of bytes from 1024 up, got \"%s\"", optarg);
            break;
        case 'S':
            if (tg_parse_number(optarg, &d) < 0 || d <= 0)
                return tg_usage_error("serve --stall needs a positive number of seconds, got \"%s\"", optarg);
            o->stall = d;
            break;
        case 'T':
            if (tg_parse_int(optarg, &n) < 0 || n < 1)
                return tg_usage_error("serve --ttl needs a whole number of seconds from 1 up, got \"%s\"", optarg);
            snprintf(o->ttl, sizeof o->ttl, "%lld", n);
            break;
        case 'h': usage(stdout); exit(0);
        default:
            if (optopt) return tg_usage_error("serve: option needs a value or is unknown; see tgrun serve --help");
            return tg_usage_error("serve: unknown option \"%s\"; see tgrun serve --help", argv[optind - 1]);
        }
    }
    if (optind < argc) return tg_usage_error("serve: unexpected \"%s\"; see tgrun serve --help", argv[optind]);
    return 0;
}

/* Listen on the options' address; prints the line that says where. */
static int start_listening(srv_t *s) {
    struct sockaddr_storage ss;
    char err[200];
    int rc = uv_ip4_addr(s->o.host, s->o.port, (struct sockaddr_in *)&ss);
    if (rc < 0) rc = uv_ip6_addr(s->o.host, s->o.port, (struct sockaddr_in6 *)&ss);
    if (rc < 0) return tg_usage_error("serve --listen: \"%s\" is not an IP address", s->o.host);
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    s->listening = 1;
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 4096, on_connection);
    if (rc < 0) {
        snprintf(err, sizeof err, "%s", uv_strerror(rc));
        return tg_usage_error("serve: cannot listen on %s:%d: %s (is another sync service running there?)",
                              s->o.host, s->o.port, err);
    }
    int len = sizeof ss;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    printf("tgrun serve: listening on %s%s%s:%d (Redis at %s%s)\n", strchr(s->o.host, ':') ? "[" : "", s->o.host,
           strchr(s->o.host, ':') ? "]" : "", port, tg_redis_addr(s->r), s->redisd.running ? ", private" : "");
    fflush(stdout);
    return 0;
}

static void free_all(srv_t *s) {
    /* no connection is left: runs and topics emptied with them */
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&s->topics, NULL, &b))) topic_free(e->value);
    while ((e = tg_map_next(&s->runs, NULL, &b))) run_free(e->value);
    tg_map_free(&s->topics);
    tg_map_free(&s->runs);
    tg_sbuf_free(&s->out);
}

int tg_serve_main(int argc, char **argv) {
    srv_t *s = calloc(1, sizeof *s);
    if (!s) return tg_usage_error("out of memory");
    int status = parse_opts(argc, argv, &s->o);
    if (status) {
        free(s);
        return status;
    }
    /* many clients: as many descriptors as we may have */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    s->loop = &loop;
    tg_rt_random_id(s->proc_id, sizeof s->proc_id);
    char err[600];
    tg_redis_addr_t addr;
    status = 2;
    if (s->o.redis_url) {
        if (tg_redis_addr_parse(s->o.redis_url, &addr, err, sizeof err) < 0) {
            tg_usage_error("serve --redis: %s", err);
            goto out;
        }
    } else {
        const char *h = getenv("REDIS_HOST"), *p = getenv("REDIS_PORT");
        if ((h && *h) || (p && *p)) {
            if (tg_redis_addr_from_env(h, p, &addr, err, sizeof err) < 0) {
                tg_usage_error("serve: %s", err);
                goto out;
            }
        } else {
            snprintf(s->tmpdir, sizeof s->tmpdir, "%s/tgrun-serve-XXXXXX", tg_env_or("TMPDIR", "/tmp"));
            if (!mkdtemp(s->tmpdir)) {
                tg_usage_error("serve: cannot create a temp dir: %s", strerror(errno));
                s->tmpdir[0] = '\0';
                goto out;
            }
            char self[4096];
            size_t selflen = sizeof self;
            if (uv_exepath(self, &selflen) != 0) {
                tg_usage_error("serve: cannot find my own binary");
                goto out;
            }
            if (tg_redisd_start(&s->redisd, &loop, s->tmpdir, 50000, NULL, self) != 0) goto out;
            if (tg_redis_addr_parse(s->redisd.url, &addr, err, sizeof err) < 0) {
                tg_usage_error("serve: %s", err);
                goto out;
            }
        }
    }
    if (tg_redis_open(&s->r, &loop, &addr, 5, err, sizeof err) < 0) {
        tg_usage_error("serve: %s (start Redis, or point tgrun serve at one with --redis URL or REDIS_HOST)", err);
        goto out;
    }
    if (tg_redis_on_lost(s->r, on_lost, s) < 0 || start_listening(s) != 0) goto out;
    tg_redis_start_reading(s->r);
    uv_signal_init(&loop, &s->sigint);
    uv_signal_init(&loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_timer_init(&loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
    status = 0;
    uv_run(&loop, UV_RUN_DEFAULT);
    status = s->exit_code;
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->tick, NULL);
out:
    if (s->listening) uv_close((uv_handle_t *)&s->listener, NULL);
    /* connections that did not answer their close in time */
    for (conn_t *c = s->conns; c; c = c->next)
        if (c->ws) tg_ws_abort(c->ws, 1001, "the sync service is shutting down");
    uv_run(&loop, UV_RUN_NOWAIT);
    if (s->r) {
        tg_redis_off_lost(s->r, on_lost, s);
        free_all(s);
        tg_redis_close(s->r);
    }
    tg_redisd_stop(&s->redisd);
    if (s->tmpdir[0]) tg_rm_tree(s->tmpdir, "/tgrun-serve-");
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) fprintf(stderr, "tgrun serve: internal: handles left open at exit\n");
    tg_sbuf_free(&s->out);
    free(s);
    return status;
}
