/*
 * tg_session.c -- see tg_session.h.
 *
 * Two beats, so that liveness never depends on the event loop alone.  The
 * loop beats every ttl/3 on the transport's command connection (no
 * connection of its own: a process keeps to two).  A thread watches it: when
 * the loop missed a beat -- plan code that does not yield, a blocking
 * os.execute -- the thread beats instead, over a connection of its own
 * (blocking hiredis, "tgrun-beat") that it opens for that and closes again
 * once the loop has been beating for a while.  The thread and the loop
 * share only the list of sessions, the time of the loop's last beat and
 * the results of the thread's beats, under one mutex; the thread wakes the
 * loop with a uv_async when there is something to say.  Nothing else of
 * the runtime is touched from the thread.
 *
 * What a beat answers: the caller's sessions that the run declared dead
 * (this process was stopped or cut off for longer than the TTL while the
 * others went on) -- those instances are ended (tg_inst_kill) so they
 * cannot go on to succeed -- and whether it failed (reported once per run
 * of failures in every instance's log).
 */
#include "tg_session.h"

#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>

#include "tg_call.h"
#include "tg_coord.h"
#include "tg_keys.h"
#include "tg_map.h"
#include "tg_redis.h"
#include "tg_scripts.h"

#define BEAT_IO_TIMEOUT_S 2     /* a beat that takes longer failed */
#define HEALTHY_BEATS 6         /* loop beats in a row before the thread lets go */

typedef struct session {
    char sid[24];
    tg_inst_t *inst;
} session_t;

struct tg_sessions {
    tg_rt_t *rt;
    /* set once, read by the thread */
    tg_redis_addr_t addr;
    char *key;                  /* P:tg:sessions */
    size_t klen;
    char *prefix;
    size_t plen;
    char ttl[24], sha[41];
    const char *script;         /* coord.lua, for NOSCRIPT */
    size_t script_len;
    /* shared, under mu */
    uv_mutex_t mu;
    uv_cond_t cond;
    session_t *list;
    int n, cap;
    tg_map_t index;             /* sid -> its position in list, plus one */
    long long ttl_ms;
    int stop;
    char *dead;                 /* "sid sid ..." the last beat found dead (malloc'd) */
    char fail[300];             /* why the last beat failed, "" if it did not */
    unsigned long long beats, thread_beats;
    uint64_t loop_beat_at;      /* uv_hrtime() of the loop's last beat */
    /* the loop's side */
    int thread_on, failing, closing;
    uv_thread_t thread;
    uv_async_t async;
    uv_timer_t timer;           /* the loop's beat */
    tg_redis_t *r;
    redisContext *c;            /* the thread's own */
};

static tg_sessions_t *of(lua_State *L, const char *what) {
    tg_sessions_t *s = tg_ctx(L)->inst->rt->sessions;
    if (!s) tg_err_raise(L, "closed", "%s: not connected to Redis", what);
    return s;
}

/* ---- the thread ------------------------------------------------------------ */

static redisReply *command(tg_sessions_t *s, int argc, const char **argv, const size_t *lens) {
    return redisCommandArgv(s->c, argc, argv, lens);
}

/* Connect (AUTH, SELECT, name) unless connected; 0 or -1 with why. */
static int connect_beat(tg_sessions_t *s, char *why, size_t n) {
    if (s->c) return 0;
    struct timeval tv = {BEAT_IO_TIMEOUT_S, 0};
    const tg_redis_addr_t *a = &s->addr;
    s->c = a->is_unix ? redisConnectUnixWithTimeout(a->path, tv) : redisConnectWithTimeout(a->host, a->port, tv);
    if (!s->c || s->c->err) {
        snprintf(why, n, "cannot connect: %s", s->c ? s->c->errstr : "out of memory");
        if (s->c) redisFree(s->c);
        s->c = NULL;
        return -1;
    }
    redisSetTimeout(s->c, tv);
    char db[16];
    const char *steps[3][3] = {{"AUTH", a->user[0] ? a->user : a->password, a->password},
                               {"SELECT", db, NULL}, {"CLIENT", "SETNAME", "tgrun-beat"}};
    int argcs[3] = {a->user[0] ? 3 : 2, 2, 3};
    snprintf(db, sizeof db, "%d", a->db);
    for (int i = 0; i < 3; i++) {
        if ((i == 0 && !a->password[0]) || (i == 1 && !a->db)) continue;
        redisReply *rep = command(s, argcs[i], steps[i], NULL);
        int bad = !rep || rep->type == REDIS_REPLY_ERROR;
        if (bad) snprintf(why, n, "%s failed: %s", steps[i][0], rep ? rep->str : s->c->errstr);
        if (rep) freeReplyObject(rep);
        if (bad) {
            redisFree(s->c);
            s->c = NULL;
            return -1;
        }
    }
    return 0;
}

