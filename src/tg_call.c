/* tg_call.c -- see tg_call.h. */
#include "tg_call.h"

#include <string.h>
#include <lauxlib.h>

#include "tg_reply.h"
#include "tg_scripts.h"

#define MAX_ARGS 256

tg_redis_t *tg_call_redis(lua_State *L, const char *what) {
    tg_redis_t *r = tg_ctx(L)->inst->rt->redis;
    if (!r) tg_err_raise(L, "closed", "%s: not connected to Redis", what);
    if (tg_redis_down(r)) tg_err_raise(L, "closed", "%s: %s", what, tg_redis_down(r));
    return r;
}

static int push_reply(lua_State *L, void *ud) {
    if (tg_reply_push(L, ud) < 0)
        return luaL_error(L, "the reply is nested too deep or too large");
    return 1;
}

static void on_reply(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    tg_task_t *t = data;
    (void)r;
    if (tg_wait_target(t, tag)) {
        if (!rep) tg_wait_fail(t, "closed", "%s: %s", t->what,
                               tg_redis_down(r) ? tg_redis_down(r) : "the connection to Redis was lost");
        else if (rep->type == REDIS_REPLY_ERROR)
            tg_wait_fail(t, "redis", "%s: Redis replied: %s", t->what, rep->str);
        else tg_wait_deliver(t, 1, push_reply, (void *)rep);
    }
    tg_task_unref(t);
}

int tg_call_yield(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                  const char *what, int script, int nkeys, int argc, const char **argv,
                  const size_t *lens) {
    return tg_call_yield_marked(L, kind, name, nlen, timeout, what, script, nkeys, argc, argv, lens, -1);
}

int tg_call_yield_marked(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                         const char *what, int script, int nkeys, int argc, const char **argv,
                         const size_t *lens, int mark) {
    tg_redis_t *r = tg_call_redis(L, what);
    tg_task_t *t = tg_wait_begin(L, kind, name, nlen, timeout, what);
    tg_task_ref(t);
    int rc = script >= 0 ? tg_redis_eval_marked(r, script, on_reply, t, t->token, nkeys, argc, argv, lens, mark)
                         : tg_redis_cmd(r, on_reply, t, t->token, argc, argv, lens);
    if (rc < 0) {
        tg_task_unref(t);
        tg_wait_fail(t, "closed", "%s: %s", what, tg_redis_down(r) ? tg_redis_down(r) : "out of memory");
    }
    return tg_wait_yield(L);
}

/* Collect the strings (numbers converted) of the table at idx into
 * argv/lens from position at; they stay on the stack.  Returns the count. */
static int table_args(lua_State *L, int idx, const char **argv, size_t *lens, int at) {
    int n = (int)luaL_len(L, idx);
    luaL_checkstack(L, n + 8, "too many arguments");
    if (at + n > MAX_ARGS) return tg_err_raise(L, "invalid", "too many arguments (%d)", at + n);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            return tg_err_raise(L, "invalid", "argument %d is a %s, not a string or number",
                                i, luaL_typename(L, -1));
        argv[at] = lua_tolstring(L, -1, &lens[at]);
        at++;
    }
    return at;
}

/* redis.call({cmd, arg...} [, timeout [, what]]) -> reply.  Yields. */
static int l_call(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 2, -1);
    lua_settop(L, 3);
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    int argc = table_args(L, 1, argv, lens, 0);
    if (argc == 0) return tg_err_raise(L, "invalid", "empty Redis command");
    const char *what = lua_pushfstring(L, "Redis %s", luaL_optstring(L, 3, argv[0]));
    return tg_call_yield(L, TG_WAIT_REDIS, what + 6, strlen(what + 6), timeout, what, -1, 0, argc, argv, lens);
}

