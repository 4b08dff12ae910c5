/*
 * tg_inst.c -- an instance: its place in the process's Lua space
 * (tg_space.c), its life, and what tg.core and tg.keys tell a plan about it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include <lualib.h>

#include "tg_barrier.h"
#include "tg_call.h"
#include "tg_coord.h"
#include "tg_embedded.h"
#include "tg_event.h"
#include "tg_fs.h"
#include "tg_json.h"
#include "tg_keys.h"
#include "tg_redis.h"
#include "tg_rt.h"
#include "tg_scalar.h"
#include "tg_session.h"
#include "tg_space.h"
#include "tg_svc.h"
#include "tg_topic.h"

int luaopen_tg_net_c(lua_State *L);
int luaopen_tg_proc_c(lua_State *L);

/* tg.core.time_ns() -> integer nanoseconds since the Unix epoch */
static int l_time_ns(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
    return 1;
}

/* tg.core.config() -> the table the runner set up for this instance */
static int l_config(lua_State *L) {
    tg_space_push_config(L, tg_ctx(L)->inst);
    return 1;
}

/* tg.core.state(name) -> the running instance's table for module `name`
 * (empty at first): where a tg module keeps what is one instance's. */
static int l_state(lua_State *L) {
    tg_space_state(L, luaL_checkstring(L, 1));
    return 1;
}

/* tg.core.mkdir_p(path) -> true | nil, message: make the folder and its
 * parents (an existing folder is fine). */
static int l_mkdir_p(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (tg_mkdir_p(path) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushfstring(L, "cannot make folder %s: %s", path, strerror(errno));
    return 2;
}

/* tg.core.plan() -> what the plan's top level returned for this instance
 * (its cases and what it declares: tg.params reads it), or nil before. */
static int l_plan(lua_State *L) {
    tg_space_push_self(L, tg_ctx(L)->inst);
    lua_getfield(L, -1, "plan");
    return 1;
}

/* tg.core.on(kind, fn): the instance's reporter of runtime warnings
 * ("warning") or of errors of tasks nobody joins ("task_error"). */
static int l_on(lua_State *L) {
    const char *kind = luaL_checkstring(L, 1);
    if (strcmp(kind, "warning") != 0 && strcmp(kind, "task_error") != 0)
        return tg_err_raise(L, "invalid", "core.on: kind must be \"warning\" or \"task_error\"");
    if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    tg_space_push_self(L, tg_ctx(L)->inst);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, strcmp(kind, "warning") == 0 ? "on_warning" : "on_task_error");
    return 0;
}

static void count_active(uv_handle_t *h, void *arg) {
    if (uv_is_active(h) && !uv_is_closing(h)) ++*(int *)arg;
}

/* tg.core.stats() -> {tasks=, live_tasks=, handles=, requests=, memory=,
 * instance=, trace_memory=}: what is alive now, for tests (every spec
 * checks that nothing is left behind).  handles counts the loop's active
 * handles; requests the Redis and sync-service requests whose reply has
 * not come back (an open sync-service subscription counts as one);
 * trace_memory the bytes this instance's trace holds. */
static int l_stats(lua_State *L) {
    tg_inst_t *inst = tg_ctx(L)->inst;
    int handles = 0;
    uv_walk(inst->rt->loop, count_active, &handles);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, inst->ntasks);
    lua_setfield(L, -2, "tasks");
    lua_pushinteger(L, tg_task_live());
    lua_setfield(L, -2, "live_tasks");
    lua_pushinteger(L, handles);
    lua_setfield(L, -2, "handles");
    lua_pushinteger(L, (inst->rt->redis ? (lua_Integer)tg_redis_inflight(inst->rt->redis) : 0)
                       + (lua_Integer)tg_svc_inflight(inst->rt));
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)inst->rt->pool.in_use);
    lua_setfield(L, -2, "memory");
    lua_pushinteger(L, inst->index);
    lua_setfield(L, -2, "instance");
    lua_pushinteger(L, (lua_Integer)tg_trace_memory(inst->trace));
    lua_setfield(L, -2, "trace_memory");
    return 1;
}

/* tg.core.memory_limit([bytes]) -> previous limit: every lua_State of this
 * process may use at most bytes (nil or 0: no limit); an allocation past it
 * fails as if memory ran out. */
static int l_memory_limit(lua_State *L) {
    tg_pool_t *p = &tg_ctx(L)->inst->rt->pool;
    lua_Integer prev = (lua_Integer)p->limit;
    lua_Integer n = luaL_optinteger(L, 1, 0);
    if (n < 0) return tg_err_raise(L, "invalid", "memory_limit: bytes must be >= 0");
    p->limit = (size_t)n;
    lua_pushinteger(L, prev);
    return 1;
}

