/* tg_run.c -- see tg_run.h. */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include "tg_run.h"

#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>

#include "tg_barrier.h"
#include "tg_coord.h"
#include "tg_keys.h"
#include "tg_redis.h"
#include "tg_rfc3339.h"
#include "tg_scalar.h"
#include "tg_fs.h"
#include "tg_session.h"
#include "tg_space.h"
#include "tg_svc.h"
#include "tg_topic.h"
#include "tg_wshs.h"

int tg_usage_error(const char *fmt, ...) {
    va_list ap;
    fputs("tgrun: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

void tg_die_with_parent(long parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != (pid_t)parent) _exit(2);   /* it ended before we could ask */
}

const char *tg_env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

int tg_find_on_path(const char *name, char *out, size_t len) {
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/%s", *d ? d : ".", name);
        found = access(out, X_OK) == 0;
    }
    free(copy);
    return found ? 0 : -1;
}

/* ---- the run --------------------------------------------------------------- */

int tg_run_init(tg_run_t *run, const tg_opts_t *o) {
    char err[512];
    memset(run, 0, sizeof *run);
    run->o = o;
    const char *envp = getenv("TEST_INSTANCE_PARAMS");
    if (envp && tg_params_parse(&run->params, envp, err, sizeof err) < 0) return tg_usage_error("%s", err);
    for (size_t i = 0; i < o->params.len; i++)
        if (tg_kvlist_set(&run->params, o->params.items[i].key, o->params.items[i].value) < 0)
            return tg_usage_error("out of memory");
    /* the plan's name: TEST_PLAN, else the file's name without .lua */
    char planbuf[4096];
    snprintf(planbuf, sizeof planbuf, "%s", o->plan_path);
    char *base = basename(planbuf);
    char *dot = strrchr(base, '.');
    if (dot && strcmp(dot, ".lua") == 0) *dot = '\0';
    snprintf(run->plan, sizeof run->plan, "%s", tg_env_or("TEST_PLAN", base));
    if (o->run_id) snprintf(run->run_id, sizeof run->run_id, "%s", o->run_id);
    else if (getenv("TEST_RUN") && *getenv("TEST_RUN")) snprintf(run->run_id, sizeof run->run_id, "%s", getenv("TEST_RUN"));
    else tg_rt_random_id(run->run_id, sizeof run->run_id);
    /* seconds: every key a run creates expires, so nothing stays forever:
     * twice the run's timeout, at least a day, at most a year (Redis refuses
     * an expiry past its range) */
    double ttl = ceil(o->timeout * 2);
    if (!(ttl > 86400)) ttl = 86400;
    if (ttl > 31536000) ttl = 31536000;
    snprintf(run->ttl, sizeof run->ttl, "%.0f", ttl);
    /* the sync service: --sync, else SYNC_SERVICE_HOST (and _PORT, default 5050) */
    const char *host = getenv("SYNC_SERVICE_HOST"), *port = getenv("SYNC_SERVICE_PORT");
    if (o->sync_url) {
        snprintf(run->sync_url, sizeof run->sync_url, "%s", o->sync_url);
    } else if (host && *host) {
        long long p = 5050;
        if (port && *port && (tg_parse_int(port, &p) < 0 || p < 1 || p > 65535))
            return tg_usage_error("SYNC_SERVICE_PORT is not a port number: \"%s\"", port);
        snprintf(run->sync_url, sizeof run->sync_url, "ws://%s%s%s:%lld", strchr(host, ':') ? "[" : "", host,
                 strchr(host, ':') ? "]" : "", p);
    }
    if (run->sync_url[0] && tg_wshs_parse_url(run->sync_url, run->sync_host, sizeof run->sync_host,
                                              &run->sync_port, run->sync_path, sizeof run->sync_path,
                                              err, sizeof err) < 0)
        return tg_usage_error("%s", err);
    /* tracing: on unless --no-trace or TG_TRACE says no (the variable is
     * how a Testground composition, which passes no options, turns it off) */
    int on = 1;
    const char *te = getenv("TG_TRACE");
    if (te && *te && tg_parse_bool(te, &on) < 0)
        return tg_usage_error("TG_TRACE is not true or false (1/0, yes/no, on/off): \"%s\"", te);
    run->trace = on && !o->no_trace;
    return 0;
}

