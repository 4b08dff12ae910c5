/* tg_observe.c -- see tg_observe.h. */
#define _POSIX_C_SOURCE 200809L
#include "tg_observe.h"

#include <getopt.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <lualib.h>

#include "tg_event.h"
#include "tg_json.h"
#include "tg_local.h"
#include "tg_scalar.h"
#include "tg_text.h"

#define CALL_SECS 5             /* every command but the blocking read */

typedef struct observer {
    tg_local_t r;               /* the summary's record: kids, groups, run names */
    redisContext *c;
    char key[1200];
    char last_id[64];
    int expected;               /* the run's instance count (runenv, or -n), 0: not known yet */
    int cap;
    double deadline;
    const char *where;          /* the Redis, for messages */
} observer_t;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
}

static void usage(FILE *f) {
    fputs(
"usage: tgrun observe --redis URL --run ID [options]\n"
"  follow a run whose instances live elsewhere, from its events in Redis:\n"
"  live progress, the summary per group, the first error of each failed\n"
"  instance; exit status 0 all succeeded, 1 one failed or did not finish\n"
"\n"
"      --redis URL        the run's Redis (default REDIS_HOST/REDIS_PORT)\n"
"      --run ID           the run id (--run-id works too)\n"
"      --plan NAME        the plan's name (default: found in Redis)\n"
"  -c, --case NAME        the case (default: found in Redis)\n"
"      --timeout SECONDS  give up waiting after this long (default 600)\n"
"  -n, --instances N      the run's instance count, if its instances do not\n"
"                         record a start_event there (Go SDK instances)\n"
"  -q, --quiet            no live progress line\n", f);
}

/* ---- Redis, synchronously and bounded ------------------------------------- */

static redisReply *call(observer_t *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(o->c, fmt, ap);
    va_end(ap);
    return rep;
}

static int connect_redis(observer_t *o, const tg_redis_addr_t *a) {
    struct timeval tv = {CALL_SECS, 0};
    o->c = a->is_unix ? redisConnectUnixWithTimeout(a->path, tv) : redisConnectWithTimeout(a->host, a->port, tv);
    if (!o->c || o->c->err)
        return tg_usage_error("observe: cannot connect to Redis at %s: %s", o->where,
                              o->c ? o->c->errstr : "out of memory");
    redisSetTimeout(o->c, tv);
    redisReply *rep = NULL;
    if (a->password[0]) {
        rep = a->user[0] ? call(o, "AUTH %s %s", a->user, a->password) : call(o, "AUTH %s", a->password);
        if (!rep || rep->type == REDIS_REPLY_ERROR)
            return tg_usage_error("observe: Redis at %s refused AUTH: %s", o->where,
                                  rep ? rep->str : o->c->errstr);
        freeReplyObject(rep);
    }
    if (a->db) {
        rep = call(o, "SELECT %d", a->db);
        if (!rep || rep->type == REDIS_REPLY_ERROR)
            return tg_usage_error("observe: Redis at %s refused SELECT %d: %s", o->where, a->db,
                                  rep ? rep->str : o->c->errstr);
        freeReplyObject(rep);
    }
    return 0;
}

/* s with the glob characters of SCAN MATCH escaped. */
static void glob_escape(char *dst, size_t len, const char *s) {
    size_t o = 0;
    for (; *s && o + 2 < len; s++) {
        if (strchr("*?[]\\", *s)) dst[o++] = '\\';
        dst[o++] = *s;
    }
    dst[o] = '\0';
}

static void pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Find the run's stream: with plan and case given it is known; else SCAN
 * for run:<id>:plan:*:case:*:run_events until one appears (a run may not
 * have started yet) or the deadline.  0, or 2 (printed). */
