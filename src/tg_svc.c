/*
 * tg_svc.c -- see tg_svc.h.
 *
 * A request (req_t) is in the `pending` map under its id from the moment
 * it is sent until its answer comes, its wait ends, or the connection
 * drops.  Each holds a reference on the task it serves and names the wait
 * (`wait`: the task's abort data while that wait is the one it serves), so
 * an answer for a wait that already ended is dropped.  Answers and
 * failures reach tasks only through tg_wait_done / tg_wait_deliver /
 * tg_wait_fail: nothing here resumes a coroutine.
 */
#include "tg_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_json.h"
#include "tg_keys.h"
#include "tg_map.h"
#include "tg_syncmsg.h"
#include "tg_tlog.h"
#include "tg_ws.h"

#define SUB_META "tg.svcsub"
#define MAX_INCOMING ((size_t)1 << 30)   /* the server's own limit governs */

typedef struct req req_t;
typedef struct stopic stopic_t;

struct tg_svc {
    tg_rt_t *rt;
    tg_ws_t *ws;                /* NULL once closed */
    int open, tgrun;
    char down[700];             /* why it is closed ("" while open) */
    char where[300];            /* ws://host:port */
    uint64_t next_id;
    tg_map_t pending;           /* id -> req_t */
    tg_map_t topics;            /* topic key -> stopic_t */
    tg_sbuf_t out;
    unsigned long long requests, responses, cancels;
};

/* An answer for q: m is the parsed response (valid during the call). */
typedef void (*resp_fn)(tg_svc_t *svc, req_t *q, const tg_syncmsg_t *m);

struct req {
    tg_svc_t *svc;
    resp_fn on_resp;
    tg_task_t *task;            /* the task served (one reference), or NULL */
    uint64_t token;
    void *wait;                 /* the task's abort data while it waits for this */
    void *data;                 /* the request's own (a barrier wait, a topic, ...) */
    size_t idlen;
    char id[24];
};

static void fail_all(tg_svc_t *svc);

static tg_svc_t *of(lua_State *L, const char *what) {
    tg_svc_t *svc = tg_ctx(L)->inst->rt->svc;
    if (!svc) tg_err_raise(L, "closed", "%s: no sync service is configured", what);
    if (!svc->ws || !svc->open) tg_err_raise(L, "closed", "%s: %s", what, svc->down);
    return svc;
}

/* ---- requests ------------------------------------------------------------- */

static req_t *req_new(tg_svc_t *svc, resp_fn fn, tg_task_t *t, void *wait, void *data) {
    req_t *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->svc = svc;
    q->on_resp = fn;
    if (t) {
        q->task = tg_task_ref(t);
        q->token = t->token;
    }
    q->wait = wait;
    q->data = data;
    q->idlen = (size_t)snprintf(q->id, sizeof q->id, "%" PRIu64, ++svc->next_id);
    return q;
}

static void req_free(req_t *q) {
    if (!q) return;
    if (tg_map_get(&q->svc->pending, q->id, q->idlen) == q) tg_map_del(&q->svc->pending, q->id, q->idlen);
    if (q->task) tg_task_unref(q->task);
    free(q);
}

/* Is q's wait still the one pending? */
static int req_live(const req_t *q) {
    return q->task && tg_wait_target(q->task, q->token) && q->task->abort_data == q->wait;
}

/* Send request kind for key (target, payload as they apply) under q's id;
 * q goes to the pending map.  0, or -1 (the connection is down or memory
 * ran out: q is not registered). */
static int req_send(tg_svc_t *svc, req_t *q, int kind, const char *key, size_t klen, long long target,
                    const char *payload, size_t plen) {
    if (!svc->ws || !svc->open) return -1;
    tg_syncmsg_t m = {0};
    m.kind = kind;
    m.id = q->id;
    m.idlen = q->idlen;
    m.key = key;
    m.klen = klen;
    m.target = target;
    m.payload = payload;
    m.plen = plen;
    svc->out.len = 0;
    if (tg_syncmsg_format_request(&svc->out, &m) < 0 || tg_map_set(&svc->pending, q->id, q->idlen, q) < 0)
        return -1;
    if (tg_ws_send(svc->ws, svc->out.p, svc->out.len) < 0) {
        tg_map_del(&svc->pending, q->id, q->idlen);
        return -1;
    }
    if (svc->out.cap > (1u << 20)) tg_sbuf_free(&svc->out);
    svc->requests++;
    return 0;
}