void tg_run_set_case(tg_run_t *run, const char *case_name) {
    snprintf(run->case_name, sizeof run->case_name, "%s", case_name ? case_name : "");
    run->plen = tg_keys_prefix(run->prefix, sizeof run->prefix, run->run_id, run->plan, run->case_name);
    if (run->plen >= sizeof run->prefix) run->plen = sizeof run->prefix - 1;
}

void tg_run_free(tg_run_t *run) {
    tg_kvlist_free(&run->params);
}

/* ---- an instance ------------------------------------------------------------ */

/* Set config[key] = value in the table at the top of L. */
static void cfg_str(lua_State *L, const char *key, const char *value) {
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

static void cfg_int(lua_State *L, const char *key, lua_Integer value) {
    lua_pushinteger(L, value);
    lua_setfield(L, -2, key);
}

int tg_run_configure(tg_inst_t *inst, const tg_run_t *run, const tg_instcfg_t *ic) {
    lua_State *L = inst->L;
    const tg_opts_t *o = run->o;
    tg_space_push_config(L, inst);
    cfg_str(L, "plan_path", o->plan_path);
    cfg_str(L, "plan", run->plan);
    cfg_str(L, "run_id", run->run_id);
    cfg_str(L, "case", run->case_name);
    cfg_int(L, "instance_count", ic->instance_count);
    cfg_str(L, "group_id", ic->group_id);
    cfg_int(L, "group_instance_count", ic->group_instance_count);
    cfg_str(L, "outputs_path", ic->outputs);
    cfg_str(L, "temp_path", ic->temp);
    if (ic->temp_lazy) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "temp_lazy");
    }
    lua_pushboolean(L, ic->sidecar);
    lua_setfield(L, -2, "sidecar");
    cfg_str(L, "subnet", ic->subnet ? ic->subnet : tg_env_or("TEST_SUBNET", "127.1.0.0/16"));
    cfg_str(L, "ip", ic->ip);
    lua_pushnumber(L, o->timeout);
    lua_setfield(L, -2, "timeout");
    /* who this instance is, for the run's event stream (tgrun observe) */
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    cfg_str(L, "host", host);
    if (ic->name || ic->label) cfg_str(L, "instance_name", ic->name ? ic->name : ic->label);
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
    cfg_int(L, "start_time_ns", (lua_Integer)ns);
    lua_newtable(L);
    for (size_t i = 0; i < run->params.len; i++) {
        lua_pushstring(L, run->params.items[i].value);
        lua_setfield(L, -2, run->params.items[i].key);
    }
    lua_setfield(L, -2, "params");
    lua_pop(L, 1);
    if (run->trace) {
        tg_rt_t *rt = inst->rt;
        char path[4200];
        snprintf(path, sizeof path, "%s/trace.jsonl", ic->outputs);
        tg_trace_info_t ti = {run->run_id, run->plan, run->case_name, ic->group_id, TG_VERSION};
        if ((!rt->tracer && !(rt->tracer = tg_tracer_new(rt->loop)))
            || !(inst->trace = tg_trace_open(rt->tracer, path, &ti)))
            return tg_usage_error("out of memory");
    }
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
        for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
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

/* Run the plan's top level for inst (tg_space_run_file): on success L
 * holds [plan_result], which is also inst's self.plan (what the plan
 * declares: tg.params reads it through core.plan()).  0 or 2 (printed). */
