/*
 * tg_local.c -- the local runner's set-up and the choice between processes
 * and one process; the progress line and summary are tg_summary.c; see
 * tg_local.h for how the runner is split.
 *
 *  - Redis: --redis or REDIS_HOST/REDIS_PORT when given; else a private
 *    redis-server (tg_redisd.c), stopped at the end; with --docker always
 *    the private one, listening on the containers' network too.
 *  - A share: with --instance-count N --instance-offset O, the -n K
 *    instances here are the run's O..O+K-1 (place_kids), which needs the
 *    Redis and the run id every host is given.
 *  - Output: without a terminal every line of every instance is printed with
 *    its "group[index]" prefix; on a terminal one live progress line stands in
 *    for the events (failures and stderr still print).  Each instance writes
 *    its files under <outputs>/<run>/<group>/<index>/.
 *  - Ending: nothing is left behind: every child (and the private Redis) is
 *    reaped, and the temp folder removed, before tgrun exits; with --docker
 *    last of all the containers and the network (tg_docker_teardown).
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include "tg_local.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>

#include "tg_docker.h"
#include "tg_rfc3339.h"
#include "tg_svc.h"

/* ---- ending -------------------------------------------------------------- */


/* ---- tgrun -n N ---------------------------------------------------------- */

/* Load the plan once in this process, so that a plan that does not compile,
 * an unknown case or a parameter the plan declares otherwise is one line
 * before anything starts; the case it picks names the run's keys.  0 or 2. */
static int load_check(tg_local_t *r) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    tg_rt_t rt;
    tg_rt_init(&rt, &loop);
    rt.lua_dir = getenv("TG_LUA_DIR");
    tg_inst_t *inst = tg_inst_new(&rt);
    int rc = inst ? tg_run_load_plan(inst, r->o->plan_path, r->o->case_name) : tg_usage_error("out of memory");
    if (rc == 0) tg_run_set_case(&r->run, tg_run_case_of(inst));
    if (rc == 0) rc = tg_run_check_params(inst, &r->run.params, r->run.case_name, r->n, 1);
    tg_run_shutdown(&rt);
    return rc;
}

/* The run's size and this runner's share of it: -n K alone is a whole run
 * of K; with --instance-count N and --instance-offset O this runner runs
 * indices O..O+K-1 of a run of N, which other runners (other hosts) share:
 * they must meet in one Redis under one run id.  0 or 2. */
static int set_share(tg_local_t *r) {
    const tg_opts_t *o = r->o;
    r->total = o->instance_total ? o->instance_total : o->instances;
    r->offset = o->instance_offset;
    if (r->offset + r->n > r->total)
        return tg_usage_error("-n %d from --instance-offset %d goes past the run's %d instances "
                              "(--instance-count): the last index is %d", r->n, r->offset, r->total, r->total - 1);
    if (r->n == r->total) return 0;
    if (o->docker)
        return tg_usage_error("--docker runs its own Redis on a private network: a run shared with other "
                              "hosts (--instance-count) cannot use it");
    tg_redis_addr_t a;
    int rt = tg_run_redis_target(o, &a);
    if (rt == 2) return 2;
    if (rt == 1)
        return tg_usage_error("a share of a run (%d of %d instances) needs the Redis every host uses: "
                              "give --redis URL (or REDIS_HOST)", r->n, r->total);
    if (!o->run_id && !*tg_env_or("TEST_RUN", ""))
        return tg_usage_error("a share of a run (%d of %d instances) needs the run id every host uses: "
                              "give --run-id ID (the same on every host)", r->n, r->total);
    return 0;
}

/* The groups of the run: -g NAME=COUNT (they must add up to the run's
 * size), or one group "single".  0 or 2. */
