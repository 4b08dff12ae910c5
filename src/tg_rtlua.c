/*
 * tg_rtlua.c -- what the runtime gives Lua (tg.core's part of it): tasks
 * (tg.spawn, task:join/cancel/status), time (tg.sleep, now, time,
 * deadline, the one timeout parser) and error values (core.error,
 * is_error).  Each function here is a thin binding: a wait is
 * tg_wait_begin + tg_wait_yield, and what happens while it waits is
 * tg_rt.c's.  The task and error metatables (TG_TASK_META,
 * TG_ERROR_META) are registered here, before any module is loaded, so an
 * error raised at a plan's load time still prints.
 *
 * Ownership: a task handle (userdata) holds one reference to its task,
 * dropped by its __gc; a joiner holds one on the task it joins until its
 * wait ends (join_abort).  Nothing here outlives the call that made it.
 */
#include "tg_rt.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>

/* ---- Lua bindings: tasks and time --------------------------------------- */

static tg_task_t *check_task(lua_State *L, int idx) {
    return *(tg_task_t **)luaL_checkudata(L, idx, TG_TASK_META);
}

/* Timeout from an options table at idx: seconds, or -1 for the run deadline. */
double tg_opt_timeout(lua_State *L, int idx, const char *call) {
    if (lua_isnoneornil(L, idx)) return -1;
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx))
        tg_err_raise(L, "invalid", "%s: options must be a table, got %s", call, tg_describe(L, idx));
    lua_getfield(L, idx, "timeout");
    double v = -1;
    if (!lua_isnil(L, -1)) {
        v = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || v < 0 || v != v)
            tg_err_raise(L, "invalid", "%s: timeout must be a number of seconds >= 0, got %s", call,
                         tg_describe(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

/* core.timeout(call, opts) -> seconds, or -1 for the run's deadline */
static int l_timeout(lua_State *L) {
    const char *call = luaL_checkstring(L, 1);
    lua_pushnumber(L, tg_opt_timeout(L, 2, call));
    return 1;
}

/* tg.spawn(fn, ...) -> task.  Does not yield. */
static int l_task_spawn(lua_State *L) {
    if (lua_type(L, 1) != LUA_TFUNCTION)
        return tg_err_raise(L, "invalid", "tg.spawn: fn must be a function, got %s", tg_describe(L, 1));
    lua_Debug ar;
    char name[48] = "task";
    lua_pushvalue(L, 1);
    if (lua_getinfo(L, ">S", &ar))
        snprintf(name, sizeof name, "%.36s:%d", ar.short_src, ar.linedefined);
    tg_task_spawn(L, lua_gettop(L) - 1, name);
    return 1;
}

static void join_abort(tg_task_t *j, int why) {
    (void)why;
    tg_task_t *t = j->abort_data, **p = &t->joiners;
    while (*p && *p != j) p = &(*p)->next_joiner;
    if (*p) *p = j->next_joiner;
    tg_task_unref(t);
}

/* task:join([opts]) -> ...  Yields until the task ends; re-raises its error. */
static int l_task_join(lua_State *L) {
    tg_task_t *t = check_task(L, 1);
    double timeout = tg_opt_timeout(L, 2, "join");
    if (t->state != TG_TASK_DONE) {
        if (t == tg_ctx(L)->task)
            return tg_err_raise(L, "invalid", "a task cannot join itself");
        if (t->ctx.inst != tg_ctx(L)->inst)
            return tg_err_raise(L, "invalid", "cannot join a task of another instance");
        char what[96];
        snprintf(what, sizeof what, "join of task %s", t->name);
        tg_task_t *j = tg_wait_begin(L, TG_WAIT_JOIN, t->name, strlen(t->name), timeout, what);
        j->next_joiner = t->joiners;
        t->joiners = j;
        tg_task_ref(t);
        tg_wait_on_abort(j, join_abort, t);
        return tg_wait_yield(L);
    }
    int ok;
    int n = tg_task_push_results(L, t, &ok);
    if (!ok) return lua_error(L);
    return n;
}

/* task:cancel().  Does not yield. */
static int l_task_cancel(lua_State *L) {
    tg_task_cancel(check_task(L, 1));
    return 0;
}

/* task:status() -> "ready" | "running" | "waiting" | "done" */
static int l_task_status(lua_State *L) {
    static const char *names[] = {"?", "ready", "running", "waiting", "done"};
    lua_pushstring(L, names[check_task(L, 1)->state]);
    return 1;
}

static int l_task_gc(lua_State *L) {
    tg_task_t **box = luaL_checkudata(L, 1, TG_TASK_META);
    tg_task_t *t = *box;
    *box = NULL;
    if (!t) return 0;
    /* Nobody can join it any more: its results go (the main task's stay for
     * the runner, which reads them after the loop). */
    t->handle_gone = 1;
    if (t->results_ref != LUA_NOREF && !t->is_main) {
        luaL_unref(L, LUA_REGISTRYINDEX, t->results_ref);
        t->results_ref = LUA_NOREF;
    }
    tg_task_unref(t);
    return 0;
}

static int l_task_tostring(lua_State *L) {
    tg_task_t *t = check_task(L, 1);
    lua_pushfstring(L, "task %s (%s)", t->name,
                    t->state == TG_TASK_DONE ? "done" : "running");
    return 1;
}

static void sleep_abort(tg_task_t *t, int why) {
    char b[64];
    if (why != TG_ABORT_TIMEOUT) return;
    if (t->by_deadline) {       /* the run ended first: the sleep did not happen */
        snprintf(b, sizeof b, "%.3g", t->timeout);
        tg_wait_fail(t, "timeout", "%s was cut short by the run's deadline after %s s", t->what, b);
    }
    else tg_wait_done(t, 1, 0); /* its own timer IS the wake-up */
}

/* tg.sleep(seconds).  Yields. */
static int l_sleep(lua_State *L) {
    double s = lua_tonumber(L, 1);
    if (lua_type(L, 1) != LUA_TNUMBER || !(s >= 0))
        return tg_err_raise(L, "invalid", "tg.sleep: seconds must be a number >= 0, got %s", tg_describe(L, 1));
    char what[64];
    int n = snprintf(what, sizeof what, "tg.sleep(%g)", s);
    /* its name in the trace: the seconds, "1.5" of "tg.sleep(1.5)" */
    tg_task_t *t = tg_wait_begin(L, TG_WAIT_SLEEP, what + 9, n > 10 ? (size_t)n - 10 : 0, s, what);
    tg_wait_on_abort(t, sleep_abort, NULL);
    return tg_wait_yield(L);
}

static int l_now(lua_State *L) {
    lua_pushnumber(L, tg_rt_now());
    return 1;
}

static int l_time(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
    return 1;
}

/* tg.core.deadline() -> seconds left until the run's deadline */
static int l_deadline(lua_State *L) {
    lua_pushnumber(L, tg_ctx(L)->inst->rt->deadline - tg_rt_now());
    return 1;
}

/* tg.core.error(code, message) -> error value (not raised) */
static int l_error(lua_State *L) {
    const char *code = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    tg_err_push(L, code, "%s", msg);
    return 1;
}

/* tg.core.is_error(v) -> bool */
static int l_is_error(lua_State *L) {
    int is = 0;
    if (lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, TG_ERROR_META);
        is = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pushboolean(L, is);
    return 1;
}

static int l_err_tostring(lua_State *L) {
    lua_getfield(L, 1, "message");
    if (!lua_isstring(L, -1)) lua_pushstring(L, "(error without a message)");
    return 1;
}

static const luaL_Reg task_methods[] = {
    {"join", l_task_join},
    {"cancel", l_task_cancel},
    {"status", l_task_status},
    {NULL, NULL},
};

static const luaL_Reg rt_funcs[] = {
    {"spawn", l_task_spawn},
    {"sleep", l_sleep},
    {"now", l_now},
    {"time", l_time},
    {"deadline", l_deadline},
    {"timeout", l_timeout},
    {"error", l_error},
    {"is_error", l_is_error},
    {NULL, NULL},
};

/* Register the task and error metatables in L (an error raised before any
 * module was loaded -- by the hook, at a plan's load time -- still prints). */
void tg_rt_register(lua_State *L) {
    if (luaL_newmetatable(L, TG_TASK_META)) {
        luaL_newlib(L, task_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_task_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_task_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, TG_ERROR_META)) {
        lua_pushcfunction(L, l_err_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
}

/* Add the task/time functions to the table at the top of the stack. */
void tg_rt_open(lua_State *L) {
    tg_rt_register(L);
    luaL_setfuncs(L, rt_funcs, 0);
}
