/*
 * tg_run.h -- setting a run up, the same way for every way of running it:
 * the single instance a Testground runner starts (tg_run_single), the
 * local runner's processes (each of which is a single instance) and its
 * in-process instances (tg_inproc.c).
 *
 *  - tg_run_t: what the whole run shares -- plan name, run id, case,
 *    parameters, the Redis key prefix and the keys' TTL -- resolved once
 *    from the options and the TEST_* environment.
 *  - An instance: a lua_State with the plan loaded and its case picked
 *    (tg_run_load_plan), its configuration table filled in
 *    (tg_run_configure), its main task started (tg_run_start) and, once
 *    that ended, its exit status (tg_run_result).
 *  - The runtime's Redis side: the transport connected and the units that
 *    wait on it attached (tg_run_connect); tg_run_shutdown takes it all down
 *    in the one safe order.
 *
 * Status convention: functions return 0 on success and 2 (the exit status
 * of a bad usage or configuration) after printing one line "tgrun: ..."
 * that says what and how to fix it.
 */
#ifndef TG_RUN_H
#define TG_RUN_H

#include "tg_addr.h"
#include "tg_fs.h"
#include "tg_params.h"
#include "tg_rt.h"

#define TG_VERSION "0.1.0"
#define TG_MAX_GROUPS 64
#define TG_MAX_INSTANCES 1000000

typedef struct tg_group {
    char name[64];
    long count;
} tg_group_t;

/* The command line (main.c parses it). */
typedef struct tg_opts {
    int instances;              /* 0: single instance from TEST_* */
    const char *case_name;
    tg_kvlist_t params;         /* --param, in order */
    tg_group_t groups[TG_MAX_GROUPS];
    int ngroups;
    const char *redis_url;
    const char *sync_url;       /* --sync ws://HOST:PORT */
    double timeout;
    double grace;               /* local runs: after the deadline, before SIGTERM */
    const char *run_id;
    const char *outputs;
    const char *plan_path;
    double redis_retry;         /* seconds to get a dropped connection back (0: never) */
    int inproc, quiet, join;
    int docker;                 /* --docker: each instance its own container */
    const char *image;          /* --docker IMAGE; NULL: tgrun's own image */
    int instance_total;         /* --instance-count N: the whole run's size (0: -n) */
    int instance_offset;        /* --instance-offset O: this host's first index */
    int offset_given;
    const char *subnet;         /* --subnet: the instances' data network */
    int no_trace;               /* --no-trace: no trace.jsonl, no report at the end */
    int help_params;            /* --help-params: list the declared parameters, run nothing */
} tg_opts_t;

/* What every instance of the run shares. */
typedef struct tg_run {
    const tg_opts_t *o;
    char plan[256], run_id[64], case_name[256];
    tg_kvlist_t params;         /* TEST_INSTANCE_PARAMS, then --param */
    char prefix[1024];          /* run:<run>:plan:<plan>:case:<case> */
    size_t plen;
    char ttl[24];               /* seconds every key of the run lives */
    /* the sync service (--sync, else SYNC_SERVICE_HOST/PORT); host "" = none */
    char sync_host[256], sync_path[256], sync_url[600];
    int sync_port;
    int trace;                  /* instances write <outputs>/trace.jsonl (not --no-trace, TG_TRACE) */
} tg_run_t;

/* One instance's place in the run (strings are borrowed). */
typedef struct tg_instcfg {
    const char *group_id, *outputs, *temp, *ip;
    int instance_count, group_instance_count, sidecar;
    const char *label;          /* in-process runs: "group[index]" for output lines */
    const char *name;           /* the runner's "group[index]" (TG_INSTANCE_NAME), or NULL */
    const char *subnet;         /* the data network; NULL: TEST_SUBNET, else loopback */
    int quiet_stdout;           /* in-process runs on a terminal: only failures print */
    int temp_lazy;              /* temp is not made yet: env.temp_path makes it on first use */
} tg_instcfg_t;

