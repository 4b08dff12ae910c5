/*
 * main.c -- the tgrun command line: options, and which way of running the
 * plan they ask for.  Everything else lives in the units it calls:
 * tg_run.c (the single instance a Testground runner starts), tg_local.c
 * (tgrun -n: processes, this process, or containers), tg_observe.c
 * (tgrun observe), tg_report.c (tgrun report RUN_DIR) and tg_docker.c (the
 * hidden _docker-reaper subcommand, the watchdog that --docker starts).
 *
 * Exit status: 0 every instance succeeded; 1 a plan failed or crashed; 2 bad
 * usage or configuration, with one line on stderr that says what and how to
 * fix it.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "tg_docker.h"
#include "tg_local.h"
#include "tg_observe.h"
#include "tg_params.h"
#include "tg_report.h"
#include "tg_plan.h"
#include "tg_run.h"
#include "tg_scalar.h"
#include "tg_serve.h"

/* What --version adds about the build: a sanitized binary is slower and
 * bigger, and its numbers mean nothing (bench/ and some specs ask). */
#if defined(__SANITIZE_ADDRESS__)
#define TG_BUILD_NOTE " (AddressSanitizer)"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_BUILD_NOTE " (AddressSanitizer)"
#endif
#endif
#ifndef TG_BUILD_NOTE
#define TG_BUILD_NOTE ""
#endif

static void usage(FILE *f) {
    fputs(
"usage: tgrun [options] PLAN.lua             run one instance (env from TEST_*)\n"
"       tgrun -n N [options] PLAN.lua        run N local instances, one process each\n"
"       tgrun -n N --inproc [options] PLAN.lua  run N instances in this process\n"
"       tgrun serve [--listen HOST:PORT] [--redis URL]  a Testground sync service\n"
"                              (see tgrun serve --help)\n"
"       tgrun -n N --docker [IMAGE] [options] PLAN.lua  each instance its own container\n"
"       tgrun observe --redis URL --run ID [options]  follow a run that runs elsewhere\n"
"       tgrun report [--out DIR] RUN_DIR     timeline.html and trace.json of a finished run\n"
"       tgrun manifest PLAN.lua     the Testground manifest.toml of the plan\n"
"       tgrun --help-params [-c CASE] PLAN.lua  the parameters the plan declares\n"
"\n"
"  -n, --instances N      local run with N instances\n"
"  -c, --case NAME        test case (default: TEST_CASE, else the plan's only case)\n"
"  -p, --param KEY=VALUE  test parameter, repeatable\n"
"  -g, --group NAME=COUNT composition group of a local run, repeatable\n"
"      --redis URL        redis://[:password@]host[:port][/db] or unix:///path\n"
"      --sync ws://HOST:PORT  states, barriers, topics and outcome events through\n"
"                         a Testground sync service (default: SYNC_SERVICE_HOST and\n"
"                         SYNC_SERVICE_PORT); Redis then only for the rest\n"
"      --timeout SECONDS  deadline of the whole run (default 600)\n"
"      --grace SECONDS    local run: how long instances get after the deadline\n"
"                         before they are stopped (default 5)\n"
"      --run-id ID        run id (default: TEST_RUN, else a fresh one)\n"
"      --join             take part in a run whose id another launch already used\n"
"      --redis-retry SECONDS  how long to try to get a dropped Redis connection\n"
"                         back before every wait fails (default 5; 0: never)\n"
"      --outputs DIR      where run.out and results.out go\n"
"      --inproc           with -n: all instances in one process\n"
"      --docker [IMAGE]   with -n: each instance in a container of IMAGE (default:\n"
"                         tgrun's own, built when missing) on a private network\n"
"      --instance-count N with -n K: the run has N instances across hosts ...\n"
"      --instance-offset O  ... and this host runs its indices O..O+K-1\n"
"      --subnet CIDR      with -n: the data network; each instance's env.ip is its\n"
"                         address in it (default: loopback; --docker: Docker's pick)\n"
"      --no-trace         write no trace.jsonl (and, with -n, no timeline at the\n"
"                         end); TG_TRACE=0 does the same\n"
"  -q, --quiet            local run: no live progress line\n"
"  -h, --help, --version\n", f);
}

/* Is word the plan rather than an image name?  (For `--docker IMAGE`.) */
static int looks_like_plan(const char *word) {
    size_t n = strlen(word);
    struct stat st;
    return (n > 4 && strcmp(word + n - 4, ".lua") == 0) || (stat(word, &st) == 0 && S_ISREG(st.st_mode));
}

