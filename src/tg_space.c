/*
 * tg_space.c -- the Lua space of a process (see tg_space.h for the
 * contract).
 *
 * Ten thousand instances in one process used to be ten thousand
 * lua_States, each with its own copy of every library and module: 87 KB
 * each before the plan did anything, and a release that resumed waiters
 * one cold state after another.  Now the process has one lua_State.  An
 * instance is a thread of it plus a handful of tables, anchored in one
 * "self" table:
 *
 *   self.thread   the instance's own thread (inst->L): where its plan is
 *                 loaded, its values are converted, its warnings logged
 *   self.env      its globals: a copy of the shared globals (about forty
 *                 entries, so a plan that sets a metatable on _G or
 *                 iterates it sees what stock Lua shows), _G pointing to
 *                 itself; the plan and the modules it requires from its own
 *                 folders run with it as _ENV
 *   self.config   what the runner configured (core.config(); also held by
 *                 inst->config_ref, one registry read for every sync call)
 *   self.state    per-instance state of the tg modules (tg_space_state)
 *   self.loaded   the plan's own modules, run afresh for this instance
 *   self.on_warning, self.on_task_error, self.case_fn   set by tg.instance
 *
 * Compiled code is shared through "factories": a file is compiled once per
 * process as `return function(_ENV, ...) <the file> end` (on the file's
 * first line, so line numbers do not move) and the outer chunk run once;
 * the inner function is the factory, and calling it with an instance's
 * globals runs the file's top level for that instance.  Every function
 * the file defines is a new closure of the shared prototypes, with the
 * instance's _ENV and its own upvalues: a plan's top-level locals are per
 * instance, as they were with a state each.
 *
 * What would leak through the shared state is closed one way or another:
 * library and module tables reach plans as read-only proxies; load,
 * loadfile and dofile default to the caller's globals; require keeps a
 * plan's own modules per instance; math.random has a generator per
 * instance (the same xoshiro256** as Lua 5.4's, so a seed gives the numbers
 * stock Lua gives); coroutine.create/wrap mark new threads with the
 * creating instance.
 */
#define _POSIX_C_SOURCE 200809L
#include "tg_space.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lualib.h>

#include "tg_embedded.h"

#define FACTORIES "tg.factories"        /* registry: path -> factory */
#define PROXIES "tg.proxies"            /* registry: real table -> proxy (weak keys) */
#define REQUIRED "tg.required"          /* registry: name -> the proxy require gives for a library or tg module */
#define RO_NOTE "read-only: shared by every instance of this process"

/* ---- instances' tables --------------------------------------------------- */

void tg_space_push_self(lua_State *L, const tg_inst_t *inst) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, inst->self_ref);
}

static void push_field(lua_State *L, const tg_inst_t *inst, const char *k) {
    tg_space_push_self(L, inst);
    if (lua_istable(L, -1)) lua_getfield(L, -1, k);
    else lua_pushnil(L);
    lua_remove(L, -2);
}

void tg_space_push_config(lua_State *L, const tg_inst_t *inst) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, inst->config_ref);   /* self.config (nil once it left) */
}

void tg_space_push_globals(lua_State *L, const tg_inst_t *inst) {
    push_field(L, inst, "env");
}

void tg_space_state(lua_State *L, const char *name) {
    tg_ctx_t *c = tg_ctx(L);
    if (!c || !c->inst) {
        lua_newtable(L);                        /* not an instance's thread: a throwaway */
        return;
    }
    push_field(L, c->inst, "state");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        return;
    }
    if (lua_getfield(L, -1, name) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
    }
    lua_remove(L, -2);
}

/* ---- read-only proxies of shared tables --------------------------------- */

static tg_inst_t *inst_of(lua_State *L);

/* __newindex(proxy, k, v): upvalue 1 the real table, 2 its name, 3 whether
 * a write makes the instance a copy of its own (a standard library) or is
 * refused (a tg module). */
