/*
 * tg_inproc.c -- `tgrun -n N --inproc`: N instances in this process, on
 * one loop, one Lua state (each instance a thread of it with its own
 * globals: tg_space.h) and one pair of Redis connections.  Each
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
    tg_rt_handle_signals(&rt);
    if (r->tty) setvbuf(stdout, NULL, _IOLBF, 0);
    int status = 2, summarized = 0;

    int crc = tg_run_connect(&rt, &r->run, r->have_redis ? &r->addr : NULL, err, sizeof err);
    if (crc < 0) {
        status = tg_run_connect_error(crc, err);
        goto out;
    }

    for (int i = 0; i < r->n; i++) {
        tg_child_t *c = &r->kids[i];
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s/%s/%d", r->tmpdir, r->groups[c->group].name, c->index);
        tg_inst_t *inst = tg_inst_new(&rt);
        /* (its temp folder is made when the plan first asks for it:
         * env.temp_path -- most never do, and ten thousand folders cost) */
        if (!inst || tg_mkdir_p(c->outdir) < 0) {
            fprintf(stderr, "tgrun: cannot set up %s: %s\n", c->label, inst ? strerror(errno) : "out of memory");
            continue;
        }
        inst->index = r->offset + i;
        inst->user = c;
        tg_instcfg_t ic = {0};
        ic.group_id = r->groups[c->group].name;
        ic.instance_count = r->total;
        ic.group_instance_count = (int)r->groups[c->group].count;
        ic.outputs = c->outdir;
        ic.temp = tmp;
        ic.temp_lazy = 1;
        ic.ip = "127.0.0.1";
        ic.subnet = r->o->subnet;           /* then env.ip is this host's address in it */
        ic.label = c->label;
        ic.quiet_stdout = r->tty;
        if (tg_run_load_plan(inst, r->o->plan_path, r->run.case_name) != 0
            || tg_run_configure(inst, &r->run, &ic) != 0 || tg_run_start(inst) != 0) {
            status = 2;
            goto out;
        }
        c->spawned = 1;
        r->running++;
    }
    uv_timer_t progress, watchdog;
    uv_timer_init(&loop, &progress);
    uv_timer_init(&loop, &watchdog);
    progress.data = watchdog.data = r;
    if (r->tty) uv_timer_start(&progress, on_inproc_progress, 0, 250);
    uv_timer_start(&watchdog, on_inproc_watchdog, (uint64_t)((r->o->timeout + r->o->grace) * 1000), 0);
    if (rt.L) lua_gc(rt.L, LUA_GCCOLLECT);      /* leave no set-up garbage behind */
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

