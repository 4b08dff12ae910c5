/*
 * tg_rt.c -- the loop, the ready queue, tasks and waits.  See tg_rt.h for the
 * ownership rules; the short version is that only drain() resumes tasks.
 */
#define _GNU_SOURCE                     /* gettid, SIGEV_THREAD_ID */
#include "tg_rt.h"

#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>

#define TG_RECORD_GRACE 5.0     /* s past the deadline to record an outcome */
#define TG_HOOK_COUNT 10000     /* instructions between two calls of the hook */
#define WATCH_SIG SIGALRM       /* the watch's signal (a plan has no alarm()) */
#define WATCH_FIRST_MS 100      /* a drain that ran this long ... */
#define WATCH_EVERY_MS 50       /* ... is looked at this often */

static void drain(uv_idle_t *h);
static void enqueue(tg_task_t *t);

static long live_tasks;         /* allocated and not yet freed, for tests */

double tg_rt_now(void) {
    return (double)uv_hrtime() / 1e9;
}

/* ---- the watch ----------------------------------------------------------
 *
 * A count hook costs Lua a stop at every instruction and every return,
 * whether it has anything to do or not, and the code of a thousand waiters
 * resumed in a row is where that shows.  So the tasks' coroutines run
 * without it, and the watch gives it to the one that needs it: a POSIX
 * timer, armed while a drain runs, signals the loop's own thread (so the
 * handler runs between two of its instructions, as lua.c's Ctrl-C handler
 * does; lua_sethook is meant to be called so); when the task being resumed
 * has run for WATCH_FIRST_MS, its coroutine gets the hook, which from then
 * on does what it always did.  The hook's first look comes up to
 * WATCH_EVERY_MS later than it would have.  Without a timer (timer_create
 * failed) every thread keeps the hook. */

static void hook_task(tg_task_t *t) {
    t->hooked = 1;
    lua_sethook(t->co, tg_rt_hook, LUA_MASKCOUNT, TG_HOOK_COUNT);
}

void tg_rt_hook_thread(lua_State *L) {
    lua_sethook(L, tg_rt_hook, LUA_MASKCOUNT, TG_HOOK_COUNT);
}

static void on_watch(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    if (si->si_code != SI_TIMER) return;        /* not ours (kill -ALRM) */
    tg_rt_t *rt = si->si_value.sival_ptr;
    tg_task_t *t = rt->running;
    if (t && !t->hooked && rt->resumed_at && uv_hrtime() - rt->resumed_at >= WATCH_FIRST_MS * 1000000ull)
        hook_task(t);
}

static void watch_init(tg_rt_t *rt) {
    static int handled;
    if (!handled) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_watch;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        if (sigaction(WATCH_SIG, &sa, NULL) != 0) return;
        handled = 1;
    }
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = WATCH_SIG;
    ev.sigev_value.sival_ptr = rt;
#ifdef sigev_notify_thread_id                   /* (musl, glibc from 2.41 on) */
    ev.sigev_notify_thread_id = gettid();
#else
    ev._sigev_un._tid = gettid();
#endif
    rt->watch_ok = timer_create(CLOCK_MONOTONIC, &ev, &rt->watch) == 0;
}

/* Arm (on) or disarm the watch: around the resumes of a drain. */
static void watch(tg_rt_t *rt, int on) {
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (on) {
        its.it_value.tv_nsec = WATCH_FIRST_MS * 1000000L;
        its.it_interval.tv_nsec = WATCH_EVERY_MS * 1000000L;
    }
    if (rt->watch_ok) timer_settime(rt->watch, 0, &its, NULL);
}

void tg_rt_doom(tg_inst_t *inst) {
    inst->doomed = 1;
    tg_task_t *t = inst->rt->running;
    if (t && t->ctx.inst == inst && !t->hooked) hook_task(t);
}

int tg_rt_init(tg_rt_t *rt, uv_loop_t *loop) {
    memset(rt, 0, sizeof *rt);
    rt->loop = loop;
    rt->deadline = tg_rt_now() + 600;
    rt->next_task_id = 1;
    int rc = uv_idle_init(loop, &rt->idle);
    rt->idle.data = rt;
    if (rc == 0) rc = uv_timer_init(loop, &rt->deadline_timer);
    rt->deadline_timer.data = rt;
    if (rc == 0) watch_init(rt);
    return rc;
}

int tg_rt_on_drained(tg_rt_t *rt, void (*fn)(void *data), void *data) {
    if (rt->ndrained >= (int)(sizeof rt->drained / sizeof rt->drained[0])) return -1;
    rt->drained[rt->ndrained].fn = fn;
    rt->drained[rt->ndrained].data = data;
    rt->ndrained++;
    return 0;
}

void tg_rt_off_drained(tg_rt_t *rt, void (*fn)(void *data), void *data) {
    for (int i = 0; i < rt->ndrained; i++) {
        if (rt->drained[i].fn == fn && rt->drained[i].data == data) {
            memmove(&rt->drained[i], &rt->drained[i + 1], (size_t)(rt->ndrained - i - 1) * sizeof rt->drained[0]);
            rt->ndrained--;
            return;
        }
    }
}