static int ro_newindex(lua_State *L) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (lua_rawequal(L, -1, 3)) return 0;       /* `t.f = t.f or g`: nothing changes */
    lua_pop(L, 1);
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    tg_inst_t *inst = inst_of(L);
    if (!lua_toboolean(L, lua_upvalueindex(3)) || !inst)
        return tg_err_raise(L, "invalid", "%s is shared by every instance of this process: a plan cannot "
                            "change %s.%s (keep a table of your own: local my = setmetatable({}, "
                            "{__index = %s}))", name, name,
                            lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_tolstring(L, 2, NULL),
                            name);
    /* The instance's own copy of the library from now on: its global and
     * what require gives it (a local alias made earlier still reads the
     * shared table). */
    tg_space_push_self(L, inst);                /* p k v self */
    lua_getfield(L, -1, "loaded");              /* p k v self loaded */
    if (lua_getfield(L, -1, name) != LUA_TTABLE || lua_rawequal(L, -1, 1)) {
        lua_pop(L, 1);
        lua_newtable(L);                        /* p k v self loaded copy */
        lua_pushnil(L);
        while (lua_next(L, lua_upvalueindex(1))) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);              /* loaded[name] = copy */
        lua_getfield(L, -3, "env");
        lua_pushvalue(L, -2);
        lua_setfield(L, -2, name);              /* env[name] = copy */
        lua_pop(L, 1);
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

static int ro_pairs(lua_State *L) {
    lua_getglobal(L, "next");
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, -1, "_G");
        lua_getfield(L, -1, "next");
        lua_replace(L, -3);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushnil(L);
    return 3;
}

static int ro_len(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, lua_upvalueindex(1)));
    return 1;
}

/* Push the proxy of the table at idx (made once, then cached); cow: a
 * write gives the writing instance a copy of its own (else it fails). */
static void push_proxy(lua_State *L, int idx, const char *name, int cow) {
    idx = lua_absindex(L, idx);
    lua_getfield(L, LUA_REGISTRYINDEX, PROXIES);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);                              /* cache */
    lua_newtable(L);                            /* cache proxy */
    lua_createtable(L, 0, 5);                   /* cache proxy mt */
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, idx);
    lua_pushstring(L, name);
    lua_pushboolean(L, cow);
    lua_pushcclosure(L, ro_newindex, 3);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, idx);
    lua_pushcclosure(L, ro_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushvalue(L, idx);
    lua_pushcclosure(L, ro_len, 1);
    lua_setfield(L, -2, "__len");
    lua_pushliteral(L, RO_NOTE);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);                    /* cache proxy */
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);                          /* cache[real] = proxy */
    lua_remove(L, -2);
}

/* ---- per-instance versions of global functions -------------------------- */

static tg_inst_t *inst_of(lua_State *L) {
    tg_ctx_t *c = tg_ctx(L);
    return c ? c->inst : NULL;
}

/* Call the stock function (upvalue 1) with the arguments, the caller's
 * globals as argument envarg when it was not given. */
static int with_globals(lua_State *L, int envarg) {
    tg_inst_t *inst = inst_of(L);
    int n = lua_gettop(L);
    if (n < envarg && inst) {
        lua_settop(L, envarg - 1);
        tg_space_push_globals(L, inst);
        n = envarg;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* load(chunk [, name [, mode [, env]]]): without env, the caller's globals. */
static int l_load(lua_State *L) {
    return with_globals(L, 4);
}

/* loadfile([path [, mode [, env]]]): the same. */
static int l_loadfile(lua_State *L) {
    return with_globals(L, 3);
}

/* dofile([path]): loadfile in the caller's globals, then run it. */
static int l_dofile(lua_State *L) {
    luaL_optstring(L, 1, NULL);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));      /* path loadfile */
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    tg_inst_t *inst = inst_of(L);
    if (inst) tg_space_push_globals(L, inst);
    else lua_pushnil(L);
    lua_call(L, 3, 2);                          /* path fn|nil msg */
    if (lua_isnil(L, -2)) return lua_error(L);
    lua_pop(L, 1);
    lua_call(L, 0, LUA_MULTRET);
    return lua_gettop(L) - 1;
}

/* Mark thread co as the caller's instance's (its extra space was copied
 * from the main thread, which belongs to nobody), with the count hook (a
 * task's own coroutine, which it copied that from too, may have none:
 * tg_rt.h). */
static void mark_thread(lua_State *L, lua_State *co) {
    tg_inst_t *inst = inst_of(L);
    *(tg_ctx_t **)lua_getextraspace(co) = inst ? &inst->ctx : tg_ctx(L);
    tg_rt_hook_thread(co);
}

static int l_cocreate(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    lua_State *co = lua_tothread(L, -1);
    if (co) mark_thread(L, co);
    return 1;
}

static int l_cowrap(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    /* the wrapper's first upvalue is its coroutine (lcorolib.c) */
    if (lua_getupvalue(L, -1, 1)) {
        lua_State *co = lua_tothread(L, -1);
        if (co) mark_thread(L, co);
        lua_pop(L, 1);
    }
    return 1;
}

