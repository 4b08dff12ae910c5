/*
 * main.c -- the tgrun command: options, the single-instance run that a
 * Testground runner starts, and the exit status.
 *
 * Exit status: 0 every instance succeeded; 1 a plan failed or crashed; 2 bad
 * usage or configuration, with one line on stderr that says what and how to
 * fix it.
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>

#include "tg_main.h"
#include "tg_params.h"
#include "tg_redis.h"
#include "tg_rt.h"

#define TG_VERSION "0.1.0"

int tg_usage_error(const char *fmt, ...) {
    va_list ap;
    fputs("tgrun: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

static void usage(FILE *f) {
    fputs(
"usage: tgrun [options] PLAN.lua             run one instance (env from TEST_*)\n"
"       tgrun -n N [options] PLAN.lua        run N local instances, one process each\n"
"       tgrun -n N --inproc [options] PLAN.lua  run N instances in this process\n"
"\n"
"  -n, --instances N      local run with N instances\n"
"  -c, --case NAME        test case (default: TEST_CASE, else the plan's only case)\n"
"  -p, --param KEY=VALUE  test parameter, repeatable\n"
"  -g, --group NAME=COUNT composition group of a local run, repeatable\n"
"      --redis URL        redis://[:password@]host[:port][/db] or unix:///path\n"
"      --timeout SECONDS  deadline of the whole run (default 600)\n"
"      --run-id ID        run id (default: TEST_RUN, else a fresh one)\n"
"      --outputs DIR      where run.out and results.out go\n"
"      --inproc           with -n: all instances in one process\n"
"  -q, --quiet            local run: no live progress line\n"
"  -h, --help, --version\n", f);
}

/* A fresh run id: 12 hex digits from /dev/urandom (Testground's early form). */
void tg_random_id(char *buf, size_t len) {
    unsigned char b[6] = {0};
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, b, sizeof b) != (ssize_t)sizeof b) memset(b, 0, sizeof b);
        close(fd);
    }
    snprintf(buf, len, "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

int tg_mkdir_p(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
    return 0;
}

static int parse_opts(int argc, char **argv, tg_opts_t *o) {
    static const struct option longs[] = {
        {"instances", required_argument, 0, 'n'},
        {"case", required_argument, 0, 'c'},
        {"param", required_argument, 0, 'p'},
        {"group", required_argument, 0, 'g'},
        {"redis", required_argument, 0, 'R'},
        {"timeout", required_argument, 0, 'T'},
        {"run-id", required_argument, 0, 'I'},
        {"outputs", required_argument, 0, 'O'},
        {"inproc", no_argument, 0, 'P'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    char err[256];
    long long n;
    double d;
    int c;
    o->timeout = 600;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:c:p:g:qh", longs, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (tg_parse_int(optarg, &n) < 0 || n < 1 || n > 1000000)
                return tg_usage_error("-n needs a whole number of instances from 1 up, got \"%s\"", optarg);
            o->instances = (int)n;
            break;
        case 'c': o->case_name = optarg; break;
        case 'p':
            if (tg_param_parse_one(&o->params, optarg, err, sizeof err) < 0)
                return tg_usage_error("%s", err);
            break;
        case 'g':
            if (o->ngroups == TG_MAX_GROUPS)
                return tg_usage_error("at most %d groups", TG_MAX_GROUPS);
            if (tg_group_spec_parse(optarg, o->groups[o->ngroups].name, sizeof o->groups[0].name,
                                    &o->groups[o->ngroups].count, err, sizeof err) < 0)
                return tg_usage_error("%s", err);
            o->ngroups++;
            break;
        case 'R': o->redis_url = optarg; break;
        case 'T':
            if (tg_parse_number(optarg, &d) < 0 || d <= 0)
                return tg_usage_error("--timeout needs a positive number of seconds, got \"%s\"", optarg);
            o->timeout = d;
            break;
        case 'I': o->run_id = optarg; break;
        case 'O': o->outputs = optarg; break;
        case 'P': o->inproc = 1; break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("tgrun %s\n", TG_VERSION); exit(0);
        default:
            if (optopt) return tg_usage_error("option -%c needs a value or is unknown; see tgrun --help", optopt);
            return tg_usage_error("unknown option \"%s\"; see tgrun --help", argv[optind - 1]);
        }
    }
    if (optind >= argc) return tg_usage_error("no plan given; usage: tgrun [options] PLAN.lua (see --help)");
    if (optind + 1 < argc) return tg_usage_error("one plan at a time; unexpected \"%s\"", argv[optind + 1]);
    o->plan_path = argv[optind];
    if (o->ngroups && !o->instances) {
        long sum = 0;
        for (int i = 0; i < o->ngroups; i++) sum += o->groups[i].count;
        o->instances = (int)sum;
    }
    if (o->inproc && !o->instances) return tg_usage_error("--inproc needs -n N");
    return 0;
}

/* Set config[key] = value in the table at the top of L. */
static void cfg_str(lua_State *L, const char *key, const char *value) {
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

static void cfg_int(lua_State *L, const char *key, lua_Integer value) {
    lua_pushinteger(L, value);
    lua_setfield(L, -2, key);
}

/* Fill an instance's configuration (the registry table "tg.config") from
 * the TEST_* environment and the options.  2 on a bad value (printed). */
int tg_build_config(tg_inst_t *inst, const tg_opts_t *o, tg_instcfg_t *ic) {
    lua_State *L = inst->L;
    char err[256];
    lua_getfield(L, LUA_REGISTRYINDEX, "tg.config");
    cfg_str(L, "plan_path", o->plan_path);
    cfg_str(L, "plan", ic->plan);
    cfg_str(L, "run_id", ic->run_id);
    cfg_str(L, "case", ic->case_name ? ic->case_name : "");
    cfg_int(L, "instance_count", ic->instance_count);
    cfg_str(L, "group_id", ic->group_id);
    cfg_int(L, "group_instance_count", ic->group_instance_count);
    cfg_str(L, "outputs_path", ic->outputs);
    cfg_str(L, "temp_path", ic->temp);
    lua_pushboolean(L, ic->sidecar);
    lua_setfield(L, -2, "sidecar");
    cfg_str(L, "subnet", env_or("TEST_SUBNET", "127.1.0.0/16"));
    cfg_str(L, "ip", ic->ip);
    lua_pushnumber(L, o->timeout);
    lua_setfield(L, -2, "timeout");
    if (ic->label) {                    /* an instance of an in-process run */
        cfg_str(L, "label", ic->label);
        lua_pushboolean(L, ic->quiet_stdout);
        lua_setfield(L, -2, "quiet_stdout");
    }
    const char *st = getenv("TEST_START_TIME");
    int64_t ns = 0;
    if (st && *st) {
        if (tg_rfc3339_parse(st, &ns) < 0)
            return tg_usage_error("TEST_START_TIME is not an RFC 3339 time: \"%s\"", st);
        cfg_str(L, "start_time", st);
    } else {
        char buf[48];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        tg_rfc3339_format(ns, buf, sizeof buf);
        cfg_str(L, "start_time", buf);
    }
    lua_newtable(L);
    for (size_t i = 0; i < ic->params->len; i++) {
        lua_pushstring(L, ic->params->items[i].value);
        lua_setfield(L, -2, ic->params->items[i].key);
    }
    lua_setfield(L, -2, "params");
    (void)err;
    lua_pop(L, 1);
    return 0;
}

/* Put the plan's folder and the TG_LUA_PATH folders on package.path. */
static void set_path(lua_State *L, const char *plan_path) {
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", plan_path);
    const char *dir = dirname(dirbuf);
    luaL_Buffer b;
    lua_getglobal(L, "package");
    luaL_buffinit(L, &b);
    luaL_addstring(&b, dir);
    luaL_addstring(&b, "/?.lua;");
    luaL_addstring(&b, dir);
    luaL_addstring(&b, "/?/init.lua;");
    const char *extra = getenv("TG_LUA_PATH");
    if (extra && *extra) {
        char *copy = strdup(extra), *save = NULL;
        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
            luaL_addstring(&b, d);
            luaL_addstring(&b, "/?.lua;");
            luaL_addstring(&b, d);
            luaL_addstring(&b, "/?/init.lua;");
        }
        free(copy);
    }
    lua_getfield(L, -2, "path");
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    lua_pushstring(L, msg);
    return 1;
}

/* Load the plan into inst and pick its case.  Leaves the case function in the
 * registry ("tg.case_fn") and its name in config.case.  2 on failure (printed). */
int tg_load_plan(tg_inst_t *inst, const char *plan_path, const char *wanted) {
    lua_State *L = inst->L;
    if (access(plan_path, R_OK) != 0)
        return tg_usage_error("cannot read plan \"%s\": %s", plan_path, strerror(errno));
    set_path(L, plan_path);
    lua_pushcfunction(L, traceback);
    char chunkname[4200];
    snprintf(chunkname, sizeof chunkname, "@%s", plan_path);
    if (tg_load_cached(L, &inst->rt->plan_chunk, NULL, 0, chunkname, 0) != LUA_OK)
        return tg_usage_error("plan does not compile: %s", lua_tostring(L, -1));
    if (lua_pcall(L, 0, 1, -2) != LUA_OK)
        return tg_usage_error("plan failed while loading: %s", lua_tostring(L, -1));
    /* plan_result -> instance.select(plan_result, wanted) -> name, fn | nil, msg */
    lua_getglobal(L, "require");
    lua_pushstring(L, "tg.instance");
    if (lua_pcall(L, 1, 1, -4) != LUA_OK)
        return tg_usage_error("internal: %s", lua_tostring(L, -1));
    lua_getfield(L, -1, "select");
    lua_pushvalue(L, -3);
    if (wanted) lua_pushstring(L, wanted);
    else lua_pushnil(L);
    if (lua_pcall(L, 2, 2, -6) != LUA_OK)
        return tg_usage_error("internal: %s", lua_tostring(L, -1));
    if (lua_isnil(L, -2))
        return tg_usage_error("%s", lua_tostring(L, -1));
    lua_setfield(L, LUA_REGISTRYINDEX, "tg.case_fn");
    lua_getfield(L, LUA_REGISTRYINDEX, "tg.config");
    lua_insert(L, -2);
    lua_setfield(L, -2, "case");
    lua_settop(L, 0);
    return 0;
}

/* Start the instance's main task: tg.instance.main(case_fn). */
int tg_start_main(tg_inst_t *inst) {
    lua_State *L = inst->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, "tg.instance");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        return tg_usage_error("internal: %s", lua_tostring(L, -1));
    lua_getfield(L, -1, "main");
    lua_getfield(L, LUA_REGISTRYINDEX, "tg.case_fn");
    inst->main = tg_task_spawn(L, 1, "main");
    inst->main->refs++;                         /* the instance's own, dropped in tg_inst_free */
    lua_settop(L, 0);
    return 0;
}

