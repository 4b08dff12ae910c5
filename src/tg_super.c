/*
 * tg_super.c -- the process supervisor of a local run: each instance its own
 * process (this binary, single-instance mode) with the TEST_* environment a
 * Testground runner would give it; its stdout read as event lines (the one
 * classifier, tg_event.c, says what each means), its stderr passed on.
 *
 * Two ways to launch an instance, the rest is the same: this binary as a
 * child process (its environment the TEST_* variables), or, with --docker,
 * `docker run` of the instance's container (tg_docker.c builds its argv:
 * the same TEST_* variables with -e), whose attached stdout and stderr are
 * the container's and whose exit status is the container's.
 *
 * Ending: the run's deadline (--timeout, plus --grace) and Ctrl-C send
 * SIGTERM to every instance still running -- an instance answers by failing
 * its pending waits with what it was waiting for -- and SIGKILL a few
 * seconds later.  `docker run` passes SIGTERM on to its container (whose
 * init passes it to tgrun), but SIGKILL would only kill the client: for
 * containers the killer (and a second Ctrl-C) removes them with `docker rm
 * -f` instead, and kills the clients only if they still linger after that.
 * Every child is reaped before the loop ends.
 */
#define _POSIX_C_SOURCE 200809L
#include "tg_local.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <lauxlib.h>

#include "tg_docker.h"
#include "tg_event.h"
#include "tg_json.h"
#include "tg_text.h"

extern char **environ;

static void maybe_done(tg_local_t *r);

/* One line of an instance's stdout: note its outcome, print it. */
static void on_out_line(tg_child_t *c, const char *line, size_t len) {
    tg_local_t *r = c->run;
    lua_State *L = r->L;
    const char *show = line;
    size_t showlen = len;
    int important = 0;
    lua_settop(L, 0);
    if (len && line[0] == '{' && tg_json_decode(L, line, len) == 0 && lua_istable(L, 1)) {
        lua_getfield(L, 1, "event");                            /* line event */
        tg_ev_kind_t k = tg_event_kind(L, 2);
        if (k != TG_EV_NONE) {
            if (k == TG_EV_SUCCESS) c->outcome = TG_OUT_SUCCESS;
            if (k == TG_EV_FAILURE || k == TG_EV_CRASH) {
                size_t el;
                tg_event_push_error(L, 2, k);                   /* line event err */
                const char *e = lua_tolstring(L, -1, &el);
                if (e) tg_local_set_error(&c->error, e, el);
                c->outcome = k == TG_EV_FAILURE ? TG_OUT_FAILURE : TG_OUT_CRASH;
            }
            important = tg_event_push_text(L, 2, k);            /* ... text */
            show = lua_tolstring(L, -1, &showlen);
        }
    }
    if (!r->tty || important) {
        tg_local_clear_progress(r);
        printf("%s %.*s\n", c->label, (int)showlen, show);
        fflush(stdout);
    }
    lua_settop(L, 0);
}

static void on_err_line(tg_child_t *c, const char *line, size_t len) {
    if (c->run->dk && tg_docker_cli_warning(c->run->dk, line, len)) return;   /* printed once */
    if (!c->stderr_first && len) tg_local_set_error(&c->stderr_first, line, len);
    tg_local_clear_progress(c->run);
    fprintf(stderr, "%s stderr: %.*s\n", c->label, (int)len, line);
}