/* Tell the server that q is over (tgrun serve drops it; others ignore it). */
static void send_cancel(tg_svc_t *svc, const req_t *q) {
    if (!svc->ws || !svc->open) return;
    tg_syncmsg_t m = {0};
    m.kind = TG_SM_CANCEL;
    m.id = q->id;
    m.idlen = q->idlen;
    svc->out.len = 0;
    if (tg_syncmsg_format_request(&svc->out, &m) == 0 && tg_ws_send(svc->ws, svc->out.p, svc->out.len) == 0)
        svc->cancels++;
}

static const char *key_of(tg_svc_t *svc, char *buf, size_t cap, int kind, const char *name, size_t nlen,
                          size_t *klen) {
    tg_rt_t *rt = svc->rt;
    *klen = tg_key(buf, cap, rt->prefix, rt->plen, kind, name, nlen);
    return *klen < cap ? buf : NULL;
}

/* ---- one answer, one value: signal_entry, publish, run_events ------------------ */

static void simple_abort(tg_task_t *t, int why) {
    req_t *q = t->abort_data;
    tg_svc_t *svc = q->svc;
    req_free(q);
    if (why == TG_ABORT_CLOSED) tg_wait_fail(t, "closed", "%s: %s", t->what, svc->down);
}

static void resp_seq(tg_svc_t *svc, req_t *q, const tg_syncmsg_t *m) {
    (void)svc;
    if (req_live(q)) {
        tg_task_t *t = q->task;
        t->abort = NULL;
        if (m->elen) {
            tg_wait_fail(t, "sync", "%s: the sync service replied: %.*s", t->what, (int)m->elen, m->error);
        } else {
            lua_pushinteger(t->co, m->seq);     /* an integer: no allocation */
            tg_wait_done(t, 1, 1);
        }
    }
    req_free(q);
}

/* Begin a wait for one answer to kind on key; returns tg_wait_yield. */
static int simple_call(lua_State *L, tg_svc_t *svc, int wkind, const char *name, size_t nlen, double timeout,
                       const char *label, int kind, const char *key, size_t klen, const char *payload,
                       size_t plen) {
    tg_task_t *t = tg_wait_begin(L, wkind, name, nlen, timeout, label);
    req_t *q = req_new(svc, resp_seq, t, NULL, NULL);
    if (!q) {
        tg_wait_fail(t, "nomem", "%s: out of memory", label);
        return tg_wait_yield(L);
    }
    q->wait = q;
    tg_wait_on_abort(t, simple_abort, q);
    if (req_send(svc, q, kind, key, klen, 0, payload, plen) < 0) tg_wait_abort(t, TG_ABORT_CLOSED);
    return tg_wait_yield(L);
}

static const char *name_arg(lua_State *L, int idx, size_t *len, const char *what) {
    const char *s = luaL_checklstring(L, idx, len);
    if (*len == 0 || *len > 900) tg_err_raise(L, "invalid", "a %s name must be 1 to 900 bytes long", what);
    return s;
}

static void no_op_id(lua_State *L, int idx, const char *label) {
    size_t n = 0;
    if (lua_type(L, idx) == LUA_TSTRING) lua_tolstring(L, idx, &n);
    if (n) tg_err_raise(L, "unsupported", "%s: op_id (a retry-safe entry) needs Redis; the sync service has "
                        "no such thing", label);
}

/* svc.signal(state, member, op_id) -> seq.  Yields. */
static int l_signal(lua_State *L) {
    size_t nlen, klen;
    const char *name = name_arg(L, 1, &nlen, "state");
    char label[160], key[1100];
    snprintf(label, sizeof label, "signal_entry('%.*s')", (int)(nlen > 120 ? 120 : nlen), name);
    no_op_id(L, 3, label);
    tg_svc_t *svc = of(L, label);
    if (!key_of(svc, key, sizeof key, TG_KEY_STATE, name, nlen, &klen))
        return tg_err_raise(L, "invalid", "%s: the key is too long", label);
    return simple_call(L, svc, TG_WAIT_ENTRY, name, nlen, -1, label, TG_SM_SIGNAL_ENTRY, key, klen, NULL, 0);
}