/* ---- math.random per instance: Lua 5.4's xoshiro256** -------------------- */

static uint64_t rotl64(uint64_t x, int n) {
    return (x << n) | (x >> (64 - n));
}

static uint64_t next_rand(uint64_t *s) {
    uint64_t r = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return r;
}

static void seed_rand(uint64_t *s, uint64_t n1, uint64_t n2) {
    s[0] = n1;
    s[1] = 0xff;                                /* never an all-zero state */
    s[2] = n2;
    s[3] = 0;
    for (int i = 0; i < 16; i++) next_rand(s);  /* spread the seed */
}

/* The generator of the calling instance (seeded at random on first use, as
 * stock Lua seeds each state); a thread of no instance uses the process's. */
static uint64_t *rand_of(lua_State *L) {
    static uint64_t shared[4];
    static int shared_seeded;
    tg_inst_t *inst = inst_of(L);
    uint64_t *s = inst ? inst->rand : shared;
    int *seeded = inst ? &inst->rand_seeded : &shared_seeded;
    if (!*seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed_rand(s, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
                  (uint64_t)(uintptr_t)s ^ (uint64_t)(uintptr_t)L);
        *seeded = 1;
    }
    return s;
}

/* Draw in [0, n] without bias (Lua 5.4's `project`). */
static uint64_t project(uint64_t ran, uint64_t n, uint64_t *s) {
    if ((n & (n + 1)) == 0) return ran & n;
    uint64_t lim = n;
    lim |= lim >> 1; lim |= lim >> 2; lim |= lim >> 4;
    lim |= lim >> 8; lim |= lim >> 16; lim |= lim >> 32;
    while ((ran &= lim) > n) ran = next_rand(s);
    return ran;
}

static int l_random(lua_State *L) {
    uint64_t *s = rand_of(L);
    uint64_t rv = next_rand(s);
    lua_Integer low, up;
    switch (lua_gettop(L)) {
    case 0:
        lua_pushnumber(L, (lua_Number)(rv >> 11) * 0x1.0p-53);
        return 1;
    case 1:
        low = 1;
        up = luaL_checkinteger(L, 1);
        if (up == 0) {
            lua_pushinteger(L, (lua_Integer)rv);
            return 1;
        }
        break;
    case 2:
        low = luaL_checkinteger(L, 1);
        up = luaL_checkinteger(L, 2);
        break;
    default:
        return luaL_error(L, "wrong number of arguments");
    }
    luaL_argcheck(L, low <= up, 1, "interval is empty");
    uint64_t p = project(rv, (uint64_t)up - (uint64_t)low, s);
    lua_pushinteger(L, (lua_Integer)(p + (uint64_t)low));
    return 1;
}

static int l_randomseed(lua_State *L) {
    uint64_t *s = rand_of(L);
    lua_Integer n1, n2;
    if (lua_isnone(L, 1)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        n1 = (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec;
        n2 = (lua_Integer)(uintptr_t)s;
    } else {
        n1 = luaL_checkinteger(L, 1);
        n2 = luaL_optinteger(L, 2, 0);
    }
    seed_rand(s, (uint64_t)n1, (uint64_t)n2);
    lua_pushinteger(L, n1);
    lua_pushinteger(L, n2);
    return 2;
}

/* ---- compiled once, run per instance: factories -------------------------- */

/* Push the factory of the Lua file path (see the top of this file), or a
 * message; returns LUA_OK or LUA_ERRSYNTAX. */
static int push_factory(lua_State *L, const char *path) {
    lua_getfield(L, LUA_REGISTRYINDEX, FACTORIES);
    if (lua_getfield(L, -1, path) == LUA_TFUNCTION) {
        lua_remove(L, -2);
        return LUA_OK;
    }
    lua_pop(L, 1);                              /* factories */
    char chunkname[4200];
    snprintf(chunkname, sizeof chunkname, "@%s", path);
    /* Compiled as it is first: a file that does not compile gets Lua's own
     * message, with its own line numbers. */
    if (luaL_loadfilex(L, path, "t") != LUA_OK) {
        lua_remove(L, -2);
        return LUA_ERRSYNTAX;
    }
    lua_pop(L, 1);
    FILE *f = fopen(path, "rb");
    if (!f) {
        lua_pop(L, 1);
        lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
        return LUA_ERRSYNTAX;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "return function(_ENV, ...) ");
    char buf[8192];
    size_t n, total = 0;
    int first = 1;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        const char *p = buf;
        if (first) {
            first = 0;
            /* as luaL_loadfilex: skip a UTF-8 BOM, and a first line that
             * starts with '#' (its newline stays, so lines keep their numbers) */
            if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) { p += 3; n -= 3; }
            if (n > 0 && *p == '#') {
                const char *nl = memchr(p, '\n', n);
                if (!nl) { p += n; n = 0; }
                else { n -= (size_t)(nl - p); p = nl; }
            }
        }
        luaL_addlstring(&b, p, n);
        total += n;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        luaL_pushresult(&b);
        lua_pop(L, 2);
        lua_pushfstring(L, "cannot read %s", path);
        return LUA_ERRSYNTAX;
    }
    luaL_addstring(&b, "\nend");
    luaL_pushresult(&b);                        /* factories text */
    size_t tlen;
    const char *text = lua_tolstring(L, -1, &tlen);
    if (luaL_loadbufferx(L, text, tlen, chunkname, "t") != LUA_OK) {
        /* (a file that compiles alone always compiles inside a function,
         * but for the limits on locals: say what Lua said) */
        lua_remove(L, -2);
        lua_remove(L, -2);
        return LUA_ERRSYNTAX;
    }
    lua_remove(L, -2);                          /* factories outer */
    lua_call(L, 0, 1);                          /* factories factory */
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, path);
    lua_remove(L, -2);
    (void)total;
    return LUA_OK;
}