static int set_groups(tg_local_t *r) {
    const tg_opts_t *o = r->o;
    if (!o->ngroups) {
        snprintf(r->groups[0].name, sizeof r->groups[0].name, "single");
        r->groups[0].count = r->total;
        r->ngroups = 1;
        return 0;
    }
    long sum = 0;
    for (int i = 0; i < o->ngroups; i++) {
        for (int j = 0; j < i; j++)
            if (strcmp(o->groups[i].name, o->groups[j].name) == 0)
                return tg_usage_error("group \"%s\" is given twice", o->groups[i].name);
        sum += o->groups[i].count;
    }
    if (sum != r->total)
        return tg_usage_error("the groups add up to %ld instances but %s says %d: make the counts add up",
                              sum, o->instance_total ? "--instance-count" : "-n", r->total);
    memcpy(r->groups, o->groups, sizeof r->groups);
    r->ngroups = o->ngroups;
    return 0;
}

/* This runner's instances: global indices offset..offset+n-1, in group
 * order; each knows its group, its index in the group, its label and its
 * outputs folder.  0 or 2. */
static int place_kids(tg_local_t *r) {
    r->kids = calloc((size_t)r->n, sizeof *r->kids);
    if (!r->kids) return tg_usage_error("out of memory");
    int i = 0, k = 0;
    for (int g = 0; g < r->ngroups; g++) {
        for (long j = 0; j < r->groups[g].count; j++, i++) {
            if (i < r->offset || i >= r->offset + r->n) continue;
            tg_child_t *c = &r->kids[k++];
            c->run = r;
            c->group = g;
            c->index = (int)j;
            snprintf(c->label, sizeof c->label, "%s[%ld]", r->groups[g].name, j);
            if (!(c->outdir = tg_local_outdir(r, g, j))) return tg_usage_error("out of memory");
        }
    }
    return 0;
}

static void free_kids(tg_local_t *r) {
    if (!r->kids) return;
    for (int k = 0; k < r->n; k++) {
        free(r->kids[k].error);
        free(r->kids[k].outdir);
        free(r->kids[k].stderr_first);
        free(r->kids[k].lo.buf);
        free(r->kids[k].le.buf);
    }
    free(r->kids);
}

