/*
 * tg_local.c -- the local runner: `tgrun -n N plan.lua` starts N instance
 * processes of the same plan with the TEST_* environment a Testground runner
 * would give them, watches their event lines, and reports per group.
 *
 *  - Redis: --redis or REDIS_HOST/REDIS_PORT when given; else a private
 *    redis-server on a unix socket in a temp dir, persistence off, stopped at
 *    the end.
 *  - Output: without a terminal every line of every instance is printed with
 *    its "group[index]" prefix; on a terminal one live progress line stands in
 *    for the events (failures and stderr still print).  Each instance writes
 *    its files under <outputs>/<run>/<group>/<index>/.
 *  - Ending: the run's deadline (--timeout) and Ctrl-C send SIGTERM to every
 *    instance still running -- an instance answers by failing its pending
 *    waits with what it was waiting for -- and SIGKILL a few seconds later.
 *    Nothing is left behind: every child (and the private Redis) is reaped
 *    before tgrun exits.
 *
 * Ownership: the run_t lives on tg_local_run's stack; children's handles are
 * inside it and are all closed before the loop is closed.
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "tg_json.h"
#include "tg_main.h"
#include "tg_redis.h"

extern char **environ;

#define GRACE_SECS 5            /* after the deadline, before SIGTERM */
#define KILL_SECS 3             /* after SIGTERM, before SIGKILL */

typedef struct linebuf {
    char *buf;
    size_t len, cap;
} linebuf_t;

typedef struct child {
    struct run *run;
    uv_process_t proc;
    uv_pipe_t out, err;
    int group;                  /* index into run->groups */
    int index;                  /* 0-based within its group */
    char label[96];
    char *outdir;               /* malloc'd */
    int spawned, exited, handles, unfinished;
    int64_t status;
    int signal;
    int outcome;                /* TG_OUT_* from its event lines */
    char *error;                /* first error (malloc'd) */
    char *stderr_first;         /* first stderr line (malloc'd) */
    linebuf_t lo, le;
} child_t;

typedef struct run {
    uv_loop_t loop;
    tg_opts_t *o;
    child_t *kids;
    int n, running, open_handles;
    tg_group_t groups[TG_MAX_GROUPS];
    int ngroups;
    uv_timer_t deadline, killer, progress;
    uv_signal_t sigint, sigterm;
    uv_process_t redis;
    int redis_running;
    int tty, interrupted, timed_out, termed;
    double t0;
    lua_State *L;               /* only for decoding event lines */
    tg_rt_t *rt;                /* --inproc: the runtime all instances share */
    char run_id[64], case_name[256], plan[256];
    char outputs[4096], tmpdir[4096], sock[4200], redis_url[4300];
    char exe[4096];
    int progress_shown;
} run_t;

static double now(void) {
    return (double)uv_hrtime() / 1e9;
}

/* ---- output ------------------------------------------------------------ */

static void clear_progress(run_t *r) {
    if (r->tty && r->progress_shown) {
        fputs("\r\033[K", stderr);
        r->progress_shown = 0;
    }
}

static void counts(run_t *r, int *ok, int *failed) {
    *ok = *failed = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->kids[i].outcome == TG_OUT_SUCCESS) (*ok)++;
        else if (r->kids[i].outcome) (*failed)++;
    }
}

static void on_progress(uv_timer_t *h) {
    run_t *r = h->data;
    int ok, failed;
    counts(r, &ok, &failed);
    fflush(stdout);
    fprintf(stderr, "\r\033[Ktgrun: %d instances: %d running, %d succeeded, %d failed, %.1f s",
            r->n, r->running, ok, failed, now() - r->t0);
    fflush(stderr);
    r->progress_shown = 1;
}

static void set_error(char **slot, const char *msg, size_t len) {
    if (*slot) return;
    const char *nl = memchr(msg, '\n', len);
    if (nl) len = (size_t)(nl - msg);
    *slot = malloc(len + 1);
    if (!*slot) return;
    memcpy(*slot, msg, len);
    (*slot)[len] = '\0';
}