static int run_chunk(tg_inst_t *inst, const char *plan_path) {
    lua_State *L = inst->L;
    if (access(plan_path, R_OK) != 0)
        return tg_usage_error("cannot read plan \"%s\": %s", plan_path, strerror(errno));
    if (!inst->rt->path_set) {                  /* once: the state is the process's */
        set_path(L, plan_path);
        inst->rt->path_set = 1;
    }
    inst->rt->resumed_at = uv_hrtime();         /* the hook bounds a plan that loops at load */
    int st = tg_space_run_file(inst, plan_path);
    inst->rt->resumed_at = 0;
    if (st == LUA_ERRSYNTAX) return tg_usage_error("plan does not compile: %s", lua_tostring(L, -1));
    if (st != LUA_OK) return tg_usage_error("plan failed while loading: %s", lua_tostring(L, -1));
    tg_space_push_self(L, inst);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "plan");
    lua_pop(L, 1);
    return 0;
}

int tg_run_load_decl(tg_inst_t *inst, const char *plan_path) {
    int rc = run_chunk(inst, plan_path);
    lua_settop(inst->L, 0);
    return rc;
}

int tg_run_load_plan(tg_inst_t *inst, const char *plan_path, const char *wanted) {
    lua_State *L = inst->L;
    if (!wanted) wanted = getenv("TEST_CASE");
    int rc = run_chunk(inst, plan_path);
    if (rc != 0) return rc;
    /* plan_result -> instance.select(plan_result, wanted) -> name, fn | nil, msg */
    lua_getglobal(L, "require");
    lua_pushstring(L, "tg.instance");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        return tg_usage_error("internal: %s", lua_tostring(L, -1));
    lua_getfield(L, -1, "select");
    lua_pushvalue(L, -3);
    if (wanted) lua_pushstring(L, wanted);
    else lua_pushnil(L);
    if (lua_pcall(L, 2, 2, 0) != LUA_OK)
        return tg_usage_error("internal: %s", lua_tostring(L, -1));
    if (lua_isnil(L, -2))
        return tg_usage_error("%s", lua_tostring(L, -1));
    tg_space_push_self(L, inst);                /* ... name fn self */
    lua_insert(L, -2);
    lua_setfield(L, -2, "case_fn");
    lua_pop(L, 1);
    tg_space_push_config(L, inst);
    lua_insert(L, -2);
    lua_setfield(L, -2, "case");
    lua_settop(L, 0);
    return 0;
}

/* The values of run params (a kvlist) as a Lua table on L. */
static void push_params(lua_State *L, const tg_kvlist_t *params) {
    lua_createtable(L, 0, (int)params->len);
    for (size_t i = 0; i < params->len; i++) {
        lua_pushstring(L, params->items[i].value);
        lua_setfield(L, -2, params->items[i].key);
    }
}

/* tg.params.check(case, params, instances) -> nil | error, warnings */
static int call_check(lua_State *L) {
    const char *case_name = lua_touserdata(L, 1);
    const tg_kvlist_t *params = lua_touserdata(L, 2);
    lua_Integer instances = lua_tointeger(L, 3);
    lua_settop(L, 0);
    lua_getglobal(L, "require");
    lua_pushstring(L, "tg.params");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "check");
    lua_pushstring(L, case_name);
    push_params(L, params);
    if (instances > 0) lua_pushinteger(L, instances);
    else lua_pushnil(L);
    lua_call(L, 3, 2);
    return 2;
}

