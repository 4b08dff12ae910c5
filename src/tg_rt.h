/*
 * tg_rt.h -- the runtime: one libuv loop, the instances that run on it, and
 * the tasks (Lua coroutines) that those instances run.
 *
 * Ownership and invariants:
 *  - A tg_rt_t is one per process.  It owns the loop, the ready queue and
 *    every instance, and holds (without knowing them) the transport and the
 *    units that wait on it: whoever sets the run up (tg_run.c) attaches and
 *    detaches them.  Several instances may share one runtime (--inproc
 *    runs): they share its one lua_State too (tg_space.h).
 *  - A tg_inst_t owns its thread of that state and its own tables
 *    (tg_space_enter).  Every thread's extra space points at a tg_ctx_t that
 *    names the instance and, for a task's own coroutine, the task.
 *  - A tg_task_t is malloc'd and reference counted (tg_task_ref/unref): one
 *    reference for the Lua handle (the "tg.task" userdata), one while it
 *    runs, one while it is on the ready queue, one per request in flight (an
 *    I/O whose callback has not come back yet) and one per joiner.  So an
 *    I/O callback can always look at the task it was started for, and it
 *    decides whether its result is still wanted by comparing the wait token.
 *  - The one resume path: I/O callbacks never run plan Lua.  They hand the
 *    result to the waiting coroutine (tg_wait_deliver converts it under
 *    protection, so running out of memory becomes an error value, never a
 *    panic), which puts the task on the ready queue; an idle handle drains
 *    that queue and resumes each task.  The drain is also where queued
 *    warnings (tg_inst_warn) reach the instance's log.
 *  - Each task waits on at most one thing at a time.  A wait has a kind
 *    (tg_wait_kind_t, tg_trace.h) and a name, a deadline (its own timeout,
 *    else the run's deadline) and an optional abort hook that unregisters
 *    it from whatever would have completed it.  A wait with a timeout of
 *    its own arms its task's timer; waits bounded only by the run's
 *    deadline share one runtime timer (deadline_timer), so that a thousand
 *    waiters cost no timer operation each.
 *  - Every wait begins in tg_wait_begin and ends in tg_wait_done (where
 *    tg_wait_deliver, tg_wait_fail and every abort end up): those two are
 *    where a traced instance (tg_inst_t.trace) records the wait's span, so
 *    no primitive traces itself.
 *  - A turn of the loop: the drain resumes every task that was ready when
 *    it began, then runs the functions registered with tg_rt_on_drained.
 *    Units that gather what tasks asked for during a turn (tg_barrier's
 *    batches) send it from there, once per turn.
 *  - Plan code that does not yield is ended by the count hook (tg_rt_hook).
 *    Every thread of the state has it except the tasks' own coroutines:
 *    those get it only when they need it -- from the watch (a timer signal
 *    to the loop's thread, armed while a drain runs) once a resume has run
 *    for 0.1 s, or at their resume when their instance was declared dead or
 *    called os.exit -- and lose it when the resume returns.  (A count hook
 *    makes Lua stop at every instruction and every return: 10% of the CPU
 *    of a barrier round of a thousand in-process instances.)
 */
#ifndef TG_RT_H
#define TG_RT_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <lua.h>
#include <uv.h>

#include "tg_pool.h"
#include "tg_trace.h"

#define TG_TASK_META "tg.task"      /* a task handle's metatable (tg_rtlua.c) */
#define TG_ERROR_META "tg.error"    /* an error value's metatable */

typedef struct tg_rt tg_rt_t;
typedef struct tg_inst tg_inst_t;
typedef struct tg_task tg_task_t;
typedef struct tg_redis tg_redis_t;
/* The units that wait on the transport, each opaque here. */
typedef struct tg_barriers tg_barriers_t;
typedef struct tg_tickets tg_tickets_t;
typedef struct tg_sessions tg_sessions_t;
typedef struct tg_topics tg_topics_t;
typedef struct tg_svc tg_svc_t;             /* tg_svc.c: the sync-service client */