/* The message of an error raised while a file's top level runs: a string,
 * a table's __tostring or its string field message / msg / error (as
 * tg.check reads them), else what kind of value it was. */
static int msgh(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        if (lua_type(L, 1) == LUA_TTABLE) {
            static const char *const fields[] = {"message", "msg", "error"};
            for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
                lua_pushstring(L, fields[i]);
                if (lua_rawget(L, 1) == LUA_TSTRING) return 1;
                lua_pop(L, 1);
            }
        }
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    lua_pushstring(L, msg);
    return 1;
}

int tg_space_run_file(tg_inst_t *inst, const char *path) {
    lua_State *L = inst->L;
    lua_pushcfunction(L, msgh);
    int h = lua_gettop(L);
    int rc = push_factory(L, path);
    if (rc != LUA_OK) {
        lua_remove(L, h);
        return rc;
    }
    tg_space_push_globals(L, inst);
    if (lua_pcall(L, 1, 1, h) != LUA_OK) {
        lua_remove(L, h);
        return LUA_ERRRUN;
    }
    lua_remove(L, h);
    return LUA_OK;
}

/* ---- require ------------------------------------------------------------ */

static const char *const libs[] = {"coroutine", "table", "io", "os", "string", "math", "utf8", "debug",
                                   "package", NULL};

/* A standard library (a write gives the instance its own copy)? */
static int is_lib(const char *name) {
    for (int i = 0; libs[i]; i++) if (strcmp(libs[i], name) == 0) return 1;
    return 0;
}

static int is_builtin(lua_State *L, const char *name) {
    for (int i = 0; tg_embedded_lua[i].name; i++)
        if (strcmp(tg_embedded_lua[i].name, name) == 0) return 1;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    int pre = lua_getfield(L, -1, name) != LUA_TNIL;
    lua_pop(L, 2);
    return pre;
}

/* require(name): the tg modules, the standard libraries and C modules are
 * the process's (a read-only proxy of the shared table); a Lua module
 * found on package.path is the instance's own, its code run for it in its
 * globals.  Upvalue 1: Lua's own require. */