int tg_run_check_params(tg_inst_t *inst, const tg_kvlist_t *params, const char *case_name, int instances,
                        int warn) {
    lua_State *L = inst->L;
    lua_settop(L, 0);
    lua_pushcfunction(L, call_check);
    lua_pushlightuserdata(L, (void *)case_name);
    lua_pushlightuserdata(L, (void *)params);
    lua_pushinteger(L, instances);
    if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
        int rc = tg_usage_error("internal: checking the parameters: %s", lua_tostring(L, -1));
        lua_settop(L, 0);
        return rc;
    }
    int rc = 0;
    if (lua_isstring(L, 1)) rc = tg_usage_error("%s", lua_tostring(L, 1));
    else if (warn && lua_istable(L, 2)) {
        for (lua_Integer i = 1; lua_rawgeti(L, 2, i) == LUA_TSTRING; i++) {
            fprintf(stderr, "tgrun: warning: %s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_settop(L, 0);
    return rc;
}

const char *tg_run_case_of(tg_inst_t *inst) {
    lua_State *L = inst->L;
    tg_space_push_config(L, inst);
    lua_getfield(L, -1, "case");
    const char *c = lua_tostring(L, -1);       /* kept alive by the config table */
    lua_pop(L, 2);
    return c ? c : "";
}

int tg_run_start(tg_inst_t *inst) {
    lua_State *L = inst->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, "tg.instance");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        return tg_usage_error("internal: %s", lua_tostring(L, -1));
    lua_getfield(L, -1, "main");
    tg_space_push_self(L, inst);
    lua_getfield(L, -1, "case_fn");
    lua_remove(L, -2);
    inst->main = tg_task_ref(tg_task_spawn(L, 1, "main"));   /* the instance's, dropped in tg_inst_free */
    inst->main->is_main = 1;
    lua_settop(L, 0);
    return 0;
}

int tg_run_result(tg_inst_t *inst) {
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

/* ---- Redis ------------------------------------------------------------------- */

int tg_run_redis_target(const tg_opts_t *o, tg_redis_addr_t *a) {
    char err[256];
    int rc = 0;
    const char *h = getenv("REDIS_HOST"), *p = getenv("REDIS_PORT");
    if (o->redis_url) {
        if (tg_redis_addr_parse(o->redis_url, a, err, sizeof err) < 0) return tg_usage_error("%s", err);
    } else if ((!h || !*h) && (!p || !*p)) {
        tg_redis_addr_from_env(NULL, NULL, a, err, sizeof err);
        rc = 1;
    } else if (tg_redis_addr_from_env(h, p, a, err, sizeof err) < 0) {
        return tg_usage_error("%s", err);
    }
    /* credentials kept off command lines: the environment may carry them */
    if (tg_redis_addr_credentials(a, getenv("REDIS_USERNAME"), getenv("REDIS_PASSWORD"), err, sizeof err) < 0)
        return tg_usage_error("%s", err);
    return rc;
}

static void flush_redis(void *data) {
    tg_redis_flush(data);
}

static void catch_up_redis(void *data) {
    tg_redis_catch_up(data);
}

/* After a reconnect: is the run's marker still there?  A Redis that
 * restarted without persistence has lost every key of the run. */
static int probe_marker(void *data, const redisReply *rep, char *why, size_t n) {
    tg_rt_t *rt = data;
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 1) return 0;
    snprintf(why, n, "the store lost the run's state: Redis at %s came back without it (the run's marker "
             "%.200s:tg:run is gone: it restarted without persistence, or its keys were flushed)",
             tg_redis_addr(rt->redis), rt->prefix);
    return -1;
}

typedef struct marker {
    char got[200];
    int answered, failed;
} marker_t;

static void on_marker(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    marker_t *m = data;
    (void)r; (void)tag;
    m->answered = 1;
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        m->failed = 1;
        snprintf(m->got, sizeof m->got, "%s", rep ? rep->str : "no answer");
    } else if (rep->type == REDIS_REPLY_STRING) {
        snprintf(m->got, sizeof m->got, "%.*s", (int)rep->len, rep->str);
    }
}

/* This launch of the run: what the runner gave (TG_LAUNCH), else the start
 * time every Testground instance of one run shares, else unknown (""). */
static const char *launch_id(void) {
    const char *l = getenv("TG_LAUNCH");
    if (l && *l) return l;
    return tg_env_or("TEST_START_TIME", "");
}