/* What a beat answered ({ended, {sids of ours that are dead}}, or an
 * error): the error's text in why (empty when none), and the dead sids as
 * "3 17 42 " (malloc'd; NULL when none, or out of memory).  The thread's
 * beat and the loop's read it alike. */
static char *beat_reply(const redisReply *rep, char *why, size_t whylen) {
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "Redis replied: %s", rep->str);
        return NULL;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 || rep->element[1]->type != REDIS_REPLY_ARRAY
        || rep->element[1]->elements == 0)
        return NULL;
    const redisReply *d = rep->element[1];
    size_t len = 1;
    for (size_t i = 0; i < d->elements; i++) len += d->element[i]->len + 1;
    char *dead = malloc(len);
    if (!dead) return NULL;
    char *p = dead;
    for (size_t i = 0; i < d->elements; i++) {
        memcpy(p, d->element[i]->str, d->element[i]->len);
        p += d->element[i]->len;
        *p++ = ' ';
    }
    *p = '\0';
    return dead;
}

/* One beat for sids ("3 17 42 ..."); the result under mu.  A connection
 * that dropped since the last beat is made again once, at once. */
static void beat_once(tg_sessions_t *s, const char *sids, long long ttl_ms) {
    char why[300] = "";
    char *dead = NULL;
    for (int tries = 0; tries < 2; tries++) {
        why[0] = '\0';
        if (connect_beat(s, why, sizeof why) < 0) break;
        tg_coord_args_t a = {.op = "beat", .sid = sids, .n = 1, .lease_ms = ttl_ms, .cap = 1};
        const char *argv[3 + TG_COORD_ARGC];
        size_t lens[3 + TG_COORD_ARGC];
        char nums[3][24];
        int argc = tg_coord_argv(&a, s->key, s->klen, s->prefix, s->plen, s->ttl, argv + 3, lens + 3, nums);
        argv[0] = "EVALSHA"; lens[0] = 7;
        argv[1] = s->sha; lens[1] = 40;
        argv[2] = "1"; lens[2] = 1;
        redisReply *rep = command(s, argc + 3, argv, lens);
        if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            freeReplyObject(rep);
            const char *load[3] = {"SCRIPT", "LOAD", s->script};
            size_t llens[3] = {6, 4, s->script_len};
            rep = command(s, 3, load, llens);
            if (rep) freeReplyObject(rep);
            rep = command(s, argc + 3, argv, lens);
        }
        if (!rep) {
            snprintf(why, sizeof why, "%s", s->c->errstr[0] ? s->c->errstr : "no answer");
            redisFree(s->c);
            s->c = NULL;
            continue;                   /* once more, on a new connection */
        } else {
            dead = beat_reply(rep, why, sizeof why);
        }
        if (rep) freeReplyObject(rep);
        break;
    }
    uv_mutex_lock(&s->mu);
    snprintf(s->fail, sizeof s->fail, "%s", why);
    if (dead) {
        free(s->dead);
        s->dead = dead;
    }
    uv_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

/* "sid sid ..." of the sessions (under mu); malloc'd, NULL when none. */
static char *sid_list(tg_sessions_t *s) {
    if (s->n == 0) return NULL;
    size_t len = 1;
    for (int i = 0; i < s->n; i++) len += strlen(s->list[i].sid) + 1;
    char *sids = malloc(len), *p = sids;
    if (!sids) return NULL;
    for (int i = 0; i < s->n; i++) {
        size_t k = strlen(s->list[i].sid);
        memcpy(p, s->list[i].sid, k);
        p += k;
        *p++ = ' ';
    }
    *p = '\0';
    return sids;
}