/* Print "tgrun: <message>" on stderr and return 2. */
int tg_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Have the kernel send this process SIGTERM when its parent (pid parent)
 * ends; exit at once if it has ended already. */
void tg_die_with_parent(long parent);
/* The full path of program name on PATH into out.  0, or -1 (not there). */
int tg_find_on_path(const char *name, char *out, size_t len);
/* The value of environment variable name, or dflt when unset or empty. */
const char *tg_env_or(const char *name, const char *dflt);

/* Resolve the run's plan name, run id (a fresh one when neither --run-id
 * nor TEST_RUN says) and parameters.  0 or 2 (printed). */
int tg_run_init(tg_run_t *run, const tg_opts_t *o);
/* The case is known (the plan was loaded): the key prefix follows. */
void tg_run_set_case(tg_run_t *run, const char *case_name);
void tg_run_free(tg_run_t *run);

/* Load the plan into inst and pick its case (wanted, else TEST_CASE, else
 * the plan's only case); the case function goes to the registry
 * ("tg.case_fn"), the plan's result too ("tg.plan": what it declares), and
 * the case's name to config.case.  0 or 2 (printed). */
int tg_run_load_plan(tg_inst_t *inst, const char *plan_path, const char *wanted);
/* Only run the plan's chunk, for what it declares (registry "tg.plan";
 * tg.params): no case is picked.  0 or 2 (printed). */
int tg_run_load_decl(tg_inst_t *inst, const char *plan_path);
/* The run's parameters against what the loaded plan declares for its case
 * (tg.params.check): a value of the wrong type or not allowed, a missing
 * one without default, an instance count outside the declared bounds
 * (instances 0: not checked) -- one line, 2.  With warn, undeclared
 * parameters are warnings on stderr.  0 or 2 (printed). */
int tg_run_check_params(tg_inst_t *inst, const tg_kvlist_t *params, const char *case_name, int instances,
                        int warn);
/* The case's name that tg_run_load_plan picked (owned by inst's state). */
const char *tg_run_case_of(tg_inst_t *inst);
/* Fill inst's configuration table ("tg.config") and, when the run is
 * traced, open the instance's trace (<outputs>/trace.jsonl).  0 or 2
 * (printed). */
int tg_run_configure(tg_inst_t *inst, const tg_run_t *run, const tg_instcfg_t *ic);
/* Start inst's main task: tg.instance.main(case_fn).  0 or 2. */
int tg_run_start(tg_inst_t *inst);
/* After the main task ended: its exit status (0/1/2); the first error line
 * goes to inst->error. */
int tg_run_result(tg_inst_t *inst);

/* --redis, else REDIS_HOST/REDIS_PORT: 0; neither given: 1 (a local default
 * in *a); bad: 2 (printed). */
int tg_run_redis_target(const tg_opts_t *o, tg_redis_addr_t *a);
/* Connect rt for run: to its sync service when it has one (tg_svc), and
 * to Redis at addr (NULL: none) with the units that wait on it attached
 * (barriers, topics, tickets, sessions), marking the run (P:tg:run holds
 * this launch's id; a reconnect checks it is still there).  0; -1 with one
 * sentence in err (Redis); -2 with one sentence in err that says what to
 * do (the sync service, or another launch of the run id owns the keys and
 * --join was not given). */
int tg_run_connect(tg_rt_t *rt, const tg_run_t *run, const tg_redis_addr_t *addr, char *err, size_t errlen);
/* Print tg_run_connect's error with the hint that fits it; returns 2. */
int tg_run_connect_error(int rc, const char *err);
/* Tear the runtime down: instances, the units, the transport, the
 * runtime's handles; the loop must close. */
void tg_run_shutdown(tg_rt_t *rt);

/* The single-instance run that a Testground runner starts.  The exit status. */
int tg_run_single(const tg_opts_t *o);

#endif
