/* tg_topic.c -- see tg_topic.h. */
#include "tg_topic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_call.h"
#include "tg_json.h"
#include "tg_keys.h"
#include "tg_map.h"
#include "tg_redis.h"
#include "tg_sargs.h"
#include "tg_scripts.h"
#include "tg_tlog.h"

#define SUB_META "tg.sub"

typedef struct sub sub_t;

typedef struct topic {
    tg_topics_t *ts;
    char *key;
    size_t klen;
    tg_tlog_t log;              /* every value read, shared by the local subscriptions */
    sub_t *subs;
} topic_t;

/* A subscription: a cursor into its topic's log (the "tg.sub" userdata). */
struct sub {
    topic_t *topic;             /* NULL once closed */
    size_t pos;
    tg_task_t *task;            /* the task waiting in sub:next, if any */
    uint64_t token;
    sub_t *prev, *next;
    char name[128];
};

struct tg_topics {
    tg_rt_t *rt;
    tg_redis_t *r;
    char proc_id[16];           /* publish op ids: "<proc_id>:<n>" */
    unsigned long long seq;
    tg_map_t topics;            /* topic key -> topic_t */
    char *P;
    size_t plen;
};

static tg_topics_t *of(lua_State *L, const char *what) {
    tg_topics_t *ts = tg_ctx(L)->inst->rt->topics;
    if (!ts) tg_err_raise(L, "closed", "%s: not connected to Redis", what);
    return ts;
}

static void topic_free(topic_t *tp) {
    tg_topics_t *ts = tp->ts;
    tg_redis_unwatch(ts->r, tp->key, tp->klen);
    tg_map_del(&ts->topics, tp->key, tp->klen);
    tg_tlog_free(&tp->log);
    free(tp->key);
    free(tp);
}

/* ---- delivery ------------------------------------------------------------ */

typedef struct delivery {
    sub_t *u;
    tg_tmsg_t *m;
} delivery_t;

static int push_value(lua_State *L, void *ud) {
    delivery_t *d = ud;
    if (tg_json_decode(L, d->m->data, d->m->len) < 0) {
        tg_err_push(L, "invalid", "topic '%s' value %I is not JSON: %s", d->u->name,
                    (lua_Integer)d->m->seq, lua_tostring(L, -1));
        return lua_error(L);
    }
    lua_pushinteger(L, d->m->seq);
    return 2;
}

/* Hand the next value to every subscription of tp that waits. */
static void deliver(topic_t *tp) {
    for (sub_t *u = tp->subs; u; u = u->next) {
        if (!u->task || u->pos >= tp->log.n) continue;
        tg_task_t *t = u->task;
        u->task = NULL;
        if (!tg_wait_target(t, u->token)) continue;
        delivery_t d = {u, tp->log.v[u->pos++]};
        tg_wait_deliver(t, 1, push_value, &d);
    }
}

static void on_entry(void *data, const char *id, const redisReply *fields) {
    topic_t *tp = data;
    (void)id;
    size_t plen;
    const char *pv = tg_stream_field(fields, 'p', &plen);
    if (!pv) { pv = "null"; plen = 4; }
    if (!tg_tlog_append(&tp->log, pv, plen))
        fprintf(stderr, "tgrun: out of memory: a value of topic %.*s was dropped\n", (int)tp->klen, tp->key);
}

static void on_batch(void *data) {
    deliver(data);
}

/* The read failed: say so to every subscription that waits. */
static void on_error(void *data, const char *msg) {
    topic_t *tp = data;
    for (sub_t *u = tp->subs; u; u = u->next) {
        if (!u->task) continue;
        tg_task_t *t = u->task;
        u->task = NULL;
        if (tg_wait_target(t, u->token))
            tg_wait_fail(t, "redis", "subscription to topic '%s': Redis replied: %s", u->name, msg);
    }
}

static const tg_stream_ops_t topic_ops = {on_entry, on_batch, on_error};

