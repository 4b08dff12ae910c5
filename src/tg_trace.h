/*
 * tg_trace.h -- what each instance waited for, from when to when: the
 * trace that `tgrun report` turns into a timeline.
 *
 * Every wait of the runtime begins in tg_wait_begin with a kind (below)
 * and a name (the state, topic, resource, address or program) and ends in
 * tg_wait_done; tg_rt.c hands both ends to the instance's trace, with the
 * wait's one integer result (an arrival seq, a topic seq) or its error
 * code and message.  Instances add marks (start, outcome, a task's
 * unjoined error).  Nothing else in the runtime knows tracing exists.
 *
 * Cost: a record is a fixed 48-byte header plus its strings, appended to
 * one buffer per process (the tracer's) -- no formatting, no I/O, no
 * touching the instance's own memory on the way; a wait is a begin record
 * and an end record, which the writer joins into one line when both are
 * in the same write (most waits).  The buffer goes to a worker of libuv's thread
 * pool, which formats it (one text per trace) and appends each text to its
 * <outputs>/trace.jsonl, when it would pass TG_TRACE_FLUSH_AT bytes per
 * trace (16 KB to 8 MB), and from the tracer's quarter-second timer when
 * its oldest record is a second old (N/1000 s when the process holds N >
 * 1000 instances).  An instance's outcome, its end, closing and the second
 * Ctrl-C write on the calling thread and are on disk when tg_trace_flush
 * returns.  A trace's file stays open between writes while the tracer may
 * keep it (a quarter of the process's descriptors, at most 4096 files),
 * else it is opened for each write.  So a crash or SIGKILL loses at most
 * what was recorded in the last second or so; a wait that had begun by
 * then shows as begun and never ended.
 *
 * Ownership and invariants:
 *  - A tg_tracer_t is one per runtime (process): the time base that all
 *    of its traces share (one wall-clock reading paired with the monotonic
 *    clock, so spans of instances in one process line up exactly), the
 *    buffer, the job in flight and the flush timer.  tg_tracer_free comes
 *    after the last trace was closed; it closes the timer, and the tracer
 *    goes when the loop has run the timer's close and every job's report.
 *  - A tg_trace_t belongs to one instance (tg_inst_t.trace), which closes
 *    it: tg_trace_close writes everything buffered first (its records may
 *    be anywhere in the buffer or in a job), so no job ever refers to a
 *    closed trace.
 *  - Threads: only a job's formatting and writes run on a worker of the
 *    pool, touching only the job (and the traces' paths); everything else
 *    is the loop thread's.
 *  - Span ids grow from 1 per process (unique in each file); 0 means "not
 *    recorded".
 *  - Failing to write is said once on stderr, then that trace's records
 *    are skipped; failing to allocate drops the record and counts it (the
 *    count is written as a "dropped" mark).
 *
 * The file format is documented in docs/api.md ("The trace").
 */
#ifndef TG_TRACE_H
#define TG_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* What a wait waits for.  tg_wait_begin takes one: the kind is stated where
 * the wait begins, never read back out of its label. */
