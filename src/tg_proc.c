/*
 * tg_proc.c -- tg.exec: run a program as a child process while the other
 * tasks keep running.  The Lua side (lua/tg/proc.lua) checks the arguments;
 * this file spawns, feeds stdin, collects stdout and stderr, and ends the
 * task's wait.
 *
 * Ownership and invariants:
 *  - One proc_t per call, malloc'd, with its libuv handles inside it: the
 *    process, the stdout and stderr pipes, the stdin pipe (only with
 *    opts.stdin) and the kill timer (only with opts.timeout).  nopen counts
 *    the handles initialised and not yet closed; the last close callback
 *    frees the proc_t, its buffers, and its reference on the task.  Nothing
 *    else frees it.
 *  - The process handle is closed only in its exit callback, so every child
 *    is reaped, also when its task was cancelled or the instance shuts down:
 *    a kill makes the exit come soon, and the loop runs until it does.
 *  - The child leads its own process group (UV_PROCESS_DETACHED, i.e.
 *    setsid) and kills go to the whole group, so `sh -c "a | b"` dies whole.
 *  - The wait ends when the process has exited and both output pipes are
 *    closed: at EOF normally, at the exit when we killed it.  opts.timeout
 *    is our own timer: it kills, and the wait then ends with "timeout" once
 *    the child is reaped, so that a caller who sees the error may rely on the
 *    process being gone.  The task's own deadline (opts.timeout plus
 *    KILL_GRACE, or the run's deadline) is the safety net behind it.
 *  - libuv callbacks touch Lua only through tg_wait_target(task, token); a
 *    stale token means the wait already ended (cancel, deadline, shutdown).
 */
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <lauxlib.h>

#include "tg_rt.h"

extern char **environ;

#define KILL_GRACE 5.0          /* s after the kill before the task gives up waiting */
#define READ_CHUNK 65536        /* least free space offered to each read */

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

typedef struct proc {
    uv_process_t proc;
    uv_pipe_t out, err, in;
    uv_timer_t timer;
    uv_write_t wreq;
    buf_t bout, berr;
    char *input;                /* copy of opts.stdin, written once */
    size_t input_len;
    int nopen;                  /* handles initialised and not yet closed */
    int has_in, has_timer;
    int pid;
    int exited;
    int64_t status;
    int signal;
    int killed;                 /* SIGKILL sent to the group */
    int timed_out;              /* the opts.timeout timer fired */
    int aborted;                /* the wait ended without us (cancel, deadline, shutdown) */
    int nomem;                  /* an output buffer could not grow */
    int finished;
    double timeout;             /* opts.timeout, or -1 */
    tg_task_t *task;            /* referenced (refs++) once the wait began */
    uint64_t token;
    char what[128];             /* exec "argv ..." */
} proc_t;

/* "5 s", "0.3 s": durations as the runtime's messages print them. */
static const char *secs(double s, char *buf, size_t n) {
    if (s == floor(s) && s < 1e12) snprintf(buf, n, "%.0f s", s);
    else snprintf(buf, n, "%.3g s", s);
    return buf;
}

static void proc_free(proc_t *p) {
    free(p->bout.data);
    free(p->berr.data);
    free(p->input);
    if (p->task) tg_task_unref(p->task);
    free(p);
}

static void on_close(uv_handle_t *h) {
    proc_t *p = h->data;
    if (--p->nopen == 0) proc_free(p);
}

static void close_h(void *h) {
    if (!uv_is_closing(h)) uv_close(h, on_close);
}

/* Set stdout and stderr on the table (result or error) at the top of co. */
static void set_output(lua_State *co, proc_t *p) {
    lua_pushlstring(co, p->bout.data ? p->bout.data : "", p->bout.len);
    lua_setfield(co, -2, "stdout");
    lua_pushlstring(co, p->berr.data ? p->berr.data : "", p->berr.len);
    lua_setfield(co, -2, "stderr");
}

/* What a timed-out exec's error says (push_timeout's argument). */
typedef struct timeout_msg {
    proc_t *p;
    double after;
    const char *extra;
} timeout_msg_t;

/* Raise the "timeout" error, with what was captured (under tg_wait_deliver). */
static int push_timeout(lua_State *L, void *ud) {
    timeout_msg_t *m = ud;
    char b[32];
    tg_err_push(L, "timeout", "%s timed out after %s; killed%s", m->p->what,
                secs(m->after, b, sizeof b), m->extra);
    set_output(L, m->p);
    return lua_error(L);
}