static int find_stream(observer_t *o, const char *run, const char *plan, const char *cas) {
    if (plan && cas) {
        snprintf(o->key, sizeof o->key, "run:%s:plan:%s:case:%s:run_events", run, plan, cas);
        return 0;
    }
    char er[300], ep[300], ec[300], pattern[1000];
    glob_escape(er, sizeof er, run);
    if (plan) glob_escape(ep, sizeof ep, plan);
    if (cas) glob_escape(ec, sizeof ec, cas);
    snprintf(pattern, sizeof pattern, "run:%s:plan:%s:case:%s:run_events", er, plan ? ep : "*", cas ? ec : "*");
    for (;;) {
        tg_strv_t found = {0};
        char cursor[32] = "0";
        do {
            redisReply *rep = call(o, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
            if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
                int st = tg_usage_error("observe: SCAN on Redis at %s failed: %s", o->where,
                                        rep && rep->type == REDIS_REPLY_ERROR ? rep->str : o->c->errstr);
                if (rep) freeReplyObject(rep);
                tg_strv_free(&found);
                return st;
            }
            snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
            for (size_t i = 0; i < rep->element[1]->elements; i++) {
                const char *k = rep->element[1]->element[i]->str;
                int seen = 0;
                for (size_t j = 0; j < found.n; j++) seen |= strcmp(found.v[j], k) == 0;
                if (!seen) tg_strv_addf(&found, "%s", k);
            }
            freeReplyObject(rep);
        } while (strcmp(cursor, "0") != 0);
        if (found.n == 1) {
            snprintf(o->key, sizeof o->key, "%s", found.v[0]);
            tg_strv_free(&found);
            return 0;
        }
        if (found.n > 1) {
            char list[2000] = "";
            for (size_t j = 0; j < found.n && strlen(list) < 1500; j++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? ", " : "", found.v[j]);
            tg_strv_free(&found);
            return tg_usage_error("observe: run %s has events of several plans or cases (%s): choose with "
                                  "--plan NAME and --case NAME", run, list);
        }
        tg_strv_free(&found);
        if (stop_signal || tg_local_now() > o->deadline)
            return tg_usage_error("observe: no events of run %s in Redis at %s%s (looked for %s): check --run "
                                  "and --redis; instances record a start_event there when they start", run, o->where,
                                  stop_signal ? "" : " before the deadline", pattern);
        pause_ms(250);
    }
}

/* ---- the events -------------------------------------------------------------- */

static int group_of(observer_t *o, const char *name, long count) {
    tg_local_t *r = &o->r;
    for (int g = 0; g < r->ngroups; g++)
        if (strcmp(r->groups[g].name, name) == 0) {
            if (count > r->groups[g].count) r->groups[g].count = count;
            return g;
        }
    if (r->ngroups == TG_MAX_GROUPS) return TG_MAX_GROUPS - 1;
    snprintf(r->groups[r->ngroups].name, sizeof r->groups[0].name, "%s", name);
    r->groups[r->ngroups].count = count;
    return r->ngroups++;
}

/* The instance an entry speaks of: by its seq, else a new one. */
static tg_child_t *instance_of(observer_t *o, long seq) {
    tg_local_t *r = &o->r;
    if (seq > 0)
        for (int i = 0; i < r->n; i++)
            if (r->kids[i].index == seq) return &r->kids[i];
    if (r->n == o->cap) {
        int cap = o->cap ? o->cap * 2 : 64;
        tg_child_t *nk = realloc(r->kids, (size_t)cap * sizeof *nk);
        if (!nk) return NULL;
        r->kids = nk;
        o->cap = cap;
    }
    tg_child_t *c = &r->kids[r->n++];
    memset(c, 0, sizeof *c);
    c->index = seq > 0 ? (int)seq : 0;      /* here: the instance's global seq */
    c->group = -1;
    return c;
}

static const char *str_field(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);                          /* kept alive by the table */
    return s;
}

static long int_field(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    long v = lua_isinteger(L, -1) ? (long)lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    return v;
}