typedef enum tg_wait_kind {
    TG_WAIT_OTHER = 0,
    TG_WAIT_ENTRY,          /* signal_entry: entering a state (name: the state) */
    TG_WAIT_BARRIER,        /* sync.barrier: waiting at a state without entering it */
    TG_WAIT_SIGNAL_WAIT,    /* signal_and_wait: entering, then waiting (result: arrival seq) */
    TG_WAIT_PUBLISH,        /* publish to a topic (result: the value's seq) */
    TG_WAIT_TOPIC,          /* sub:next / sub:take: the next value of a topic */
    TG_WAIT_LOCK,           /* mutex:lock (name: the mutex) */
    TG_WAIT_SEMAPHORE,      /* semaphore:acquire */
    TG_WAIT_ELECTION,       /* election:campaign */
    TG_WAIT_QUEUE,          /* queue:pop */
    TG_WAIT_COORD,          /* a coordination call that does not queue: release, push, add, bye */
    TG_WAIT_SLEEP,          /* tg.sleep (name: the seconds) */
    TG_WAIT_EXEC,           /* tg.exec (name: the program) */
    TG_WAIT_ACCEPT,         /* listener:accept (name: the listener's address) */
    TG_WAIT_CONNECT,        /* net.connect (name: the address) */
    TG_WAIT_READ,           /* conn:read, conn:read_line (name: the peer) */
    TG_WAIT_WRITE,          /* conn:write (name: the peer) */
    TG_WAIT_JOIN,           /* task:join (name: the task) */
    TG_WAIT_REDIS,          /* a raw command or script of tg.redis (name: what it is) */
    TG_WAIT_NKINDS
} tg_wait_kind_t;

#define TG_TRACE_FLUSH_AT 8192  /* bytes of records per trace in the buffer that trigger a write */
#define TG_TRACE_NAME_MAX 1024  /* longer names are cut */
#define TG_TRACE_MSG_MAX 2048   /* longer messages are cut (the record keeps 16 bits) */

typedef struct tg_tracer tg_tracer_t;
typedef struct tg_trace tg_trace_t;

/* Who the trace is about: written in the file's first line.  Strings are
 * copied; NULL is left out. */
typedef struct tg_trace_info {
    const char *run, *plan, *case_name, *group, *version;
} tg_trace_info_t;

/* "barrier", "topic", ...: the kind's name in the file ("other" when out of range). */
const char *tg_trace_kind_name(int kind);

/* A tracer on loop (its timer is unreferenced: it keeps no loop alive).
 * NULL when out of memory. */
tg_tracer_t *tg_tracer_new(uv_loop_t *loop);
/* Free a tracer whose traces are all closed (closes its timer). */
void tg_tracer_free(tg_tracer_t *tc);
/* Flush every open trace of tc now (before an _exit). */
void tg_tracer_flush_all(tg_tracer_t *tc);

/* A trace written to path (created or truncated on the first flush), with
 * a "start" mark now.  NULL when out of memory. */
tg_trace_t *tg_trace_open(tg_tracer_t *tc, const char *path, const tg_trace_info_t *info);
/* Flush what is left and free tr (NULL is fine). */
void tg_trace_close(tg_trace_t *tr);
/* Append the buffered records to the file now.  0, or -1 when the trace
 * cannot be written (it stops recording). */
int tg_trace_flush(tg_trace_t *tr);

/* A wait's span as its trace knows it: its id (0: not recorded). */
typedef struct tg_span {
    uint32_t id;
} tg_span_t;

/* A wait of task began in trace tr of tracer tc at hrtime (uv_hrtime(): the
 * caller reads the clock once for this and for the wait's deadline): its
 * span (id 0 if it was not recorded).  The tracer is passed, not looked up
 * in tr, so that the hot path never touches tr (a line nobody else touched
 * since the last round, with a thousand instances in the process). */
tg_span_t tg_trace_begin(tg_tracer_t *tc, tg_trace_t *tr, int kind, uint64_t task, const char *name,
                         size_t nlen, uint64_t hrtime);
/* The span ended: well (code NULL; value, when not NULL, is its one
 * integer result), or with an error code and message (mlen bytes). */
void tg_trace_end(tg_tracer_t *tc, tg_trace_t *tr, tg_span_t span, const char *code, const char *msg,
                  size_t mlen, const int64_t *value);
/* A mark at this moment: what ("success", "failure", "crash",
 * "task_error", ...) and an optional text. */
void tg_trace_mark(tg_trace_t *tr, const char *what, const char *text, size_t tlen);

/* Bytes tr holds in memory now (its struct and buffers), for tests and
 * the benchmark. */
size_t tg_trace_memory(const tg_trace_t *tr);

#endif