/* What the extra space of every thread of an instance points to. */
typedef struct tg_ctx {
    tg_inst_t *inst;
    tg_task_t *task;            /* NULL outside a task's own coroutine */
} tg_ctx_t;

/* Why a wait ended without its event. */
enum { TG_ABORT_TIMEOUT = 1, TG_ABORT_CANCEL, TG_ABORT_CLOSED, TG_ABORT_SHUTDOWN, TG_ABORT_INTERRUPT,
       TG_ABORT_DEAD };

enum { TG_TASK_READY = 1, TG_TASK_RUNNING, TG_TASK_WAITING, TG_TASK_DONE };

typedef void (*tg_abort_fn)(tg_task_t *t, int why);

struct tg_task {
    tg_ctx_t ctx;               /* extra space of co points here while it runs */
    lua_State *co;              /* NULL once the task is done */
    int co_ref;                 /* registry ref anchoring co (and the task handle) */
    int handle_gone;            /* the Lua handle was collected: nobody can join any more */
    int refs;
    int state;
    int cancelled;
    int ok;                     /* outcome of the last wait: 1 values, 0 error */
    int hooked;                 /* co has the count hook until this resume returns (tg_rt.h) */
    int nresume;                /* values pushed on co for the next resume */
    uint64_t token;             /* bumped by every wait; stale callbacks see a mismatch */
    const char *what;           /* what the current wait waits for (whatbuf, or the caller's for
                                 * tg_wait_begin_ref): meaningful from tg_wait_begin until the
                                 * wait ends (tg_wait_done, the abort's message), not after */
    char whatbuf[160];
    double timeout;             /* seconds of the current wait */
    int by_deadline;            /* the wait had no timeout of its own */
    tg_abort_fn abort;          /* unregisters the current wait; may be NULL */
    void *abort_data;
    /* next to the timer: the line every wait's beginning and end touch anyway */
    int kind;                   /* tg_wait_kind_t of the current (or last) wait */
    tg_span_t span;             /* its span in the instance's trace; id 0: not traced */
    uv_timer_t *timer;          /* deadline timer, reused across waits */
    int on_run_deadline;        /* the wait is bounded by the run's deadline alone: the
                                 * runtime's one deadline timer ends it, t->timer is idle */
    tg_task_t *next_ready;
    tg_task_t *prev, *next;     /* the instance's list of live tasks */
    tg_task_t *joiners;         /* tasks waiting in task:join() on this one */
    tg_task_t *next_joiner;
    uint64_t id;
    int results_ref;            /* registry ref of {ok, n, ...} once done, while joinable */
    int is_main;                /* the instance's main task (its results are the runner's) */
    char name[48];
};

/* Result of a finished instance, as the runner reports it. */
enum { TG_OUT_NONE = 0, TG_OUT_SUCCESS, TG_OUT_FAILURE, TG_OUT_CRASH, TG_OUT_USAGE };

/* A warning waiting to reach an instance's log (see tg_inst_warn). */
typedef struct tg_warning {
    struct tg_warning *next;
    char text[];
} tg_warning_t;

struct tg_inst {
    tg_rt_t *rt;
    lua_State *L;               /* its own thread of rt->L (tg_space.h) */
    tg_trace_t *trace;          /* what it waited for (NULL: not traced); closed by tg_inst_free.
                                   Here, in the first cache line with rt: every wait reads it */
    int self_ref;               /* registry ref of its self table (tg_space.h) */
    int doomed;                 /* it called os.exit or was declared dead: its tasks run
                                   with the count hook, which ends their code */
    int config_ref;             /* registry ref of self.config: core.config() is on every
                                   sync call's path, and self is a cold line by then */
    uint64_t rand[4];           /* its math.random generator */
    int rand_seeded;
    int exited;                 /* the plan called os.exit */
    int case_over;              /* the case ended: the runtime records the outcome */
    tg_ctx_t ctx;               /* ctx of the main thread (task == NULL) */
    tg_task_t *tasks;           /* live tasks */
    tg_task_t *main;            /* the task that runs the case */
    int ntasks;
    int outcome;                /* TG_OUT_* */
    char *error;                /* first error line (malloc'd), for summaries */
    char *dead_why;             /* declared dead by the run: why (malloc'd), else NULL */
    int index;                  /* 0-based index in the process (inproc) */
    tg_inst_t *next;
    tg_warning_t *warnings, *warnings_tail;     /* queued for the log */
    void *user;                 /* owned by whoever runs the instance */
};