/* One entry of the stream: fields p (the event) and tg (who). */
static void on_entry(observer_t *o, const redisReply *fields) {
    tg_local_t *r = &o->r;
    lua_State *L = r->L;
    const char *p = NULL, *who = NULL;
    size_t plen = 0, wlen = 0;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const char *k = fields->element[i]->str;
        if (strcmp(k, "p") == 0) { p = fields->element[i + 1]->str; plen = fields->element[i + 1]->len; }
        if (strcmp(k, "tg") == 0) { who = fields->element[i + 1]->str; wlen = fields->element[i + 1]->len; }
    }
    lua_settop(L, 0);
    if (!p || tg_json_decode(L, p, plen) != 0 || !lua_istable(L, 1)) { lua_settop(L, 0); return; }
    tg_ev_kind_t k = tg_event_kind(L, 1);
    if (k != TG_EV_START && k != TG_EV_SUCCESS && k != TG_EV_FAILURE && k != TG_EV_CRASH) {
        lua_settop(L, 0);
        return;
    }
    if (!who || tg_json_decode(L, who, wlen) != 0 || !lua_istable(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);                                    /* ev who */
    }
    long seq = int_field(L, 2, "seq"), gseq = int_field(L, 2, "group_seq");
    tg_child_t *c = instance_of(o, seq);
    if (!c) { lua_settop(L, 0); return; }
    /* the group: the start's runenv, or the outcome's own "group" */
    lua_getfield(L, 1, k == TG_EV_START ? "start_event" : k == TG_EV_SUCCESS ? "success_event"
                       : k == TG_EV_FAILURE ? "failure_event" : "crash_event");   /* ev who body */
    if (k == TG_EV_START) {
        lua_getfield(L, 3, "runenv");                      /* ev who body runenv */
        if (lua_istable(L, 4)) {
            long n = int_field(L, 4, "instances");
            if (n > o->expected) o->expected = (int)n;
            const char *g = str_field(L, 4, "group");
            if (g) c->group = group_of(o, g, int_field(L, 4, "group_instances"));
            const char *plan = str_field(L, 4, "plan"), *cas = str_field(L, 4, "case");
            if (plan && !r->run.plan[0]) snprintf(r->run.plan, sizeof r->run.plan, "%s", plan);
            if (cas && !r->run.case_name[0]) snprintf(r->run.case_name, sizeof r->run.case_name, "%s", cas);
        }
        lua_pop(L, 1);
        c->spawned = 1;
    } else {
        const char *g = lua_istable(L, 3) ? str_field(L, 3, "group") : NULL;
        if (c->group < 0 && g) c->group = group_of(o, g, 0);
        c->exited = 1;
        c->outcome = k == TG_EV_SUCCESS ? TG_OUT_SUCCESS : k == TG_EV_FAILURE ? TG_OUT_FAILURE : TG_OUT_CRASH;
        if (k != TG_EV_SUCCESS) {
            size_t el;
            tg_event_push_error(L, 1, k);
            const char *e = lua_tolstring(L, -1, &el);
            tg_local_set_error(&c->error, e ? e : "(no message)", e ? el : 12);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);                                          /* ev who */
    if (c->group < 0) c->group = group_of(o, "?", 0);
    if (!c->label[0]) {
        const char *name = str_field(L, 2, "name"), *host = str_field(L, 2, "host");
        char base[96];
        if (name) snprintf(base, sizeof base, "%s", name);
        else if (gseq > 0) snprintf(base, sizeof base, "%s#%ld", r->groups[c->group].name, gseq);
        else snprintf(base, sizeof base, "%s#?", r->groups[c->group].name);
        if (host) snprintf(c->label, sizeof c->label, "%.60s@%.30s", base, host);
        else snprintf(c->label, sizeof c->label, "%s", base);
    }
    int important = tg_event_push_text(L, 1, k);           /* ev who text */
    if (!r->tty || important) {
        tg_local_clear_progress(r);
        printf("%s %s\n", c->label, lua_tostring(L, -1));
        fflush(stdout);
    }
    lua_settop(L, 0);
}

static void counts(observer_t *o, int *started, int *ok, int *failed) {
    *started = *ok = *failed = 0;
    for (int i = 0; i < o->r.n; i++) {
        tg_child_t *c = &o->r.kids[i];
        *started += c->spawned || c->outcome;
        if (c->outcome == TG_OUT_SUCCESS) (*ok)++;
        else if (c->outcome) (*failed)++;
    }
}