int tg_run_connect(tg_rt_t *rt, const tg_run_t *run, const tg_redis_addr_t *addr, char *err, size_t errlen) {
    free(rt->prefix);
    if (!(rt->prefix = malloc(run->plen + 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(rt->prefix, run->prefix, run->plen + 1);
    rt->plen = run->plen;
    snprintf(rt->ttl, sizeof rt->ttl, "%s", run->ttl);
    if (run->sync_host[0]) {
        char why[600];
        if (tg_svc_attach(rt, run->sync_host, run->sync_port, run->sync_path, 5, why, sizeof why) < 0) {
            snprintf(err, errlen, "%s (start one, e.g. `tgrun serve`, or fix --sync / SYNC_SERVICE_HOST "
                     "and SYNC_SERVICE_PORT)", why);
            return -2;
        }
    }
    if (!addr) return 0;
    if (tg_redis_open(&rt->redis, rt->loop, addr, 5, err, errlen) < 0) return -1;
    if (tg_barrier_attach(rt) < 0 || tg_topic_attach(rt) < 0 || tg_coord_attach(rt) < 0
        || tg_session_attach(rt) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    tg_redis_set_retry(rt->redis, run->o->redis_retry);
    /* The run's marker: made by the first process of this launch; another
     * launch's marker means the run id is being reused (its counts and
     * topics would be inherited), which must be said, not silently joined. */
    marker_t m = {"", 0, 0};
    char mkey[1100], value[200];
    size_t mlen = tg_key(mkey, sizeof mkey, run->prefix, run->plen, TG_KEY_RUN, NULL, 0);
    const char *launch = launch_id();
    snprintf(value, sizeof value, "%s", *launch ? launch : "unknown launch");
    const char *set[7] = {"SET", mkey, value, "NX", "GET", "EX", run->ttl};
    size_t slens[7] = {3, mlen, strlen(value), 2, 3, 2, strlen(run->ttl)};
    if (tg_redis_cmd(rt->redis, on_marker, &m, 0, 7, set, slens) < 0) {
        snprintf(err, errlen, "cannot mark the run in Redis");
        return -1;
    }
    /* the units' start-up reads (where the notify stream is, how many
     * peers died) and the marker come back before anything waits */
    if (tg_redis_settle(rt->redis, 5, err, errlen) < 0) return -1;
    if (m.failed) {
        snprintf(err, errlen, "cannot mark the run in Redis at %s: %s", tg_redis_addr(rt->redis), m.got);
        return -1;
    }
    if (m.got[0] && *launch && strcmp(m.got, launch) != 0 && !run->o->join) {
        snprintf(err, errlen, "run id '%s' already has keys in Redis at %s from another launch of it (%s): "
                 "use a fresh --run-id, or --join to take part in that run", run->run_id,
                 tg_redis_addr(rt->redis), m.got);
        return -2;
    }
    const char *probe[2] = {"EXISTS", mkey};
    size_t plens[2] = {6, mlen};
    tg_redis_set_probe(rt->redis, 2, probe, plens, probe_marker, rt);
    tg_redis_start_reading(rt->redis);
    rt->flush = flush_redis;
    rt->flush_data = rt->redis;
    tg_rt_on_catch_up(rt, catch_up_redis, rt->redis);
    return 0;
}

int tg_run_connect_error(int rc, const char *err) {
    if (rc == -2) return tg_usage_error("%s", err);
    if (strstr(err, "NOAUTH") || strstr(err, "WRONGPASS") || strstr(err, "invalid password")
        || strstr(err, "AUTH failed"))
        return tg_usage_error("%s (give the password: --redis redis://[USER]:PASSWORD@HOST:PORT, or "
                              "REDIS_PASSWORD and REDIS_USERNAME in the environment)", err);
    if (strstr(err, "refused the session"))
        return tg_usage_error("%s", err);
    return tg_usage_error("%s (start Redis, or point tgrun at one with --redis URL or REDIS_HOST/REDIS_PORT)", err);
}

void tg_run_shutdown(tg_rt_t *rt) {
    while (rt->insts) tg_inst_free(rt->insts);     /* each closes its trace */
    tg_tracer_free(rt->tracer);
    rt->tracer = NULL;
    /* what the instances left (subscriptions, sockets) is finalized now,
     * while the units it may unregister from are still there */
    if (rt->L) lua_gc(rt->L, LUA_GCCOLLECT);
    rt->flush = NULL;
    tg_rt_off_catch_up(rt, catch_up_redis, rt->redis);
    /* Units first (no waiter is left: the instances are gone), then the
     * transport: its pending callbacks run with NULL and touch only their
     * own data. */
    tg_session_detach(rt);
    tg_coord_detach(rt);
    tg_topic_detach(rt);
    tg_barrier_detach(rt);
    tg_svc_detach(rt);
    tg_redis_close(rt->redis);
    rt->redis = NULL;
    free(rt->prefix);
    rt->prefix = NULL;
    tg_rt_close(rt);
    uv_run(rt->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(rt->loop) != 0) fprintf(stderr, "tgrun: internal: handles left open at exit\n");
}

/* ---- the single-instance run ---------------------------------------------------- */

/* An instance count from the environment: *v = 0 when unset, else it must
 * be 1..TG_MAX_INSTANCES; otherwise one line and -1. */
static int count_env(const char *name, long long *v) {
    const char *s = getenv(name);
    if (!s || !*s) {
        *v = 0;
        return 0;
    }
    if (tg_parse_int(s, v) < 0 || *v < 1 || *v > TG_MAX_INSTANCES) {
        tg_usage_error("%s must be a whole number of instances from 1 to %d, got \"%s\"", name,
                       TG_MAX_INSTANCES, s);
        return -1;
    }
    return 0;
}

static void on_single_done(tg_inst_t *inst) {
    uv_stop(inst->rt->loop);
}

int tg_run_single(const tg_opts_t *o) {
    char err[512], outbuf[4096], tmpbuf[4096], absout[PATH_MAX];
    /* started by a local runner: die with it (SIGTERM: the waits say what
     * they were waiting for), even when it is SIGKILLed */
    const char *parent = getenv("TG_PARENT_PID");
    if (parent && *parent) tg_die_with_parent(atol(parent));
    tg_run_t run;
    tg_instcfg_t ic = {0};
    int status = tg_run_init(&run, o);
    if (status != 0) {
        tg_run_free(&run);
        return status;
    }
    long long n, gn;
    if (count_env("TEST_INSTANCE_COUNT", &n) < 0 || count_env("TEST_GROUP_INSTANCE_COUNT", &gn) < 0) {
        tg_run_free(&run);
        return 2;
    }
    if (!n) n = 1;              /* unset: one instance */
    if (!gn) gn = n;
    if (gn > n) {
        tg_run_free(&run);
        return tg_usage_error("TEST_GROUP_INSTANCE_COUNT (%lld) is larger than TEST_INSTANCE_COUNT (%lld)", gn, n);
    }
    ic.instance_count = (int)n;
    ic.group_id = tg_env_or("TEST_GROUP_ID", "single");
    ic.group_instance_count = (int)gn;
    /* instances that must meet need one run id: a fresh one each would
     * never meet (each would wait alone until its deadline) */
    if (n > 1 && !o->run_id && !(getenv("TEST_RUN") && *getenv("TEST_RUN"))) {
        tg_run_free(&run);
        return tg_usage_error("TEST_RUN is not set, but TEST_INSTANCE_COUNT is %lld: the instances of a run must "
                              "share its id (a Testground runner sets TEST_RUN; by hand, set it or pass --run-id "
                              "to every instance)", n);
    }
    int sidecar = 0;
    const char *sc = getenv("TEST_SIDECAR");
    if (!status && sc && *sc && tg_parse_bool(sc, &sidecar) < 0)
        status = tg_usage_error("TEST_SIDECAR is not true or false: \"%s\"", sc);
    ic.sidecar = sidecar;
    ic.ip = tg_env_or("TG_INSTANCE_IP", "127.0.0.1");
    ic.name = getenv("TG_INSTANCE_NAME");
    if (o->outputs) ic.outputs = o->outputs;
    else if (getenv("TEST_OUTPUTS_PATH") && *getenv("TEST_OUTPUTS_PATH")) ic.outputs = getenv("TEST_OUTPUTS_PATH");
    else {
        snprintf(outbuf, sizeof outbuf, "outputs/%s/%s/0", run.run_id, ic.group_id);
        ic.outputs = outbuf;
    }
    if (!status && tg_mkdir_p(ic.outputs) < 0)
        status = tg_usage_error("cannot create the outputs folder \"%s\": %s", ic.outputs, strerror(errno));
    if (status) {
        tg_run_free(&run);
        return status;
    }
    /* absolute, so that a plan that changes directory still finds it */
    if (realpath(ic.outputs, absout)) ic.outputs = absout;
    int own_temp = 0;           /* made here: removed at the end */
    if (getenv("TEST_TEMP_PATH") && *getenv("TEST_TEMP_PATH")) ic.temp = getenv("TEST_TEMP_PATH");
    else {
        snprintf(tmpbuf, sizeof tmpbuf, "%s/tgrun-%s-XXXXXX", tg_env_or("TMPDIR", "/tmp"), run.run_id);
        own_temp = mkdtemp(tmpbuf) != NULL;
        ic.temp = own_temp ? tmpbuf : "/tmp";
    }

    tg_redis_addr_t addr;
    int given = tg_run_redis_target(o, &addr);
    if (given == 2) {
        tg_run_free(&run);
        return 2;
    }
    /* with a sync service, Redis only when one is given (for the
     * primitives the service does not have) */
    const tg_redis_addr_t *redis = run.sync_host[0] && given == 1 ? NULL : &addr;

    uv_loop_t loop;
    uv_loop_init(&loop);
    tg_rt_t rt;
    tg_rt_init(&rt, &loop);
    rt.deadline = tg_rt_now() + o->timeout;
    /* a local runner's instance: the run's deadline as Unix time, so that
     * one that started late (a container) still ends with the run */
    const char *dl = getenv("TG_DEADLINE");
    double abs;
    if (dl && *dl && tg_parse_number(dl, &abs) == 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double d = tg_rt_now() + (abs - ((double)now.tv_sec + now.tv_nsec / 1e9));
        if (d < rt.deadline) rt.deadline = d;
    }
    rt.lua_dir = getenv("TG_LUA_DIR");
    rt.on_inst_done = on_single_done;
    tg_rt_handle_signals(&rt);
    tg_inst_t *inst = tg_inst_new(&rt);
    status = 2;
    if (!inst) { fprintf(stderr, "tgrun: out of memory\n"); goto out; }
    if ((status = tg_run_load_plan(inst, o->plan_path, o->case_name)) != 0) goto out;
    tg_run_set_case(&run, tg_run_case_of(inst));
    if ((status = tg_run_configure(inst, &run, &ic)) != 0) goto out;
    /* what the plan declares, before anything runs; a local runner's
     * children stay quiet about undeclared parameters (it said it once) */
    if ((status = tg_run_check_params(inst, &run.params, run.case_name, ic.instance_count,
                                      !(parent && *parent))) != 0)
        goto out;
    int crc = tg_run_connect(&rt, &run, redis, err, sizeof err);
    if (crc < 0) {
        status = tg_run_connect_error(crc, err);
        goto out;
    }
    if ((status = tg_run_start(inst)) != 0) goto out;
    uv_run(&loop, UV_RUN_DEFAULT);
    status = tg_run_result(inst);
out:
    tg_run_shutdown(&rt);
    if (own_temp) tg_rm_tree(tmpbuf, "/tgrun-");
    tg_run_free(&run);
    return status;
}