struct tg_rt {
    uv_loop_t *loop;
    uv_idle_t idle;             /* drains the ready queue */
    tg_task_t *ready_head, *ready_tail;
    tg_task_t *running;         /* the task being resumed, if any */
    char *prefix;               /* the run's key prefix P (malloc'd; tg_keys.h) */
    size_t plen;
    char ttl[24];               /* seconds every key of the run lives */
    tg_redis_t *redis;          /* the transport; NULL until connected */
    tg_barriers_t *barriers;    /* tg_barrier.c */
    tg_tickets_t *tickets;      /* tg_coord.c */
    tg_sessions_t *sessions;    /* tg_session.c */
    tg_topics_t *topics;        /* tg_topic.c */
    tg_svc_t *svc;              /* tg_svc.c, when a sync service is used */
    void (*flush)(void *);      /* push queued I/O to the sockets now ... */
    void *flush_data;           /* ... of this (the transport) */
    struct tg_catch_up {        /* read what already arrived, before a timeout is declared */
        void (*fn)(void *data); /* (tg_rt_on_catch_up: each transport) */
        void *data;
    } catch_up[2];
    int ncatch_up;
    uint64_t caught_up_at;      /* uv_now() of the last catch-up + 1 (0: none yet) */
    struct tg_drained {         /* run at the end of every drain (tg_rt_on_drained) */
        void (*fn)(void *data);
        void *data;
    } drained[4];
    int ndrained;
    uv_timer_t deadline_timer;  /* ends every wait bounded only by the run's deadline */
    int deadline_waits;         /* such waits pending; the timer runs while there are any */
    double deadline_armed;      /* the deadline it was armed for */
    int warnings;               /* instances with queued warnings */
    double deadline;            /* tg_rt_now() value at which the run ends */
    uint64_t next_task_id;
    tg_inst_t *insts;
    int ninsts_running;
    void (*on_inst_done)(tg_inst_t *inst);  /* called when an instance's main task ends */
    int closing;
    int interrupts;             /* SIGINT/SIGTERM received */
    char interrupt_why[64];
    uv_async_t sig_async;       /* a signal arrived (set from the handler) */
    int signals_on;
    uint64_t resumed_at;        /* uv_hrtime() when the running task was resumed */
    timer_t watch;              /* signals the loop's thread while a drain runs long */
    int watch_ok;               /* made: the tasks' coroutines run without the hook */
    const char *lua_dir;        /* develop: load lua/ from here instead of the binary */
    lua_State *L;               /* the one Lua state of the process (tg_space.h) */
    tg_ctx_t root_ctx;          /* what its main thread belongs to: no instance */
    int path_set;               /* package.path has the plan's folders */
    tg_pool_t pool;             /* the memory of that state */
    tg_tracer_t *tracer;        /* the traces' time base and flush timer (NULL: no tracing);
                                   made and freed by the run set-up */
};

/* ---- runtime ---------------------------------------------------------- */

/* Initialise rt on loop.  0 or a negative libuv code. */
int tg_rt_init(tg_rt_t *rt, uv_loop_t *loop);
/* Close the runtime's own handles (after every instance was destroyed). */
void tg_rt_close(tg_rt_t *rt);
/* Catch SIGINT and SIGTERM: the first interrupts every wait (tg_rt_interrupt)
 * and, through the instances' Lua hook, plan code that does not yield; the
 * second exits at once.  A plain sigaction handler (not uv_signal), so that
 * a signal is noticed while plan code holds the loop. */
void tg_rt_handle_signals(tg_rt_t *rt);
/* The count hook (every 10,000 instructions; on which threads: see the
 * top of this file): it ends plan code that has run for 0.1 s without
 * yielding while the run is interrupted or past its deadline, and plan code
 * of an instance that ended (declared dead, os.exit). */