/* tg.core.exe_path() -> absolute path of the running tgrun binary */
static int l_exe_path(lua_State *L) {
    char buf[4096];
    size_t n = sizeof buf;
    if (uv_exepath(buf, &n) != 0) return 0;
    lua_pushlstring(L, buf, n);
    return 1;
}

/* tg.core.declared_dead() -> nil | why: did the run declare this instance dead? */
static int l_declared_dead(lua_State *L) {
    tg_inst_t *inst = tg_ctx(L)->inst;
    if (inst->dead_why) lua_pushstring(L, inst->dead_why);
    else lua_pushnil(L);
    return 1;
}

/* tg.core.case_over(): the case ended; what runs now is the runtime's own
 * recording of the outcome, which the Lua hook leaves alone. */
static int l_case_over(lua_State *L) {
    tg_ctx(L)->inst->case_over = 1;
    return 0;
}

/* os.exit(...) in a plan: an instance does not end the process.  It ends
 * the instance, as a failure (returning from the case is how it succeeds):
 * an error is raised, and raised again by the hook if the plan catches it. */
static int l_os_exit(lua_State *L) {
    tg_inst_t *inst = tg_ctx(L)->inst;
    inst->exited = 1;
    tg_rt_doom(inst);
    const char *arg = lua_isnoneornil(L, 1) ? "" : luaL_tolstring(L, 1, NULL);
    return tg_err_raise(L, "exit", "the plan called os.exit(%s): an instance ends by returning from its case "
                        "(success) or by raising an error (failure), not by exiting the process", arg);
}

/* tg.core.trace_mark(what [, text]): a mark in this instance's trace
 * ("success", "failure", "crash", "task_error"); an outcome is written to
 * the file at once.  Nothing when the instance is not traced. */
static int l_trace_mark(lua_State *L) {
    tg_inst_t *inst = tg_ctx(L)->inst;
    const char *what = luaL_checkstring(L, 1);
    size_t tlen = 0;
    const char *text = luaL_optlstring(L, 2, NULL, &tlen);
    if (!inst->trace) return 0;
    tg_trace_mark(inst->trace, what, text, tlen);
    if (strcmp(what, "task_error") != 0) tg_trace_flush(inst->trace);
    return 0;
}

/* tg.core.parse(kind, s) -> value | nil: the one parser of each kind of
 * parameter value (tg_scalar.c) -- "int" (integer), "number", "bool",
 * "duration" (integer nanoseconds), "size" (integer bytes).  nil when s is
 * not a string or does not parse. */
static int l_parse(lua_State *L) {
    static const char *const kinds[] = {"int", "number", "bool", "duration", "size", NULL};
    int kind = luaL_checkoption(L, 1, NULL, kinds);
    const char *s = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    long long i;
    double d;
    int b;
    int64_t v;
    lua_pushnil(L);
    if (!s) return 1;
    switch (kind) {
    case 0: if (tg_parse_int(s, &i) == 0) lua_pushinteger(L, (lua_Integer)i); break;
    case 1: if (tg_parse_number(s, &d) == 0) lua_pushnumber(L, d); break;
    case 2: if (tg_parse_bool(s, &b) == 0) lua_pushboolean(L, b); break;
    case 3: if (tg_parse_duration(s, &v) == 0) lua_pushinteger(L, (lua_Integer)v); break;
    default: if (tg_parse_size(s, &v) == 0) lua_pushinteger(L, (lua_Integer)v); break;
    }
    return 1;
}

/* tg.core.format_duration(ns) -> "1m30s": Go's Duration.String() form. */
static int l_format_duration(lua_State *L) {
    char buf[48];
    lua_pushstring(L, tg_format_duration((int64_t)luaL_checkinteger(L, 1), buf, sizeof buf));
    return 1;
}

static const luaL_Reg inst_funcs[] = {
    {"parse", l_parse},
    {"format_duration", l_format_duration},
    {"case_over", l_case_over},
    {"declared_dead", l_declared_dead},
    {"time_ns", l_time_ns},
    {"config", l_config},
    {"state", l_state},
    {"on", l_on},
    {"plan", l_plan},
    {"mkdir_p", l_mkdir_p},
    {"stats", l_stats},
    {"memory_limit", l_memory_limit},
    {"exe_path", l_exe_path},
    {"trace_mark", l_trace_mark},
    {"event_describe", tg_event_l_describe},
    {NULL, NULL},
};

/* "tg.core": tasks, time and errors (tg_rt.c), and what an instance knows
 * of itself (here). */