/* One line of an instance's stdout: note its outcome, print it. */
static void on_out_line(child_t *c, const char *line, size_t len) {
    run_t *r = c->run;
    lua_State *L = r->L;
    const char *show = line;
    size_t showlen = len;
    char buf[512];
    int important = 0;
    lua_settop(L, 0);
    if (len && line[0] == '{' && tg_json_decode(L, line, len) == 0 && lua_istable(L, 1)) {
        lua_getfield(L, 1, "event");
        if (lua_istable(L, -1)) {
            const char *kinds[] = {"success_event", "failure_event", "crash_event", "message_event",
                                   "start_event", "stage_start_event", "stage_end_event"};
            for (int k = 0; k < 7; k++) {
                lua_getfield(L, 2, kinds[k]);
                if (!lua_istable(L, -1)) { lua_pop(L, 1); continue; }
                size_t el = 0;
                const char *e = NULL;
                if (k == 0) {
                    c->outcome = TG_OUT_SUCCESS;
                    show = "success";
                } else if (k == 1 || k == 2) {
                    lua_getfield(L, -1, "error");
                    e = lua_tolstring(L, -1, &el);
                    if (e) set_error(&c->error, e, el);
                    c->outcome = k == 1 ? TG_OUT_FAILURE : TG_OUT_CRASH;
                    snprintf(buf, sizeof buf, "%s: %s", k == 1 ? "FAILED" : "CRASHED",
                             c->error ? c->error : "(no message)");
                    show = buf;
                    important = 1;
                } else if (k == 3) {
                    lua_getfield(L, -1, "message");
                    e = lua_tolstring(L, -1, &el);
                    if (e) { show = e; showlen = el; }
                } else if (k == 4) {
                    show = "start";
                } else {
                    lua_getfield(L, -1, "name");
                    snprintf(buf, sizeof buf, "%s %s", k == 5 ? "stage start" : "stage end",
                             lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
                    show = buf;
                }
                if (show != e) showlen = strlen(show);
                break;
            }
        }
    }
    if (!r->tty || important) {
        clear_progress(r);
        printf("%s %.*s\n", c->label, (int)showlen, show);
        fflush(stdout);
    }
    lua_settop(L, 0);
}

static void on_err_line(child_t *c, const char *line, size_t len) {
    if (!c->stderr_first && len) set_error(&c->stderr_first, line, len);
    clear_progress(c->run);
    fprintf(stderr, "%s stderr: %.*s\n", c->label, (int)len, line);
}

static void feed(child_t *c, linebuf_t *b, const char *data, size_t len, int is_err) {
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) return;
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, len);
    b->len += len;
    size_t start = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->buf[i] != '\n') continue;
        if (is_err) on_err_line(c, b->buf + start, i - start);
        else on_out_line(c, b->buf + start, i - start);
        start = i + 1;
    }
    memmove(b->buf, b->buf + start, b->len - start);
    b->len -= start;
}

/* ---- children ---------------------------------------------------------- */

static void maybe_done(run_t *r);

static void on_handle_closed(uv_handle_t *h) {
    child_t *c = h->data;
    run_t *r = c->run;
    c->handles--;
    r->open_handles--;
    maybe_done(r);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    child_t *c = s->data;
    int is_err = s == (uv_stream_t *)&c->err;
    if (n > 0) feed(c, is_err ? &c->le : &c->lo, buf->base, (size_t)n, is_err);
    free(buf->base);
    if (n < 0) {
        linebuf_t *b = is_err ? &c->le : &c->lo;
        if (b->len) {                           /* a last line without '\n' */
            feed(c, b, "\n", 1, is_err);
        }
        uv_close((uv_handle_t *)s, on_handle_closed);
    }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
    child_t *c = p->data;
    run_t *r = c->run;
    c->exited = 1;
    c->status = status;
    c->signal = sig;
    r->running--;
    uv_close((uv_handle_t *)p, on_handle_closed);
    maybe_done(r);
}

static void kill_all(run_t *r, int sig) {
    for (int i = 0; i < r->n; i++)
        if (r->kids[i].spawned && !r->kids[i].exited) uv_process_kill(&r->kids[i].proc, sig);
}