int tg_local_run(const tg_opts_t *o) {
    tg_local_t *r = calloc(1, sizeof *r);
    if (!r) return tg_usage_error("out of memory");
    r->o = o;
    r->n = o->instances;
    char *pstr = NULL;
    int status = tg_run_init(&r->run, o);
    if (status == 0) status = set_share(r);
    if (status == 0) status = set_groups(r);
    if (status == 0 && !(pstr = tg_params_format(&r->run.params)))
        status = tg_usage_error("parameters cannot be passed on: a key or value contains '|' or '='");
    /* the plan must load and name its case before anything starts */
    if (status == 0) status = load_check(r);
    if (status != 0) goto out;
    status = 2;
    snprintf(r->outputs, sizeof r->outputs, "%s", o->outputs ? o->outputs : "outputs");
    if (tg_mkdir_p(r->outputs) < 0) {
        status = tg_usage_error("cannot create the outputs folder \"%s\": %s", r->outputs, strerror(errno));
        goto out;
    }
    size_t exelen = sizeof r->exe;
    if (uv_exepath(r->exe, &exelen) != 0) { status = tg_usage_error("cannot find my own binary"); goto out; }

    /* enough descriptors for 2 pipes per instance */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    uv_loop_init(&r->loop);
    r->L = luaL_newstate();
    snprintf(r->tmpdir, sizeof r->tmpdir, "%s/tgrun-%s-XXXXXX", tg_env_or("TMPDIR", "/tmp"), r->run.run_id);
    if (!mkdtemp(r->tmpdir)) {
        status = tg_usage_error("cannot create a temp dir: %s", strerror(errno));
        r->tmpdir[0] = '\0';
        goto out_loop;
    }

    int rc = tg_run_redis_target(o, &r->addr);
    if (rc == 2) goto out_loop;
    if (o->docker) {
        if (rc == 0) {
            status = tg_usage_error("--docker runs its own Redis on the run's private network, which "
                                    "nothing else reaches: leave out --redis (and unset REDIS_HOST/REDIS_PORT)");
            goto out_loop;
        }
        if (r->run.sync_host[0]) {
            status = tg_usage_error("--docker and --sync exclude each other: the containers' network is "
                                    "internal, a sync service outside it cannot be reached");
            goto out_loop;
        }
        if (!(r->dk = calloc(1, sizeof *r->dk))) { status = tg_usage_error("out of memory"); goto out_loop; }
        if ((status = tg_docker_setup(r->dk, &r->loop, r->run.run_id, o->image, o->plan_path, r->exe,
                                      r->tmpdir, o->subnet)) != 0)
            goto out_loop;
        status = 2;
    }
    /* with a sync service and no Redis given, there is no Redis at all */
    r->have_redis = !(rc == 1 && r->run.sync_host[0]);
    if (rc == 1 && r->have_redis) {
        if (tg_redisd_start(&r->redisd, &r->loop, r->tmpdir, r->n * 4 + 1000, r->dk ? r->dk->gateway : NULL,
                            r->exe) != 0)
            goto out_loop;
        /* containers reach it on the run's bridge, processes on its socket */
        char err[256];
        if (tg_redis_addr_parse(r->dk ? r->redisd.tcp_url : r->redisd.url, &r->addr, err, sizeof err) < 0) {
            status = tg_usage_error("%s", err);
            goto out_loop;
        }
    }
    /* the instances get the address without its credentials (a command
     * line is visible to every user of the machine): those go by
     * environment (tg_super.c) */
    tg_redis_addr_url(&r->addr, r->redis_url, sizeof r->redis_url);

    if (r->run.sync_host[0]) {
        /* a sync service nobody can reach is one line, before anything starts */
        char why[700];
        if (tg_svc_probe(&r->loop, r->run.sync_host, r->run.sync_port, r->run.sync_path, 5, why, sizeof why) < 0) {
            status = tg_usage_error("%s (start one, e.g. `tgrun serve`, or fix --sync / SYNC_SERVICE_HOST and "
                                    "SYNC_SERVICE_PORT)", why);
            goto out_loop;
        }
    }

    r->tty = !o->quiet && isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
    if ((status = place_kids(r)) != 0) goto out_loop;
    status = 2;
    char start[48], rnd[16];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tg_rfc3339_format((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, start, sizeof start);
    /* this launch of the run: the instances mark the run's keys with it,
     * so that another launch with the same run id is noticed */
    tg_rt_random_id(rnd, sizeof rnd);
    snprintf(r->launch, sizeof r->launch, "launched %s (%s)", start, rnd);
    /* the shares of one run start on several hosts, each its own launch:
     * they are one run by intent (the same --run-id was given to each) */
    if (r->total != r->n || o->offset_given)
        snprintf(r->launch, sizeof r->launch, "shares of a run of %d", r->total);
    setenv("TG_LAUNCH", r->launch, 1);
    r->t0 = tg_local_now();
    status = o->inproc ? tg_inproc_run(r) : tg_super_run(r, pstr, start);
    if (r->dk) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/%s", r->outputs, r->run.run_id);
        tg_docker_own_outputs(r->dk, dir);
    }
out_loop:
    tg_redisd_stop(&r->redisd);
    if (r->tmpdir[0]) tg_rm_tree(r->tmpdir, "/tgrun-");
    /* last: the containers and the network, checked gone; then the watchdog is dismissed */
    if (r->dk && tg_docker_teardown(r->dk) != 0 && status == 0) status = 1;
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&r->loop) != 0) fprintf(stderr, "tgrun: internal: handles left open\n");
    if (r->L) lua_close(r->L);
    free(r->dk);
out:
    free_kids(r);
    free(pstr);
    tg_run_free(&r->run);
    free(r);
    return status;
}