static void progress(observer_t *o) {
    tg_local_t *r = &o->r;
    int started, ok, failed;
    counts(o, &started, &ok, &failed);
    fflush(stdout);
    char of[32] = "?";
    if (o->expected) snprintf(of, sizeof of, "%d", o->expected);
    fprintf(stderr, "\r\033[Ktgrun observe: run %s: %d of %s instances started, %d running, %d succeeded, "
            "%d failed, %.1f s", r->run.run_id, started, of, started - ok - failed, ok, failed,
            tg_local_now() - r->t0);
    fflush(stderr);
    r->progress_shown = 1;
}

/* Read the stream until every instance recorded its outcome, the deadline,
 * or a signal.  0, or 2 when Redis failed (printed). */
static int follow(observer_t *o) {
    for (;;) {
        int started, ok, failed;
        counts(o, &started, &ok, &failed);
        if (o->expected && ok + failed >= o->expected) return 0;
        double left = o->deadline - tg_local_now();
        if (left <= 0 || stop_signal) return 0;
        if (o->r.tty) progress(o);
        int block = left < 1 ? (int)(left * 1000) + 1 : 1000;
        redisReply *rep = call(o, "XREAD COUNT 1000 BLOCK %d STREAMS %s %s", block, o->key, o->last_id);
        if (!rep) {
            if (o->c->err == REDIS_ERR_IO && stop_signal) return 0;
            tg_local_clear_progress(&o->r);
            return tg_usage_error("observe: lost Redis at %s: %s", o->where, o->c->errstr);
        }
        if (rep->type == REDIS_REPLY_ERROR) {
            int st = tg_usage_error("observe: XREAD on Redis at %s failed: %s", o->where, rep->str);
            freeReplyObject(rep);
            return st;
        }
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1) {
            redisReply *entries = rep->element[0]->element[1];
            for (size_t i = 0; i < entries->elements; i++) {
                redisReply *e = entries->element[i];
                snprintf(o->last_id, sizeof o->last_id, "%s", e->element[0]->str);
                on_entry(o, e->element[1]);
            }
        }
        freeReplyObject(rep);
    }
}

/* Settle who did not finish, make room for instances never heard of, and
 * print the summary.  The exit status. */
static int finish(observer_t *o) {
    tg_local_t *r = &o->r;
    tg_local_clear_progress(r);
    int started, ok, failed;
    counts(o, &started, &ok, &failed);
    int missing = o->expected > r->n ? o->expected - r->n : 0;
    if (ok + failed < (o->expected ? o->expected : r->n))
        fprintf(stderr, "tgrun: observe: %s with %d of %s instance(s) without an outcome\n",
                stop_signal ? "interrupted" : "the deadline passed", (o->expected ? o->expected : r->n) - ok - failed,
                o->expected ? "the run's" : "the seen");
    for (int i = 0; i < r->n; i++) {
        tg_child_t *c = &r->kids[i];
        if (c->outcome) continue;
        c->unfinished = 1;
        c->outcome = TG_OUT_FAILURE;
        tg_local_set_error(&c->error, "started, but recorded no outcome", 32);
    }
    /* instances never heard of: by group where the starts gave group sizes */
    for (int g = 0; g < r->ngroups && missing > 0; g++) {
        long seen = 0;
        for (int i = 0; i < r->n; i++) seen += r->kids[i].group == g;
        for (long j = seen; j < r->groups[g].count && missing > 0; j++, missing--) {
            tg_child_t *c = instance_of(o, 0);
            if (!c) break;
            c->group = g;
            snprintf(c->label, sizeof c->label, "%s#?", r->groups[g].name);
            c->unfinished = 1;
            c->outcome = TG_OUT_FAILURE;
            tg_local_set_error(&c->error, "never recorded a start or an outcome", 36);
        }
    }
    for (; missing > 0; missing--) {
        tg_child_t *c = instance_of(o, 0);
        if (!c) break;
        c->group = group_of(o, "?", 0);
        snprintf(c->label, sizeof c->label, "?");
        c->unfinished = 1;
        c->outcome = TG_OUT_FAILURE;
        tg_local_set_error(&c->error, "never recorded a start or an outcome", 36);
    }
    if (r->n == 0) {
        printf("tgrun: run %s: no instance recorded anything\n", r->run.run_id);
        return 1;
    }
    return tg_local_report(r, " (observed)", 0, NULL);
}