/* svc.publish(topic, json_text) -> seq.  Yields. */
static int l_publish(lua_State *L) {
    size_t nlen, vlen, klen;
    const char *name = name_arg(L, 1, &nlen, "topic");
    const char *text = luaL_checklstring(L, 2, &vlen);
    char label[160], key[1100];
    snprintf(label, sizeof label, "publish to topic '%.*s'", (int)(nlen > 120 ? 120 : nlen), name);
    tg_svc_t *svc = of(L, label);
    if (!key_of(svc, key, sizeof key, TG_KEY_TOPIC, name, nlen, &klen))
        return tg_err_raise(L, "invalid", "%s: the key is too long", label);
    return simple_call(L, svc, TG_WAIT_PUBLISH, name, nlen, -1, label, TG_SM_PUBLISH, key, klen, text, vlen);
}

/* svc.event(json_text, timeout) -> seq: publish an outcome event to the
 * run's run_events topic, where Testground's daemon counts it.  Yields. */
static int l_event(lua_State *L) {
    size_t vlen, klen;
    const char *text = luaL_checklstring(L, 1, &vlen);
    double timeout = luaL_optnumber(L, 2, -1);
    const char *label = "recording the outcome in run_events";
    tg_svc_t *svc = of(L, label);
    char key[1100];
    if (!key_of(svc, key, sizeof key, TG_KEY_RUN_EVENTS, NULL, 0, &klen))
        return tg_err_raise(L, "invalid", "%s: the key is too long", label);
    return simple_call(L, svc, TG_WAIT_PUBLISH, "run_events", 10, timeout, label, TG_SM_PUBLISH, key, klen, text,
                       vlen);
}

/* ---- barriers -------------------------------------------------------------------- */

/* A barrier wait: its barrier request, and for signal_and_wait its entry. */
typedef struct bwait {
    req_t *sig, *bar;
    long long target, seq;
    int need_seq, got_seq, released;
    size_t klen;
    char label[160];
    char key[1100];
} bwait_t;

/* After a timeout against tgrun serve: one "count" so the message says how
 * far the barrier got. */
typedef struct bfinal {
    int why;
    long long target;
    req_t *q;
    char label[160];
} bfinal_t;

static void bw_free(bwait_t *bw) {
    req_free(bw->sig);
    req_free(bw->bar);
    free(bw);
}

static void fail_barrier(tg_task_t *t, int why, const char *label, long long target, long long count,
                         const char *where) {
    char s[64];
    tg_rt_t *rt = t->ctx.inst->rt;
    if (why == TG_ABORT_TIMEOUT) {
        if (count >= 0)
            tg_wait_fail(t, "timeout", "%s timed out after %s: %lld of %lld entered", label,
                         tg_wait_secs(t, s, sizeof s), count, target);
        else
            tg_wait_fail(t, "timeout", "%s timed out after %s waiting for %lld to enter (the sync service at %s "
                         "does not tell how many did)", label, tg_wait_secs(t, s, sizeof s), target, where);
    } else if (why == TG_ABORT_INTERRUPT) {
        if (count >= 0)
            tg_wait_fail(t, "interrupted", "interrupted (%s) while waiting at %s: %lld of %lld entered",
                         rt->interrupt_why, label, count, target);
        else
            tg_wait_fail(t, "interrupted", "interrupted (%s) while waiting at %s for %lld to enter",
                         rt->interrupt_why, label, target);
    } else if (why == TG_ABORT_CLOSED) {
        tg_wait_fail(t, "closed", "%s: %s (waiting for %lld to enter)", label,
                     rt->svc && rt->svc->down[0] ? rt->svc->down : "the sync service is gone", target);
    } else if (why == TG_ABORT_CANCEL) {
        tg_wait_fail(t, "cancelled", "%s: cancelled while waiting for %lld to enter", label, target);
    }
}

static void final_abort(tg_task_t *t, int why) {
    bfinal_t *f = t->abort_data;
    (void)why;                                  /* the count did not come in time */
    fail_barrier(t, f->why, f->label, f->target, -1, f->q ? f->q->svc->where : "?");
    req_free(f->q);
    free(f);
}

static void resp_final(tg_svc_t *svc, req_t *q, const tg_syncmsg_t *m) {
    bfinal_t *f = q->data;
    (void)svc;
    if (req_live(q)) {
        tg_task_t *t = q->task;
        t->abort = NULL;
        fail_barrier(t, f->why, f->label, f->target, m->kind == TG_SM_COUNT && !m->elen ? m->seq : -1,
                     svc->where);
        f->q = NULL;
        free(f);
    }
    req_free(q);
}