int tg_rt_on_catch_up(tg_rt_t *rt, void (*fn)(void *data), void *data) {
    if (rt->ncatch_up >= (int)(sizeof rt->catch_up / sizeof rt->catch_up[0])) return -1;
    rt->catch_up[rt->ncatch_up].fn = fn;
    rt->catch_up[rt->ncatch_up].data = data;
    rt->ncatch_up++;
    return 0;
}

void tg_rt_off_catch_up(tg_rt_t *rt, void (*fn)(void *data), void *data) {
    for (int i = 0; i < rt->ncatch_up; i++) {
        if (rt->catch_up[i].fn == fn && rt->catch_up[i].data == data) {
            memmove(&rt->catch_up[i], &rt->catch_up[i + 1],
                    (size_t)(rt->ncatch_up - i - 1) * sizeof rt->catch_up[0]);
            rt->ncatch_up--;
            return;
        }
    }
}

void tg_rt_interrupt(tg_rt_t *rt, const char *why) {
    snprintf(rt->interrupt_why, sizeof rt->interrupt_why, "%s", why);
    double soon = tg_rt_now() + 2;
    if (rt->deadline > soon) rt->deadline = soon;
    for (tg_inst_t *inst = rt->insts; inst; inst = inst->next)
        for (tg_task_t *t = inst->tasks; t; t = t->next)
            if (t->state == TG_TASK_WAITING) tg_wait_abort(t, TG_ABORT_INTERRUPT);
}

/* The one runtime that catches signals, and what arrived: the handler may
 * only touch these (and uv_async_send, which is async-signal-safe). */
static uv_async_t *signal_async;
static volatile sig_atomic_t signal_seen;

static void on_signal(int signum) {
    if (signal_seen) _exit(130);                /* the second one: now */
    signal_seen = signum;
    if (signal_async) uv_async_send(signal_async);
}

static void on_sig_async(uv_async_t *h) {
    tg_rt_t *rt = h->data;
    if (!signal_seen || rt->interrupts) return;
    rt->interrupts++;
    tg_rt_interrupt(rt, signal_seen == SIGINT ? "SIGINT" : "SIGTERM");
}

void tg_rt_handle_signals(tg_rt_t *rt) {
    uv_async_init(rt->loop, &rt->sig_async, on_sig_async);
    rt->sig_async.data = rt;
    uv_unref((uv_handle_t *)&rt->sig_async);
    signal_async = &rt->sig_async;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rt->signals_on = 1;
}

void tg_rt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    tg_ctx_t *c = tg_ctx(L);
    if (!c || !c->inst) return;
    tg_inst_t *inst = c->inst;
    tg_rt_t *rt = inst->rt;
    uint64_t now = uv_hrtime();
    double ran = rt->resumed_at ? (double)(now - rt->resumed_at) / 1e9 : 0;
    const char *code = NULL, *why = NULL;
    char b[64];
    if (inst->exited && !inst->case_over) {
        code = "exit";
        why = "the plan called os.exit";
    } else if (inst->dead_why && !inst->case_over) {
        code = "dead";
        why = "this instance was declared dead by the run";
    } else if (ran < 0.1 || inst->case_over) {
        return;                                 /* the usual case: nothing to do */
    } else if (signal_seen) {
        code = "interrupted";
        snprintf(b, sizeof b, "interrupted (%s)", signal_seen == SIGINT ? "SIGINT" : "SIGTERM");
        why = b;
    } else if (tg_rt_now() > rt->deadline) {
        code = "timeout";
        why = "the run's deadline passed";
    } else {
        return;
    }
    rt->resumed_at = now;                       /* a second chance to finish cleanly */
    char secs[32];
    snprintf(secs, sizeof secs, "%.1f", ran);
    tg_err_raise(L, code, "%s while plan code ran for %s s without yielding", why, secs);
}

void tg_rt_close(tg_rt_t *rt) {
    rt->closing = 1;
    /* Tasks still queued (their instances are gone, so they will never
     * run): drop the queue's references on purpose. */
    while (rt->ready_head) {
        tg_task_t *t = rt->ready_head;
        rt->ready_head = t->next_ready;
        if (!rt->ready_head) rt->ready_tail = NULL;
        t->next_ready = NULL;
        tg_task_unref(t);
    }
    if (rt->L) {
        lua_close(rt->L);
        rt->L = NULL;
    }
    tg_pool_free(&rt->pool);
    if (rt->watch_ok) {
        timer_delete(rt->watch);
        rt->watch_ok = 0;
    }
    if (rt->signals_on) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal_async = NULL;
        uv_close((uv_handle_t *)&rt->sig_async, NULL);
        rt->signals_on = 0;
    }
    if (!uv_is_closing((uv_handle_t *)&rt->idle))
        uv_close((uv_handle_t *)&rt->idle, NULL);
    if (!uv_is_closing((uv_handle_t *)&rt->deadline_timer))
        uv_close((uv_handle_t *)&rt->deadline_timer, NULL);
}

