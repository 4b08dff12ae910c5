/*
 * tg_inst.c -- an instance: a lua_State with the tg modules, its tasks, and
 * the module loader that serves lua/ from the binary.
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
#include "tg_json.h"
#include "tg_keys.h"
#include "tg_redis.h"
#include "tg_rt.h"
#include "tg_scalar.h"
#include "tg_session.h"
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
    lua_getfield(L, LUA_REGISTRYINDEX, "tg.config");
    return 1;
}

static void count_active(uv_handle_t *h, void *arg) {
    if (uv_is_active(h) && !uv_is_closing(h)) ++*(int *)arg;
}

/* tg.core.stats() -> {tasks=, live_tasks=, handles=, requests=, memory=,
 * instance=}: what is alive now, for tests (every spec checks that nothing
 * is left behind).  handles counts the loop's active handles; requests the
 * Redis and sync-service requests whose reply has not come back (an open
 * sync-service subscription counts as one). */
static int l_stats(lua_State *L) {
    tg_inst_t *inst = tg_ctx(L)->inst;
    int handles = 0;
    uv_walk(inst->rt->loop, count_active, &handles);
    lua_createtable(L, 0, 6);
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
    const char *arg = lua_isnoneornil(L, 1) ? "" : luaL_tolstring(L, 1, NULL);
    return tg_err_raise(L, "exit", "the plan called os.exit(%s): an instance ends by returning from its case "
                        "(success) or by raising an error (failure), not by exiting the process", arg);
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
    {"stats", l_stats},
    {"memory_limit", l_memory_limit},
    {"exe_path", l_exe_path},
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

/* keys.<kind>(name) -> key: state, topic, waits, members, inbox, sem,
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

static int chunk_writer(lua_State *L, const void *p, size_t sz, void *ud) {
    (void)L;
    struct tg_chunk *c = ud;
    char *d = realloc(c->data, c->len + sz);
    if (!d) return 1;
    memcpy(d + c->len, p, sz);
    c->data = d;
    c->len += sz;
    return 0;
}

/* Load a chunk through the process-wide cache c: the first instance compiles
 * (text) and dumps it, the others load the bytecode.  Strip drops debug info
 * (line numbers, local names): a third less memory per state for the
 * runtime's own modules; plans keep theirs. */
int tg_load_cached(lua_State *L, struct tg_chunk *c, const char *text, size_t len,
                   const char *chunkname, int strip) {
    if (c->data) return luaL_loadbufferx(L, c->data, c->len, chunkname, "b");
    int rc = text ? luaL_loadbufferx(L, text, len, chunkname, "t") : luaL_loadfilex(L, chunkname + 1, "t");
    if (rc != LUA_OK) return rc;
    if (lua_dump(L, chunk_writer, c, strip) != 0) {
        free(c->data);
        c->data = NULL;
        c->len = 0;
        return LUA_OK;                          /* uncached, still loaded */
    }
    if (strip) {                                /* the stripped one, as every other instance will */
        lua_pop(L, 1);
        return luaL_loadbufferx(L, c->data, c->len, chunkname, "b");
    }
    return LUA_OK;
}

/* package.searchers entry: the modules compiled from lua/ (or read from
 * rt->lua_dir when developing). */
static int search_embedded(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    tg_inst_t *inst = tg_ctx(L)->inst;
    for (int i = 0; tg_embedded_lua[i].name; i++) {
        const tg_embedded_t *e = &tg_embedded_lua[i];
        if (strcmp(e->name, name) != 0) continue;
        if (inst->rt->lua_dir) {
            lua_pushfstring(L, "%s/%s", inst->rt->lua_dir, e->path + 4);  /* skip "lua/" */
            const char *path = lua_tostring(L, -1);
            if (luaL_loadfile(L, path) != LUA_OK) return lua_error(L);
            lua_pushstring(L, path);
            return 2;
        }
        char chunk[128];
        snprintf(chunk, sizeof chunk, "@%s", e->path);
        tg_rt_t *rt = inst->rt;
        if (!rt->chunks) {
            int n = 0;
            while (tg_embedded_lua[n].name) n++;
            rt->chunks = calloc((size_t)n, sizeof *rt->chunks);
            rt->nchunks = rt->chunks ? n : 0;
        }
        int rc = rt->chunks ? tg_load_cached(L, &rt->chunks[i], e->data, e->len, chunk, rt->strip)
                            : luaL_loadbuffer(L, e->data, e->len, chunk);
        if (rc != LUA_OK) return lua_error(L);
        lua_pushstring(L, e->path);
        return 2;
    }
    lua_pushfstring(L, "no module '%s' built into tgrun", name);
    return 1;
}

static int panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "tgrun: PANIC: unprotected error in the Lua runtime: %s\n", msg ? msg : "?");
    return 0;                                   /* then abort() */
}

tg_inst_t *tg_inst_new(tg_rt_t *rt) {
    tg_inst_t *inst = calloc(1, sizeof *inst);
    if (!inst) return NULL;
    inst->rt = rt;
    inst->ctx.inst = inst;
    lua_State *L = lua_newstate(tg_pool_lua_alloc, &rt->pool);
    if (!L) { free(inst); return NULL; }
    inst->L = L;
    lua_atpanic(L, panic);
    *(tg_ctx_t **)lua_getextraspace(L) = &inst->ctx;
    /* Generational: a waiting instance holds little garbage, which matters
     * when ten thousand of them share a process. */
    lua_gc(L, LUA_GCGEN, 0, 0);
    luaL_openlibs(L);
    /* plan code that never yields still meets the deadline and signals;
     * coroutines inherit the hook from L */
    lua_sethook(L, tg_rt_hook, LUA_MASKCOUNT, 10000);
    tg_rt_register(L);
    /* the base library's error and assert, kept before any plan runs: an
     * error they raised is one the plan raised on purpose (a failure), any
     * other comes from the VM or a library (a crash; tg_rt.c, tg.outcome) */
    lua_getglobal(L, "error");
    lua_setfield(L, LUA_REGISTRYINDEX, "tg.error_fn");
    lua_getglobal(L, "assert");
    lua_setfield(L, LUA_REGISTRYINDEX, "tg.assert_fn");
    lua_getglobal(L, "os");
    lua_pushcfunction(L, l_os_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);

    /* the runtime's C modules, each from its own unit */
    static const luaL_Reg modules[] = {
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
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *m = modules; m->name; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);

    /* searchers: preload, embedded, then Lua's own path and C searchers */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    for (lua_Integer i = (lua_Integer)luaL_len(L, -1); i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, search_embedded);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);

    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "tg.config");
    inst->next = rt->insts;
    rt->insts = inst;
    return inst;
}

void tg_inst_free(tg_inst_t *inst) {
    tg_rt_t *rt = inst->rt;
    tg_inst_abandon_tasks(inst);
    if (inst->main) tg_task_unref(inst->main);
    lua_close(inst->L);
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