static void bw_abort(tg_task_t *t, int why) {
    bwait_t *bw = t->abort_data;
    tg_svc_t *svc = t->ctx.inst->rt->svc;
    if (bw->bar) send_cancel(svc, bw->bar);
    long long target = bw->target;
    char label[160];
    memcpy(label, bw->label, sizeof label);
    if ((why == TG_ABORT_TIMEOUT || why == TG_ABORT_INTERRUPT) && svc->open && svc->tgrun) {
        bfinal_t *f = malloc(sizeof *f);
        req_t *q = f ? req_new(svc, resp_final, t, f, f) : NULL;
        if (q && req_send(svc, q, TG_SM_COUNT, bw->key, bw->klen, 0, NULL, 0) == 0) {
            f->why = why;
            f->target = target;
            f->q = q;
            memcpy(f->label, label, sizeof f->label);
            bw_free(bw);
            tg_wait_on_abort(t, final_abort, f);
            tg_wait_extend(t, 1);
            return;
        }
        req_free(q);
        free(f);
    }
    bw_free(bw);
    fail_barrier(t, why, label, target, -1, svc->where);
}

static void bw_try_done(bwait_t *bw, tg_task_t *t) {
    if (!bw->released || (bw->need_seq && !bw->got_seq)) return;
    t->abort = NULL;
    lua_pushinteger(t->co, bw->seq);
    bw_free(bw);
    tg_wait_done(t, 1, 1);
}

static void resp_bw(tg_svc_t *svc, req_t *q, const tg_syncmsg_t *m) {
    bwait_t *bw = q->data;
    (void)svc;
    if (!req_live(q)) {
        req_free(q);
        return;
    }
    tg_task_t *t = q->task;
    int is_sig = bw->sig == q;
    if (is_sig) bw->sig = NULL;
    else bw->bar = NULL;
    req_free(q);                                /* t keeps the reference of the wait */
    if (m->elen) {
        if (bw->bar) send_cancel(svc, bw->bar);
        char label[160];
        memcpy(label, bw->label, sizeof label);
        t->abort = NULL;
        bw_free(bw);
        tg_wait_fail(t, "sync", "%s: the sync service replied: %.*s", label, (int)m->elen, m->error);
        return;
    }
    if (is_sig) {
        bw->seq = m->seq;
        bw->got_seq = 1;
    } else {
        bw->released = 1;
    }
    bw_try_done(bw, t);
}

static int barrier_call(lua_State *L, int signal) {
    size_t nlen;
    const char *name = name_arg(L, 1, &nlen, "state");
    lua_Integer target = luaL_checkinteger(L, 2);
    double timeout = luaL_checknumber(L, 3);
    char label[160];
    snprintf(label, sizeof label, "barrier '%.*s'", (int)(nlen > 120 ? 120 : nlen), name);
    if (signal) no_op_id(L, 6, label);
    tg_svc_t *svc = of(L, label);
    char key[1100];
    size_t klen;
    if (!key_of(svc, key, sizeof key, TG_KEY_STATE, name, nlen, &klen))
        return tg_err_raise(L, "invalid", "%s: the key is too long", label);
    tg_task_t *t = tg_wait_begin(L, signal ? TG_WAIT_SIGNAL_WAIT : TG_WAIT_BARRIER, name, nlen, timeout,
                                 label);    /* may raise: nothing allocated yet */
    bwait_t *bw = calloc(1, sizeof *bw);
    if (!bw) {
        tg_wait_fail(t, "nomem", "%s: out of memory", label);
        return tg_wait_yield(L);
    }
    memcpy(bw->key, key, klen + 1);
    bw->klen = klen;
    memcpy(bw->label, label, sizeof bw->label);
    bw->target = target;
    bw->need_seq = signal;
    tg_wait_on_abort(t, bw_abort, bw);
    if (signal && !(bw->sig = req_new(svc, resp_bw, t, bw, bw))) {
        tg_wait_abort(t, TG_ABORT_CLOSED);
        return tg_wait_yield(L);
    }
    if (!(bw->bar = req_new(svc, resp_bw, t, bw, bw))) {
        tg_wait_abort(t, TG_ABORT_CLOSED);
        return tg_wait_yield(L);
    }
    /* both at once: the entry and the wait cost one round trip */
    if ((signal && req_send(svc, bw->sig, TG_SM_SIGNAL_ENTRY, bw->key, bw->klen, 0, NULL, 0) < 0)
        || req_send(svc, bw->bar, TG_SM_BARRIER, bw->key, bw->klen, target, NULL, 0) < 0)
        tg_wait_abort(t, TG_ABORT_CLOSED);
    return tg_wait_yield(L);
}

/* svc.wait(state, target, timeout, instances) -> 0.  Yields until target
 * instances entered (instances: peer failures are not told by a sync
 * service, so it is not used). */