tg_ctx_t *tg_ctx(lua_State *L) {
    return *(tg_ctx_t **)lua_getextraspace(L);
}

/* ---- errors ------------------------------------------------------------- */

static void err_pushv(lua_State *L, const char *code, const char *fmt, va_list ap) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushvfstring(L, fmt, ap);
    lua_setfield(L, -2, "message");
    luaL_setmetatable(L, TG_ERROR_META);
}

void tg_err_push(lua_State *L, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_pushv(L, code, fmt, ap);
    va_end(ap);
}

int tg_err_raise(lua_State *L, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_pushv(L, code, fmt, ap);
    va_end(ap);
    return lua_error(L);
}

/* How a bad argument is shown in a message. */
const char *tg_describe(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL: return lua_pushliteral(L, "nothing");
    case LUA_TNUMBER: return luaL_tolstring(L, idx, NULL);
    case LUA_TSTRING:
        if (lua_rawlen(L, idx) == 0) return lua_pushliteral(L, "an empty string");
        /* string.format("%q", v), from the loaded module (not the global) */
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, -1, "string");
        lua_getfield(L, -1, "format");
        lua_remove(L, -2);
        lua_remove(L, -2);
        if (!lua_isfunction(L, -1)) {
            lua_pop(L, 1);
            return lua_pushfstring(L, "\"%s\"", lua_tostring(L, idx));
        }
        lua_pushliteral(L, "%q");
        lua_pushvalue(L, idx);
        lua_call(L, 2, 1);
        return lua_tostring(L, -1);
    default: return lua_pushfstring(L, "a %s", luaL_typename(L, idx));
    }
}

/* Push the instance's reporter `name` (a field of its self table, which
 * core.on sets; see tg_space.h), or nil. */
static void push_handler(lua_State *L, tg_inst_t *inst, const char *name) {
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, inst->self_ref) == LUA_TTABLE) lua_getfield(L, -1, name);
    else lua_pushnil(L);
    lua_remove(L, -2);
}

/* ---- the ready queue ---------------------------------------------------- */

static void enqueue(tg_task_t *t) {
    tg_rt_t *rt = t->ctx.inst->rt;
    t->state = TG_TASK_READY;
    t->next_ready = NULL;
    tg_task_ref(t);                             /* the queue's, dropped by drain() */
    if (rt->ready_tail) rt->ready_tail->next_ready = t;
    else {
        rt->ready_head = t;
        if (!rt->closing) uv_idle_start(&rt->idle, drain);
    }
    rt->ready_tail = t;
}

static void timer_free(uv_handle_t *h) {
    free(h);
}

tg_task_t *tg_task_ref(tg_task_t *t) {
    t->refs++;
    return t;
}

void tg_task_unref(tg_task_t *t) {
    if (--t->refs > 0) return;
    live_tasks--;
    free(t);
}

/* Drop a reference that cannot be the last (the caller holds another):
 * no free path, so the compiler sees t stay valid. */
static void unref_held(tg_task_t *t) {
    t->refs--;
}

long tg_task_live(void) {
    return live_tasks;
}

/* Push the results of finished task t on L (its values, or its error);
 * returns how many, and sets *ok when asked. */
static int push_results(lua_State *L, tg_task_t *t, int *ok) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->results_ref);
    lua_getfield(L, -1, "ok");
    if (ok) *ok = lua_toboolean(L, -1);
    lua_getfield(L, -2, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 2);
    luaL_checkstack(L, n, "too many results");
    for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
    return n;
}

/* A joiner takes task t's error (join raises it next): the error is the
 * joiner's now, not the instance's (results.claimed), and the joiner's
 * error handler can tell how it began (registry "tg.reraised": the results,
 * with the error at [1] and explicit/traceback; see tg.outcome). */
static void claim_error(lua_State *L, tg_task_t *t) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->results_ref);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "claimed");
    lua_setfield(L, LUA_REGISTRYINDEX, "tg.reraised");
}

int tg_task_push_results(lua_State *L, tg_task_t *t, int *ok) {
    int okv;
    int n = push_results(L, t, &okv);
    if (!okv) claim_error(L, t);
    if (ok) *ok = okv;
    return n;
}

static int push_joined(lua_State *L, void *ud) {
    return tg_task_push_results(L, ud, NULL);
}

/* Did the function running at the top of the dead coroutine co raise its
 * error (at the top of L) itself through the base library's error() or
 * assert()?  1 yes, 0 the VM or a library function did (or it cannot be
 * told).  An error a join passed on from another task keeps that task's
 * answer.  Leaves L as it was. */