static int l_require(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    tg_inst_t *inst = inst_of(L);
    if (inst) {
        push_field(L, inst, "loaded");          /* name loaded */
        if (lua_istable(L, 2)) {
            if (lua_getfield(L, 2, name) != LUA_TNIL) return 1;
            lua_pop(L, 1);
        }
    }
    /* a library or tg module asked for before: the proxy it gave then (the
     * usual case, a tg module's require inside a function, is one lookup) */
    if (inst) {                                 /* name loaded */
        lua_getfield(L, LUA_REGISTRYINDEX, REQUIRED);
        if (lua_getfield(L, -1, name) != LUA_TNIL) return 1;
        lua_pop(L, 2);
    }
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    int shared = lua_getfield(L, -1, name) != LUA_TNIL;
    lua_pop(L, 2);
    int builtin = is_builtin(L, name);
    if (!inst || shared || builtin) {
        lua_settop(L, 1);
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 1);
        lua_call(L, 1, 2);                      /* name mod data */
        /* the standard libraries and tgrun's own modules reach plans as
         * proxies; a C module of the plan's stays itself (its Lua half may
         * add to it) */
        if (inst && lua_istable(L, 2) && (builtin || is_lib(name))) {
            push_proxy(L, 2, name, is_lib(name));
            lua_replace(L, 2);
        }
        if (inst && lua_istable(L, 2) && (builtin || is_lib(name))) {    /* (theirs never change) */
            lua_getfield(L, LUA_REGISTRYINDEX, REQUIRED);
            lua_pushvalue(L, 2);
            lua_setfield(L, -2, name);
            lua_pop(L, 1);
        }
        return 2;
    }
    /* the instance's own: found on its package.path as Lua's searcher would */
    tg_space_push_globals(L, inst);
    lua_getfield(L, -1, "package");             /* name loaded G package */
    lua_remove(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, -1, "package");
        lua_remove(L, -2);
    }
    lua_getfield(L, -1, "searchpath");
    lua_pushvalue(L, 1);
    lua_getfield(L, -3, "path");
    if (!lua_isfunction(L, -3) || !lua_isstring(L, -1)) {
        lua_settop(L, 1);
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 1);
        lua_call(L, 1, 2);
        return 2;
    }
    lua_call(L, 2, 2);                          /* name loaded package path|nil msg */
    if (lua_isnil(L, -2)) {
        /* not a Lua file on the path: a C module, or nothing (Lua's message) */
        lua_settop(L, 1);
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 1);
        lua_call(L, 1, 2);                      /* (a C module's table is the process's) */
        return 2;
    }
    lua_pop(L, 1);                              /* name loaded package path */
    const char *path = lua_tostring(L, -1);
    if (push_factory(L, path) != LUA_OK)        /* name loaded package path factory|msg */
        return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, path, lua_tostring(L, -1));
    tg_space_push_globals(L, inst);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -4);
    lua_call(L, 3, 1);                          /* name loaded package path result */
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        /* an old-style module sets package.loaded[name] itself: take it
         * back from the shared table, so that the next instance runs the
         * module for itself too */
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        if (lua_getfield(L, -1, name) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushboolean(L, 1);
        } else {
            lua_pushnil(L);
            lua_setfield(L, -3, name);
        }
        lua_remove(L, -2);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);                   /* loaded[name] = result */
    lua_pushvalue(L, 4);
    return 2;                                   /* result path */
}

/* ---- the built-in modules ------------------------------------------------ */

/* package.searchers entry: the modules compiled from lua/ (or read from
 * rt->lua_dir when developing). */
static int search_embedded(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    tg_rt_t *rt = lua_touserdata(L, lua_upvalueindex(1));
    for (int i = 0; tg_embedded_lua[i].name; i++) {
        const tg_embedded_t *e = &tg_embedded_lua[i];
        if (strcmp(e->name, name) != 0) continue;
        if (rt->lua_dir) {
            lua_pushfstring(L, "%s/%s", rt->lua_dir, e->path + 4);  /* skip "lua/" */
            const char *path = lua_tostring(L, -1);
            if (luaL_loadfile(L, path) != LUA_OK) return lua_error(L);
            lua_pushstring(L, path);
            return 2;
        }
        char chunk[128];
        snprintf(chunk, sizeof chunk, "@%s", e->path);
        if (luaL_loadbufferx(L, e->data, e->len, chunk, "t") != LUA_OK) return lua_error(L);
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

/* Replace field k of the table at idx by a C closure of fn whose upvalue
 * is the field's old value. */
static void wrap_field(lua_State *L, int idx, const char *k, lua_CFunction fn) {
    idx = lua_absindex(L, idx);
    lua_getfield(L, idx, k);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, idx, k);
}

static int open_space(lua_State *L) {
    tg_rt_t *rt = lua_touserdata(L, 1);
    const luaL_Reg *preload = lua_touserdata(L, 2);
    lua_CFunction exit_fn = (lua_CFunction)(uintptr_t)lua_touserdata(L, 3);
    lua_settop(L, 0);
    luaL_openlibs(L);
    tg_rt_register(L);
    /* the base library's error and assert, kept before any plan runs: an
     * error they raised is one the plan raised on purpose (a failure), any
     * other comes from the VM or a library (a crash; tg_rt.c, tg.outcome) */
    lua_getglobal(L, "error");
    lua_setfield(L, LUA_REGISTRYINDEX, "tg.error_fn");
    lua_getglobal(L, "assert");
    lua_setfield(L, LUA_REGISTRYINDEX, "tg.assert_fn");

    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, FACTORIES);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, PROXIES);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, REQUIRED);

    /* the runtime's C modules, each from its own unit */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *m = preload; m->name; m++) {
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
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, search_embedded, 1);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);

    /* what acts for the calling instance */
    lua_pushglobaltable(L);
    wrap_field(L, -1, "require", l_require);
    wrap_field(L, -1, "load", l_load);
    wrap_field(L, -1, "loadfile", l_loadfile);
    lua_getfield(L, -1, "loadfile");            /* dofile goes through ours */
    lua_pushcclosure(L, l_dofile, 1);
    lua_setfield(L, -2, "dofile");
    lua_getfield(L, -1, "coroutine");
    wrap_field(L, -1, "create", l_cocreate);
    wrap_field(L, -1, "wrap", l_cowrap);
    lua_pop(L, 1);
    lua_getfield(L, -1, "math");
    lua_pushcfunction(L, l_random);
    lua_setfield(L, -2, "random");
    lua_pushcfunction(L, l_randomseed);
    lua_setfield(L, -2, "randomseed");
    lua_pop(L, 1);
    lua_getfield(L, -1, "os");
    lua_pushcfunction(L, exit_fn);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);

    /* the globals every instance copies: library tables as proxies */
    lua_newtable(L);                            /* G template */
    lua_pushnil(L);
    while (lua_next(L, -3)) {                   /* G template k v */
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            if (is_lib(k) && lua_istable(L, -1)) {
                push_proxy(L, -1, k, 1);
                lua_replace(L, -2);
            }
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "tg.globals");
    lua_pop(L, 1);
    return 0;
}