/* redis.script(name, {keys}, {args} [, timeout [, what]]) -> reply.  Yields. */
static int l_script(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 4, -1);
    lua_settop(L, 5);
    int si = -1;
    for (int i = 0; i < TG_NSCRIPTS; i++)
        if (strcmp(tg_redis_script_name(i), name) == 0) si = i;
    if (si < 0) return tg_err_raise(L, "invalid", "no server-side script named '%s'", name);
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    int nkeys = table_args(L, 2, argv, lens, 0);
    int argc = table_args(L, 3, argv, lens, nkeys);
    const char *what = luaL_optstring(L, 5, name);
    return tg_call_yield(L, TG_WAIT_REDIS, what, strlen(what), timeout, what, si, nkeys, argc, argv, lens);
}

/* What a command sent without waiting remembers, to report its failure in
 * the log of the instance that sent it (tg_inst_warn). */
typedef struct sent {
    tg_inst_t *inst;
    char what[80];
} sent_t;

static void on_sent(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    sent_t *s = data;
    (void)r; (void)tag;
    /* NULL: the transport is closing or lost for good (every wait says so) */
    if (rep && rep->type == REDIS_REPLY_ERROR) tg_inst_warn(s->inst, "%s: Redis replied: %s", s->what, rep->str);
    free(s);
}

/* redis.send({cmd, arg...} [, what]): send a command without waiting for
 * its reply (which comes back in order on the same connection, before any
 * later call's); an error reply goes to this instance's log as a warning.
 * Raises "closed" when Redis is gone. */
static int l_send(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    int argc = table_args(L, 1, argv, lens, 0);
    if (argc == 0) return tg_err_raise(L, "invalid", "empty Redis command");
    const char *what = luaL_optstring(L, 2, argv[0]);
    tg_redis_t *r = tg_call_redis(L, what);
    sent_t *s = malloc(sizeof *s);
    if (!s) return tg_err_raise(L, "nomem", "%s: out of memory", what);
    s->inst = tg_ctx(L)->inst;
    snprintf(s->what, sizeof s->what, "%s", what);
    if (tg_redis_cmd(r, on_sent, s, 0, argc, argv, lens) < 0) {
        free(s);
        return tg_err_raise(L, "closed", "%s: %s", what, tg_redis_down(r) ? tg_redis_down(r) : "Redis is gone");
    }
    return 0;
}

/* redis.down() -> nil | message */
static int l_down(lua_State *L) {
    tg_redis_t *r = tg_ctx(L)->inst->rt->redis;
    if (r && tg_redis_down(r)) lua_pushstring(L, tg_redis_down(r));
    else if (!r) lua_pushliteral(L, "not connected to Redis");
    else lua_pushnil(L);
    return 1;
}

/* redis.stats() -> {commands=, xreads=, unblocks=, reloads=, inflight=, reconnects=} */
static int l_stats(lua_State *L) {
    tg_redis_t *r = tg_call_redis(L, "redis.stats");
    const tg_redis_stats_t *s = tg_redis_stats(r);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)s->commands); lua_setfield(L, -2, "commands");
    lua_pushinteger(L, (lua_Integer)s->xreads); lua_setfield(L, -2, "xreads");
    lua_pushinteger(L, (lua_Integer)s->unblocks); lua_setfield(L, -2, "unblocks");
    lua_pushinteger(L, (lua_Integer)s->reloads); lua_setfield(L, -2, "reloads");
    lua_pushinteger(L, (lua_Integer)tg_redis_inflight(r)); lua_setfield(L, -2, "inflight");
    lua_pushinteger(L, (lua_Integer)tg_redis_reconnects(r)); lua_setfield(L, -2, "reconnects");
    return 1;
}

/* redis.script_names() -> {name, ...} of the compiled-in scripts */
static int l_script_names(lua_State *L) {
    lua_createtable(L, TG_NSCRIPTS, 0);
    for (int i = 0; i < TG_NSCRIPTS; i++) {
        lua_pushstring(L, tg_redis_script_name(i));
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static const luaL_Reg funcs[] = {
    {"call", l_call},
    {"send", l_send},
    {"script", l_script},
    {"down", l_down},
    {"stats", l_stats},
    {"script_names", l_script_names},
    {NULL, NULL},
};

int luaopen_tg_redis(lua_State *L) {
    luaL_newlib(L, funcs);
    return 1;
}