static int raised_explicitly(lua_State *L, lua_State *co) {
    lua_Debug ar;
    int err = lua_gettop(L);
    if (!lua_getstack(co, 0, &ar) || !lua_checkstack(co, 1) || !lua_checkstack(L, 4)) return 0;
    if (!lua_getinfo(co, "f", &ar)) return 0;   /* co: ... raiser */
    lua_xmove(co, L, 1);                        /* L: err raiser */
    lua_getfield(L, LUA_REGISTRYINDEX, "tg.error_fn");
    lua_getfield(L, LUA_REGISTRYINDEX, "tg.assert_fn");
    int yes = lua_rawequal(L, -3, -2) || lua_rawequal(L, -3, -1);
    lua_pop(L, 3);
    if (yes) return 1;
    if (lua_getfield(L, LUA_REGISTRYINDEX, "tg.reraised") == LUA_TTABLE) {
        lua_rawgeti(L, -1, 1);                  /* err reraised reraised[1] */
        if (lua_rawequal(L, -1, err)) {
            lua_getfield(L, -2, "explicit");
            yes = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return yes;
}

/* The task ended: keep its results for join(), release its coroutine at
 * once (finished coroutines must not linger until a GC cycle), wake the
 * tasks that join it, and tell the instance when its main task ended. */
static void finish(tg_task_t *t, int ok, int nres) {
    tg_inst_t *inst = t->ctx.inst;
    lua_State *L = inst->L, *co = t->co;

    /* results = {ok = bool, n = count, [1..n] = values | [1] = error,
     * traceback, explicit (raised by error()/assert(): see tg.outcome),
     * claimed (a joiner took the error)} */
    lua_createtable(L, nres, 3);
    lua_pushboolean(L, ok);
    lua_setfield(L, -2, "ok");
    if (ok) {
        lua_pushinteger(L, nres);
        lua_setfield(L, -2, "n");
        lua_xmove(co, L, nres);
        for (int i = nres; i >= 1; i--) lua_rawseti(L, -(i + 1), i);
    } else {
        lua_pushinteger(L, 1);
        lua_setfield(L, -2, "n");
        lua_xmove(co, L, 1);                    /* results err */
        const char *msg = NULL;
        if (lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
        else if (luaL_callmeta(L, -1, "__tostring")) {
            msg = lua_tostring(L, -1);          /* results err str */
            lua_pop(L, 1);
        }
        luaL_traceback(L, co, msg, 0);          /* results err tb */
        lua_setfield(L, -3, "traceback");
        lua_pushboolean(L, raised_explicitly(L, co));
        lua_setfield(L, -3, "explicit");
        lua_rawseti(L, -2, 1);
    }
    t->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_resetthread(co);
    *(tg_ctx_t **)lua_getextraspace(co) = &inst->ctx;
    luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
    t->co = NULL;
    t->co_ref = LUA_NOREF;
    t->state = TG_TASK_DONE;
    t->token++;
    if (t->timer) {
        t->timer->data = NULL;
        uv_close((uv_handle_t *)t->timer, timer_free);
        t->timer = NULL;
    }
    if (t->prev) t->prev->next = t->next;
    else inst->tasks = t->next;
    if (t->next) t->next->prev = t->prev;
    inst->ntasks--;

    int joined = t->joiners != NULL;
    while (t->joiners) {
        tg_task_t *j = t->joiners;
        t->joiners = j->next_joiner;
        j->abort = NULL;
        if (tg_wait_target(j, j->token)) tg_wait_deliver(j, ok, push_joined, t);
        unref_held(t);                          /* the joiner's; "running" is still held */
    }

    /* An error nobody joins must not vanish: hand it to the instance's
     * reporter (tg.instance sets it), else print it. */
    if (!ok && !joined && t != inst->main) {
        push_handler(L, inst, "on_task_error");
        if (lua_isfunction(L, -1)) {
            lua_pushstring(L, t->name);
            lua_rawgeti(L, LUA_REGISTRYINDEX, t->results_ref);
            if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
        } else lua_pop(L, 1);
    }

    /* Its handle is gone: nobody will ever ask for the results. */
    if (t->handle_gone && t != inst->main) {
        luaL_unref(L, LUA_REGISTRYINDEX, t->results_ref);
        t->results_ref = LUA_NOREF;
    }

    /* The instance's life is over: its trace reaches the disk now, before
     * the runner reports (an in-process run's instances live on until then). */
    if (t == inst->main && inst->trace) tg_trace_flush(inst->trace);
    if (t == inst->main && inst->rt->on_inst_done) inst->rt->on_inst_done(inst);
    unref_held(t);      /* "running"; never the last: drain() holds the queue's */
}

static void resume(tg_task_t *t) {
    lua_State *co = t->co;
    tg_rt_t *rt = t->ctx.inst->rt;
    int nres, nargs = t->nresume;
    t->nresume = 0;
    t->state = TG_TASK_RUNNING;
    rt->running = t;
    rt->resumed_at = uv_hrtime();
    if (t->ctx.inst->doomed && !t->hooked) hook_task(t);
    int st = lua_resume(co, t->ctx.inst->L, nargs, &nres);
    rt->running = NULL;
    rt->resumed_at = 0;
    /* (a doomed instance's keeps it: its count must run on across resumes
     * of code that catches every error and yields a few instructions later) */
    if (t->hooked && rt->watch_ok && !t->ctx.inst->doomed) {
        t->hooked = 0;
        lua_sethook(co, NULL, 0, 0);
    }
    if (st == LUA_YIELD) {
        lua_pop(co, nres);
        /* A bare coroutine.yield() in a task body lets the others run, like
         * tg.sleep(0); a runtime wait left the task WAITING. */
        if (t->state == TG_TASK_RUNNING) enqueue(t);
        return;
    }
    finish(t, st == LUA_OK, st == LUA_OK ? nres : 1);
}

static void drain(uv_idle_t *h) {
    tg_rt_t *rt = h->data;
    if (rt->warnings) {
        rt->warnings = 0;
        for (tg_inst_t *inst = rt->insts; inst; inst = inst->next)
            if (inst->warnings) tg_inst_flush_warnings(inst);
    }
    tg_task_t *t = rt->ready_head;
    rt->ready_head = rt->ready_tail = NULL;     /* later arrivals wait for the next turn */
    int resumed = 0, watched = t != NULL;
    if (watched) watch(rt, 1);
    while (t) {
        tg_task_t *next = t->next_ready;
        t->next_ready = NULL;
        if (t->co && t->state == TG_TASK_READY) {
            resume(t);
            /* Waking a thousand waiters takes a while: let Redis start on
             * the commands they queued instead of idling until the end. */
            if (++resumed % 32 == 0 && rt->flush) rt->flush(rt->flush_data);
        }
        tg_task_unref(t);                       /* queue's reference */
        t = next;
    }
    if (watched) watch(rt, 0);
    /* The turn's tasks ran: what they gathered goes out now, once. */
    for (int i = 0; i < rt->ndrained; i++) rt->drained[i].fn(rt->drained[i].data);
    if (!rt->ready_head && !rt->warnings) uv_idle_stop(&rt->idle);
}

/* ---- tasks -------------------------------------------------------------- */

tg_task_t *tg_task_spawn(lua_State *L, int nargs, const char *name) {
    tg_inst_t *inst = tg_ctx(L)->inst;
    tg_task_t *t = calloc(1, sizeof *t);
    if (!t) { luaL_error(L, "out of memory"); return NULL; }
    t->timer = malloc(sizeof *t->timer);
    if (!t->timer) { free(t); luaL_error(L, "out of memory"); return NULL; }
    live_tasks++;
    uv_timer_init(inst->rt->loop, t->timer);
    t->timer->data = t;
    t->ctx.inst = inst;
    t->ctx.task = t;
    t->id = inst->rt->next_task_id++;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "task");
    t->results_ref = LUA_NOREF;

    lua_State *co = lua_newthread(L);           /* fn args co */
    if (inst->rt->watch_ok) lua_sethook(co, NULL, 0, 0);   /* (the watch hooks it when needed) */
    t->co = co;
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* fn args */
    lua_xmove(L, co, nargs + 1);
    *(tg_ctx_t **)lua_getextraspace(co) = &t->ctx;

    tg_task_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = t;
    luaL_setmetatable(L, TG_TASK_META);
    t->refs = 2;                                /* the handle, and "running" */
    t->nresume = nargs;

    t->next = inst->tasks;
    if (inst->tasks) inst->tasks->prev = t;
    inst->tasks = t;
    inst->ntasks++;
    enqueue(t);
    return t;
}

void tg_task_cancel(tg_task_t *t) {
    if (t->state == TG_TASK_DONE) return;
    t->cancelled = 1;
    if (t->state == TG_TASK_WAITING) tg_wait_abort(t, TG_ABORT_CANCEL);
}

/* ---- waits -------------------------------------------------------------- */

/* Before a timeout is declared: the answers that have arrived but were not
 * read yet.  libuv runs timers before it polls, so after a turn that kept
 * the loop busy for longer than a wait's timeout (the end of 20,000
 * in-process instances) the timer would fire with its reply already in the
 * socket.  Once per turn of the loop (uv_now is the turn's clock). */
static void catch_up(tg_rt_t *rt) {
    uint64_t now = uv_now(rt->loop) + 1;
    if (!rt->ncatch_up || rt->caught_up_at == now) return;
    rt->caught_up_at = now;
    for (int i = 0; i < rt->ncatch_up; i++) rt->catch_up[i].fn(rt->catch_up[i].data);
}

static void on_deadline(uv_timer_t *h) {
    tg_task_t *t = h->data;
    if (!t || t->state != TG_TASK_WAITING) return;
    catch_up(t->ctx.inst->rt);
    if (t->state == TG_TASK_WAITING) tg_wait_abort(t, TG_ABORT_TIMEOUT);
}

/* The run's deadline came: end every wait that only it bounded. */
static void on_run_deadline(uv_timer_t *h) {
    tg_rt_t *rt = h->data;
    catch_up(rt);
    for (tg_inst_t *inst = rt->insts; inst; inst = inst->next)
        for (tg_task_t *t = inst->tasks; t; t = t->next)
            if (t->state == TG_TASK_WAITING && t->on_run_deadline) tg_wait_abort(t, TG_ABORT_TIMEOUT);
}

static void arm_run_deadline(tg_rt_t *rt) {
    uv_update_time(rt->loop);
    double ms = ceil((rt->deadline - tg_rt_now()) * 1000);
    if (!(ms > 0)) ms = 0;
    uv_timer_start(&rt->deadline_timer, on_run_deadline, ms < 1.8e19 ? (uint64_t)ms : UINT64_MAX, 0);
    rt->deadline_armed = rt->deadline;
}

/* The wait of t no longer needs a timer: it ended, or it is about to get
 * one of its own (tg_wait_extend). */
static void untime(tg_task_t *t) {
    if (t->on_run_deadline) {                   /* (its own timer was not started) */
        tg_rt_t *rt = t->ctx.inst->rt;
        t->on_run_deadline = 0;
        if (--rt->deadline_waits == 0) uv_timer_stop(&rt->deadline_timer);
    } else if (t->timer) {
        uv_timer_stop(t->timer);
    }
}

static tg_task_t *wait_begin(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                             const char *what, int copy) {
    tg_ctx_t *c = tg_ctx(L);
    tg_task_t *t = c->task;
    if (!t || t->co != L)
        tg_err_raise(L, "invalid", "%s: a waiting call must run in a task (the case "
                     "function or tg.spawn), not at a plan's top level nor inside "
                     "coroutine.create/wrap", what);
    if (t->cancelled)
        tg_err_raise(L, "cancelled", "%s: the task was cancelled", what);
    if (c->inst->dead_why && !c->inst->case_over)     /* (recording its outcome still may) */
        tg_err_raise(L, "dead", "%s: this instance was declared dead by the run: %s", what, c->inst->dead_why);
    t->kind = kind;
    uint64_t hr = uv_hrtime();                  /* (one clock read: the span's and the deadline's) */
    if (c->inst->trace) t->span = tg_trace_begin(c->inst->rt->tracer, c->inst->trace, kind, t->id, name, nlen, hr);
    t->token++;
    t->state = TG_TASK_WAITING;
    t->abort = NULL;
    t->abort_data = NULL;
    if (copy) {
        size_t n = strnlen(what, sizeof t->whatbuf - 1);
        memcpy(t->whatbuf, what, n);
        t->whatbuf[n] = '\0';
        t->what = t->whatbuf;
    } else {
        t->what = what;
    }
    /* Every wait ends by the run's deadline: its own timeout, unless that
     * is later (math.huge included) -- then the deadline, and the message
     * says so. */
    /* (once the case is over, recording its outcome gets a few seconds more) */
    double left = c->inst->rt->deadline + (c->inst->case_over ? TG_RECORD_GRACE : 0) - (double)hr / 1e9;
    if (left < 0) left = 0;
    t->by_deadline = timeout < 0 || !(timeout <= left);
    if (t->by_deadline) timeout = left;
    t->timeout = timeout;
    tg_rt_t *rt = c->inst->rt;
    if (t->by_deadline && !c->inst->case_over) {
        /* the runtime's one deadline timer ends it (re-armed when the
         * deadline moved earlier: an interrupt) */
        t->on_run_deadline = 1;
        rt->deadline_waits++;
        if (!uv_is_active((uv_handle_t *)&rt->deadline_timer) || rt->deadline < rt->deadline_armed)
            arm_run_deadline(rt);
        return t;
    }
    /* The loop's clock is cached; plan code may have run (or blocked in
     * os.execute) for a while since the loop last looked. */
    uv_update_time(rt->loop);
    double ms = ceil(timeout * 1000);
    uv_timer_start(t->timer, on_deadline, ms < 1.8e19 ? (uint64_t)ms : UINT64_MAX, 0);
    return t;
}

tg_task_t *tg_wait_begin(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                         const char *what) {
    return wait_begin(L, kind, name, nlen, timeout, what, 1);
}

tg_task_t *tg_wait_begin_ref(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                             const char *what) {
    return wait_begin(L, kind, name, nlen, timeout, what, 0);
}

void tg_wait_extend(tg_task_t *t, double secs) {
    if (!t->timer) return;
    untime(t);
    uv_update_time(t->ctx.inst->rt->loop);
    uv_timer_start(t->timer, on_deadline, (uint64_t)ceil(secs * 1000), 0);
}

void tg_wait_on_abort(tg_task_t *t, tg_abort_fn fn, void *data) {
    t->abort = fn;
    t->abort_data = data;
}

static int wait_k(lua_State *L, int status, lua_KContext base) {
    (void)status;
    tg_task_t *t = tg_ctx(L)->task;
    if (!t->ok) return lua_error(L);
    return lua_gettop(L) - (int)base;
}

int tg_wait_yield(lua_State *L) {
    return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), wait_k);
}