static void on_killer(uv_timer_t *h) {
    run_t *r = h->data;
    kill_all(r, SIGKILL);
}

/* Ask every running instance to stop: each fails its pending waits with what
 * it was waiting for, records that, and exits; SIGKILL follows if not. */
static void terminate(run_t *r) {
    if (r->termed) return;
    r->termed = 1;
    for (int i = 0; i < r->n; i++)
        if (r->kids[i].spawned && !r->kids[i].exited) r->kids[i].unfinished = 1;
    kill_all(r, SIGTERM);
    uv_timer_start(&r->killer, on_killer, KILL_SECS * 1000, 0);
}

static void on_deadline(uv_timer_t *h) {
    run_t *r = h->data;
    r->timed_out = 1;
    clear_progress(r);
    fprintf(stderr, "tgrun: the run's deadline (%g s) has passed: stopping %d instance(s)\n",
            r->o->timeout, r->running);
    terminate(r);
}

static void on_signal(uv_signal_t *h, int sig) {
    run_t *r = h->data;
    clear_progress(r);
    if (r->interrupted++) {
        fprintf(stderr, "tgrun: interrupted again: killing every instance\n");
        kill_all(r, SIGKILL);
        return;
    }
    fprintf(stderr, "tgrun: %s: stopping %d instance(s) (again to kill them)\n",
            sig == SIGINT ? "interrupted" : "terminated", r->running);
    terminate(r);
}

static char *env_entry(const char *k, const char *v) {
    size_t n = strlen(k) + strlen(v) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s=%s", k, v);
    return s;
}

static int is_ours(const char *e) {
    static const char *names[] = {"TEST_PLAN=", "TEST_CASE=", "TEST_RUN=", "TEST_INSTANCE_COUNT=",
        "TEST_GROUP_ID=", "TEST_GROUP_INSTANCE_COUNT=", "TEST_INSTANCE_PARAMS=", "TEST_OUTPUTS_PATH=",
        "TEST_TEMP_PATH=", "TEST_SIDECAR=", "TEST_SUBNET=", "TEST_START_TIME=", NULL};
    for (int i = 0; names[i]; i++)
        if (strncmp(e, names[i], strlen(names[i])) == 0) return 1;
    return 0;
}

/* <outputs>/<run>/<group>/<index>, malloc'd */
static char *outdir_of(run_t *r, int g, long j) {
    size_t n = strlen(r->outputs) + strlen(r->run_id) + strlen(r->groups[g].name) + 32;
    char *d = malloc(n);
    if (d) snprintf(d, n, "%s/%s/%s/%ld", r->outputs, r->run_id, r->groups[g].name, j);
    return d;
}