/* Watch the loop's beats; beat instead when it missed one. */
static void beat_thread(void *arg) {
    tg_sessions_t *s = arg;
    int healthy = 0;
    uv_mutex_lock(&s->mu);
    while (!s->stop) {
        uint64_t period = (uint64_t)(s->ttl_ms / 3) * 1000000ULL;
        uv_cond_timedwait(&s->cond, &s->mu, period / 2);
        if (s->stop) break;
        uint64_t now = uv_hrtime();
        if (now - s->loop_beat_at < period + period / 2) {
            /* the loop beats: let go of the connection after a while */
            if (s->c && ++healthy >= HEALTHY_BEATS * 2) {
                redisFree(s->c);
                s->c = NULL;
            }
            continue;
        }
        healthy = 0;
        char *sids = sid_list(s);
        long long ttl_ms = s->ttl_ms;
        if (!sids) continue;
        uv_mutex_unlock(&s->mu);
        beat_once(s, sids, ttl_ms);            /* the lock is not held across I/O */
        free(sids);
        uv_mutex_lock(&s->mu);
        s->thread_beats++;
    }
    uv_mutex_unlock(&s->mu);
    if (s->c) redisFree(s->c);
    s->c = NULL;
}

/* ---- the loop's side --------------------------------------------------------- */

/* What a beat said, from the loop's beat or the thread's: a failure
 * (fail != "") reported once per run of failures; the instances it found
 * dead (dead: "sid sid ...", modified) ended. */
static void beat_result(tg_sessions_t *s, const char *fail, char *dead) {
    int failed = fail[0] != '\0';
    if (failed && !s->failing)
        for (tg_inst_t *inst = s->rt->insts; inst; inst = inst->next)
            tg_inst_warn(inst, "the session heartbeat failed (peers may declare this instance dead): %s", fail);
    if (!failed && s->failing)
        for (tg_inst_t *inst = s->rt->insts; inst; inst = inst->next)
            tg_inst_warn(inst, "the session heartbeat works again");
    s->failing = failed;
    if (!dead) return;
    for (char *save = NULL, *sid = strtok_r(dead, " ", &save); sid; sid = strtok_r(NULL, " ", &save)) {
        char why[200];
        snprintf(why, sizeof why, "its session %s lapsed: no heartbeat of this process reached Redis for "
                 "longer than the session TTL (%.3g s) while its peers went on (the process was stopped "
                 "or cut off)", sid, (double)s->ttl_ms / 1000);
        uv_mutex_lock(&s->mu);
        uintptr_t at = (uintptr_t)tg_map_get(&s->index, sid, strlen(sid));
        tg_inst_t *inst = at ? s->list[at - 1].inst : NULL;
        uv_mutex_unlock(&s->mu);
        if (inst) tg_inst_kill(inst, why);
    }
}

/* The thread has news: failures to report, instances declared dead. */
static void on_async(uv_async_t *h) {
    tg_sessions_t *s = h->data;
    char fail[300];
    uv_mutex_lock(&s->mu);
    char *dead = s->dead;
    s->dead = NULL;
    snprintf(fail, sizeof fail, "%s", s->fail);
    uv_mutex_unlock(&s->mu);
    beat_result(s, fail, dead);
    free(dead);
}

/* The loop's beat answered: {ended, {sids of ours that are dead}}. */
static void on_loop_beat(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    tg_sessions_t *s = data;
    (void)r; (void)tag;
    if (!rep) return;                           /* closing, or lost: said elsewhere */
    char fail[300] = "";
    char *dead = beat_reply(rep, fail, sizeof fail);
    beat_result(s, fail, dead);
    free(dead);
}