void tg_rt_hook(lua_State *L, lua_Debug *ar);
/* Give thread L that hook (the state's main thread, a plan's coroutines). */
void tg_rt_hook_thread(lua_State *L);
/* inst called os.exit or was declared dead: the code of its tasks ends at
 * the next hook (the running one's included, if it is inst's). */
void tg_rt_doom(tg_inst_t *inst);
/* End every pending wait of every instance with an "interrupted" error that
 * says what it was waiting for, and shorten the deadline so that what runs
 * next (recording the outcome) ends soon. */
void tg_rt_interrupt(tg_rt_t *rt, const char *why);
/* Monotonic seconds. */
double tg_rt_now(void);
/* Run fn(data) at the end of every drain of the ready queue, after the
 * tasks of that turn were resumed (they may have queued work for fn to
 * send) and before the loop polls for I/O.  fn may queue requests and end
 * waits; it must not resume tasks.  At most 4 such functions; 0, or -1 when
 * full.  tg_rt_off_drained removes one (by fn and data). */
int tg_rt_on_drained(tg_rt_t *rt, void (*fn)(void *data), void *data);
/* fn(data) reads and handles what a transport's sockets already hold,
 * without waiting; the runtime calls it before it declares a wait timed
 * out (once per turn of the loop).  0, or -1 when two are registered. */
int tg_rt_on_catch_up(tg_rt_t *rt, void (*fn)(void *data), void *data);
void tg_rt_off_catch_up(tg_rt_t *rt, void (*fn)(void *data), void *data);
void tg_rt_off_drained(tg_rt_t *rt, void (*fn)(void *data), void *data);

/* ---- instances -------------------------------------------------------- */

/* New instance: its thread and tables in the process's Lua state (made
 * with the tg modules on first use).  NULL on ENOMEM. */
tg_inst_t *tg_inst_new(tg_rt_t *rt);
/* Abort its tasks and close its state. */
void tg_inst_free(tg_inst_t *inst);
/* End every task of inst at once (the instance is going away): their waits
 * are unregistered through their abort hooks, nothing is resumed. */
void tg_inst_abandon_tasks(tg_inst_t *inst);
/* Add the task and time functions (spawn, sleep, now, ...) to the table at
 * the top of L's stack and register the task and error metatables. */
void tg_rt_open(lua_State *L);
/* Register the task and error metatables only (at instance creation). */
void tg_rt_register(lua_State *L);
/* Push the results of finished task t (its values, or its error, which
 * then becomes the caller's to raise: tg.outcome tells a join's re-raise
 * from the task's own failure); how many, and *ok when asked. */
int tg_task_push_results(lua_State *L, tg_task_t *t, int *ok);
/* The instance and task of the running thread L. */
tg_ctx_t *tg_ctx(lua_State *L);

/* ---- tasks ------------------------------------------------------------ */

/* Spawn a task running the function at the top of L's stack with nargs
 * arguments above it (all popped).  Pushes the task handle.  The task first
 * runs on the next drain of the ready queue. */
tg_task_t *tg_task_spawn(lua_State *L, int nargs, const char *name);
/* Take one more reference on t (returns t); tg_task_unref drops one and
 * frees the task at zero. */
tg_task_t *tg_task_ref(tg_task_t *t);
void tg_task_unref(tg_task_t *t);
/* Tasks alive in the process (allocated and not yet freed), for tests. */
long tg_task_live(void);
/* End a task's current wait with "cancelled" and make every later wait fail. */
void tg_task_cancel(tg_task_t *t);

/* ---- waits -------------------------------------------------------------- */

/* Start a wait in the running task of L: kind (tg_wait_kind_t) and name
 * (nlen bytes: the state, topic, resource, address, program ...) say what
 * it waits for in the instance's trace; what says it in messages
 * ("barrier 'ready'") and is copied (at most 159 bytes) into the task;
 * t->what is what the wait's messages name.  timeout < 0 means the run's
 * deadline.  Raises a "invalid" error when L is not a task's own
 * coroutine, and "cancelled" when the task was cancelled. */
