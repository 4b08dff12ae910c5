/*
 * tg_session.c -- see tg_session.h.
 *
 * The heartbeat runs on a thread of its own with a connection of its own
 * (blocking hiredis, "tgrun-beat"): liveness must not depend on the event
 * loop, which plan code that does not yield (a long computation, a
 * blocking os.execute) holds up.  The thread and the loop share only the
 * list of sessions and the results of the last beat, under one mutex; the
 * thread wakes the loop with a uv_async when there is something to say.
 * Nothing else of the runtime is touched from the thread.
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
#include "tg_redis.h"
#include "tg_scripts.h"

#define BEAT_IO_TIMEOUT_S 2     /* a beat that takes longer failed */

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
    long long ttl_ms;
    int stop;
    char *dead;                 /* "sid sid ..." the last beat found dead (malloc'd) */
    char fail[300];             /* why the last beat failed, "" if it did not */
    unsigned long long beats;
    /* the loop's side */
    int thread_on, failing;
    uv_thread_t thread;
    uv_async_t async;
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
        } else if (rep->type == REDIS_REPLY_ERROR) {
            snprintf(why, sizeof why, "Redis replied: %s", rep->str);
        } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2
                   && rep->element[1]->type == REDIS_REPLY_ARRAY && rep->element[1]->elements > 0) {
            size_t len = 1;
            const redisReply *d = rep->element[1];
            for (size_t i = 0; i < d->elements; i++) len += d->element[i]->len + 1;
            if ((dead = malloc(len))) {
                char *p = dead;
                for (size_t i = 0; i < d->elements; i++) {
                    memcpy(p, d->element[i]->str, d->element[i]->len);
                    p += d->element[i]->len;
                    *p++ = ' ';
                }
                *p = '\0';
            }
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
    s->beats++;
    uv_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

static void beat_thread(void *arg) {
    tg_sessions_t *s = arg;
    uint64_t next = 0;
    uv_mutex_lock(&s->mu);
    while (!s->stop) {
        uint64_t now = uv_hrtime();
        if (now < next) {
            uv_cond_timedwait(&s->cond, &s->mu, next - now);
            continue;
        }
        long long ttl_ms = s->ttl_ms;
        next = now + (uint64_t)(ttl_ms / 3) * 1000000ULL;
        if (s->n == 0) continue;
        size_t len = 1;
        for (int i = 0; i < s->n; i++) len += strlen(s->list[i].sid) + 1;
        char *sids = malloc(len), *p = sids;
        if (!sids) continue;
        for (int i = 0; i < s->n; i++) {
            size_t k = strlen(s->list[i].sid);
            memcpy(p, s->list[i].sid, k);
            p += k;
            *p++ = ' ';
        }
        *p = '\0';
        uv_mutex_unlock(&s->mu);
        beat_once(s, sids, ttl_ms);            /* the lock is not held across I/O */
        free(sids);
        uv_mutex_lock(&s->mu);
    }
    uv_mutex_unlock(&s->mu);
    if (s->c) redisFree(s->c);
    s->c = NULL;
}

/* ---- the loop's side --------------------------------------------------------- */

/* The thread has news: failures to report, instances declared dead. */
static void on_async(uv_async_t *h) {
    tg_sessions_t *s = h->data;
    char fail[300];
    uv_mutex_lock(&s->mu);
    char *dead = s->dead;
    s->dead = NULL;
    snprintf(fail, sizeof fail, "%s", s->fail);
    uv_mutex_unlock(&s->mu);
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
        tg_inst_t *inst = NULL;
        for (int i = 0; i < s->n; i++)
            if (strcmp(s->list[i].sid, sid) == 0) inst = s->list[i].inst;
        uv_mutex_unlock(&s->mu);
        if (inst) tg_inst_kill(inst, why);
    }
    free(dead);
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
    memcpy(s->list[s->n].sid, sid, slen + 1);
    s->list[s->n].inst = tg_ctx(L)->inst;
    s->n++;
    if (!s->thread_on) s->ttl_ms = (long long)(ttl * 1000);
    uv_cond_signal(&s->cond);
    uv_mutex_unlock(&s->mu);
    /* Later sessions join the next beat (within ttl/3): beating on every
     * start would cost O(N^2) for N instances starting together. */
    if (!s->thread_on) {
        if (uv_thread_create(&s->thread, beat_thread, s) != 0)
            return tg_err_raise(L, "nomem", "session: cannot start the heartbeat thread");
        s->thread_on = 1;
    }
    return 0;
}

/* session.stop(sid): stop keeping sid alive (the instance ended). */
static int l_stop(lua_State *L) {
    tg_sessions_t *s = of(L, "session");
    const char *sid = luaL_checkstring(L, 1);
    uv_mutex_lock(&s->mu);
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->list[i].sid, sid) != 0) continue;
        s->list[i] = s->list[--s->n];
        break;
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
    return tg_call_yield(L, 5, what, TG_SCRIPT_COORD, 1, argc, argv, lens);
}

static int l_die(lua_State *L) { return end_session(L, "die"); }
static int l_bye(lua_State *L) { return end_session(L, "bye"); }

/* session.beats() -> how many beats this process sent (tests) */
static int l_beats(lua_State *L) {
    tg_sessions_t *s = of(L, "session");
    uv_mutex_lock(&s->mu);
    lua_Integer n = (lua_Integer)s->beats;
    uv_mutex_unlock(&s->mu);
    lua_pushinteger(L, n);
    return 1;
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
    rt->sessions = s;
    return 0;
}

static void close_free(uv_handle_t *h) {
    tg_sessions_t *s = h->data;
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
    free(s->key);
    free(s->prefix);
    uv_close((uv_handle_t *)&s->async, close_free);     /* frees s */
}