/* Push {code =, signal =, stdout =, stderr =} (under tg_wait_deliver). */
static int push_result(lua_State *L, void *ud) {
    proc_t *p = ud;
    lua_createtable(L, 0, 4);
    /* A signal death reads like a shell's $?: 128 + signal, never 0. */
    lua_pushinteger(L, p->signal ? 128 + p->signal : (lua_Integer)p->status);
    lua_setfield(L, -2, "code");
    if (p->signal) {
        lua_pushinteger(L, p->signal);
        lua_setfield(L, -2, "signal");
    }
    set_output(L, p);
    return 1;
}

/* The process exited and its output is in: end the wait unless it ended already. */
static void complete(proc_t *p) {
    tg_task_t *t = p->task;
    if (!t || p->aborted) return;
    lua_State *co = tg_wait_target(t, p->token);
    if (!co) {
        /* Stale; or still pending but co has no stack space left: then at
         * least unhook p, which dies soon, and let the deadline end the wait. */
        if (t->token == p->token && t->abort_data == p) t->abort = NULL;
        return;
    }
    if (p->timed_out) {
        timeout_msg_t m = {p, p->timeout, ""};
        tg_wait_deliver(t, 1, push_timeout, &m);
    } else if (p->nomem) {
        tg_wait_fail(t, "nomem", "%s: out of memory for its output; killed", p->what);
    } else {
        tg_wait_deliver(t, 1, push_result, p);
    }
}

static void maybe_finish(proc_t *p) {
    if (p->finished || !p->exited || !uv_is_closing((uv_handle_t *)&p->out)
        || !uv_is_closing((uv_handle_t *)&p->err))
        return;
    p->finished = 1;
    if (p->has_in) close_h(&p->in);        /* cancels a write the child never read */
    if (p->has_timer) close_h(&p->timer);
    complete(p);
}

/* SIGKILL the child's process group.  After the exit, also stop waiting for
 * EOF: a process that escaped the group may hold the pipes open. */
static void proc_kill(proc_t *p) {
    if (!p->killed || !p->exited) {
        if (uv_kill(-p->pid, SIGKILL) != 0 && !p->exited) uv_process_kill(&p->proc, SIGKILL);
    }
    p->killed = 1;
    if (p->exited) {
        close_h(&p->out);
        close_h(&p->err);
        maybe_finish(p);
    }
}