/* Every waiting subscription fails with "closed". */
static void on_lost(void *data, const char *why) {
    tg_topics_t *ts = data;
    size_t b;
    for (tg_map_ent_t *e = tg_map_next(&ts->topics, NULL, &b); e; e = tg_map_next(&ts->topics, e, &b))
        for (sub_t *u = ((topic_t *)e->value)->subs; u; u = u->next) {
            if (!u->task) continue;
            tg_task_t *t = u->task;
            u->task = NULL;
            if (tg_wait_target(t, u->token)) tg_wait_fail(t, "closed", "%s: %s", t->what, why);
        }
}

/* ---- Lua ----------------------------------------------------------------- */

static sub_t *check_sub(lua_State *L) {
    return luaL_checkudata(L, 1, SUB_META);
}

static void sub_unlink(sub_t *u) {
    topic_t *tp = u->topic;
    if (!tp) return;
    if (u->prev) u->prev->next = u->next;
    else tp->subs = u->next;
    if (u->next) u->next->prev = u->prev;
    u->topic = NULL;
    if (!tp->subs) topic_free(tp);              /* the next read leaves it out */
}

static void sub_abort(tg_task_t *t, int why) {
    (void)why;
    sub_t *u = t->abort_data;
    u->task = NULL;
}

static const char *topic_arg(lua_State *L, int idx, size_t *len) {
    const char *s = luaL_checklstring(L, idx, len);
    if (*len == 0 || *len > 900) tg_err_raise(L, "invalid", "a topic name must be 1 to 900 bytes long");
    return s;
}

/* topic.publish(topic, json_text) -> seq.  Yields. */
static int l_publish(lua_State *L) {
    size_t nlen, vlen;
    const char *name = topic_arg(L, 1, &nlen);
    const char *text = luaL_checklstring(L, 2, &vlen);
    char label[160];
    snprintf(label, sizeof label, "publish to topic '%.*s'", (int)(nlen > 120 ? 120 : nlen), name);
    tg_topics_t *ts = of(L, label);
    char op[48];
    snprintf(op, sizeof op, "%s:p%llu", ts->proc_id, ++ts->seq);
    tg_publish_args_t a;
    char key[TG_KEY_MAX];
    size_t klen = tg_key(key, sizeof key, ts->P, ts->plen, TG_KEY_TOPIC, name, nlen);
    if (klen >= sizeof key || tg_publish_args(&a, ts->P, ts->plen, key, klen, text, vlen, ts->rt->ttl, op) < 0)
        return tg_err_raise(L, "invalid", "%s: the name is too long", label);
    return tg_call_yield_marked(L, TG_WAIT_PUBLISH, name, nlen, -1, label, TG_SCRIPT_PUBLISH, TG_PUBLISH_NKEYS,
                                TG_PUBLISH_ARGC, a.argv, a.lens, TG_PUBLISH_RESEND);
}

/* topic.subscribe(topic) -> sub.  Does not yield: the first value comes
 * with sub:next_raw(). */