lua_State *tg_wait_target(tg_task_t *t, uint64_t token) {
    if (!t->co || t->state != TG_TASK_WAITING || t->token != token) return NULL;
    if (!lua_checkstack(t->co, 8)) return NULL;
    return t->co;
}

/* The end of t's traced wait: its one integer result (an arrival seq, a
 * topic seq), or its error's code and message.  This runs outside any
 * protected call, so the values on t->co are only looked at, never
 * converted: nothing here may allocate Lua memory. */
static void trace_end(tg_task_t *t, int ok, int nvalues) {
    tg_trace_t *tr = t->ctx.inst->trace;
    tg_span_t span = t->span;
    lua_State *co = t->co;
    t->span.id = 0;
    if (ok) {
        int64_t v = 0;
        int has = nvalues == 1 && lua_isinteger(co, -1);
        if (has) v = (int64_t)lua_tointeger(co, -1);
        tg_trace_end(t->ctx.inst->rt->tracer, tr, span, NULL, NULL, 0, has ? &v : NULL);
        return;
    }
    const char *code = "error", *msg = NULL;
    size_t mlen = 0;
    if (lua_type(co, -1) == LUA_TSTRING) {
        msg = lua_tolstring(co, -1, &mlen);
    } else if (lua_type(co, -1) == LUA_TTABLE && lua_checkstack(co, 3)) {
        /* an error value {code, message}: walked with lua_next, because a
         * lookup by name could have to create the key string */
        lua_pushnil(co);                        /* err key */
        while (lua_next(co, -2)) {              /* err key value */
            if (lua_type(co, -2) == LUA_TSTRING && lua_type(co, -1) == LUA_TSTRING) {
                const char *k = lua_tostring(co, -2);
                if (strcmp(k, "code") == 0) code = lua_tostring(co, -1);
                else if (strcmp(k, "message") == 0) msg = lua_tolstring(co, -1, &mlen);
            }
            lua_pop(co, 1);                     /* err key */
        }
    }
    tg_trace_end(t->ctx.inst->rt->tracer, tr, span, code, msg, mlen, NULL);   /* copies: the strings live on co */
}