static int spawn_child(run_t *r, child_t *c, const char *params, const char *start) {
    char tmp[4200], n[32], gn[32], timeout[64];
    snprintf(tmp, sizeof tmp, "%s/%s/%d", r->tmpdir, r->groups[c->group].name, c->index);
    if (!c->outdir || tg_mkdir_p(c->outdir) < 0 || tg_mkdir_p(tmp) < 0) return -errno;
    snprintf(n, sizeof n, "%d", r->n);
    snprintf(gn, sizeof gn, "%ld", r->groups[c->group].count);
    snprintf(timeout, sizeof timeout, "%g", r->o->timeout);

    size_t ne = 0;
    while (environ[ne]) ne++;
    char **env = calloc(ne + 16, sizeof *env);
    if (!env) return UV_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (!is_ours(environ[i])) env[k++] = strdup(environ[i]);
    env[k++] = env_entry("TEST_PLAN", r->plan);
    env[k++] = env_entry("TEST_CASE", r->case_name);
    env[k++] = env_entry("TEST_RUN", r->run_id);
    env[k++] = env_entry("TEST_INSTANCE_COUNT", n);
    env[k++] = env_entry("TEST_GROUP_ID", r->groups[c->group].name);
    env[k++] = env_entry("TEST_GROUP_INSTANCE_COUNT", gn);
    env[k++] = env_entry("TEST_INSTANCE_PARAMS", params);
    env[k++] = env_entry("TEST_OUTPUTS_PATH", c->outdir);
    env[k++] = env_entry("TEST_TEMP_PATH", tmp);
    env[k++] = env_entry("TEST_SIDECAR", "false");
    env[k++] = env_entry("TEST_SUBNET", "127.1.0.0/16");
    env[k++] = env_entry("TEST_START_TIME", start);

    const char *argv[8];
    int a = 0;
    argv[a++] = r->exe;
    argv[a++] = "--timeout";
    argv[a++] = timeout;
    if (r->redis_url[0]) { argv[a++] = "--redis"; argv[a++] = r->redis_url; }
    argv[a++] = r->o->plan_path;
    argv[a] = NULL;

    uv_stdio_container_t stdio[3];
    uv_pipe_init(&r->loop, &c->out, 0);
    uv_pipe_init(&r->loop, &c->err, 0);
    c->out.data = c->err.data = c->proc.data = c;
    c->handles = 2;
    r->open_handles += 2;
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&c->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&c->err;
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = r->exe;
    po.args = (char **)argv;
    po.env = env;
    po.exit_cb = on_exit_cb;
    po.stdio = stdio;
    po.stdio_count = 3;
    po.flags = UV_PROCESS_DETACHED;     /* Ctrl-C reaches tgrun, which stops them in order */
    int rc = uv_spawn(&r->loop, &c->proc, &po);
    for (size_t i = 0; i < k; i++) free(env[i]);
    free(env);
    if (rc < 0) {
        uv_close((uv_handle_t *)&c->out, on_handle_closed);
        uv_close((uv_handle_t *)&c->err, on_handle_closed);
        return rc;
    }
    c->spawned = 1;
    c->handles++;
    r->open_handles++;
    r->running++;
    uv_read_start((uv_stream_t *)&c->out, alloc_cb, on_read);
    uv_read_start((uv_stream_t *)&c->err, alloc_cb, on_read);
    return 0;
}

/* ---- the private redis-server ------------------------------------------ */

static int find_on_path(const char *name, char *out, size_t len) {
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/%s", *d ? d : ".", name);
        found = access(out, X_OK) == 0;
    }
    free(copy);
    return found ? 0 : -1;
}

static void on_redis_exit(uv_process_t *p, int64_t status, int sig) {
    (void)status; (void)sig;
    run_t *r = p->data;
    r->redis_running = 0;
    uv_close((uv_handle_t *)p, NULL);
}

static int start_redis(run_t *r) {
    char bin[4096], maxc[32];
    if (find_on_path("redis-server", bin, sizeof bin) < 0)
        return tg_usage_error("redis-server is not on PATH: install it (apt-get install redis-server), "
                              "or point tgrun at a Redis with --redis URL or REDIS_HOST");
    snprintf(r->sock, sizeof r->sock, "%s/redis.sock", r->tmpdir);
    snprintf(maxc, sizeof maxc, "%d", r->n * 3 + 1000);
    char logf[4300];
    snprintf(logf, sizeof logf, "%s/redis.log", r->tmpdir);
    const char *argv[] = {bin, "--port", "0", "--unixsocket", r->sock, "--unixsocketperm", "700",
                          "--save", "", "--appendonly", "no", "--dir", r->tmpdir,
                          "--logfile", logf, "--maxclients", maxc, NULL};
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = bin;
    po.args = (char **)argv;
    po.exit_cb = on_redis_exit;
    po.flags = UV_PROCESS_DETACHED;
    r->redis.data = r;
    int rc = uv_spawn(&r->loop, &r->redis, &po);
    if (rc < 0) return tg_usage_error("cannot start redis-server: %s", uv_strerror(rc));
    r->redis_running = 1;
    /* Wait (bounded) until it answers on the socket. */
    for (int i = 0; i < 250 && r->redis_running; i++) {
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectUnixWithTimeout(r->sock, tv);
        if (c && !c->err) {
            redisReply *rep = redisCommand(c, "PING");
            int ok = rep && rep->type == REDIS_REPLY_STATUS;
            if (rep) freeReplyObject(rep);
            redisFree(c);
            if (ok) {
                snprintf(r->redis_url, sizeof r->redis_url, "unix://%s", r->sock);
                return 0;
            }
        } else if (c) redisFree(c);
        uv_run(&r->loop, UV_RUN_NOWAIT);
        struct timespec pause = {0, 20000000};
        nanosleep(&pause, NULL);
    }
    return tg_usage_error("redis-server did not come up within 5 s (see %s)", logf);
}

