/*
 * tg_local.h -- the local runner: `tgrun -n N plan.lua` runs N instances
 * of one plan on this machine and reports per group.  The units below
 * share the records in this header:
 *
 *  - tg_local.c: the run's set-up (groups, parameters, this host's share of
 *    a run that spans hosts, the plan checked before anything starts,
 *    outputs and temp folders, the private redis-server, the docker
 *    backend's set-up and teardown) and the choice between the runners.
 *  - tg_summary.c: the live progress line, first errors, the summary
 *    (tg_local_report also prints tgrun observe's, tg_observe.c).
 *  - tg_super.c: the process supervisor -- each instance its own process,
 *    or with --docker its own container (tg_docker.c), with the TEST_*
 *    environment a Testground runner gives it, its stdout read as event
 *    lines, the deadline and Ctrl-C.
 *  - tg_inproc.c: every instance a lua_State in this process (--inproc).
 *
 * Ownership: the tg_local_t lives on tg_local_run's heap and owns the
 * children's records and their strings; handles inside it are all closed
 * before its loop is closed.
 */
#ifndef TG_LOCAL_H
#define TG_LOCAL_H

#include <stdint.h>
#include <lua.h>
#include <uv.h>

#include "tg_redisd.h"
#include "tg_rt.h"
#include "tg_run.h"

#define TG_KILL_SECS 3          /* after SIGTERM, before SIGKILL */

typedef struct tg_linebuf {
    char *buf;
    size_t len, cap;
} tg_linebuf_t;

/* One instance, as the summary sees it (a process, or an in-process state). */
typedef struct tg_child {
    struct tg_local *run;
    uv_process_t proc;
    uv_pipe_t out, err;
    int group;                  /* index into run->groups */
    int index;                  /* 0-based within its group */
    char label[96];
    char *outdir;               /* malloc'd */
    int spawned, exited, handles, unfinished;
    int pid;                    /* a process instance's pid (and process group) */
    int64_t status;
    int signal;
    int outcome;                /* TG_OUT_* from its event lines */
    char *error;                /* first error (malloc'd) */
    char *stderr_first;         /* first stderr line (malloc'd) */
    tg_linebuf_t lo, le;
} tg_child_t;

typedef struct tg_local {
    uv_loop_t loop;             /* the runner's own: children, redis-server */
    const tg_opts_t *o;
    tg_run_t run;
    tg_child_t *kids;           /* the n instances this runner runs */
    int n, running, open_handles;
    int total, offset;          /* the run has total instances; ours are offset.. */
    tg_group_t groups[TG_MAX_GROUPS];
    int ngroups;
    uv_timer_t deadline, killer, progress;
    uv_signal_t sigint, sigterm;
    tg_redisd_t redisd;
    int tty, interrupted, timed_out, termed;
    int killed;                 /* --docker: the killer removed the containers */
    double deadline_unix;       /* the run's deadline as Unix time (TG_DEADLINE) */
    double t0;
    lua_State *L;               /* only for decoding event lines */
    tg_rt_t *rt;                /* --inproc: the runtime all instances share */
    tg_redis_addr_t addr;       /* the run's Redis, with its credentials */
    int have_redis;             /* 0: a sync service alone */
    char launch[96];            /* this launch's id (TG_LAUNCH) */
    struct tg_docker *dk;       /* --docker: the containers' backend (tg_docker.c) */
    char outputs[4096], tmpdir[4096], redis_url[4300];
    char exe[4096];
    int progress_shown;
} tg_local_t;

/* tgrun -n N: run the local instances and report; returns the exit status. */
int tg_local_run(const tg_opts_t *o);

/* ---- tg_summary.c ---- */

/* Monotonic seconds. */
double tg_local_now(void);
/* Erase the live progress line (before printing anything else). */
void tg_local_clear_progress(tg_local_t *r);
/* Redraw the live progress line (a uv_timer callback; data is the run). */
void tg_local_on_progress(uv_timer_t *h);
/* Keep the first line of msg in *slot, unless *slot is already set. */
void tg_local_set_error(char **slot, const char *msg, size_t len);
/* <outputs>/<run>/<group>/<index>, malloc'd. */
char *tg_local_outdir(tg_local_t *r, int g, long j);
/* Settle each instance's outcome and print the summary; the exit status. */
int tg_local_summarize(tg_local_t *r);
/* Print the summary of instances whose outcome, error and unfinished flag
 * are settled: the totals, each group, the first error of each failed
 * instance (how = what the runner calls it: "instances here", ...).  outputs:
 * the folder to name, or NULL.  The exit status (0, 1; 2 when every
 * failure was a usage error, counted in usage). */
int tg_local_report(tg_local_t *r, const char *extra, int usage, const char *outputs);
/* The summary's last lines: the report of the run (unless --no-trace) and
 * where the outputs are; after tg_local_summarize. */
void tg_local_conclude(tg_local_t *r);

/* tg_super.c: every instance its own process; the exit status. */
int tg_super_run(tg_local_t *r, const char *params, const char *start);
/* tg_inproc.c: every instance in this process; the exit status. */
int tg_inproc_run(tg_local_t *r);

#endif