void tg_wait_done(tg_task_t *t, int ok, int nvalues) {
    if (t->span.id) trace_end(t, ok, nvalues);
    untime(t);
    t->abort = NULL;
    t->ok = ok;
    t->nresume = nvalues;
    t->token++;
    enqueue(t);
}

typedef struct deliver {
    int (*push)(lua_State *L, void *ud);
    void *ud;
} deliver_t;

static int l_deliver(lua_State *L) {
    deliver_t *d = lua_touserdata(L, 1);
    lua_settop(L, 0);
    return d->push(L, d->ud);
}

int tg_wait_deliver(tg_task_t *t, int ok, int (*push)(lua_State *L, void *ud), void *ud) {
    tg_inst_t *inst = t->ctx.inst;
    tg_task_t *run = inst->rt->running;
    lua_State *co = t->co;
    /* Where to convert: the running coroutine of t's instance when there is
     * one (a call that ends another wait at once), else the instance's own
     * thread, which is idle while I/O callbacks run. */
    lua_State *W = run && run->ctx.inst == inst ? run->co : inst->L;
    int top = lua_gettop(W), n = 0, raised = 1;
    deliver_t d = {push, ud};
    if (lua_checkstack(W, 4)) {
        lua_pushcfunction(W, l_deliver);
        lua_pushlightuserdata(W, &d);
        if (lua_pcall(W, 1, LUA_MULTRET, 0) != LUA_OK) ok = 0;
        else raised = 0;
        n = lua_gettop(W) - top;
        if (!ok && n != 1) {
            lua_settop(W, top);
            n = 0;
        }
    }
    if (n == 0 && !ok) {
        /* Not even the error could be made: Lua's own preallocated message. */
        lua_pushliteral(W, "not enough memory");
        n = 1;
    }
    if (W != co) {
        if (!lua_checkstack(co, n)) {
            lua_settop(W, top);
            ok = 0;
            lua_pushliteral(co, "not enough memory");
            n = 1;
        } else {
            lua_xmove(W, co, n);
        }
    }
    tg_wait_done(t, ok, n);
    return raised ? -1 : 0;
}