static void on_child_exit(uv_process_t *h, int64_t status, int sig) {
    proc_t *p = h->data;
    p->exited = 1;
    p->status = status;
    p->signal = sig;
    close_h(h);
    if (p->killed) {
        close_h(&p->out);
        close_h(&p->err);
    }
    maybe_finish(p);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    (void)hint;
    proc_t *p = h->data;
    buf_t *b = h == (uv_handle_t *)&p->out ? &p->bout : &p->berr;
    if (b->cap - b->len < READ_CHUNK) {
        size_t cap = b->cap ? b->cap : READ_CHUNK;
        while (cap - b->len < READ_CHUNK) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            *buf = uv_buf_init(NULL, 0);        /* on_read gets UV_ENOBUFS */
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    *buf = uv_buf_init(b->data + b->len, (unsigned)(b->cap - b->len > UINT_MAX ? UINT_MAX : b->cap - b->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    (void)buf;
    proc_t *p = s->data;
    buf_t *b = s == (uv_stream_t *)&p->out ? &p->bout : &p->berr;
    if (n > 0) {
        b->len += (size_t)n;
        return;
    }
    if (n == 0) return;                         /* EAGAIN */
    close_h(s);                                 /* EOF or error: this stream is done */
    if (n == UV_ENOBUFS) {
        p->nomem = 1;
        proc_kill(p);
    }
    maybe_finish(p);
}

static void on_written(uv_write_t *req, int status) {
    (void)status;                               /* EPIPE: the child closed its stdin; fine */
    proc_t *p = req->data;
    close_h(&p->in);                            /* EOF for the child */
}

static void on_timeout(uv_timer_t *h) {
    proc_t *p = h->data;
    p->timed_out = 1;
    proc_kill(p);
}

/* The task's wait ended without us: kill the child (it is reaped later, and
 * p freed then).  A deadline gets the better message, with the output. */
static void proc_abort(tg_task_t *t, int why) {
    proc_t *p = t->abort_data;
    p->aborted = 1;
    if (!p->killed || !p->exited) proc_kill(p);
    if (why != TG_ABORT_TIMEOUT) return;        /* tg_rt says "cancelled", "interrupted", ... */
    if (!tg_wait_target(t, t->token)) return;
    char b[32], extra[64] = "";
    if (p->timed_out)
        snprintf(extra, sizeof extra, ", but it had not exited %s later", secs(KILL_GRACE, b, sizeof b));
    timeout_msg_t m = {p, p->timed_out ? p->timeout : t->timeout, extra};
    tg_wait_deliver(t, 1, push_timeout, &m);
}

/* exec "argv joined by spaces", cut to fit. */
static void label(int n, const char *const *args, char *out, size_t len) {
    size_t at = (size_t)snprintf(out, len, "exec \"");
    for (int i = 0; i < n && at < len; i++)
        at += (size_t)snprintf(out + at, len - at, "%s%s", i ? " " : "", args[i]);
    if (at + 2 > len) strcpy(out + len - 5, "...\"");
    else strcat(out, "\"");
}


static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Build the environment: environ with env (index idx) merged over it; false
 * unsets.  Pushes the table of "K=V" strings that anchors them and returns
 * the NULL-terminated array (a userdata pushed above it). */
static char **build_env(lua_State *L, int idx) {
    lua_newtable(L);                            /* env */
    int et = lua_gettop(L);
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e) continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, *e);
        lua_rawset(L, et);
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {                  /* env k v */
        size_t klen;
        if (lua_type(L, -2) != LUA_TSTRING)
            tg_err_raise(L, "invalid", "exec: env keys must be strings");
        const char *k = lua_tolstring(L, -2, &klen);
        if (klen == 0 || strchr(k, '=') || strlen(k) != klen)
            tg_err_raise(L, "invalid", "exec: bad environment variable name \"%s\"", k);
        lua_pushvalue(L, -2);                   /* env k v k */
        if (lua_type(L, -2) == LUA_TSTRING) lua_pushfstring(L, "%s=%s", k, lua_tostring(L, -2));
        else if (lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2)) lua_pushnil(L);
        else tg_err_raise(L, "invalid", "exec: env.%s must be a string or false", k);
        lua_rawset(L, et);                      /* env k v */
        lua_pop(L, 1);
    }
    size_t n = 0;
    for (lua_pushnil(L); lua_next(L, et); lua_pop(L, 1)) n++;
    char **envp = lua_newuserdatauv(L, (n + 1) * sizeof *envp, 0);
    n = 0;
    for (lua_pushnil(L); lua_next(L, et); lua_pop(L, 1)) envp[n++] = (char *)lua_tostring(L, -1);
    envp[n] = NULL;
    return envp;
}

/* proc.exec(argv, timeout, cwd, env, stdin) -> {code =, signal =, stdout =, stderr =}.
 * Yields until the program exited and its output is read.  timeout < 0: none
 * (the run's deadline bounds the wait); cwd, env, stdin may be nil.  Raises
 * "not_found" for a missing program and "invalid" for other spawn errors at
 * once, before anything waits; "timeout" (with .stdout/.stderr) after a kill. */