static int open_core(lua_State *L) {
    lua_newtable(L);
    tg_rt_open(L);
    luaL_setfuncs(L, inst_funcs, 0);
    return 1;
}

/* ---- tg.keys: the run's key layout (tg_keys.h), for Lua ------------------ */

static tg_rt_t *keyed_rt(lua_State *L) {
    tg_rt_t *rt = tg_ctx(L)->inst->rt;
    if (!rt->prefix)
        tg_err_raise(L, "invalid", "the run's keys are not known yet: sync calls must run in a case");
    return rt;
}

static int push_key(lua_State *L, int kind, const char *name, size_t nlen) {
    tg_rt_t *rt = keyed_rt(L);
    luaL_Buffer b;
    size_t n = tg_key(NULL, 0, rt->prefix, rt->plen, kind, name, nlen);
    char *p = luaL_buffinitsize(L, &b, n + 1);
    tg_key(p, n + 1, rt->prefix, rt->plen, kind, name, nlen);
    luaL_pushresultsize(&b, n);
    return 1;
}

/* keys.<kind>(name) -> key: state, topic, members, inbox, sem,
 * mutex, election, queue, counter, ops, op, tg */
static int l_key(lua_State *L) {
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    return push_key(L, (int)lua_tointeger(L, lua_upvalueindex(1)), name, nlen);
}

/* keys.prefix, keys.notify, keys.run_events, keys.dead, keys.sessions,
 * keys.run, keys.ttl: fields, known once the run is */
static int l_keys_index(lua_State *L) {
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "prefix") == 0) {
        tg_rt_t *rt = keyed_rt(L);
        lua_pushlstring(L, rt->prefix, rt->plen);
        return 1;
    }
    if (strcmp(k, "ttl") == 0) {
        lua_pushstring(L, keyed_rt(L)->ttl);
        return 1;
    }
    int kind = tg_key_kind_of(k);
    if (kind < 0 || tg_key_named(kind)) return 0;
    return push_key(L, kind, NULL, 0);
}

static int open_keys(lua_State *L) {
    lua_newtable(L);
    for (int kind = 0; kind < TG_KEY_NKINDS; kind++) {
        if (!tg_key_named(kind)) continue;
        lua_pushinteger(L, kind);
        lua_pushcclosure(L, l_key, 1);
        lua_setfield(L, -2, tg_key_lua_name(kind));
    }
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_keys_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    return 1;
}

/* the runtime's C modules, each from its own unit */
static const luaL_Reg c_modules[] = {
    {"tg.core", open_core},
    {"tg.keys", open_keys},
    {"tg.json", luaopen_tg_json},
    {"tg.redis", luaopen_tg_redis},
    {"tg.barrier.c", luaopen_tg_barrier_c},
    {"tg.topic.c", luaopen_tg_topic_c},
    {"tg.svc.c", luaopen_tg_svc_c},
    {"tg.coord.c", luaopen_tg_coord_c},
    {"tg.session.c", luaopen_tg_session_c},
    {"tg.net.c", luaopen_tg_net_c},
    {"tg.proc.c", luaopen_tg_proc_c},
    {NULL, NULL},
};

tg_inst_t *tg_inst_new(tg_rt_t *rt) {
    tg_inst_t *inst = calloc(1, sizeof *inst);
    if (!inst) return NULL;
    inst->rt = rt;
    inst->ctx.inst = inst;
    inst->self_ref = inst->config_ref = LUA_NOREF;
    if (tg_space_open(rt, c_modules, l_os_exit) < 0 || tg_space_enter(inst) < 0) {
        free(inst);
        return NULL;
    }
    inst->next = rt->insts;
    rt->insts = inst;
    return inst;
}

void tg_inst_free(tg_inst_t *inst) {
    tg_rt_t *rt = inst->rt;
    tg_inst_abandon_tasks(inst);
    if (inst->main) {
        if (inst->main->results_ref != LUA_NOREF) {
            luaL_unref(rt->L, LUA_REGISTRYINDEX, inst->main->results_ref);
            inst->main->results_ref = LUA_NOREF;
        }
        tg_task_unref(inst->main);
    }
    tg_space_leave(inst);
    tg_trace_close(inst->trace);
    while (inst->warnings) {
        tg_warning_t *w = inst->warnings;
        inst->warnings = w->next;
        free(w);
    }
    tg_inst_t **p = &rt->insts;
    while (*p && *p != inst) p = &(*p)->next;
    if (*p) *p = inst->next;
    free(inst->error);
    free(inst->dead_why);
    free(inst);
}