static void on_loop_timer(uv_timer_t *h) {
    tg_sessions_t *s = h->data;
    if (tg_redis_down(s->r)) return;
    uv_mutex_lock(&s->mu);
    char *sids = sid_list(s);
    long long ttl_ms = s->ttl_ms;
    s->loop_beat_at = uv_hrtime();
    s->beats++;
    uv_mutex_unlock(&s->mu);
    if (!sids) return;
    tg_rt_t *rt = s->rt;
    tg_coord_args_t a = {.op = "beat", .sid = sids, .n = 1, .lease_ms = ttl_ms, .cap = 1};
    const char *argv[TG_COORD_ARGC];
    size_t lens[TG_COORD_ARGC];
    char nums[3][24];
    int argc = tg_coord_argv(&a, s->key, s->klen, rt->prefix, rt->plen, rt->ttl, argv, lens, nums);
    tg_redis_eval(s->r, TG_SCRIPT_COORD, on_loop_beat, s, 0, 1, argc, argv, lens);
    free(sids);
}

/* session.start(sid, ttl_seconds): this process keeps sid alive. */
static int l_start(lua_State *L) {
    tg_sessions_t *s = of(L, "session");
    size_t slen;
    const char *sid = luaL_checklstring(L, 1, &slen);
    double ttl = luaL_checknumber(L, 2);
    if (!(ttl >= 0.1 && ttl < 86400)) return tg_err_raise(L, "invalid", "session TTL must be 0.1 to 86400 s");
    if (slen == 0 || slen >= sizeof ((session_t *)0)->sid || strchr(sid, ' '))
        return tg_err_raise(L, "invalid", "bad session id");
    uv_mutex_lock(&s->mu);
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        session_t *v = realloc(s->list, (size_t)cap * sizeof *v);
        if (!v) {
            uv_mutex_unlock(&s->mu);
            return luaL_error(L, "out of memory");
        }
        s->list = v;
        s->cap = cap;
    }
    if (tg_map_get(&s->index, sid, slen)) {
        uv_mutex_unlock(&s->mu);
        return tg_err_raise(L, "invalid", "session %s is kept alive already", sid);
    }
    if (tg_map_set(&s->index, sid, slen, (void *)(uintptr_t)(s->n + 1)) < 0) {
        uv_mutex_unlock(&s->mu);
        return luaL_error(L, "out of memory");
    }
    memcpy(s->list[s->n].sid, sid, slen + 1);
    s->list[s->n].inst = tg_ctx(L)->inst;
    s->n++;
    int first = !s->thread_on;
    if (first) {
        s->ttl_ms = (long long)(ttl * 1000);
        s->loop_beat_at = uv_hrtime();
    }
    uv_mutex_unlock(&s->mu);
    /* Later sessions join the next beat (within ttl/3): beating on every
     * start would cost O(N^2) for N instances starting together. */
    if (first) {
        uv_timer_start(&s->timer, on_loop_timer, 0, (uint64_t)(s->ttl_ms / 3));
        if (uv_thread_create(&s->thread, beat_thread, s) != 0)
            return tg_err_raise(L, "nomem", "session: cannot start the heartbeat thread");
        s->thread_on = 1;
    }
    return 0;
}

/* session.stop(sid): stop keeping sid alive (the instance ended). */
static int l_stop(lua_State *L) {
    tg_sessions_t *s = of(L, "session");
    size_t slen;
    const char *sid = luaL_checklstring(L, 1, &slen);
    uv_mutex_lock(&s->mu);
    uintptr_t at = (uintptr_t)tg_map_del(&s->index, sid, slen);
    if (at) {                                   /* the last one takes its place */
        int i = (int)at - 1;
        s->list[i] = s->list[--s->n];
        if (i < s->n) tg_map_set(&s->index, s->list[i].sid, strlen(s->list[i].sid), (void *)(uintptr_t)(i + 1));
    }
    uv_mutex_unlock(&s->mu);
    return 0;
}

/* session.die(sid, why) / session.bye(sid) -> reply.  Yields (5 s at most):
 * the instance failed (tell the run now, not when the session lapses), or
 * ended cleanly (give back what it holds; 0 when the run had already
 * declared it dead). */
