/*
 * tg_main.h -- what the command-line front end shares between the single
 * instance run (main.c) and the local runner (tg_local.c): parsed options,
 * one instance's configuration, and the steps of starting an instance.
 */
#ifndef TG_MAIN_H
#define TG_MAIN_H

#include "tg_params.h"
#include "tg_rt.h"

#define TG_MAX_GROUPS 64

typedef struct tg_group {
    char name[64];
    long count;
} tg_group_t;

typedef struct tg_opts {
    int instances;              /* 0: single instance from TEST_* */
    const char *case_name;
    tg_kvlist_t params;         /* --param, in order */
    tg_group_t groups[TG_MAX_GROUPS];
    int ngroups;
    const char *redis_url;
    double timeout;
    const char *run_id;
    const char *outputs;
    const char *plan_path;
    int inproc, quiet;
} tg_opts_t;

/* One instance's view of the run (strings are borrowed). */
typedef struct tg_instcfg {
    const char *plan, *run_id, *case_name, *group_id, *outputs, *temp, *ip;
    int instance_count, group_instance_count, sidecar;
    const tg_kvlist_t *params;
    const char *label;          /* in-process runs: "group[index]" for output lines */
    int quiet_stdout;           /* in-process runs on a terminal: only failures print */
} tg_instcfg_t;

/* Print "tgrun: <message>" on stderr and return 2. */
int tg_usage_error(const char *fmt, ...);
void tg_random_id(char *buf, size_t len);
int tg_mkdir_p(const char *path);
/* --redis, else REDIS_HOST/REDIS_PORT: 0; neither given: 1 (a local default in *a); bad: <0 (printed). */
int tg_redis_target(const tg_opts_t *o, tg_redis_addr_t *a);
/* Fill the instance's config table (registry "tg.config"); 2 on a bad value. */
int tg_build_config(tg_inst_t *inst, const tg_opts_t *o, tg_instcfg_t *ic);
int tg_load_plan(tg_inst_t *inst, const char *plan_path, const char *wanted);
int tg_start_main(tg_inst_t *inst);
int tg_main_result(tg_inst_t *inst);
void tg_shutdown(tg_rt_t *rt);

/* tgrun -n N: run N local instances and report; returns the exit status. */
int tg_local_run(tg_opts_t *o, const char *argv0);

#endif