static int parse_opts(int argc, char **argv, tg_opts_t *o) {
    static const struct option longs[] = {
        {"instances", required_argument, 0, 'n'},
        {"case", required_argument, 0, 'c'},
        {"param", required_argument, 0, 'p'},
        {"group", required_argument, 0, 'g'},
        {"redis", required_argument, 0, 'R'},
        {"sync", required_argument, 0, 'Y'},
        {"timeout", required_argument, 0, 'T'},
        {"run-id", required_argument, 0, 'I'},
        {"outputs", required_argument, 0, 'O'},
        {"inproc", no_argument, 0, 'P'},
        {"no-trace", no_argument, 0, 'X'},
        {"grace", required_argument, 0, 'G'},
        {"redis-retry", required_argument, 0, 'E'},
        {"join", no_argument, 0, 'J'},
        {"quiet", no_argument, 0, 'q'},
        {"docker", optional_argument, 0, 'D'},
        {"instance-count", required_argument, 0, 'N'},
        {"instance-offset", required_argument, 0, 'o'},
        {"subnet", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},
        {"help-params", no_argument, 0, 'H'},
        {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    char err[256];
    long long n;
    double d;
    int c;
    o->timeout = 600;
    o->grace = 5;
    o->redis_retry = 5;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:c:p:g:qh", longs, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (tg_parse_int(optarg, &n) < 0 || n < 1 || n > TG_MAX_INSTANCES)
                return tg_usage_error("-n needs a whole number of instances from 1 to %d, got \"%s\"",
                                      TG_MAX_INSTANCES, optarg);
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
        case 'Y': o->sync_url = optarg; break;
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
        case 'E':
            if (tg_parse_number(optarg, &d) < 0 || d < 0 || d > 3600)
                return tg_usage_error("--redis-retry needs a number of seconds from 0 to 3600, got \"%s\"", optarg);
            o->redis_retry = d;
            break;
        case 'J': o->join = 1; break;
        case 'I': o->run_id = optarg; break;
        case 'O': o->outputs = optarg; break;
        case 'P': o->inproc = 1; break;
        case 'X': o->no_trace = 1; break;
        case 'q': o->quiet = 1; break;
        case 'D':
            o->docker = 1;
            /* --docker=IMAGE, or --docker IMAGE when the next word is not an
             * option and not the plan (a .lua name or an existing file) */
            if (optarg) o->image = optarg;
            else if (optind < argc && argv[optind][0] != '-' && !looks_like_plan(argv[optind]))
                o->image = argv[optind++];
            if (o->image && !*o->image) return tg_usage_error("--docker= needs an image name");
            break;
        case 'N':
            if (tg_parse_int(optarg, &n) < 0 || n < 1 || n > 1000000)
                return tg_usage_error("--instance-count needs a whole number from 1 up, got \"%s\"", optarg);
            o->instance_total = (int)n;
            break;
        case 'o':
            if (tg_parse_int(optarg, &n) < 0 || n < 0 || n >= 1000000)
                return tg_usage_error("--instance-offset needs a whole number from 0 up, got \"%s\"", optarg);
            o->instance_offset = (int)n;
            o->offset_given = 1;
            break;
        case 'S':
            if (!strchr(optarg, '/') || strchr(optarg, ':'))
                return tg_usage_error("--subnet needs an IPv4 network as ADDRESS/BITS (10.1.0.0/16), got \"%s\"", optarg);
            o->subnet = optarg;
            break;
        case 'h': usage(stdout); exit(0);
        case 'H': o->help_params = 1; break;
        case 'V': printf("tgrun %s%s\n", TG_VERSION, TG_BUILD_NOTE); exit(0);
        default:
            if (optopt) return tg_usage_error("option -%c needs a value or is unknown; see tgrun --help", optopt);
            return tg_usage_error("unknown option \"%s\"; see tgrun --help", argv[optind - 1]);
        }
    }
    if (optind >= argc) return tg_usage_error("no plan given; usage: tgrun [options] PLAN.lua (see --help)");
    if (optind + 1 < argc) return tg_usage_error("one plan at a time; unexpected \"%s\"", argv[optind + 1]);
    o->plan_path = argv[optind];
    if (o->ngroups) {
        long long sum = 0;
        for (int i = 0; i < o->ngroups; i++) {
            if (o->groups[i].count > TG_MAX_INSTANCES)
                return tg_usage_error("group \"%s\" has %ld instances: a run has at most %d",
                                      o->groups[i].name, o->groups[i].count, TG_MAX_INSTANCES);
            sum += o->groups[i].count;
        }
        if (sum > TG_MAX_INSTANCES)
            return tg_usage_error("the groups add up to %lld instances: a run has at most %d", sum, TG_MAX_INSTANCES);
        if (!o->instances) o->instances = (int)sum;
    }
    if (o->inproc && !o->instances) return tg_usage_error("--inproc needs -n N");
    if (o->docker && !o->instances) return tg_usage_error("--docker needs -n N");
    if (o->docker && o->inproc) return tg_usage_error("--docker and --inproc exclude each other: choose one");
    if (o->subnet && !o->instances) return tg_usage_error("--subnet needs -n N (a single instance reads TEST_SUBNET)");
    if ((o->instance_total || o->offset_given) && !o->instances)
        return tg_usage_error("--instance-count and --instance-offset need -n K (the instances this host runs)");
    return 0;
}

/* tgrun --_guard PROGRAM ARGS...: become PROGRAM, but die (SIGTERM) with
 * the process that started us: how the local runner starts its private
 * redis-server, so that a runner that is SIGKILLed leaves nothing behind. */
static int guard(int argc, char **argv) {
    if (argc < 3) return tg_usage_error("--_guard needs a program");
    tg_die_with_parent(getppid());
    execvp(argv[2], argv + 2);
    return tg_usage_error("cannot run %s: %s", argv[2], strerror(errno));
}

int main(int argc, char **argv) {
    tg_opts_t o = {0};
    if (argc > 1 && strcmp(argv[1], "--_guard") == 0) return guard(argc, argv);
    /* A peer or child that goes away must give an error, not kill tgrun. */
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "serve") == 0) return tg_serve_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "observe") == 0) return tg_observe_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], TG_DOCKER_REAPER_CMD) == 0) return tg_docker_reaper_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "report") == 0) return tg_report_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "manifest") == 0) return tg_plan_manifest_main(argc - 1, argv + 1);
    int rc = parse_opts(argc, argv, &o);
    if (rc == 0 && o.help_params) rc = tg_plan_help_params(&o);
    else if (rc == 0) rc = o.instances ? tg_local_run(&o) : tg_run_single(&o);
    tg_kvlist_free(&o.params);
    return rc;
}