static int l_wait(lua_State *L) {
    return barrier_call(L, 0);
}

/* svc.signal_and_wait(state, target, timeout, instances, member, op_id) -> seq.  Yields. */
static int l_signal_and_wait(lua_State *L) {
    return barrier_call(L, 1);
}

/* ---- topics ------------------------------------------------------------------------ */

typedef struct ssub ssub_t;

struct stopic {
    tg_svc_t *svc;
    char *key;
    size_t klen;
    req_t *req;                 /* the subscribe request: its id, while the topic lives */
    tg_tlog_t log;              /* every value received, shared by the local subscriptions */
    ssub_t *subs;
    char *error;                /* the service refused the subscription */
};

/* A subscription: a cursor into its topic's log (the "tg.svcsub" userdata). */
struct ssub {
    stopic_t *topic;            /* NULL once closed */
    size_t pos;
    tg_task_t *task;            /* waiting in next_raw */
    uint64_t token;
    ssub_t *prev, *next;
    char name[128];
};

static void topic_free(stopic_t *tp) {
    tg_svc_t *svc = tp->svc;
    if (tp->req) {
        send_cancel(svc, tp->req);
        req_free(tp->req);
    }
    tg_map_del(&svc->topics, tp->key, tp->klen);
    tg_tlog_free(&tp->log);
    free(tp->error);
    free(tp->key);
    free(tp);
}

typedef struct delivery {
    ssub_t *u;
    tg_tmsg_t *m;
} delivery_t;

static int push_value(lua_State *L, void *ud) {
    delivery_t *d = ud;
    if (tg_json_decode(L, d->m->data, d->m->len) < 0) {
        tg_err_push(L, "invalid", "topic '%s' value %I is not JSON: %s", d->u->name, (lua_Integer)d->m->seq,
                    lua_tostring(L, -1));
        return lua_error(L);
    }
    lua_pushinteger(L, d->m->seq);
    return 2;
}

static void deliver(stopic_t *tp) {
    for (ssub_t *u = tp->subs; u; u = u->next) {
        if (!u->task) continue;
        tg_task_t *t = u->task;
        if (u->pos < tp->log.n) {
            u->task = NULL;
            if (!tg_wait_target(t, u->token)) continue;
            t->abort = NULL;
            delivery_t d = {u, tp->log.v[u->pos++]};
            tg_wait_deliver(t, 1, push_value, &d);
        } else if (tp->error) {
            u->task = NULL;
            if (!tg_wait_target(t, u->token)) continue;
            t->abort = NULL;
            tg_wait_fail(t, "sync", "subscription to topic '%s': the sync service replied: %s", u->name, tp->error);
        }
    }
}

static void resp_sub(tg_svc_t *svc, req_t *q, const tg_syncmsg_t *m) {
    stopic_t *tp = q->data;
    (void)svc;
    if (m->elen) {
        if (!tp->error && (tp->error = malloc(m->elen + 1))) {
            memcpy(tp->error, m->error, m->elen);
            tp->error[m->elen] = '\0';
        }
    } else if (m->kind == TG_SM_SUBSCRIBE) {
        /* (a subscription replays from the first value) */
        if (!tg_tlog_append(&tp->log, m->payload, m->plen))
            fprintf(stderr, "tgrun: out of memory: a value of topic %.*s was dropped\n", (int)tp->klen, tp->key);
    }
    deliver(tp);
}

static ssub_t *check_sub(lua_State *L) {
    return luaL_checkudata(L, 1, SUB_META);
}

static void sub_unlink(ssub_t *u) {
    stopic_t *tp = u->topic;
    if (!tp) return;
    if (u->prev) u->prev->next = u->next;
    else tp->subs = u->next;
    if (u->next) u->next->prev = u->prev;
    u->topic = NULL;
    if (!tp->subs) topic_free(tp);
}

static void sub_abort(tg_task_t *t, int why) {
    ssub_t *u = t->abort_data;
    u->task = NULL;
    if (why == TG_ABORT_CLOSED) {
        tg_svc_t *svc = t->ctx.inst->rt->svc;
        tg_wait_fail(t, "closed", "subscription to topic '%s': %s", u->name, svc ? svc->down : "closed");
    }
}

/* svc.subscribe(topic) -> sub, or svc.subscribe(nil, "run_events") -> a
 * subscription to the run's outcome events (as Testground's daemon reads
 * them).  Does not yield. */