typedef struct failure {
    const char *code;
    char *msg;                  /* malloc'd; NULL if formatting ran out of memory */
} failure_t;

static int push_failure(lua_State *L, void *ud) {
    failure_t *f = ud;
    tg_err_push(L, f->code, "%s", f->msg ? f->msg : "not enough memory (formatting an error)");
    return 1;
}

void tg_wait_fail(tg_task_t *t, const char *code, const char *fmt, ...) {
    va_list ap;
    failure_t f = {code, NULL};
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0 && (f.msg = malloc((size_t)n + 1))) {
        va_start(ap, fmt);
        vsnprintf(f.msg, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    tg_wait_deliver(t, 0, push_failure, &f);
    free(f.msg);
}

/* How the messages print the length of t's wait: "5 s", "0.25 s", or
 * "1.99 s (the run's deadline)". */
const char *tg_wait_secs(const tg_task_t *t, char *buf, size_t n) {
    double s = t->timeout;
    const char *dl = t->by_deadline ? " (the run's deadline)" : "";
    if (s == floor(s) && s < 1e12) snprintf(buf, n, "%.0f s%s", s, dl);
    else snprintf(buf, n, "%.3g s%s", s, dl);
    return buf;
}

void tg_wait_abort(tg_task_t *t, int why) {
    if (t->state != TG_TASK_WAITING) return;
    tg_abort_fn fn = t->abort;
    t->abort = NULL;
    if (fn) fn(t, why);                         /* may complete the wait itself */
    /* ... or defer it: a hook that installs another hook keeps the wait open
     * (bounded by tg_wait_extend) to finish it with a better message. */
    if (t->state != TG_TASK_WAITING || t->abort) return;
    char b[64];
    switch (why) {
    case TG_ABORT_TIMEOUT:
        tg_wait_fail(t, "timeout", "%s timed out after %s", t->what, tg_wait_secs(t, b, sizeof b));
        break;
    case TG_ABORT_CANCEL:
        tg_wait_fail(t, "cancelled", "%s: cancelled", t->what);
        break;
    case TG_ABORT_CLOSED:
        tg_wait_fail(t, "closed", "%s: the connection to Redis was lost", t->what);
        break;
    case TG_ABORT_INTERRUPT:
        tg_wait_fail(t, "interrupted", "interrupted (%s) while waiting for %s",
                     t->ctx.inst->rt->interrupt_why, t->what);
        break;
    case TG_ABORT_DEAD:
        tg_wait_fail(t, "dead", "%s: this instance was declared dead by the run: %s", t->what,
                     t->ctx.inst->dead_why ? t->ctx.inst->dead_why : "?");
        break;
    default:
        tg_wait_fail(t, "cancelled", "%s: the instance is shutting down", t->what);
        break;
    }
}

/* Abandon every task of inst (the instance is going away): unregister their
 * waits, drop their coroutines (they die with the state) and their timers. */
void tg_inst_abandon_tasks(tg_inst_t *inst) {
    for (tg_task_t *t = inst->tasks; t; t = t->next) {
        if (t->state == TG_TASK_WAITING) {
            tg_abort_fn fn = t->abort;
            t->abort = NULL;
            if (fn) fn(t, TG_ABORT_SHUTDOWN);
            if (t->state == TG_TASK_WAITING) untime(t);
        }
    }
    while (inst->tasks) {
        tg_task_t *t = inst->tasks;
        inst->tasks = t->next;
        inst->ntasks--;
        t->co = NULL;
        t->state = TG_TASK_DONE;
        t->token++;
        if (t->timer) {
            t->timer->data = NULL;
            uv_close((uv_handle_t *)t->timer, timer_free);
            t->timer = NULL;
        }
        /* the state outlives the instance: give back what the task anchored */
        if (t->co_ref != LUA_NOREF) luaL_unref(inst->rt->L, LUA_REGISTRYINDEX, t->co_ref);
        t->co_ref = LUA_NOREF;
        if (t->results_ref != LUA_NOREF && !t->is_main) {
            luaL_unref(inst->rt->L, LUA_REGISTRYINDEX, t->results_ref);
            t->results_ref = LUA_NOREF;
        }
        tg_task_unref(t);                       /* the "running" reference */
    }
}

/* ---- an instance declared dead -------------------------------------------- */

void tg_inst_kill(tg_inst_t *inst, const char *why) {
    if (inst->dead_why) return;
    inst->dead_why = strdup(why);
    if (!inst->dead_why) inst->dead_why = strdup("?");
    tg_rt_doom(inst);
    for (tg_task_t *t = inst->tasks, *next; t; t = next) {
        next = t->next;
        if (t->state == TG_TASK_WAITING) tg_wait_abort(t, TG_ABORT_DEAD);
    }
}

/* ---- warnings ------------------------------------------------------------ */

void tg_inst_warn(tg_inst_t *inst, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    tg_warning_t *w = malloc(sizeof *w + (size_t)n + 1);
    if (!w) return;
    va_start(ap, fmt);
    vsnprintf(w->text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    w->next = NULL;
    if (inst->warnings_tail) inst->warnings_tail->next = w;
    else inst->warnings = w;
    inst->warnings_tail = w;
    tg_rt_t *rt = inst->rt;
    rt->warnings = 1;
    if (!rt->closing) uv_idle_start(&rt->idle, drain);
}

static int l_warn_one(lua_State *L) {
    tg_warning_t *w = lua_touserdata(L, 1);
    push_handler(L, tg_ctx(L)->inst, "on_warning");
    lua_pushstring(L, w->text);
    if (lua_isfunction(L, -2)) lua_call(L, 1, 0);
    else fprintf(stderr, "tgrun: warning: %s\n", w->text);
    return 0;
}

void tg_inst_flush_warnings(tg_inst_t *inst) {
    lua_State *L = inst->L;
    while (inst->warnings) {
        tg_warning_t *w = inst->warnings;
        inst->warnings = w->next;
        if (!inst->warnings) inst->warnings_tail = NULL;
        lua_pushcfunction(L, l_warn_one);
        lua_pushlightuserdata(L, w);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
            fprintf(stderr, "tgrun: warning: %s\n", w->text);
            lua_pop(L, 1);
        }
        free(w);
    }
}

void tg_rt_random_id(char *buf, size_t len) {
    unsigned char b[6] = {0};
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, b, sizeof b) != (ssize_t)sizeof b) memset(b, 0, sizeof b);
        close(fd);
    }
    snprintf(buf, len, "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
}