static int end_session(lua_State *L, const char *op) {
    tg_sessions_t *s = of(L, op);
    size_t wlen = 0;
    const char *sid = luaL_checkstring(L, 1);
    const char *why = luaL_optlstring(L, 2, "", &wlen);
    tg_rt_t *rt = s->rt;
    tg_coord_args_t a = {.op = op, .sid = sid, .value = why, .vlen = wlen, .n = 1, .cap = 1};
    const char *argv[TG_COORD_ARGC];
    size_t lens[TG_COORD_ARGC];
    char nums[3][24], what[32];
    int argc = tg_coord_argv(&a, s->key, s->klen, rt->prefix, rt->plen, rt->ttl, argv, lens, nums);
    snprintf(what, sizeof what, "session %s", op);
    return tg_call_yield(L, TG_WAIT_COORD, "session", 7, 5, what, TG_SCRIPT_COORD, 1, argc, argv, lens);
}

static int l_die(lua_State *L) { return end_session(L, "die"); }
static int l_bye(lua_State *L) { return end_session(L, "bye"); }

/* session.beats() -> beats of the loop, beats of the thread (tests) */
static int l_beats(lua_State *L) {
    tg_sessions_t *s = of(L, "session");
    uv_mutex_lock(&s->mu);
    lua_Integer n = (lua_Integer)s->beats, t = (lua_Integer)s->thread_beats;
    uv_mutex_unlock(&s->mu);
    lua_pushinteger(L, n);
    lua_pushinteger(L, t);
    return 2;
}

static const luaL_Reg funcs[] = {
    {"start", l_start},
    {"stop", l_stop},
    {"die", l_die},
    {"bye", l_bye},
    {"beats", l_beats},
    {NULL, NULL},
};

int luaopen_tg_session_c(lua_State *L) {
    luaL_newlib(L, funcs);
    return 1;
}

int tg_session_attach(tg_rt_t *rt) {
    tg_sessions_t *s = calloc(1, sizeof *s);
    if (!s) return -1;
    if (!(s->key = tg_key_new(rt->prefix, rt->plen, TG_KEY_SESSIONS, NULL, 0, &s->klen))
        || !(s->prefix = malloc(rt->plen + 1))) {
        free(s->key);
        free(s);
        return -1;
    }
    memcpy(s->prefix, rt->prefix, rt->plen + 1);
    s->plen = rt->plen;
    s->rt = rt;
    s->addr = *tg_redis_address(rt->redis);
    snprintf(s->ttl, sizeof s->ttl, "%s", rt->ttl);
    snprintf(s->sha, sizeof s->sha, "%s", tg_redis_script_sha(rt->redis, TG_SCRIPT_COORD));
    s->script = tg_redis_script_text(TG_SCRIPT_COORD, &s->script_len);
    uv_mutex_init(&s->mu);
    uv_cond_init(&s->cond);
    uv_async_init(rt->loop, &s->async, on_async);
    s->async.data = s;
    uv_timer_init(rt->loop, &s->timer);
    s->timer.data = s;
    s->r = rt->redis;
    rt->sessions = s;
    return 0;
}

static void close_free(uv_handle_t *h) {
    tg_sessions_t *s = h->data;
    if (--s->closing > 0) return;               /* the other handle's close frees */
    uv_mutex_destroy(&s->mu);
    uv_cond_destroy(&s->cond);
    free(s->dead);
    free(s);
}

void tg_session_detach(tg_rt_t *rt) {
    tg_sessions_t *s = rt->sessions;
    if (!s) return;
    rt->sessions = NULL;
    if (s->thread_on) {
        uv_mutex_lock(&s->mu);
        s->stop = 1;
        uv_cond_signal(&s->cond);
        uv_mutex_unlock(&s->mu);
        uv_thread_join(&s->thread);     /* a beat in progress ends within its I/O timeout */
    }
    free(s->list);
    tg_map_free(&s->index);
    free(s->key);
    free(s->prefix);
    s->closing = 2;
    uv_close((uv_handle_t *)&s->timer, close_free);
    uv_close((uv_handle_t *)&s->async, close_free);     /* the second to close frees s */
}