static int l_subscribe(lua_State *L) {
    size_t nlen, klen;
    int events = lua_isnoneornil(L, 1) && strcmp(luaL_optstring(L, 2, ""), "run_events") == 0;
    const char *name = events ? "run_events" : name_arg(L, 1, &nlen, "topic");
    if (events) nlen = strlen(name);
    tg_svc_t *svc = of(L, "subscribe");
    char key[1100];
    if (!key_of(svc, key, sizeof key, events ? TG_KEY_RUN_EVENTS : TG_KEY_TOPIC, name, nlen, &klen))
        return tg_err_raise(L, "invalid", "subscribe: the key is too long");
    ssub_t *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    snprintf(u->name, sizeof u->name, "%.*s", (int)(nlen > 120 ? 120 : nlen), name);
    luaL_setmetatable(L, SUB_META);
    stopic_t *tp = tg_map_get(&svc->topics, key, klen);
    if (!tp) {
        if (!(tp = calloc(1, sizeof *tp)) || !(tp->key = malloc(klen + 1))
            || tg_map_set(&svc->topics, key, klen, tp) < 0) {
            if (tp) free(tp->key);
            free(tp);
            return tg_err_raise(L, "nomem", "subscribe to topic '%s': out of memory", u->name);
        }
        tp->svc = svc;
        memcpy(tp->key, key, klen + 1);
        tp->klen = klen;
        if (!(tp->req = req_new(svc, resp_sub, NULL, NULL, tp))
            || req_send(svc, tp->req, TG_SM_SUBSCRIBE, key, klen, 0, NULL, 0) < 0) {
            topic_free(tp);
            return tg_err_raise(L, "closed", "subscribe to topic '%s': %s", u->name,
                                svc->down[0] ? svc->down : "out of memory");
        }
    }
    u->topic = tp;
    u->next = tp->subs;
    if (tp->subs) tp->subs->prev = u;
    tp->subs = u;
    return 1;
}

/* sub:next_raw([timeout]) -> value, seq.  Yields when no value is buffered. */
static int l_sub_next(lua_State *L) {
    ssub_t *u = check_sub(L);
    double timeout = luaL_optnumber(L, 2, -1);
    char what[160];
    snprintf(what, sizeof what, "subscription to topic '%s'", u->name);
    if (!u->topic) return tg_err_raise(L, "closed", "%s: the subscription is closed", what);
    stopic_t *tp = u->topic;
    if (u->pos < tp->log.n) {
        tg_tmsg_t *m = tp->log.v[u->pos++];
        if (tg_json_decode(L, m->data, m->len) < 0)
            return tg_err_raise(L, "invalid", "topic '%s' value %I is not JSON: %s", u->name, (lua_Integer)m->seq,
                                lua_tostring(L, -1));
        lua_pushinteger(L, m->seq);
        return 2;
    }
    if (tp->error) return tg_err_raise(L, "sync", "%s: the sync service replied: %s", what, tp->error);
    tg_svc_t *svc = tp->svc;
    if (!svc->ws || !svc->open) return tg_err_raise(L, "closed", "%s: %s", what, svc->down);
    if (u->task) return tg_err_raise(L, "invalid", "%s: another task is already waiting in next()", what);
    tg_task_t *t = tg_wait_begin(L, TG_WAIT_TOPIC, u->name, strlen(u->name), timeout, what);
    u->task = t;
    u->token = t->token;
    tg_wait_on_abort(t, sub_abort, u);
    return tg_wait_yield(L);
}

/* sub:close().  A waiting next() ends with "closed". */
static int l_sub_close(lua_State *L) {
    ssub_t *u = check_sub(L);
    if (u->task) {
        tg_task_t *t = u->task;
        u->task = NULL;
        if (tg_wait_target(t, u->token)) {
            t->abort = NULL;
            tg_wait_fail(t, "closed", "subscription to topic '%s' was closed", u->name);
        }
    }
    sub_unlink(u);
    return 0;
}

/* sub:buffered() -> values received and not yet taken */
static int l_sub_buffered(lua_State *L) {
    ssub_t *u = check_sub(L);
    lua_pushinteger(L, u->topic ? (lua_Integer)(u->topic->log.n - u->pos) : 0);
    return 1;
}

static int l_sub_gc(lua_State *L) {
    ssub_t *u = check_sub(L);
    u->task = NULL;
    sub_unlink(u);
    return 0;
}

/* ---- the rest of the module ------------------------------------------------------- */

/* svc.active() -> true when this process talks to a sync service */
static int l_active(lua_State *L) {
    lua_pushboolean(L, tg_ctx(L)->inst->rt->svc != NULL);
    return 1;
}