/* After the main task ended: its exit status (0/1/2) and first error line. */
int tg_main_result(tg_inst_t *inst) {
    lua_State *L = inst->L;
    tg_task_t *t = inst->main;
    if (!t || t->state != TG_TASK_DONE || t->results_ref == LUA_NOREF) return 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->results_ref);
    lua_getfield(L, -1, "ok");
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    int code = 1;
    if (ok) {
        lua_rawgeti(L, -1, 1);
        code = (int)luaL_optinteger(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (lua_isstring(L, -1)) inst->error = strdup(lua_tostring(L, -1));
        lua_pop(L, 2);
    } else {
        lua_rawgeti(L, -1, 1);
        const char *m = luaL_tolstring(L, -1, NULL);
        inst->error = strdup(m);
        fprintf(stderr, "tgrun: internal error in the instance runner: %s\n", m);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return code;
}

static void on_single_done(tg_inst_t *inst) {
    uv_stop(inst->rt->loop);
}

/* Resolve the Redis address: --redis, else REDIS_HOST/REDIS_PORT.  Returns
 * 1 when neither was given (the caller may start its own server). */
int tg_redis_target(const tg_opts_t *o, tg_redis_addr_t *a) {
    char err[256];
    if (o->redis_url) {
        if (tg_redis_addr_parse(o->redis_url, a, err, sizeof err) < 0)
            return -tg_usage_error("%s", err);
        return 0;
    }
    const char *h = getenv("REDIS_HOST"), *p = getenv("REDIS_PORT");
    if ((!h || !*h) && (!p || !*p)) {
        tg_redis_addr_from_env(NULL, NULL, a, err, sizeof err);
        return 1;
    }
    if (tg_redis_addr_from_env(h, p, a, err, sizeof err) < 0) return -tg_usage_error("%s", err);
    return 0;
}

/* Tear down the runtime: instances, Redis, handles; the loop must close. */
void tg_shutdown(tg_rt_t *rt) {
    while (rt->insts) tg_inst_free(rt->insts);
    tg_redis_close(rt);
    tg_rt_close(rt);
    uv_run(rt->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(rt->loop) != 0) fprintf(stderr, "tgrun: internal: handles left open at exit\n");
}

static int run_single(tg_opts_t *o) {
    char err[512], run_id_buf[32], outbuf[4096], tmpbuf[4096];
    tg_instcfg_t ic = {0};
    tg_kvlist_t params = {0};
    const char *envp = getenv("TEST_INSTANCE_PARAMS");
    if (envp && tg_params_parse(&params, envp, err, sizeof err) < 0) {
        tg_kvlist_free(&params);
        return tg_usage_error("%s", err);
    }
    for (size_t i = 0; i < o->params.len; i++)
        tg_kvlist_set(&params, o->params.items[i].key, o->params.items[i].value);
    ic.params = &params;

    char planbuf[4096];
    snprintf(planbuf, sizeof planbuf, "%s", o->plan_path);
    char *base = basename(planbuf);
    char *dot = strrchr(base, '.');
    if (dot && strcmp(dot, ".lua") == 0) *dot = '\0';
    ic.plan = env_or("TEST_PLAN", base);
    if (o->run_id) ic.run_id = o->run_id;
    else if (getenv("TEST_RUN") && *getenv("TEST_RUN")) ic.run_id = getenv("TEST_RUN");
    else { tg_random_id(run_id_buf, sizeof run_id_buf); ic.run_id = run_id_buf; }
    long long n = 1, gn;
    if (getenv("TEST_INSTANCE_COUNT") && tg_parse_int(getenv("TEST_INSTANCE_COUNT"), &n) < 0)
        return tg_usage_error("TEST_INSTANCE_COUNT is not a number: \"%s\"", getenv("TEST_INSTANCE_COUNT"));
    ic.instance_count = (int)n;
    ic.group_id = env_or("TEST_GROUP_ID", "single");
    gn = n;
    if (getenv("TEST_GROUP_INSTANCE_COUNT") && tg_parse_int(getenv("TEST_GROUP_INSTANCE_COUNT"), &gn) < 0)
        return tg_usage_error("TEST_GROUP_INSTANCE_COUNT is not a number: \"%s\"", getenv("TEST_GROUP_INSTANCE_COUNT"));
    ic.group_instance_count = (int)gn;
    int sidecar = 0;
    if (getenv("TEST_SIDECAR") && *getenv("TEST_SIDECAR") && tg_parse_bool(getenv("TEST_SIDECAR"), &sidecar) < 0)
        return tg_usage_error("TEST_SIDECAR is not true or false: \"%s\"", getenv("TEST_SIDECAR"));
    ic.sidecar = sidecar;
    ic.ip = env_or("TG_INSTANCE_IP", "127.0.0.1");
    if (o->outputs) ic.outputs = o->outputs;
    else if (getenv("TEST_OUTPUTS_PATH") && *getenv("TEST_OUTPUTS_PATH")) ic.outputs = getenv("TEST_OUTPUTS_PATH");
    else {
        snprintf(outbuf, sizeof outbuf, "outputs/%s/%s/0", ic.run_id, ic.group_id);
        ic.outputs = outbuf;
    }
    if (tg_mkdir_p(ic.outputs) < 0)
        return tg_usage_error("cannot create the outputs folder \"%s\": %s", ic.outputs, strerror(errno));
    /* absolute, so that a plan that changes directory still finds it */
    char absout[PATH_MAX];
    if (realpath(ic.outputs, absout)) ic.outputs = absout;
    if (getenv("TEST_TEMP_PATH") && *getenv("TEST_TEMP_PATH")) ic.temp = getenv("TEST_TEMP_PATH");
    else {
        snprintf(tmpbuf, sizeof tmpbuf, "%s/tgrun-%s-XXXXXX", env_or("TMPDIR", "/tmp"), ic.run_id);
        ic.temp = mkdtemp(tmpbuf) ? tmpbuf : "/tmp";
    }

    tg_redis_addr_t addr;
    int rc = tg_redis_target(o, &addr);
    if (rc < 0) { tg_kvlist_free(&params); return 2; }

    uv_loop_t loop;
    uv_loop_init(&loop);
    tg_rt_t rt;
    tg_rt_init(&rt, &loop);
    rt.deadline = tg_rt_now() + o->timeout;
    rt.lua_dir = getenv("TG_LUA_DIR");
    rt.on_inst_done = on_single_done;
    tg_rt_handle_signals(&rt);
    tg_inst_t *inst = tg_inst_new(&rt);
    int status = 2;
    if (!inst) { fprintf(stderr, "tgrun: out of memory\n"); goto out; }
    if ((status = tg_load_plan(inst, o->plan_path, o->case_name ? o->case_name : getenv("TEST_CASE"))) != 0)
        goto out;
    lua_getfield(inst->L, LUA_REGISTRYINDEX, "tg.config");
    lua_getfield(inst->L, -1, "case");
    ic.case_name = lua_tostring(inst->L, -1);
    char case_buf[256];
    snprintf(case_buf, sizeof case_buf, "%s", ic.case_name ? ic.case_name : "");
    ic.case_name = case_buf;
    lua_pop(inst->L, 2);
    if ((status = tg_build_config(inst, o, &ic)) != 0) goto out;

    char prefix[1024];
    snprintf(prefix, sizeof prefix, "run:%s:plan:%s:case:%s", ic.run_id, ic.plan, ic.case_name);
    if (tg_redis_open(&rt, &addr, prefix, 5, err, sizeof err) < 0) {
        status = tg_usage_error("%s (start Redis, or point tgrun at one with --redis URL or REDIS_HOST/REDIS_PORT)", err);
        goto out;
    }
    if ((status = tg_start_main(inst)) != 0) goto out;
    uv_run(&loop, UV_RUN_DEFAULT);
    status = tg_main_result(inst);
out:
    tg_shutdown(&rt);
    tg_kvlist_free(&params);
    return status;
}

int main(int argc, char **argv) {
    tg_opts_t o = {0};
    /* A peer or child that goes away must give an error, not kill tgrun. */
    signal(SIGPIPE, SIG_IGN);
    int rc = parse_opts(argc, argv, &o);
    if (rc == 0) {
        if (o.instances) rc = tg_local_run(&o, argv[0]);
        else rc = run_single(&o);
    }
    tg_kvlist_free(&o.params);
    return rc;
}