int tg_space_open(tg_rt_t *rt, const luaL_Reg *preload, lua_CFunction exit_fn) {
    if (rt->L) return 0;
    lua_State *L = lua_newstate(tg_pool_lua_alloc, &rt->pool);
    if (!L) return -1;
    lua_atpanic(L, panic);
    rt->root_ctx.inst = NULL;
    rt->root_ctx.task = NULL;
    *(tg_ctx_t **)lua_getextraspace(L) = &rt->root_ctx;
    /* Generational: waiting instances hold little garbage, and a young
     * collection does not walk ten thousand of them. */
    lua_gc(L, LUA_GCGEN, 0, 0);
    lua_pushcfunction(L, open_space);
    lua_pushlightuserdata(L, rt);
    lua_pushlightuserdata(L, (void *)preload);
    lua_pushlightuserdata(L, (void *)(uintptr_t)exit_fn);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        lua_close(L);
        return -1;
    }
    /* plan code that never yields still meets the deadline and signals;
     * every thread inherits the hook from the one it was made from (the
     * tasks' own coroutines drop it: the watch of tg_rt.c hooks them) */
    tg_rt_hook_thread(L);
    rt->L = L;
    return 0;
}

/* ---- an instance --------------------------------------------------------- */

static int enter(lua_State *L) {
    tg_inst_t *inst = lua_touserdata(L, 1);
    lua_createtable(L, 0, 8);                   /* inst self */
    lua_State *T = lua_newthread(L);
    *(tg_ctx_t **)lua_getextraspace(T) = &inst->ctx;
    lua_setfield(L, -2, "thread");
    /* its globals: a copy of the template */
    lua_getfield(L, LUA_REGISTRYINDEX, "tg.globals");
    lua_createtable(L, 0, 48);                  /* inst self template G */
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    lua_setfield(L, -3, "env");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    inst->config_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "config");
    lua_newtable(L);
    lua_setfield(L, -2, "state");
    lua_newtable(L);
    lua_setfield(L, -2, "loaded");
    inst->L = T;
    inst->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int tg_space_enter(tg_inst_t *inst) {
    lua_State *L = inst->rt->L;
    lua_pushcfunction(L, enter);
    lua_pushlightuserdata(L, inst);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        inst->L = NULL;
        return -1;
    }
    return 0;
}

void tg_space_leave(tg_inst_t *inst) {
    if (!inst->rt->L || inst->self_ref == LUA_NOREF || inst->self_ref == 0) return;
    luaL_unref(inst->rt->L, LUA_REGISTRYINDEX, inst->self_ref);
    luaL_unref(inst->rt->L, LUA_REGISTRYINDEX, inst->config_ref);
    inst->self_ref = inst->config_ref = LUA_NOREF;
    inst->L = NULL;
}