static void feed(tg_child_t *c, tg_linebuf_t *b, const char *data, size_t len, int is_err) {
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

static void on_handle_closed(uv_handle_t *h) {
    tg_child_t *c = h->data;
    tg_local_t *r = c->run;
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
    tg_child_t *c = s->data;
    int is_err = s == (uv_stream_t *)&c->err;
    if (n > 0) feed(c, is_err ? &c->le : &c->lo, buf->base, (size_t)n, is_err);
    free(buf->base);
    if (n < 0) {
        tg_linebuf_t *b = is_err ? &c->le : &c->lo;
        if (b->len) {                           /* a last line without '\n' */
            feed(c, b, "\n", 1, is_err);
        }
        uv_close((uv_handle_t *)s, on_handle_closed);
    }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
    tg_child_t *c = p->data;
    tg_local_t *r = c->run;
    c->exited = 1;
    c->status = status;
    c->signal = sig;
    r->running--;
    /* Whatever the instance left running in its process group (a shell of
     * os.execute, a background program) goes with it: nothing outlives
     * the run, and nothing holds its output pipes open. */
    uv_kill(-c->pid, SIGKILL);
    uv_close((uv_handle_t *)p, on_handle_closed);
    maybe_done(r);
}

/* The instance and everything in its process group (it leads one:
 * UV_PROCESS_DETACHED). */
static void kill_all(tg_local_t *r, int sig) {
    for (int i = 0; i < r->n; i++)
        if (r->kids[i].spawned && !r->kids[i].exited) uv_kill(-r->kids[i].pid, sig);
}

static void on_docker_rm_done(void *data) {
    tg_local_t *r = data;
    r->open_handles--;
    maybe_done(r);
}

/* Containers: SIGKILL would reach only the `docker run` clients, so remove
 * the containers themselves (the clients then end with 137). */
static void remove_containers(tg_local_t *r) {
    tg_strv_t names = {0};
    char name[256];
    for (int i = 0; i < r->n; i++) {
        tg_child_t *c = &r->kids[i];
        if (!c->spawned || c->exited) continue;
        tg_docker_container_name(r->dk, r->groups[c->group].name, c->index, name, sizeof name);
        tg_strv_addf(&names, "%s", name);
    }
    if (names.n && tg_docker_rm_start(r->dk, &names, on_docker_rm_done, r) == 0) r->open_handles++;
    tg_strv_free(&names);
}

static void on_killer(uv_timer_t *h) {
    tg_local_t *r = h->data;
    if (r->dk && r->killed++ == 0) {
        remove_containers(r);
        uv_timer_start(&r->killer, on_killer, TG_KILL_SECS * 1000, 0);   /* then the clients */
        return;
    }
    kill_all(r, SIGKILL);
    if (r->dk) tg_docker_rm_stop(r->dk);
}

/* Ask every running instance to stop: each fails its pending waits with what
 * it was waiting for, records that, and exits; the killer follows if not. */
static void terminate(tg_local_t *r) {
    if (r->termed) return;
    r->termed = 1;
    for (int i = 0; i < r->n; i++)
        if (r->kids[i].spawned && !r->kids[i].exited) r->kids[i].unfinished = 1;
    kill_all(r, SIGTERM);
    uv_timer_start(&r->killer, on_killer, TG_KILL_SECS * 1000, 0);
}

static void on_deadline(uv_timer_t *h) {
    tg_local_t *r = h->data;
    r->timed_out = 1;
    tg_local_clear_progress(r);
    fprintf(stderr, "tgrun: the run's deadline (%g s) has passed: stopping %d instance(s)\n",
            r->o->timeout, r->running);
    terminate(r);
}

static void on_signal(uv_signal_t *h, int sig) {
    tg_local_t *r = h->data;
    tg_local_clear_progress(r);
    if (r->interrupted++) {
        fprintf(stderr, "tgrun: interrupted again: killing every instance\n");
        if (r->dk) {
            /* remove the containers now; the clients get SIGKILL if they linger */
            uv_timer_stop(&r->killer);
            if (!r->killed) on_killer(&r->killer);
            else kill_all(r, SIGKILL);
        } else {
            kill_all(r, SIGKILL);
        }
        return;
    }
    fprintf(stderr, "tgrun: %s: stopping %d instance(s) (again to kill them)\n",
            sig == SIGINT ? "interrupted" : "terminated", r->running);
    terminate(r);
}

static int is_ours(const char *e) {
    static const char *names[] = {"TEST_PLAN=", "TEST_CASE=", "TEST_RUN=", "TEST_INSTANCE_COUNT=",
        "TEST_GROUP_ID=", "TEST_GROUP_INSTANCE_COUNT=", "TEST_INSTANCE_PARAMS=", "TEST_OUTPUTS_PATH=",
        "TEST_TEMP_PATH=", "TEST_SIDECAR=", "TEST_SUBNET=", "TEST_START_TIME=", "REDIS_PASSWORD=",
        "REDIS_USERNAME=", "TG_PARENT_PID=", "TG_INSTANCE_NAME=", "TG_DEADLINE=", NULL};
    for (int i = 0; names[i]; i++)
        if (strncmp(e, names[i], strlen(names[i])) == 0) return 1;
    return 0;
}

/* What every instance is told, as a Testground runner tells it (TEST_*),
 * plus TG_INSTANCE_NAME, its "group[index]" for whoever follows the run;
 * outputs, temp and subnet as the instance sees them. */
static void instance_env(tg_local_t *r, tg_child_t *c, const char *params, const char *start,
                         const char *outputs, const char *temp, const char *subnet, tg_strv_t *ev) {
    tg_strv_addf(ev, "TEST_PLAN=%s", r->run.plan);
    tg_strv_addf(ev, "TEST_CASE=%s", r->run.case_name);
    tg_strv_addf(ev, "TEST_RUN=%s", r->run.run_id);
    tg_strv_addf(ev, "TEST_INSTANCE_COUNT=%d", r->total);
    tg_strv_addf(ev, "TEST_GROUP_ID=%s", r->groups[c->group].name);
    tg_strv_addf(ev, "TEST_GROUP_INSTANCE_COUNT=%ld", r->groups[c->group].count);
    tg_strv_addf(ev, "TEST_INSTANCE_PARAMS=%s", params);
    tg_strv_addf(ev, "TEST_OUTPUTS_PATH=%s", outputs);
    tg_strv_addf(ev, "TEST_TEMP_PATH=%s", temp);
    tg_strv_addf(ev, "TEST_SIDECAR=false");
    tg_strv_addf(ev, "TEST_SUBNET=%s", subnet);
    tg_strv_addf(ev, "TEST_START_TIME=%s", start);
    tg_strv_addf(ev, "TG_INSTANCE_NAME=%s", c->label);
    tg_strv_addf(ev, "TG_DEADLINE=%.3f", r->deadline_unix);
}

/* Start instance c: argv and environment for its backend, then one spawn
 * with its stdout and stderr on pipes of ours.  0 or a negative errno. */
static int spawn_child(tg_local_t *r, tg_child_t *c, const char *params, const char *start) {
    char tmp[4200], timeout[64];
    tg_strv_t ev = {0}, argv = {0}, env = {0};
    int rc = 0;
    snprintf(timeout, sizeof timeout, "%g", r->o->timeout);
    if (tg_mkdir_p(c->outdir) < 0) return -errno;
    /* the child's own environment (or the docker client's): ours without TEST_* */
    for (size_t i = 0; environ[i]; i++)
        if (!is_ours(environ[i])) tg_strv_addf(&env, "%s", environ[i]);
    if (r->dk) {
        instance_env(r, c, params, start, "/outputs", "/tmp", r->dk->subnet, &ev);
        if (!r->run.trace) tg_strv_addf(&ev, "TG_TRACE=0");
        rc = tg_docker_run_argv(r->dk, r->groups[c->group].name, c->index, c->label, c->outdir,
                                &ev, timeout, r->redis_url, &argv);
    } else {
        snprintf(tmp, sizeof tmp, "%s/%s/%d", r->tmpdir, r->groups[c->group].name, c->index);
        if (tg_mkdir_p(tmp) < 0) rc = -errno;
        instance_env(r, c, params, start, c->outdir, tmp, r->o->subnet ? r->o->subnet : "127.1.0.0/16", &ev);
        for (size_t i = 0; i < ev.n; i++) tg_strv_addf(&env, "%s", ev.v[i]);
        tg_strv_addf(&env, "TG_PARENT_PID=%ld", (long)getpid());      /* die with the runner */
        if (r->addr.password[0]) tg_strv_addf(&env, "REDIS_PASSWORD=%s", r->addr.password);
        if (r->addr.user[0]) tg_strv_addf(&env, "REDIS_USERNAME=%s", r->addr.user);
        tg_strv_addf(&argv, "%s", r->exe);
        tg_strv_addf(&argv, "--timeout");
        tg_strv_addf(&argv, "%s", timeout);
        if (!r->run.trace) tg_strv_addf(&argv, "--no-trace");
        if (r->have_redis) {
            tg_strv_addf(&argv, "--redis");
            tg_strv_addf(&argv, "%s", r->redis_url);
            tg_strv_addf(&argv, "--redis-retry");
            tg_strv_addf(&argv, "%g", r->o->redis_retry);
        }
        if (r->o->sync_url) {
            tg_strv_addf(&argv, "--sync");
            tg_strv_addf(&argv, "%s", r->o->sync_url);
        }
        if (r->o->join) tg_strv_addf(&argv, "--join");
        tg_strv_addf(&argv, "%s", r->o->plan_path);
    }
    if (rc == 0 && (ev.oom || argv.oom || env.oom)) rc = UV_ENOMEM;
    if (rc < 0) goto out;

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
    po.file = argv.v[0];
    po.args = argv.v;
    po.env = env.v;
    po.exit_cb = on_exit_cb;
    po.stdio = stdio;
    po.stdio_count = 3;
    po.flags = UV_PROCESS_DETACHED;     /* Ctrl-C reaches tgrun, which stops them in order */
    rc = uv_spawn(&r->loop, &c->proc, &po);
    if (rc < 0) {
        uv_close((uv_handle_t *)&c->out, on_handle_closed);
        uv_close((uv_handle_t *)&c->err, on_handle_closed);
        goto out;
    }
    c->spawned = 1;
    c->pid = c->proc.pid;
    c->handles++;
    r->open_handles++;
    r->running++;
    uv_read_start((uv_stream_t *)&c->out, alloc_cb, on_read);
    uv_read_start((uv_stream_t *)&c->err, alloc_cb, on_read);
out:
    tg_strv_free(&ev);
    tg_strv_free(&argv);
    tg_strv_free(&env);
    return rc;
}

/* ---- ending -------------------------------------------------------------- */

static void maybe_done(tg_local_t *r) {
    if (r->running > 0 || r->open_handles > 0) return;
    uv_stop(&r->loop);
}

int tg_super_run(tg_local_t *r, const char *params, const char *start) {
    const tg_opts_t *o = r->o;
    uv_timer_init(&r->loop, &r->deadline);
    uv_timer_init(&r->loop, &r->killer);
    uv_timer_init(&r->loop, &r->progress);
    uv_signal_init(&r->loop, &r->sigint);
    uv_signal_init(&r->loop, &r->sigterm);
    r->deadline.data = r->killer.data = r->progress.data = r->sigint.data = r->sigterm.data = r;
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    r->deadline_unix = (double)now.tv_sec + now.tv_nsec / 1e9 + o->timeout;
    uv_timer_start(&r->deadline, on_deadline, (uint64_t)((o->timeout + o->grace) * 1000), 0);
    if (r->tty) uv_timer_start(&r->progress, tg_local_on_progress, 0, 250);

    for (int i = 0; i < r->n; i++) {
        tg_child_t *c = &r->kids[i];
        int src = spawn_child(r, c, params, start);
        if (src < 0) {
            tg_local_clear_progress(r);
            fprintf(stderr, "tgrun: cannot start %s: %s\n", c->label, uv_strerror(src));
        }
    }
    if (r->running > 0 || r->open_handles > 0) uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&r->progress);
    uv_timer_stop(&r->deadline);
    uv_timer_stop(&r->killer);
    int status = tg_local_summarize(r);
    tg_local_conclude(r);
    uv_close((uv_handle_t *)&r->deadline, NULL);
    uv_close((uv_handle_t *)&r->killer, NULL);
    uv_close((uv_handle_t *)&r->progress, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    return status;
}
