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

#include "tg_embedded.h"
#include "tg_json.h"
#include "tg_redis.h"
#include "tg_rt.h"

void tg_rt_open(lua_State *L);
int luaopen_tg_net_c(lua_State *L);
int luaopen_tg_proc_c(lua_State *L);
void tg_inst_abandon_tasks(tg_inst_t *inst);

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

/* tg.core.script_names() -> {name, ...} of the compiled-in Redis scripts */
static int l_script_names(lua_State *L) {
    lua_newtable(L);
    for (int i = 0; tg_embedded_scripts[i].name; i++) {
        lua_pushstring(L, tg_embedded_scripts[i].name);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* tg.core.stats() -> {tasks=, instance=} live counts, for tests */
static int l_stats(lua_State *L) {
    tg_inst_t *inst = tg_ctx(L)->inst;
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, inst->ntasks);
    lua_setfield(L, -2, "tasks");
    lua_pushinteger(L, inst->index);
    lua_setfield(L, -2, "instance");
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

static int open_core(lua_State *L) {
    lua_newtable(L);
    tg_rt_open(L);
    tg_redis_open_lua(L);
    lua_pushcfunction(L, l_time_ns);
    lua_setfield(L, -2, "time_ns");
    lua_pushcfunction(L, l_config);
    lua_setfield(L, -2, "config");
    lua_pushcfunction(L, l_script_names);
    lua_setfield(L, -2, "script_names");
    lua_pushcfunction(L, l_stats);
    lua_setfield(L, -2, "stats");
    lua_pushcfunction(L, l_exe_path);
    lua_setfield(L, -2, "exe_path");
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

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open_core);
    lua_setfield(L, -2, "tg.core");
    lua_pushcfunction(L, luaopen_tg_json);
    lua_setfield(L, -2, "tg.json");
    lua_pushcfunction(L, luaopen_tg_net_c);
    lua_setfield(L, -2, "tg.net.c");
    lua_pushcfunction(L, luaopen_tg_proc_c);
    lua_setfield(L, -2, "tg.proc.c");
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
    tg_inst_t **p = &rt->insts;
    while (*p && *p != inst) p = &(*p)->next;
    if (*p) *p = inst->next;
    free(inst->error);
    free(inst);
}
