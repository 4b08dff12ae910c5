/* tg_session.c -- see tg_session.h. */
#include "tg_session.h"

#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_call.h"
#include "tg_coord.h"
#include "tg_keys.h"
#include "tg_redis.h"
#include "tg_scripts.h"

struct tg_sessions {
    tg_rt_t *rt;
    tg_redis_t *r;
    char **sids;
    int n, cap;
    long long ttl_ms;
    int timer_on, failing;
    uv_timer_t timer;
    char *key;                  /* P:tg:sessions */
    size_t klen;
};

static tg_sessions_t *of(lua_State *L, const char *what) {
    tg_sessions_t *s = tg_ctx(L)->inst->rt->sessions;
    if (!s) tg_err_raise(L, "closed", "%s: not connected to Redis", what);
    return s;
}

static void on_beat_reply(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    tg_sessions_t *s = data;
    (void)r; (void)tag;
    if (!rep) return;                           /* closing, or lost: said elsewhere */
    int failed = rep->type == REDIS_REPLY_ERROR;
    if (failed && !s->failing)
        for (tg_inst_t *inst = s->rt->insts; inst; inst = inst->next)
            tg_inst_warn(inst, "the session heartbeat failed (peers may declare this instance dead): "
                         "Redis replied: %s", rep->str);
    if (!failed && s->failing)
        for (tg_inst_t *inst = s->rt->insts; inst; inst = inst->next)
            tg_inst_warn(inst, "the session heartbeat works again");
    s->failing = failed;
}

static void beat(tg_sessions_t *s) {
    if (tg_redis_down(s->r) || s->n == 0) return;
    size_t len = 1;
    for (int i = 0; i < s->n; i++) len += strlen(s->sids[i]) + 1;
    char *sids = malloc(len), *p = sids;
    if (!sids) return;
    for (int i = 0; i < s->n; i++) {
        size_t n = strlen(s->sids[i]);
        memcpy(p, s->sids[i], n);
        p += n;
        *p++ = ' ';
    }
    *p = '\0';
    tg_rt_t *rt = s->rt;
    tg_coord_args_t a = {.op = "beat", .sid = sids, .n = 1, .lease_ms = s->ttl_ms, .cap = 1};
    const char *argv[12];
    size_t lens[12];
    char nums[3][24];
    int argc = tg_coord_argv(&a, s->key, s->klen, rt->prefix, rt->plen, rt->ttl, argv, lens, nums);
    tg_redis_eval(s->r, TG_SCRIPT_COORD, on_beat_reply, s, 0, 1, argc, argv, lens);
    free(sids);
}

static void on_timer(uv_timer_t *h) {
    beat(h->data);
}

/* session.start(sid, ttl_seconds): this process keeps sid alive. */
static int l_start(lua_State *L) {
    tg_sessions_t *s = of(L, "session");
    const char *sid = luaL_checkstring(L, 1);
    double ttl = luaL_checknumber(L, 2);
    if (!(ttl >= 0.1 && ttl < 86400)) return tg_err_raise(L, "invalid", "session TTL must be 0.1 to 86400 s");
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        char **v = realloc(s->sids, (size_t)cap * sizeof *v);
        if (!v) return luaL_error(L, "out of memory");
        s->sids = v;
        s->cap = cap;
    }
    if (!(s->sids[s->n] = strdup(sid))) return luaL_error(L, "out of memory");
    s->n++;
    if (!s->timer_on) {
        s->ttl_ms = (long long)(ttl * 1000);
        s->timer_on = 1;
        uv_timer_start(&s->timer, on_timer, 0, (uint64_t)(s->ttl_ms / 3));
    }
    /* Later sessions join the next beat (within ttl/3): beating on every
     * start would cost O(N^2) for N instances starting together. */
    return 0;
}

/* session.stop(sid): stop keeping sid alive (the instance ended). */
static int l_stop(lua_State *L) {
    tg_sessions_t *s = of(L, "session");
    const char *sid = luaL_checkstring(L, 1);
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->sids[i], sid) != 0) continue;
        free(s->sids[i]);
        s->sids[i] = s->sids[--s->n];
        break;
    }
    return 0;
}

/* session.die(sid, why) / session.bye(sid) -> reply.  Yields (5 s at most):
 * the instance failed (tell the run now, not when the session lapses), or
 * ended cleanly (give back what it holds). */
static int end_session(lua_State *L, const char *op) {
    tg_sessions_t *s = of(L, op);
    size_t wlen = 0;
    const char *sid = luaL_checkstring(L, 1);
    const char *why = luaL_optlstring(L, 2, "", &wlen);
    tg_rt_t *rt = s->rt;
    tg_coord_args_t a = {.op = op, .sid = sid, .value = why, .vlen = wlen, .n = 1, .cap = 1};
    const char *argv[12];
    size_t lens[12];
    char nums[3][24], what[32];
    int argc = tg_coord_argv(&a, s->key, s->klen, rt->prefix, rt->plen, rt->ttl, argv, lens, nums);
    snprintf(what, sizeof what, "session %s", op);
    return tg_call_yield(L, TG_WAIT_COORD, "session", 7, 5, what, TG_SCRIPT_COORD, 1, argc, argv, lens);
}

static int l_die(lua_State *L) { return end_session(L, "die"); }
static int l_bye(lua_State *L) { return end_session(L, "bye"); }

static const luaL_Reg funcs[] = {
    {"start", l_start},
    {"stop", l_stop},
    {"die", l_die},
    {"bye", l_bye},
    {NULL, NULL},
};

int luaopen_tg_session_c(lua_State *L) {
    luaL_newlib(L, funcs);
    return 1;
}

int tg_session_attach(tg_rt_t *rt) {
    tg_sessions_t *s = calloc(1, sizeof *s);
    if (!s || !(s->key = tg_key_new(rt->prefix, rt->plen, TG_KEY_SESSIONS, NULL, 0, &s->klen))) {
        free(s);
        return -1;
    }
    s->rt = rt;
    s->r = rt->redis;
    uv_timer_init(rt->loop, &s->timer);
    s->timer.data = s;
    rt->sessions = s;
    return 0;
}

static void close_free(uv_handle_t *h) {
    free(h->data);
}

void tg_session_detach(tg_rt_t *rt) {
    tg_sessions_t *s = rt->sessions;
    if (!s) return;
    rt->sessions = NULL;
    for (int i = 0; i < s->n; i++) free(s->sids[i]);
    free(s->sids);
    free(s->key);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, close_free);     /* frees s */
}