/* svc.where() -> "ws://host:port" or nil */
static int l_where(lua_State *L) {
    tg_svc_t *svc = tg_ctx(L)->inst->rt->svc;
    if (!svc) return 0;
    lua_pushstring(L, svc->where);
    return 1;
}

/* svc.down() -> nil while connected, else why not */
static int l_down(lua_State *L) {
    tg_svc_t *svc = tg_ctx(L)->inst->rt->svc;
    if (!svc) lua_pushliteral(L, "no sync service is configured");
    else if (!svc->ws || !svc->open) lua_pushstring(L, svc->down);
    else lua_pushnil(L);
    return 1;
}

/* svc.stats() -> {requests=, responses=, cancels=, pending=, topics=, tgrun=} */
static int l_stats(lua_State *L) {
    tg_svc_t *svc = of(L, "svc.stats");
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)svc->requests); lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)svc->responses); lua_setfield(L, -2, "responses");
    lua_pushinteger(L, (lua_Integer)svc->cancels); lua_setfield(L, -2, "cancels");
    lua_pushinteger(L, (lua_Integer)svc->pending.len); lua_setfield(L, -2, "pending");
    lua_pushinteger(L, (lua_Integer)svc->topics.len); lua_setfield(L, -2, "topics");
    lua_pushboolean(L, svc->tgrun); lua_setfield(L, -2, "tgrun");
    return 1;
}

static const luaL_Reg sub_methods[] = {
    {"next_raw", l_sub_next},
    {"close", l_sub_close},
    {"buffered", l_sub_buffered},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"active", l_active},
    {"where", l_where},
    {"down", l_down},
    {"signal", l_signal},
    {"wait", l_wait},
    {"signal_and_wait", l_signal_and_wait},
    {"publish", l_publish},
    {"subscribe", l_subscribe},
    {"event", l_event},
    {"stats", l_stats},
    {NULL, NULL},
};

int luaopen_tg_svc_c(lua_State *L) {
    if (luaL_newmetatable(L, SUB_META)) {
        luaL_newlib(L, sub_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_sub_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}

/* ---- the connection ---------------------------------------------------------------- */

static void on_open(tg_ws_t *ws, void *data) {
    tg_svc_t *svc = data;
    if (!svc) return;
    svc->open = 1;
    svc->tgrun = tg_ws_peer_is_tgrun(ws);
    svc->down[0] = '\0';
}

static void on_message(tg_ws_t *ws, void *data, const char *msg, size_t len) {
    tg_svc_t *svc = data;
    if (!svc) return;
    tg_syncmsg_t m;
    char err[300];
    int rc = tg_syncmsg_parse_response(msg, len, &m, err, sizeof err);
    if (rc != 0) {
        char why[400];
        snprintf(why, sizeof why, "tgrun: the sync service sent something that is not a response: %s", err);
        tg_ws_close(ws, rc == TG_SM_ENOTJSON ? 1007 : 1008, why);
        snprintf(svc->down, sizeof svc->down, "the sync service at %s sent a message that is not a response (%s)",
                 svc->where, err);
        svc->open = 0;
        tg_syncmsg_free(&m);
        fail_all(svc);
        return;
    }
    svc->responses++;
    req_t *q = tg_map_get(&svc->pending, m.id, m.idlen);
    if (q) q->on_resp(svc, q, &m);              /* an answer to a wait that ended: dropped */
    tg_syncmsg_free(&m);
}

/* The connection is over: every wait on it fails with "closed". */
static void fail_all(tg_svc_t *svc) {
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&svc->pending, NULL, &b))) {
        req_t *q = e->value;
        char id[24];
        size_t idlen = q->idlen;
        memcpy(id, q->id, sizeof id);
        if (req_live(q)) tg_wait_abort(q->task, TG_ABORT_CLOSED);     /* its hook frees q */
        req_t *left = tg_map_get(&svc->pending, id, idlen);
        if (left == q) {
            if (q->on_resp == resp_sub) ((stopic_t *)q->data)->req = NULL;
            req_free(q);
        }
    }
    for (tg_map_ent_t *te = tg_map_next(&svc->topics, NULL, &b); te; te = tg_map_next(&svc->topics, te, &b))
        for (ssub_t *u = ((stopic_t *)te->value)->subs; u; u = u->next)
            if (u->task) tg_wait_abort(u->task, TG_ABORT_CLOSED);
}

