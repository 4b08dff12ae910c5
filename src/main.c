/*
 * main.c -- the tgrun command line: options, and which way of running the
 * plan they ask for.  Everything else lives in the units it calls:
 * tg_run.c (the single instance a Testground runner starts),
 * tg_local.c (tgrun -n, in processes or in this process) and tg_report.c
 * (tgrun report RUN_DIR).
 *
 * Exit status: 0 every instance succeeded; 1 a plan failed or crashed; 2 bad
 * usage or configuration, with one line on stderr that says what and how to
 * fix it.
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_local.h"
#include "tg_params.h"
#include "tg_report.h"
#include "tg_run.h"
#include "tg_scalar.h"

static void usage(FILE *f) {
    fputs(
"usage: tgrun [options] PLAN.lua             run one instance (env from TEST_*)\n"
"       tgrun -n N [options] PLAN.lua        run N local instances, one process each\n"
"       tgrun -n N --inproc [options] PLAN.lua  run N instances in this process\n"
"       tgrun report [--out DIR] RUN_DIR     timeline.html and trace.json of a finished run\n"
"\n"
"  -n, --instances N      local run with N instances\n"
"  -c, --case NAME        test case (default: TEST_CASE, else the plan's only case)\n"
"  -p, --param KEY=VALUE  test parameter, repeatable\n"
"  -g, --group NAME=COUNT composition group of a local run, repeatable\n"
"      --redis URL        redis://[:password@]host[:port][/db] or unix:///path\n"
"      --timeout SECONDS  deadline of the whole run (default 600)\n"
"      --grace SECONDS    local run: how long instances get after the deadline\n"
"                         before they are stopped (default 5)\n"
"      --run-id ID        run id (default: TEST_RUN, else a fresh one)\n"
"      --outputs DIR      where run.out and results.out go\n"
"      --inproc           with -n: all instances in one process\n"
"      --no-trace         write no trace.jsonl (and, with -n, no timeline at the\n"
"                         end); TG_TRACE=0 does the same\n"
"  -q, --quiet            local run: no live progress line\n"
"  -h, --help, --version\n", f);
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
        {"no-trace", no_argument, 0, 'X'},
        {"grace", required_argument, 0, 'G'},
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
    o->grace = 5;
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
        case 'G':
            if (tg_parse_number(optarg, &d) < 0 || d < 0 || d > 3600)
                return tg_usage_error("--grace needs a number of seconds from 0 to 3600, got \"%s\"", optarg);
            o->grace = d;
            break;
        case 'I': o->run_id = optarg; break;
        case 'O': o->outputs = optarg; break;
        case 'P': o->inproc = 1; break;
        case 'X': o->no_trace = 1; break;
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

int main(int argc, char **argv) {
    tg_opts_t o = {0};
    /* A peer or child that goes away must give an error, not kill tgrun. */
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "report") == 0) return tg_report_main(argc - 1, argv + 1);
    int rc = parse_opts(argc, argv, &o);
    if (rc == 0) rc = o.instances ? tg_local_run(&o) : tg_run_single(&o);
    tg_kvlist_free(&o.params);
    return rc;
}