static int l_proc_exec(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 2, -1);
    const char *cwd = luaL_optstring(L, 3, NULL);
    if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
    size_t input_len = 0;
    const char *input = luaL_optlstring(L, 5, NULL, &input_len);
    lua_settop(L, 5);

    int n = (int)lua_rawlen(L, 1);
    if (n < 1) return tg_err_raise(L, "invalid", "exec: argv must be a non-empty list of strings");
    char **args = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof *args, 0);
    for (int i = 1; i <= n; i++) {
        size_t len;
        if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
            return tg_err_raise(L, "invalid", "exec: argv[%d] must be a string, got %s", i, luaL_typename(L, -1));
        args[i - 1] = (char *)lua_tolstring(L, -1, &len);   /* anchored by argv */
        if (strlen(args[i - 1]) != len) return tg_err_raise(L, "invalid", "exec: argv[%d] contains a NUL byte", i);
        lua_pop(L, 1);
    }
    args[n] = NULL;
    char what[sizeof ((proc_t *)0)->what];
    label(n, (const char *const *)args, what, sizeof what);
    if (input_len > UINT_MAX) return tg_err_raise(L, "invalid", "%s: stdin is too large", what);

    /* The checks tg_wait_begin makes, before anything is started that nobody
     * would wait for. */
    tg_ctx_t *c = tg_ctx(L);
    if (!c->task || c->task->co != L)
        return tg_err_raise(L, "invalid", "%s: a waiting call must run in a task (the case "
                            "function or tg.spawn), not at a plan's top level nor inside "
                            "coroutine.create/wrap", what);
    if (c->task->cancelled) return tg_err_raise(L, "cancelled", "%s: the task was cancelled", what);

    char **envp = lua_istable(L, 4) ? build_env(L, 4) : NULL;   /* anchored above args */

    proc_t *p = calloc(1, sizeof *p);
    if (!p || (input_len && !(p->input = malloc(input_len)))) {
        free(p);
        return tg_err_raise(L, "invalid", "%s: out of memory", what);
    }
    memcpy(p->what, what, sizeof what);
    p->timeout = timeout;
    p->input_len = input_len;
    if (input_len) memcpy(p->input, input, input_len);
    p->has_in = input != NULL;

    uv_loop_t *loop = c->inst->rt->loop;
    uv_stdio_container_t stdio[3];
    uv_pipe_init(loop, &p->out, 0);
    uv_pipe_init(loop, &p->err, 0);
    p->out.data = p->err.data = p;
    p->nopen = 2;
    if (p->has_in) {
        uv_pipe_init(loop, &p->in, 0);
        p->in.data = p;
        p->nopen++;
        stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
        stdio[0].data.stream = (uv_stream_t *)&p->in;
    } else {
        stdio[0].flags = UV_IGNORE;             /* /dev/null */
    }
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->err;

    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.exit_cb = on_child_exit;
    o.file = args[0];
    o.args = args;
    o.env = envp;
    o.cwd = cwd;
    o.flags = UV_PROCESS_DETACHED;
    o.stdio_count = 3;
    o.stdio = stdio;
    int rc = uv_spawn(loop, &p->proc, &o);
    p->proc.data = p;                           /* initialised even on failure: close it */
    p->nopen++;
    if (rc < 0) {
        close_h(&p->proc);
        close_h(&p->out);
        close_h(&p->err);
        if (p->has_in) close_h(&p->in);
        if (cwd && !is_dir(cwd))
            return tg_err_raise(L, "invalid", "%s: cwd \"%s\" is not a directory", what, cwd);
        if (rc == UV_ENOENT)
            return tg_err_raise(L, "not_found", "exec: program \"%s\" not found", args[0]);
        return tg_err_raise(L, "invalid", "%s: cannot start: %s", what, uv_strerror(rc));
    }
    p->pid = p->proc.pid;

    if (uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read) < 0) close_h(&p->out);
    if (uv_read_start((uv_stream_t *)&p->err, on_alloc, on_read) < 0) close_h(&p->err);
    if (p->has_in) {
        uv_buf_t b = uv_buf_init(p->input, (unsigned)p->input_len);
        p->wreq.data = p;
        if (!p->input_len || uv_write(&p->wreq, (uv_stream_t *)&p->in, &b, 1, on_written) < 0)
            close_h(&p->in);
    }
    double wait = -1;
    if (timeout >= 0 && isfinite(timeout) && timeout < 1e9) {
        uv_timer_init(loop, &p->timer);
        p->timer.data = p;
        p->has_timer = 1;
        p->nopen++;
        uv_timer_start(&p->timer, on_timeout, (uint64_t)ceil(timeout * 1000), 0);
        wait = timeout + KILL_GRACE;
        double left = c->inst->rt->deadline - tg_rt_now();
        if (left < wait) wait = left > 0 ? left : 0;
    }

    /* its name in the trace: the command line, inside the label's quotes */
    size_t wl = strlen(what);
    tg_task_t *t = tg_wait_begin(L, TG_WAIT_EXEC, what + 6, wl > 7 ? wl - 7 : 0, wait, what);   /* cannot raise */
    t->refs++;
    p->task = t;
    p->token = t->token;
    tg_wait_on_abort(t, proc_abort, p);
    return tg_wait_yield(L);
}

static const luaL_Reg proc_funcs[] = {
    {"exec", l_proc_exec},
    {NULL, NULL},
};

/* require "tg.proc.c" -> {exec = ...}; lua/tg/proc.lua wraps it. */
int luaopen_tg_proc_c(lua_State *L) {
    luaL_newlib(L, proc_funcs);
    return 1;
}