static int l_subscribe(lua_State *L) {
    size_t nlen;
    const char *name = topic_arg(L, 1, &nlen);
    tg_topics_t *ts = of(L, "subscribe");
    if (tg_redis_down(ts->r)) return tg_err_raise(L, "closed", "subscribe: %s", tg_redis_down(ts->r));
    char key[1024];
    size_t klen = tg_key(key, sizeof key, ts->P, ts->plen, TG_KEY_TOPIC, name, nlen);
    sub_t *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    snprintf(u->name, sizeof u->name, "%.*s", (int)(nlen > 120 ? 120 : nlen), name);
    luaL_setmetatable(L, SUB_META);
    topic_t *tp = tg_map_get(&ts->topics, key, klen);
    if (!tp) {
        if (!(tp = calloc(1, sizeof *tp)) || !(tp->key = malloc(klen + 1))
            || tg_map_set(&ts->topics, key, klen, tp) < 0) {
            if (tp) free(tp->key);
            free(tp);
            return tg_err_raise(L, "nomem", "subscribe to topic '%s': out of memory", u->name);
        }
        tp->ts = ts;
        memcpy(tp->key, key, klen + 1);
        tp->klen = klen;
        if (tg_redis_watch(ts->r, key, klen, "0-0", &topic_ops, tp) < 0) {
            tg_map_del(&ts->topics, key, klen);
            free(tp->key);
            free(tp);
            return tg_err_raise(L, "nomem", "subscribe to topic '%s': out of memory", u->name);
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
    sub_t *u = check_sub(L);
    double timeout = luaL_optnumber(L, 2, -1);
    char what[160];
    snprintf(what, sizeof what, "subscription to topic '%s'", u->name);
    if (!u->topic) return tg_err_raise(L, "closed", "%s: the subscription is closed", what);
    topic_t *tp = u->topic;
    if (u->pos < tp->log.n) {
        tg_tmsg_t *m = tp->log.v[u->pos++];
        if (tg_json_decode(L, m->data, m->len) < 0)
            return tg_err_raise(L, "invalid", "topic '%s' value %I is not JSON: %s", u->name,
                                (lua_Integer)m->seq, lua_tostring(L, -1));
        lua_pushinteger(L, m->seq);
        return 2;
    }
    if (tg_redis_down(tp->ts->r)) return tg_err_raise(L, "closed", "%s: %s", what, tg_redis_down(tp->ts->r));
    if (u->task) return tg_err_raise(L, "invalid", "%s: another task is already waiting in next()", what);
    tg_task_t *t = tg_wait_begin(L, TG_WAIT_TOPIC, u->name, strlen(u->name), timeout, what);
    u->task = t;
    u->token = t->token;
    tg_wait_on_abort(t, sub_abort, u);
    return tg_wait_yield(L);
}

/* sub:close().  A waiting next() ends with "closed". */
static int l_sub_close(lua_State *L) {
    sub_t *u = check_sub(L);
    if (u->task) {
        tg_task_t *t = u->task;
        u->task = NULL;
        if (tg_wait_target(t, u->token))
            tg_wait_fail(t, "closed", "subscription to topic '%s' was closed", u->name);
    }
    sub_unlink(u);
    return 0;
}

/* sub:buffered() -> number of values read from Redis and not yet taken */
static int l_sub_buffered(lua_State *L) {
    sub_t *u = check_sub(L);
    lua_pushinteger(L, u->topic ? (lua_Integer)(u->topic->log.n - u->pos) : 0);
    return 1;
}

static int l_sub_gc(lua_State *L) {
    sub_t *u = check_sub(L);
    u->task = NULL;
    sub_unlink(u);
    return 0;
}

static const luaL_Reg sub_methods[] = {
    {"next_raw", l_sub_next},
    {"close", l_sub_close},
    {"buffered", l_sub_buffered},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"publish", l_publish},
    {"subscribe", l_subscribe},
    {NULL, NULL},
};

int luaopen_tg_topic_c(lua_State *L) {
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

/* ---- attach / detach ----------------------------------------------------- */

int tg_topic_attach(tg_rt_t *rt) {
    const char *P = rt->prefix;
    size_t plen = rt->plen;
    tg_topics_t *ts = calloc(1, sizeof *ts);
    if (!ts || !(ts->P = malloc(plen + 1))) {
        free(ts);
        return -1;
    }
    memcpy(ts->P, P, plen);
    ts->P[plen] = '\0';
    ts->plen = plen;
    ts->rt = rt;
    ts->r = rt->redis;
    tg_rt_random_id(ts->proc_id, sizeof ts->proc_id);
    if (tg_redis_on_lost(ts->r, on_lost, ts) < 0) {
        free(ts->P);
        free(ts);
        return -1;
    }
    rt->topics = ts;
    return 0;
}

void tg_topic_detach(tg_rt_t *rt) {
    tg_topics_t *ts = rt->topics;
    if (!ts) return;
    rt->topics = NULL;
    tg_redis_off_lost(ts->r, on_lost, ts);
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&ts->topics, NULL, &b))) {
        topic_t *tp = e->value;
        for (sub_t *u = tp->subs; u; u = u->next) u->topic = NULL;
        topic_free(tp);
    }
    tg_map_free(&ts->topics);
    free(ts->P);
    free(ts);
}
