/*
 * tg_session.c -- the heartbeat of every session of this process.
 *
 * Each instance holds a session: its global_seq in the sorted set
 * P:tg:sessions, scored with the time it lapses.  One timer of the process
 * pushes the expiry of all its instances' sessions forward every ttl/3
 * seconds in one script call (coord.lua "beat"), which also ends the
 * sessions of other processes that lapsed -- so ten thousand in-process
 * instances cost one call per beat, not ten thousand.
 *
 * Ownership: the sid strings are malloc'd and owned by r->sessions.
 */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_embedded.h"
#include "tg_redis_int.h"

static void beat(tg_redis_t *r) {
    if (r->down || !r->cmd.ac || r->nsessions == 0) return;
    size_t len = 1;
    for (int i = 0; i < r->nsessions; i++) len += strlen(r->sessions[i]) + 1;
    char *sids = malloc(len), *p = sids;
    if (!sids) return;
    for (int i = 0; i < r->nsessions; i++) {
        size_t n = strlen(r->sessions[i]);
        memcpy(p, r->sessions[i], n);
        p += n;
        *p++ = ' ';
    }
    *p = '\0';
    int si = -1;
    for (int i = 0; tg_embedded_scripts[i].name; i++)
        if (strcmp(tg_embedded_scripts[i].name, "coord") == 0) si = i;
    char sessions[700], ms[32], ttl[32];
    snprintf(sessions, sizeof sessions, "%s:tg:sessions", r->prefix);
    snprintf(ms, sizeof ms, "%lld", r->session_ttl_ms);
    snprintf(ttl, sizeof ttl, "%lld", r->session_ttl_ms / 1000 * 10 + 86400);
    const char *argv[] = {"EVAL", tg_embedded_scripts[si].data, "1", sessions, "beat", "", "", "",
                          r->prefix, "", sids, "1", ms, "1", ttl};
    size_t lens[15];
    for (int i = 0; i < 15; i++) lens[i] = strlen(argv[i]);
    lens[1] = tg_embedded_scripts[si].len;
    r->stats.commands++;
    redisAsyncCommandArgv(r->cmd.ac, NULL, NULL, 15, argv, lens);
    free(sids);
}

static void on_beat(uv_timer_t *h) {
    beat(h->data);
}

/* core.session_add(sid, ttl_seconds): this process keeps sid alive. */
static int l_session_add(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    const char *sid = luaL_checkstring(L, 1);
    double ttl = luaL_checknumber(L, 2);
    if (ttl < 0.1) return tg_err_raise(L, "invalid", "session TTL must be at least 0.1 s");
    if (r->nsessions == r->capsessions) {
        int cap = r->capsessions ? r->capsessions * 2 : 8;
        char **s = realloc(r->sessions, (size_t)cap * sizeof *s);
        if (!s) return luaL_error(L, "out of memory");
        r->sessions = s;
        r->capsessions = cap;
    }
    if (!(r->sessions[r->nsessions] = strdup(sid))) return luaL_error(L, "out of memory");
    r->nsessions++;
    if (!r->session_timer_on) {
        r->session_ttl_ms = (long long)(ttl * 1000);
        uv_timer_init(r->rt->loop, &r->session_timer);
        r->session_timer.data = r;
        r->session_timer_on = 1;
        uint64_t every = (uint64_t)(r->session_ttl_ms / 3);
        uv_timer_start(&r->session_timer, on_beat, 0, every);
    }
    /* Later sessions join the next beat (within ttl/3): beating on every add
     * would cost O(N^2) for N instances starting together. */
    return 0;
}

/* core.session_remove(sid): stop keeping sid alive (the instance ended). */
static int l_session_remove(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    const char *sid = luaL_checkstring(L, 1);
    for (int i = 0; i < r->nsessions; i++) {
        if (strcmp(r->sessions[i], sid) != 0) continue;
        free(r->sessions[i]);
        r->sessions[i] = r->sessions[--r->nsessions];
        break;
    }
    return 0;
}

void tg_session_free(tg_redis_t *r) {
    for (int i = 0; i < r->nsessions; i++) free(r->sessions[i]);
    free(r->sessions);
    r->sessions = NULL;
    r->nsessions = r->capsessions = 0;
    if (r->session_timer_on) {
        uv_close((uv_handle_t *)&r->session_timer, NULL);
        r->session_timer_on = 0;
    }
}

static const luaL_Reg session_funcs[] = {
    {"session_add", l_session_add},
    {"session_remove", l_session_remove},
    {NULL, NULL},
};

void tg_session_open_lua(lua_State *L) {
    luaL_setfuncs(L, session_funcs, 0);
}