static void stop_redis(run_t *r) {
    if (!r->redis_running) return;
    uv_process_kill(&r->redis, SIGTERM);
    double end = now() + 5;
    while (r->redis_running && now() < end) uv_run(&r->loop, UV_RUN_ONCE);
    if (r->redis_running) {
        uv_process_kill(&r->redis, SIGKILL);
        while (r->redis_running) uv_run(&r->loop, UV_RUN_ONCE);
    }
}

/* ---- ending -------------------------------------------------------------- */

static void maybe_done(run_t *r) {
    if (r->running > 0 || r->open_handles > 0) return;
    uv_stop(&r->loop);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

/* Settle each child's outcome and print the summary; the exit status. */
static int summarize(run_t *r) {
    int ok = 0, failed = 0, usage = 0;
    clear_progress(r);
    for (int i = 0; i < r->n; i++) {
        child_t *c = &r->kids[i];
        char why[512];
        if (c->outcome == TG_OUT_SUCCESS && c->exited && c->status == 0 && !c->signal) { ok++; continue; }
        if (c->outcome == TG_OUT_SUCCESS) {
            snprintf(why, sizeof why, "recorded success but exited with %s %d",
                     c->signal ? "signal" : "status", c->signal ? c->signal : (int)c->status);
            c->outcome = TG_OUT_FAILURE;
            free(c->error);
            c->error = strdup(why);
        }
        if (!c->outcome) {
            if (!c->spawned) snprintf(why, sizeof why, "could not be started");
            else if (c->status == 2 && c->stderr_first) snprintf(why, sizeof why, "%s", c->stderr_first);
            else if (c->signal) snprintf(why, sizeof why, "killed by signal %d before it recorded an outcome%s",
                                         c->signal, r->timed_out ? " (the run's deadline had passed)" : "");
            else snprintf(why, sizeof why, "exited with status %d without recording an outcome", (int)c->status);
            c->error = strdup(why);
            c->outcome = TG_OUT_FAILURE;
        }
        if (c->exited && c->status == 2) usage++;
        failed++;
    }
    printf("tgrun: run %s (plan %s, case %s): %d instances, %d succeeded, %d failed, in %.2f s\n",
           r->run_id, r->plan, r->case_name, r->n, ok, failed, now() - r->t0);
    for (int g = 0; g < r->ngroups; g++) {
        int gok = 0, gfail = 0;
        for (int i = 0; i < r->n; i++) {
            if (r->kids[i].group != g) continue;
            if (r->kids[i].outcome == TG_OUT_SUCCESS) gok++;
            else gfail++;
        }
        printf("  group %s: %d succeeded, %d failed\n", r->groups[g].name, gok, gfail);
    }
    int shown = 0;
    for (int i = 0; i < r->n; i++) {
        child_t *c = &r->kids[i];
        if (c->outcome == TG_OUT_SUCCESS) continue;
        if (shown++ == 20) { printf("  ... and %d more failed instances\n", failed - 20); break; }
        printf("  %s %s: %s\n", c->label,
               c->unfinished ? "did not finish" :
               c->outcome == TG_OUT_CRASH ? "crashed" : "failed",
               c->error ? c->error : "?");
    }
    printf("tgrun: outputs in %s/%s\n", r->outputs, r->run_id);
    fflush(stdout);
    if (failed == 0) return 0;
    if (usage == failed) return 2;
    return 1;
}

/* ---- tgrun -n N --inproc -------------------------------------------------- */

/* N instances in this process: one lua_State each, one loop, one pair of
 * Redis connections.  Each child_t stands for an instance instead of a
 * process, so that the summary is the same. */
static void on_inproc_done(tg_inst_t *inst) {
    child_t *c = inst->user;
    run_t *r = c->run;
    c->exited = 1;
    c->status = tg_main_result(inst);
    if (inst->error && !c->error) set_error(&c->error, inst->error, strlen(inst->error));
    c->outcome = c->status == 0 ? TG_OUT_SUCCESS : TG_OUT_FAILURE;
    c->unfinished = inst->rt->interrupts > 0;
    if (--r->running == 0) uv_stop(inst->rt->loop);
}

static void on_inproc_progress(uv_timer_t *h) {
    on_progress(h);
}

static void on_inproc_watchdog(uv_timer_t *h) {
    run_t *r = h->data;
    tg_rt_t *rt = r->rt;
    if (!r->timed_out) {
        /* the run's deadline passed and some wait did not end by itself */
        r->timed_out = 1;
        clear_progress(r);
        fprintf(stderr, "tgrun: the run's deadline (%g s) has passed: stopping %d instance(s)\n",
                r->o->timeout, r->running);
        rt->interrupts++;
        tg_rt_interrupt(rt, "the run's deadline");
        uv_timer_start(h, on_inproc_watchdog, KILL_SECS * 1000, 0);
        return;
    }
    /* still stuck (plan code that never yields cannot be interrupted): give up */
    uv_stop(rt->loop);
}

static int run_inproc(run_t *r, tg_kvlist_t *params) {
    uv_loop_t loop;
    tg_rt_t rt;
    char err[600], prefix[1024];
    uv_loop_init(&loop);
    tg_rt_init(&rt, &loop);
    r->rt = &rt;
    rt.deadline = tg_rt_now() + r->o->timeout;
    rt.lua_dir = getenv("TG_LUA_DIR");
    rt.on_inst_done = on_inproc_done;
    rt.strip = 1;
    tg_rt_handle_signals(&rt);
    int status = 2;

    tg_redis_addr_t addr;
    if (r->redis_url[0]) {
        if (tg_redis_addr_parse(r->redis_url, &addr, err, sizeof err) < 0) {
            status = tg_usage_error("%s", err);
            goto out;
        }
    } else if (tg_redis_target(r->o, &addr) < 0) goto out;
    snprintf(prefix, sizeof prefix, "run:%s:plan:%s:case:%s", r->run_id, r->plan, r->case_name);
    if (tg_redis_open(&rt, &addr, prefix, 5, err, sizeof err) < 0) {
        status = tg_usage_error("%s", err);
        goto out;
    }

    int i = 0;
    for (int g = 0; g < r->ngroups; g++) {
        for (long j = 0; j < r->groups[g].count; j++, i++) {
            child_t *c = &r->kids[i];
            char tmp[4200];
            c->run = r;
            c->group = g;
            c->index = (int)j;
            snprintf(c->label, sizeof c->label, "%s[%ld]", r->groups[g].name, j);
            c->outdir = outdir_of(r, g, j);
            snprintf(tmp, sizeof tmp, "%s/%s/%ld", r->tmpdir, r->groups[g].name, j);
            tg_inst_t *inst = tg_inst_new(&rt);
            if (!inst || !c->outdir || tg_mkdir_p(c->outdir) < 0 || tg_mkdir_p(tmp) < 0) {
                fprintf(stderr, "tgrun: cannot set up %s: %s\n", c->label, inst ? strerror(errno) : "out of memory");
                continue;
            }
            inst->index = i;
            inst->user = c;
            tg_instcfg_t ic = {0};
            ic.plan = r->plan;
            ic.run_id = r->run_id;
            ic.case_name = r->case_name;
            ic.group_id = r->groups[g].name;
            ic.instance_count = r->n;
            ic.group_instance_count = (int)r->groups[g].count;
            ic.outputs = c->outdir;
            ic.temp = tmp;
            ic.ip = "127.0.0.1";
            ic.params = params;
            ic.label = c->label;
            ic.quiet_stdout = r->tty;
            if (tg_load_plan(inst, r->o->plan_path, r->case_name) != 0
                || tg_build_config(inst, r->o, &ic) != 0 || tg_start_main(inst) != 0) {
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
    uv_timer_start(&watchdog, on_inproc_watchdog, (uint64_t)((r->o->timeout + GRACE_SECS) * 1000), 0);
    if (r->running > 0) uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&progress, NULL);
    uv_close((uv_handle_t *)&watchdog, NULL);
    for (int k = 0; k < r->n; k++) {
        child_t *c = &r->kids[k];
        if (c->spawned && !c->exited) {     /* stopped by the watchdog */
            c->unfinished = 1;
            set_error(&c->error, "did not yield to the runtime after the deadline", 47);
            c->outcome = TG_OUT_FAILURE;
        }
    }
    status = summarize(r);
out:
    r->rt = NULL;
    tg_shutdown(&rt);
    return status;
}

/* ---- tgrun -n N ---------------------------------------------------------- */

static int load_check(run_t *r, tg_opts_t *o) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    tg_rt_t rt;
    tg_rt_init(&rt, &loop);
    rt.lua_dir = getenv("TG_LUA_DIR");
    tg_inst_t *inst = tg_inst_new(&rt);
    int rc = inst ? tg_load_plan(inst, o->plan_path, o->case_name ? o->case_name : getenv("TEST_CASE")) : 2;
    if (rc == 0) {
        lua_getfield(inst->L, LUA_REGISTRYINDEX, "tg.config");
        lua_getfield(inst->L, -1, "case");
        snprintf(r->case_name, sizeof r->case_name, "%s", lua_tostring(inst->L, -1));
        lua_pop(inst->L, 2);
    }
    tg_shutdown(&rt);
    return rc;
}

int tg_local_run(tg_opts_t *o, const char *argv0) {
    (void)argv0;
    run_t *r = calloc(1, sizeof *r);
    if (!r) return tg_usage_error("out of memory");
    r->o = o;
    int status = 2;
    char err[512];
    tg_kvlist_t params = {0};
    char *pstr = NULL;

    /* groups */
    if (o->ngroups) {
        long sum = 0;
        for (int i = 0; i < o->ngroups; i++) {
            for (int j = 0; j < i; j++)
                if (strcmp(o->groups[i].name, o->groups[j].name) == 0) {
                    status = tg_usage_error("group \"%s\" is given twice", o->groups[i].name);
                    goto out;
                }
            sum += o->groups[i].count;
        }
        if (sum != o->instances) {
            status = tg_usage_error("the groups add up to %ld instances but -n says %d: make the counts add up",
                                    sum, o->instances);
            goto out;
        }
        memcpy(r->groups, o->groups, sizeof r->groups);
        r->ngroups = o->ngroups;
    } else {
        snprintf(r->groups[0].name, sizeof r->groups[0].name, "single");
        r->groups[0].count = o->instances;
        r->ngroups = 1;
    }
    r->n = o->instances;

    /* parameters: TEST_INSTANCE_PARAMS, then --param */
    const char *envp = getenv("TEST_INSTANCE_PARAMS");
    if (envp && tg_params_parse(&params, envp, err, sizeof err) < 0) {
        status = tg_usage_error("%s", err);
        goto out;
    }
    for (size_t i = 0; i < o->params.len; i++)
        tg_kvlist_set(&params, o->params.items[i].key, o->params.items[i].value);
    if (!(pstr = tg_params_format(&params))) {
        status = tg_usage_error("parameters cannot be passed on: a key or value contains '|' or '='");
        goto out;
    }

    /* the plan must load and name its case before anything starts */
    if ((status = load_check(r, o)) != 0) goto out;
    status = 2;
    char planbuf[4096];
    snprintf(planbuf, sizeof planbuf, "%s", o->plan_path);
    char *base = strrchr(planbuf, '/');
    base = base ? base + 1 : planbuf;
    char *dot = strrchr(base, '.');
    if (dot && strcmp(dot, ".lua") == 0) *dot = '\0';
    snprintf(r->plan, sizeof r->plan, "%.255s", getenv("TEST_PLAN") && *getenv("TEST_PLAN") ? getenv("TEST_PLAN") : base);
    if (o->run_id) snprintf(r->run_id, sizeof r->run_id, "%s", o->run_id);
    else if (getenv("TEST_RUN") && *getenv("TEST_RUN")) snprintf(r->run_id, sizeof r->run_id, "%s", getenv("TEST_RUN"));
    else tg_random_id(r->run_id, sizeof r->run_id);
    snprintf(r->outputs, sizeof r->outputs, "%s", o->outputs ? o->outputs : "outputs");
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
    snprintf(r->tmpdir, sizeof r->tmpdir, "%s/tgrun-%s-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", r->run_id);
    if (!mkdtemp(r->tmpdir)) { status = tg_usage_error("cannot create a temp dir: %s", strerror(errno)); goto out_loop; }

    tg_redis_addr_t addr;
    int rc = tg_redis_target(o, &addr);
    if (rc < 0) goto out_loop;
    if (rc == 1) {
        if ((status = start_redis(r)) != 0) goto out_loop;
        status = 2;
    } else if (o->redis_url) {
        snprintf(r->redis_url, sizeof r->redis_url, "%s", o->redis_url);
    }

    r->tty = !o->quiet && isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
    r->kids = calloc((size_t)r->n, sizeof *r->kids);
    if (!r->kids) { status = tg_usage_error("out of memory"); goto out_loop; }
    char start[48];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tg_rfc3339_format((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, start, sizeof start);

    if (o->inproc) {
        r->t0 = now();
        if (r->tty) setvbuf(stdout, NULL, _IOLBF, 0);
        status = run_inproc(r, &params);
        goto out_loop;
    }
    uv_timer_init(&r->loop, &r->deadline);
    uv_timer_init(&r->loop, &r->killer);
    uv_timer_init(&r->loop, &r->progress);
    uv_signal_init(&r->loop, &r->sigint);
    uv_signal_init(&r->loop, &r->sigterm);
    r->deadline.data = r->killer.data = r->progress.data = r->sigint.data = r->sigterm.data = r;
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    r->t0 = now();
    uv_timer_start(&r->deadline, on_deadline, (uint64_t)((o->timeout + GRACE_SECS) * 1000), 0);
    if (r->tty) uv_timer_start(&r->progress, on_progress, 0, 250);

    int i = 0;
    for (int g = 0; g < r->ngroups; g++) {
        for (long j = 0; j < r->groups[g].count; j++, i++) {
            child_t *c = &r->kids[i];
            c->run = r;
            c->group = g;
            c->index = (int)j;
            snprintf(c->label, sizeof c->label, "%s[%ld]", r->groups[g].name, j);
            c->outdir = outdir_of(r, g, j);
            int src = spawn_child(r, c, pstr, start);
            if (src < 0) {
                clear_progress(r);
                fprintf(stderr, "tgrun: cannot start %s: %s\n", c->label, uv_strerror(src));
            }
        }
    }
    if (r->running > 0 || r->open_handles > 0) uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&r->progress);
    uv_timer_stop(&r->deadline);
    uv_timer_stop(&r->killer);
    status = summarize(r);
    uv_close((uv_handle_t *)&r->deadline, NULL);
    uv_close((uv_handle_t *)&r->killer, NULL);
    uv_close((uv_handle_t *)&r->progress, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
out_loop:
    stop_redis(r);
    if (r->tmpdir[0] && strstr(r->tmpdir, "/tgrun-")) nftw(r->tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&r->loop) != 0) fprintf(stderr, "tgrun: internal: handles left open\n");
    if (r->L) lua_close(r->L);
out:
    if (r->kids)
        for (int k = 0; k < r->n; k++) {
            free(r->kids[k].error);
            free(r->kids[k].outdir);
            free(r->kids[k].stderr_first);
            free(r->kids[k].lo.buf);
            free(r->kids[k].le.buf);
        }
    free(r->kids);
    free(pstr);
    tg_kvlist_free(&params);
    free(r);
    return status;
}
