/*
 * tg_report.c -- see tg_report.h.  The C half: a runtime and one lua_State
 * to run lua/tg/report.lua in (the way tg_local.c loads a plan to check it),
 * the module "tg.report.c" that the Lua half needs, and the command line.
 */
#define _POSIX_C_SOURCE 200809L
#include "tg_report.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <lauxlib.h>

#include "tg_embedded.h"
#include "tg_rt.h"
#include "tg_run.h"

/* ---- tg.report.c ----------------------------------------------------------- */

/* listdir(path) -> {name, ...} (sorted, without . and ..), or nil, message */
static int l_listdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_newtable(L);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

/* stat(path) -> "dir" | "file" | "other", size, mtime (s) ; or nil */
static int l_stat(lua_State *L) {
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) < 0) return 0;
    lua_pushstring(L, S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_pushinteger(L, (lua_Integer)st.st_mtime);
    return 3;
}

/* asset(name) -> text: a file of assets/ compiled into the binary (read
 * from TG_LUA_DIR/../assets when developing), or nil */
static int l_asset(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *dev = tg_ctx(L)->inst->rt->lua_dir;
    if (dev) {
        lua_pushfstring(L, "%s/../assets/%s", dev, name);
        FILE *f = fopen(lua_tostring(L, -1), "rb");
        if (f) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            char buf[4096];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, f)) > 0) luaL_addlstring(&b, buf, n);
            fclose(f);
            luaL_pushresult(&b);
            return 1;
        }
    }
    for (const tg_embedded_t *a = tg_embedded_assets; a->name; a++) {
        if (strcmp(a->name, name) != 0) continue;
        lua_pushlstring(L, a->data, a->len);
        return 1;
    }
    return 0;
}

static const luaL_Reg report_funcs[] = {
    {"listdir", l_listdir},
    {"stat", l_stat},
    {"asset", l_asset},
    {NULL, NULL},
};

static int open_report_c(lua_State *L) {
    luaL_newlib(L, report_funcs);
    return 1;
}

/* ---- running the Lua half ---------------------------------------------------- */

/* report.run(run_dir, out_dir) -> {status =, error =, lines = {...}} under
 * protection; print the lines.  The stack: [traceback-less pcall] res. */
static int run_report(lua_State *L, const char *run_dir, const char *out_dir, FILE *lines,
                      const char *indent) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open_report_c);
    lua_setfield(L, -2, "tg.report.c");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "tg.report");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "tgrun: report: internal error: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_getfield(L, -1, "run");
    lua_pushstring(L, run_dir);
    if (out_dir) lua_pushstring(L, out_dir);
    else lua_pushnil(L);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        /* report.lua catches what bad input can cause; this is a bug */
        const char *m = luaL_tolstring(L, -1, NULL);
        fprintf(stderr, "tgrun: report: internal error (please report it): %s\n", m);
        return 1;
    }
    lua_getfield(L, -1, "status");
    int status = (int)luaL_optinteger(L, -1, 1);
    lua_getfield(L, -2, "error");
    if (lua_isstring(L, -1)) fprintf(stderr, "tgrun: report: %s\n", lua_tostring(L, -1));
    lua_getfield(L, -3, "lines");
    if (lines && lua_istable(L, -1)) {
        for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
            fprintf(lines, "%s%s\n", indent ? indent : "", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        fflush(lines);
    }
    return status;
}

int tg_report_write(const char *run_dir, const char *out_dir, FILE *lines, const char *indent) {
    uv_loop_t loop;
    tg_rt_t rt;
    uv_loop_init(&loop);
    tg_rt_init(&rt, &loop);
    rt.lua_dir = getenv("TG_LUA_DIR");
    tg_inst_t *inst = tg_inst_new(&rt);
    int status = 1;
    if (!inst) fprintf(stderr, "tgrun: report: out of memory\n");
    else status = run_report(inst->L, run_dir, out_dir, lines, indent);
    tg_run_shutdown(&rt);
    return status;
}

int tg_report_main(int argc, char **argv) {
    const char *dir = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage: tgrun report [--out DIR] RUN_DIR\n"
                   "  the picture of a finished run: RUN_DIR/timeline.html (open it in a browser)\n"
                   "  and RUN_DIR/trace.json (Chrome trace format: Perfetto, chrome://tracing),\n"
                   "  from each instance's trace.jsonl and run.out under RUN_DIR/<group>/<index>/\n"
                   "  --out DIR   write the two files to DIR instead\n");
            return 0;
        }
        if (strcmp(a, "--out") == 0 || strcmp(a, "-o") == 0) {
            if (++i >= argc) return tg_usage_error("report: --out needs a folder");
            out = argv[i];
        } else if (strncmp(a, "--out=", 6) == 0) {
            out = a + 6;
        } else if (a[0] == '-' && a[1]) {
            return tg_usage_error("report: unknown option \"%s\"; usage: tgrun report [--out DIR] RUN_DIR", a);
        } else if (dir) {
            return tg_usage_error("report: one run folder at a time; unexpected \"%s\"", a);
        } else {
            dir = a;
        }
    }
    if (!dir) return tg_usage_error("report: which run? usage: tgrun report [--out DIR] outputs/<run>");
    if (out && tg_mkdir_p(out) < 0)
        return tg_usage_error("report: cannot create \"%s\": %s", out, strerror(errno));
    return tg_report_write(dir, out, stdout, "");
}