int tg_observe_main(int argc, char **argv) {
    static const struct option longs[] = {
        {"redis", required_argument, 0, 'R'},
        {"run", required_argument, 0, 'I'},
        {"run-id", required_argument, 0, 'I'},
        {"plan", required_argument, 0, 'P'},
        {"case", required_argument, 0, 'c'},
        {"timeout", required_argument, 0, 'T'},
        {"instances", required_argument, 0, 'n'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *url = NULL, *run = NULL, *plan = NULL, *cas = NULL;
    double timeout = 600, d;
    long long n;
    int quiet = 0, ch;
    observer_t *o = calloc(1, sizeof *o);
    if (!o) return tg_usage_error("out of memory");
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:n:qh", longs, NULL)) != -1) {
        switch (ch) {
        case 'R': url = optarg; break;
        case 'I': run = optarg; break;
        case 'P': plan = optarg; break;
        case 'c': cas = optarg; break;
        case 'T':
            if (tg_parse_number(optarg, &d) < 0 || d <= 0) {
                free(o);
                return tg_usage_error("observe: --timeout needs a positive number of seconds, got \"%s\"", optarg);
            }
            timeout = d;
            break;
        case 'n':
            if (tg_parse_int(optarg, &n) < 0 || n < 1 || n > 1000000) {
                free(o);
                return tg_usage_error("observe: -n needs a whole number of instances from 1 up, got \"%s\"", optarg);
            }
            o->expected = (int)n;
            break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); free(o); return 0;
        default:
            free(o);
            if (optopt) return tg_usage_error("observe: option -%c needs a value or is unknown; see tgrun observe --help", optopt);
            return tg_usage_error("observe: unknown option \"%s\"; see tgrun observe --help", argv[optind - 1]);
        }
    }
    int status = 2;
    if (optind < argc) {
        status = tg_usage_error("observe: unexpected \"%s\" (observe takes no plan; see tgrun observe --help)", argv[optind]);
        goto out;
    }
    if (!run || !*run) {
        status = tg_usage_error("observe: which run? give --run ID (the run id every instance was given)");
        goto out;
    }
    tg_opts_t opts = {0};
    opts.redis_url = url;
    tg_redis_addr_t addr;
    int rt = tg_run_redis_target(&opts, &addr);
    if (rt == 2) goto out;
    char where[400];
    o->where = tg_redis_addr_str(&addr, where, sizeof where);

    tg_local_t *r = &o->r;
    snprintf(r->run.run_id, sizeof r->run.run_id, "%s", run);
    if (plan) snprintf(r->run.plan, sizeof r->run.plan, "%s", plan);
    if (cas) snprintf(r->run.case_name, sizeof r->run.case_name, "%s", cas);
    r->tty = !quiet && isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
    r->t0 = tg_local_now();
    r->total = 0;
    o->deadline = r->t0 + timeout;
    snprintf(o->last_id, sizeof o->last_id, "0-0");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if ((status = connect_redis(o, &addr)) != 0) goto out;
    if ((status = find_stream(o, run, plan, cas)) != 0) goto out;
    if (!(r->L = luaL_newstate())) { status = tg_usage_error("out of memory"); goto out; }
    /* the stream's key names plan and case: run:<run>:plan:<plan>:case:<case>:run_events */
    const char *pk = strstr(o->key + 4 + strlen(run), ":plan:"), *ck = strstr(o->key, ":case:");
    if (pk && ck && !r->run.plan[0]) snprintf(r->run.plan, sizeof r->run.plan, "%.*s", (int)(ck - pk - 6), pk + 6);
    if (ck && !r->run.case_name[0])
        snprintf(r->run.case_name, sizeof r->run.case_name, "%.*s", (int)(strlen(ck + 6) - strlen(":run_events")), ck + 6);
    if ((status = follow(o)) != 0) {
        finish(o);
        goto out;
    }
    status = finish(o);
out:
    if (o->c) redisFree(o->c);
    if (o->r.L) lua_close(o->r.L);
    for (int i = 0; i < o->r.n; i++) free(o->r.kids[i].error);
    free(o->r.kids);
    free(o);
    return status;
}
