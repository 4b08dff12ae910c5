/*
 * tg_inproc.c -- `tgrun -n N --inproc`: N instances in this process, one
 * lua_State each, on one loop and one pair of Redis connections.  Each
 * tg_child_t stands for an instance instead of a process, so that the
 * summary is the same as for processes.
 */
#define _POSIX_C_SOURCE 200809L
#include "tg_local.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>

/* N instances in this process: one lua_State each, one loop, one pair of
 * Redis connections.  Each child_t stands for an instance instead of a
 * process, so that the summary is the same. */
static void on_inproc_done(tg_inst_t *inst) {
    tg_child_t *c = inst->user;
    tg_local_t *r = c->run;
    c->exited = 1;
    c->status = tg_run_result(inst);
    if (inst->error && !c->error) tg_local_set_error(&c->error, inst->error, strlen(inst->error));
    c->outcome = c->status == 0 ? TG_OUT_SUCCESS : TG_OUT_FAILURE;
    c->unfinished = inst->rt->interrupts > 0;
    if (--r->running == 0) uv_stop(inst->rt->loop);
}

static void on_inproc_progress(uv_timer_t *h) {
    tg_local_on_progress(h);
}

static void on_inproc_watchdog(uv_timer_t *h) {
    tg_local_t *r = h->data;
    tg_rt_t *rt = r->rt;
    if (!r->timed_out) {
        /* the run's deadline passed and some wait did not end by itself */
        r->timed_out = 1;
        tg_local_clear_progress(r);
        fprintf(stderr, "tgrun: the run's deadline (%g s) has passed: stopping %d instance(s)\n",
                r->o->timeout, r->running);
        rt->interrupts++;
        tg_rt_interrupt(rt, "the run's deadline");
        uv_timer_start(h, on_inproc_watchdog, TG_KILL_SECS * 1000, 0);
        return;
    }
    /* still stuck (plan code that never yields cannot be interrupted): give up */
    uv_stop(rt->loop);
}

int tg_inproc_run(tg_local_t *r) {
    uv_loop_t loop;
    tg_rt_t rt;
    char err[600];
    uv_loop_init(&loop);
    tg_rt_init(&rt, &loop);
    r->rt = &rt;
    rt.deadline = tg_rt_now() + r->o->timeout;
    rt.lua_dir = getenv("TG_LUA_DIR");
    rt.on_inst_done = on_inproc_done;
    rt.strip = 1;
    tg_rt_handle_signals(&rt);
    if (r->tty) setvbuf(stdout, NULL, _IOLBF, 0);
    int status = 2, summarized = 0;

    tg_redis_addr_t addr;
    if (r->redis_url[0]) {
        if (tg_redis_addr_parse(r->redis_url, &addr, err, sizeof err) < 0) {
            status = tg_usage_error("%s", err);
            goto out;
        }
    } else if (tg_run_redis_target(r->o, &addr) == 2) goto out;
    if (tg_run_connect(&rt, &r->run, &addr, err, sizeof err) < 0) {
        status = tg_usage_error("%s", err);
        goto out;
    }

    int i = 0;
    for (int g = 0; g < r->ngroups; g++) {
        for (long j = 0; j < r->groups[g].count; j++, i++) {
            tg_child_t *c = &r->kids[i];
            char tmp[4200];
            c->run = r;
            c->group = g;
            c->index = (int)j;
            snprintf(c->label, sizeof c->label, "%s[%ld]", r->groups[g].name, j);
            c->outdir = tg_local_outdir(r, g, j);
            snprintf(tmp, sizeof tmp, "%s/%s/%ld", r->tmpdir, r->groups[g].name, j);
            tg_inst_t *inst = tg_inst_new(&rt);
            if (!inst || !c->outdir || tg_mkdir_p(c->outdir) < 0 || tg_mkdir_p(tmp) < 0) {
                fprintf(stderr, "tgrun: cannot set up %s: %s\n", c->label, inst ? strerror(errno) : "out of memory");
                continue;
            }
            inst->index = i;
            inst->user = c;
            tg_instcfg_t ic = {0};
            ic.group_id = r->groups[g].name;
            ic.instance_count = r->n;
            ic.group_instance_count = (int)r->groups[g].count;
            ic.outputs = c->outdir;
            ic.temp = tmp;
            ic.ip = "127.0.0.1";
            ic.label = c->label;
            ic.quiet_stdout = r->tty;
            if (tg_run_load_plan(inst, r->o->plan_path, r->run.case_name) != 0
                || tg_run_configure(inst, &r->run, &ic) != 0 || tg_run_start(inst) != 0) {
                status = 2;
                goto out;
            }
            lua_gc(inst->L, LUA_GCCOLLECT);     /* leave no set-up garbage behind */
            c->spawned = 1;
            r->running++;
        }
    }
    uv_timer_t progress, watchdog;
    uv_timer_init(&loop, &progress);
    uv_timer_init(&loop, &watchdog);
    progress.data = watchdog.data = r;
    if (r->tty) uv_timer_start(&progress, on_inproc_progress, 0, 250);
    uv_timer_start(&watchdog, on_inproc_watchdog, (uint64_t)((r->o->timeout + r->o->grace) * 1000), 0);
    if (r->running > 0) uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&progress, NULL);
    uv_close((uv_handle_t *)&watchdog, NULL);
    for (int k = 0; k < r->n; k++) {
        tg_child_t *c = &r->kids[k];
        if (c->spawned && !c->exited) {     /* stopped by the watchdog */
            c->unfinished = 1;
            tg_local_set_error(&c->error, "did not yield to the runtime after the deadline", 47);
            c->outcome = TG_OUT_FAILURE;
        }
    }
    status = tg_local_summarize(r);
    summarized = 1;
out:
    r->rt = NULL;
    tg_run_shutdown(&rt);
    if (summarized) tg_local_conclude(r);       /* the instances' memory is free again */
    return status;
}