tg_task_t *tg_wait_begin(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                         const char *what);
/* The same without the copy: t->what = what, which must stay readable (a
 * C string, not necessarily the same text) while the task waits -- memory
 * the caller keeps for the wait, such as a pooled record.  For waits that
 * many tasks begin at once (barriers). */
tg_task_t *tg_wait_begin_ref(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                             const char *what);
/* Install the abort hook of the current wait. */
void tg_wait_on_abort(tg_task_t *t, tg_abort_fn fn, void *data);
/* Re-arm the deadline of t's wait to secs from now (a deferring abort hook
 * uses it to bound its last step). */
void tg_wait_extend(tg_task_t *t, double secs);
/* Yield the running task until its wait ends; returns the wait's values or
 * raises its error.  Use as: return tg_wait_yield(L); */
int tg_wait_yield(lua_State *L);
/* The coroutine to push results on if wait `token` of t is still pending, else NULL. */
lua_State *tg_wait_target(tg_task_t *t, uint64_t token);
/* Complete the pending wait with the nvalues values (ok) or the one error
 * value (!ok) that the caller pushed on t->co.  Only for values that were
 * pushed without allocating (integers, booleans, nil); anything else goes
 * through tg_wait_deliver. */
void tg_wait_done(tg_task_t *t, int ok, int nvalues);
/* Complete the pending wait with what push(L, ud) pushes (it returns how
 * many values), converted under protection on the instance's main thread
 * and moved to the task: an allocation failure (or any error push raises)
 * ends the wait with that error instead of a panic.  ok says whether the
 * values are results (1) or one error value (0); push may also raise its
 * own error value, which then ends the wait.  Returns 0 when push
 * returned, -1 when it raised (so the caller keeps what push would have
 * taken over). */
int tg_wait_deliver(tg_task_t *t, int ok, int (*push)(lua_State *L, void *ud), void *ud);
/* Complete the pending wait with an error {code, message} (under
 * protection); fmt is a C printf format. */
void tg_wait_fail(tg_task_t *t, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "5 s", "0.25 s", "1.99 s (the run's deadline)": the length of t's wait. */
const char *tg_wait_secs(const tg_task_t *t, char *buf, size_t n);
/* Abort the current wait of t (calls its abort hook) with why = TG_ABORT_*. */
void tg_wait_abort(tg_task_t *t, int why);

/* opts.timeout of the options table at idx: seconds, or -1 (the run's
 * deadline) when idx is none/nil or has no timeout.  Raises "invalid",
 * naming call, for a non-table or a bad timeout.  The one timeout parser:
 * Lua's check.timeout calls it too (core.timeout). */
double tg_opt_timeout(lua_State *L, int idx, const char *call);
/* Push how a bad argument is shown in a message: "nothing", "an empty
 * string", "\"text\"", "3", "a table". */
const char *tg_describe(lua_State *L, int idx);

/* The run declared inst dead (its session lapsed while it was stopped or
 * cut off): every wait of it ends with code "dead" saying why, and every
 * later wait fails at once, so it cannot go on to succeed. */
void tg_inst_kill(tg_inst_t *inst, const char *why);

/* A warning for inst's log ("warning: ..."), from code that cannot run Lua
 * (an I/O callback): queued, and written by the next drain of the ready
 * queue through the instance's on_warning function (core.on). */
void tg_inst_warn(tg_inst_t *inst, const char *fmt, ...);
/* Write inst's queued warnings now (the drain does this). */
void tg_inst_flush_warnings(tg_inst_t *inst);

/* 12 hex digits from /dev/urandom: run ids and process ids. */
void tg_rt_random_id(char *buf, size_t len);

/* ---- errors ------------------------------------------------------------- */

/* Push an error value {code=, message=} whose tostring is the message. */
void tg_err_push(lua_State *L, const char *code, const char *fmt, ...);
/* Push the error and raise it. */
int tg_err_raise(lua_State *L, const char *code, const char *fmt, ...);

#endif
