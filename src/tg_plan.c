/* tg_plan.c -- see tg_plan.h. */
#define _POSIX_C_SOURCE 200809L
#include "tg_plan.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

/* tg.params[fn](args...) -> text | nil, error, on L: the text printed on
 * stdout and 0, or the error as one line and 2. */
static int ask(lua_State *L, const char *fn, int nargs) {
    int base = lua_gettop(L) - nargs;
    lua_getglobal(L, "require");
    lua_pushstring(L, "tg.params");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) return tg_usage_error("internal: %s", lua_tostring(L, -1));
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, base + 1);                    /* fn args... */
    if (lua_pcall(L, nargs, 2, 0) != LUA_OK) return tg_usage_error("internal: %s", lua_tostring(L, -1));
    if (!lua_isstring(L, -2)) return tg_usage_error("%s", luaL_optstring(L, -1, "?"));
    fputs(lua_tostring(L, -2), stdout);
    fflush(stdout);
    return 0;
}

/* Load plan_path for its declarations in a runtime of its own, then
 * tg.params[fn](plan_path, arg2, arg3).  The exit status. */
static int with_plan(const char *plan_path, const char *fn, const char *arg2, const char *arg3) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    tg_rt_t rt;
    tg_rt_init(&rt, &loop);
    rt.lua_dir = getenv("TG_LUA_DIR");
    tg_inst_t *inst = tg_inst_new(&rt);
    int rc = inst ? tg_run_load_decl(inst, plan_path) : tg_usage_error("out of memory");
    if (rc == 0) {
        lua_State *L = inst->L;
        lua_pushstring(L, plan_path);
        if (arg2) lua_pushstring(L, arg2);
        else lua_pushnil(L);
        if (arg3) lua_pushstring(L, arg3);
        else lua_pushnil(L);
        rc = ask(L, fn, 3);
        lua_settop(L, 0);
    }
    tg_run_shutdown(&rt);
    return rc;
}

int tg_plan_manifest_main(int argc, char **argv) {
    const char *plan = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            puts("usage: tgrun manifest PLAN.lua\n"
                 "  prints the Testground manifest.toml of the plan: its cases with the instance\n"
                 "  bounds and parameters it declares (see docs/api.md, \"Declared parameters\"),\n"
                 "  for the docker:generic builder and the local:docker and cluster:k8s runners");
            return 0;
        }
        if (argv[i][0] == '-') return tg_usage_error("manifest: unknown option \"%s\"; see tgrun manifest --help", argv[i]);
        if (plan) return tg_usage_error("manifest: one plan at a time; unexpected \"%s\"", argv[i]);
        plan = argv[i];
    }
    if (!plan) return tg_usage_error("manifest: no plan given; usage: tgrun manifest PLAN.lua");
    /* the plan's name, as a run names it: TEST_PLAN, else the file's name */
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", plan);
    char *base = basename(buf);
    char *dot = strrchr(base, '.');
    if (dot && strcmp(dot, ".lua") == 0) *dot = '\0';
    return with_plan(plan, "manifest", tg_env_or("TEST_PLAN", base), TG_VERSION);
}

int tg_plan_help_params(const tg_opts_t *o) {
    return with_plan(o->plan_path, "help", o->case_name, NULL);
}