static void on_closed(tg_ws_t *ws, void *data, int code, const char *reason) {
    tg_svc_t *svc = data;
    (void)ws;
    if (!svc) return;
    svc->ws = NULL;
    if (svc->open || !svc->down[0]) {
        if (svc->open)
            snprintf(svc->down, sizeof svc->down, "lost the sync service at %s (%d%s%s)", svc->where, code,
                     reason && *reason ? ": " : "", reason ? reason : "");
        else
            snprintf(svc->down, sizeof svc->down, "cannot reach the sync service at %s: %s", svc->where,
                     reason && *reason ? reason : "the connection failed");
    }
    svc->open = 0;
    fail_all(svc);
}

static const tg_ws_ops_t svc_ops = {on_open, on_message, NULL, on_closed};

int tg_svc_attach(tg_rt_t *rt, const char *host, int port, const char *path, double timeout,
                  char *err, size_t errlen) {
    tg_svc_t *svc = calloc(1, sizeof *svc);
    if (!svc) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    svc->rt = rt;
    snprintf(svc->where, sizeof svc->where, "ws://%s%s%s:%d", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", port);
    if (tg_ws_connect(&svc->ws, rt->loop, host, port, path, timeout, MAX_INCOMING, &svc_ops, svc, err, errlen) < 0) {
        free(svc);
        return -1;
    }
    rt->svc = svc;
    while (svc->ws && !svc->open) uv_run(rt->loop, UV_RUN_ONCE);
    if (!svc->open) {
        snprintf(err, errlen, "%s", svc->down);
        tg_svc_detach(rt);
        return -1;
    }
    tg_rt_on_catch_up(rt, tg_svc_catch_up, rt);
    return 0;
}

void tg_svc_catch_up(void *data) {
    tg_rt_t *rt = data;
    if (rt->svc && rt->svc->ws && rt->svc->open) tg_ws_catch_up(rt->svc->ws);
}

void tg_svc_detach(tg_rt_t *rt) {
    tg_svc_t *svc = rt->svc;
    if (!svc) return;
    rt->svc = NULL;
    tg_rt_off_catch_up(rt, tg_svc_catch_up, rt);
    if (svc->ws) {
        /* the loop finishes the close handshake; nothing calls us back */
        tg_ws_set_data(svc->ws, NULL);
        tg_ws_close(svc->ws, 1000, "");
    }
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&svc->topics, NULL, &b))) {
        stopic_t *tp = e->value;
        for (ssub_t *u = tp->subs; u; u = u->next) u->topic = NULL;
        tp->req = NULL;                         /* freed with the pending map below */
        topic_free(tp);
    }
    while ((e = tg_map_next(&svc->pending, NULL, &b))) req_free(e->value);
    tg_map_free(&svc->pending);
    tg_map_free(&svc->topics);
    tg_sbuf_free(&svc->out);
    free(svc);
}

/* ---- the probe ---------------------------------------------------------------- */

typedef struct probe {
    int open, done;
    char why[600];
} probe_t;

static void probe_open(tg_ws_t *ws, void *data) {
    probe_t *p = data;
    p->open = 1;
    tg_ws_close(ws, 1000, "");
}

static void probe_message(tg_ws_t *ws, void *data, const char *msg, size_t len) {
    (void)ws; (void)data; (void)msg; (void)len;
}

static void probe_closed(tg_ws_t *ws, void *data, int code, const char *reason) {
    probe_t *p = data;
    (void)ws; (void)code;
    p->done = 1;
    snprintf(p->why, sizeof p->why, "%s", reason && *reason ? reason : "the connection failed");
}

static const tg_ws_ops_t probe_ops = {probe_open, probe_message, NULL, probe_closed};

int tg_svc_probe(uv_loop_t *loop, const char *host, int port, const char *path, double timeout,
                 char *err, size_t errlen) {
    probe_t p = {0};
    tg_ws_t *ws;
    char where[300];
    snprintf(where, sizeof where, "ws://%s%s%s:%d", strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
             port);
    if (tg_ws_connect(&ws, loop, host, port, path, timeout, 1 << 20, &probe_ops, &p, err, errlen) < 0) return -1;
    while (!p.done) uv_run(loop, UV_RUN_ONCE);  /* bounded: handshake timeout, then 2 s for the close */
    if (p.open) return 0;
    snprintf(err, errlen, "cannot reach the sync service at %s: %s", where, p.why);
    return -1;
}

size_t tg_svc_inflight(const tg_rt_t *rt) {
    return rt->svc ? rt->svc->pending.len : 0;
}
