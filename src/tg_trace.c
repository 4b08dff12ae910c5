/*
 * tg_trace.c -- see tg_trace.h.  Records are kept in memory as they come
 * (a 32-byte header and the bytes of their strings) and turned into JSON
 * lines only when they are written, so that the waits pay for a clock
 * reading and a copy, nothing more.
 *
 * Writing: the lines are formatted on the loop's thread and the write
 * system call is handed to libuv's thread pool (uv_queue_work), because a
 * write to a journalling file system costs tens of microseconds, which a
 * thousand instances in one process would otherwise add to every barrier
 * round.  A trace has at most one write in flight (a job); records that
 * come meanwhile wait for the next.  The worker touches only its job (and
 * the trace's path, which does not change); everything else is the loop
 * thread's.  The writes that must be on disk when they return -- the
 * outcome, the end of the instance, closing, the second Ctrl-C -- wait for
 * the job in flight (it sets an atomic flag when done) and write on the
 * calling thread.  A closed trace whose job has not been reported back yet
 * is freed by that report, and the tracer after its last trace.
 */
#include "tg_trace.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 250             /* the tracer looks at its traces this often ... */
#define MAX_AGE_MS 1000         /* ... and writes the records older than this, */
#define AGE_PER_TRACE_US 1000   /* or than this much per open trace when more */
#define MAX_OPEN 4096           /* trace files kept open (a quarter of the descriptors at most) */

enum { R_BEGIN = 1, R_END, R_MARK };
enum { F_VALUE = 1 };           /* R_END: value is set */

/* One record's header; its strings (a: name, code or mark; b: message)
 * follow it in the buffer, unaligned (read and written with memcpy). */
typedef struct rec {
    uint8_t type;
    uint8_t kind;               /* R_BEGIN: tg_wait_kind_t; R_END: F_* */
    uint16_t alen;
    uint32_t blen;
    uint32_t span;
    uint32_t task;
    int64_t t;                  /* ns since the tracer's base */
    int64_t value;
} rec_t;

/* A growing text buffer: one flush's JSON lines. */
typedef struct text {
    char *p;
    size_t len, cap;
    int nomem;
} text_t;

struct tg_tracer {
    uv_loop_t *loop;
    uv_timer_t timer;
    int64_t wall0;              /* CLOCK_REALTIME ns at ... */
    uint64_t mono0;             /* ... this uv_hrtime() */
    tg_trace_t *head;           /* open traces */
    size_t n;
    int max_open, nopen;        /* trace files that may stay open, and do */
    char host[256];             /* for the traces' first lines */
    long pid;
    int jobs;                   /* writes handed to the pool, not yet reported back */
    int freeing, timer_closed;  /* tg_tracer_free was called; its timer is closed */
};

/* One write of a trace's lines: done by a worker of the pool (or, for a
 * write that must be done when it returns, by the caller). */
typedef struct wjob {
    uv_work_t req;
    tg_trace_t *tr;
    const char *path;           /* the trace's (it outlives the job) */
    text_t text;                /* the lines; owned */
    int fd;                     /* the trace's open file, or -1: open it here */
    int trunc, keep;            /* create it empty; keep what was opened */
    int newfd, err;             /* out: a file to keep; errno, 0 when written */
    int completed;              /* the loop thread took the results */
    atomic_int done;            /* set by whoever wrote, last */
} wjob_t;

struct tg_trace {
    tg_tracer_t *tc;
    tg_trace_t *prev, *next;
    char *path;
    char *header;               /* the file's first line, until written */
    unsigned char *buf;
    size_t len, cap;
    uint32_t next_span;
    int created;                /* the file was created (truncated) */
    int fd;                     /* kept open between writes when the tracer allows, else -1 */
    wjob_t *job;                /* the last write handed to the pool, until reported back */
    int jobs;                   /* its writes not yet reported back */
    int again;                  /* the tick found a write in flight: write the rest after it */
    int closing;                /* closed: freed when its last job is reported back */
    int64_t oldest;             /* when the first record not yet written was made (ns) */
    int broken;                 /* cannot be written: records are dropped */
    uint64_t dropped;           /* records lost to a failed allocation */
};

static const char *const kind_names[TG_WAIT_NKINDS] = {
    "other", "entry", "barrier", "signal_and_wait", "publish", "topic", "lock", "semaphore",
    "election", "queue", "coord", "sleep", "exec", "accept", "connect", "read", "write", "join",
    "redis",
};

const char *tg_trace_kind_name(int kind) {
    return kind >= 0 && kind < TG_WAIT_NKINDS ? kind_names[kind] : "other";
}

/* ---- the tracer --------------------------------------------------------- */

static void on_tick(uv_timer_t *h);
/* How a flush may go: the tick's leaves a trace whose write is still in
 * flight for later; a full buffer waits for that write (so the buffer
 * never grows past TG_TRACE_FLUSH_AT) and hands the next to the pool; NOW
 * writes before it returns. */
enum { FLUSH_LATER, FLUSH_FULL, FLUSH_NOW };
static int flush(tg_trace_t *tr, int how);
static void settle(tg_trace_t *tr);

static void arm(tg_tracer_t *tc) {
    uv_timer_start(&tc->timer, on_tick, TICK_MS, 0);
}

/* Write the traces whose oldest unwritten record is older than the age
 * limit: a busy instance's buffer fills and is written before that, so the
 * tick writes the quiet ones (an instance stuck in a wait among them), and
 * a process of many instances writes no more than about a thousand traces
 * a second this way. */
static void on_tick(uv_timer_t *h) {
    tg_tracer_t *tc = h->data;
    int64_t age = (int64_t)MAX_AGE_MS * 1000000;
    if ((int64_t)tc->n * AGE_PER_TRACE_US * 1000 > age) age = (int64_t)tc->n * AGE_PER_TRACE_US * 1000;
    int64_t limit = (int64_t)(uv_hrtime() - tc->mono0) - age;
    for (tg_trace_t *tr = tc->head; tr; tr = tr->next)
        if ((tr->len || !tr->created) && tr->oldest <= limit) flush(tr, FLUSH_LATER);
    arm(tc);
}

tg_tracer_t *tg_tracer_new(uv_loop_t *loop) {
    tg_tracer_t *tc = calloc(1, sizeof *tc);
    if (!tc) return NULL;
    tc->loop = loop;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tc->mono0 = uv_hrtime();
    tc->wall0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    /* Keeping a trace's file open makes a write one system call instead of
     * three; a process of many instances keeps as many open as a quarter of
     * its descriptors allows, the rest open their file for each write. */
    gethostname(tc->host, sizeof tc->host - 1);
    tc->pid = (long)getpid();
    struct rlimit rl;
    tc->max_open = MAX_OPEN;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < MAX_OPEN)
        tc->max_open = (int)(rl.rlim_cur / 4);
    uv_timer_init(loop, &tc->timer);
    tc->timer.data = tc;
    uv_unref((uv_handle_t *)&tc->timer);
    arm(tc);
    return tc;
}

static void tracer_closed(uv_handle_t *h) {
    tg_tracer_t *tc = h->data;
    tc->timer_closed = 1;
    if (!tc->jobs) free(tc);
}

void tg_tracer_free(tg_tracer_t *tc) {
    if (!tc) return;
    tc->freeing = 1;
    uv_timer_stop(&tc->timer);
    uv_close((uv_handle_t *)&tc->timer, tracer_closed);
}

void tg_tracer_flush_all(tg_tracer_t *tc) {
    for (tg_trace_t *tr = tc->head; tr; tr = tr->next)
        if (tr->len) tg_trace_flush(tr);
}

/* ---- JSON text ------------------------------------------------------------ */

static int text_room(text_t *x, size_t n) {
    if (x->len + n <= x->cap) return 1;
    size_t cap = x->cap ? x->cap : 1024;
    while (cap < x->len + n) cap *= 2;
    char *p = realloc(x->p, cap);
    if (!p) {
        x->nomem = 1;
        return 0;
    }
    x->p = p;
    x->cap = cap;
    return 1;
}

/* Writers at a cursor into room already made (text_room): they return the
 * cursor after what they wrote.  A flush formats every record through
 * these, so they stay plain (snprintf was most of what tracing cost). */
static char *w_mem(char *o, const char *s, size_t n) {
    memcpy(o, s, n);
    return o + n;
}

#define W_LIT(o, lit) w_mem((o), (lit), sizeof(lit) - 1)

static char *w_int(char *o, long long v) {
    char b[24], *e = b + sizeof b, *p = e;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    return w_mem(o, p, (size_t)(e - p));
}

/* s[0..n) as a JSON string (at most 6 n + 2 bytes): quotes, backslashes and
 * control bytes escaped; other bytes (UTF-8) pass through. */
static char *w_str(char *o, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {     /* the common case */
            *o++ = (char)c;
        } else if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else {                                /* other control bytes */
            o = W_LIT(o, "\\u00");
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    return o;
}

static void put(text_t *x, const char *s, size_t n) {
    if (!text_room(x, n)) return;
    memcpy(x->p + x->len, s, n);
    x->len += n;
}

static void puts_(text_t *x, const char *s) {
    put(x, s, strlen(s));
}

static void put_int(text_t *x, long long v) {
    if (text_room(x, 24)) x->len = (size_t)(w_int(x->p + x->len, v) - x->p);
}

static void put_str(text_t *x, const char *s, size_t n) {
    if (text_room(x, n * 6 + 2)) x->len = (size_t)(w_str(x->p + x->len, s, n) - x->p);
}

static void put_field(text_t *x, const char *key, const char *s) {
    if (!s) return;
    put(x, ",\"", 2);
    puts_(x, key);
    put(x, "\":", 2);
    put_str(x, s, strlen(s));
}

/* ---- traces ---------------------------------------------------------------- */

tg_trace_t *tg_trace_open(tg_tracer_t *tc, const char *path, const tg_trace_info_t *info) {
    tg_trace_t *tr = calloc(1, sizeof *tr);
    text_t h = {0};
    puts_(&h, "{\"tgtrace\":1,\"t0\":");
    put_int(&h, tc->wall0);
    puts_(&h, ",\"pid\":");
    put_int(&h, tc->pid);
    put_field(&h, "host", tc->host);
    if (info) {
        put_field(&h, "run", info->run);
        put_field(&h, "plan", info->plan);
        put_field(&h, "case", info->case_name);
        put_field(&h, "group", info->group);
        put_field(&h, "version", info->version);
    }
    put(&h, "}\n", 3);                          /* with the NUL */
    if (!tr || h.nomem || !(tr->path = strdup(path))) {
        free(h.p);
        free(tr);
        return NULL;
    }
    tr->header = h.p;
    tr->tc = tc;
    tr->fd = -1;
    tr->next_span = 1;
    tr->next = tc->head;
    if (tc->head) tc->head->prev = tr;
    tc->head = tr;
    tc->n++;
    tg_trace_mark(tr, "start", NULL, 0);
    return tr;
}

static void trace_free(tg_trace_t *tr) {
    free(tr->path);
    free(tr->header);
    free(tr->buf);
    free(tr);
}

void tg_trace_close(tg_trace_t *tr) {
    if (!tr) return;
    tg_tracer_t *tc = tr->tc;
    tg_trace_flush(tr);
    settle(tr);                                 /* no worker may use the file any more */
    if (tr->fd >= 0) {
        close(tr->fd);
        tr->fd = -1;
        tc->nopen--;
    }
    if (tr->prev) tr->prev->next = tr->next;
    else tc->head = tr->next;
    if (tr->next) tr->next->prev = tr->prev;
    tc->n--;
    if (tr->jobs) tr->closing = 1;              /* its last job's report frees it */
    else trace_free(tr);
}

size_t tg_trace_memory(const tg_trace_t *tr) {
    if (!tr) return 0;
    return sizeof *tr + tr->cap + strlen(tr->path) + 1 + (tr->header ? strlen(tr->header) + 1 : 0);
}

/* Cut n to at most max bytes, not inside a UTF-8 sequence. */
static size_t cut(const char *s, size_t n, size_t max) {
    if (n <= max) return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    return n;
}

/* Append one record.  A buffer that would pass TG_TRACE_FLUSH_AT is written
 * out first, so it never grows past that (but for one record larger than
 * it). */
static void append(tg_trace_t *tr, const rec_t *r, const char *a, const char *b) {
    if (tr->broken) return;
    size_t need = sizeof *r + r->alen + r->blen;
    if (tr->len && tr->len + need > TG_TRACE_FLUSH_AT && flush(tr, FLUSH_FULL) < 0) return;
    if (tr->len + need > tr->cap) {
        size_t cap = tr->cap ? tr->cap : 256;
        while (cap < tr->len + need) cap *= 2;
        unsigned char *p = realloc(tr->buf, cap);
        if (!p) {
            tr->dropped++;
            return;
        }
        tr->buf = p;
        tr->cap = cap;
    }
    if (!tr->len) tr->oldest = r->t;
    unsigned char *o = tr->buf + tr->len;
    memcpy(o, r, sizeof *r);
    if (r->alen) memcpy(o + sizeof *r, a, r->alen);
    if (r->blen) memcpy(o + sizeof *r + r->alen, b, r->blen);
    tr->len += need;
}

static int64_t now(const tg_trace_t *tr) {
    return (int64_t)(uv_hrtime() - tr->tc->mono0);
}

uint32_t tg_trace_begin(tg_trace_t *tr, int kind, uint64_t task, const char *name, size_t nlen) {
    if (!tr || tr->broken) return 0;
    nlen = name ? cut(name, nlen, TG_TRACE_NAME_MAX) : 0;
    rec_t r = {.type = R_BEGIN, .kind = (uint8_t)kind, .alen = (uint16_t)nlen, .span = tr->next_span++,
               .task = (uint32_t)task, .t = now(tr)};
    append(tr, &r, name, NULL);
    return r.span;
}

void tg_trace_end(tg_trace_t *tr, uint32_t span, const char *code, const char *msg, size_t mlen,
                  const int64_t *value) {
    if (!tr || !span) return;
    size_t clen = code ? cut(code, strlen(code), 64) : 0;
    mlen = msg ? cut(msg, mlen, TG_TRACE_MSG_MAX) : 0;
    rec_t r = {.type = R_END, .kind = value ? F_VALUE : 0, .alen = (uint16_t)clen, .blen = (uint32_t)mlen,
               .span = span, .t = now(tr), .value = value ? *value : 0};
    if (code && !clen) {                        /* an error without a code still is one */
        code = "error";
        r.alen = 5;
    }
    append(tr, &r, code, msg);
}

void tg_trace_mark(tg_trace_t *tr, const char *what, const char *text, size_t tlen) {
    if (!tr) return;
    size_t wlen = cut(what, strlen(what), 64);
    tlen = text ? cut(text, tlen, TG_TRACE_MSG_MAX) : 0;
    rec_t r = {.type = R_MARK, .alen = (uint16_t)wlen, .blen = (uint32_t)tlen, .t = now(tr)};
    append(tr, &r, what, text);
}

/* The JSON line of one record (see docs/api.md, "The trace"). */
static void format(text_t *x, const rec_t *r, const char *a, const char *b) {
    /* room for the longest line: keys, four integers, the strings escaped */
    if (!text_room(x, 160 + 6 * ((size_t)r->alen + r->blen))) return;
    char *o = x->p + x->len;
    switch (r->type) {
    case R_BEGIN:
        o = W_LIT(o, "{\"b\":");
        o = w_int(o, r->span);
        o = W_LIT(o, ",\"t\":");
        o = w_int(o, r->t / 1000);
        o = W_LIT(o, ",\"task\":");
        o = w_int(o, r->task);
        o = W_LIT(o, ",\"k\":\"");
        const char *k = tg_trace_kind_name(r->kind);
        o = w_mem(o, k, strlen(k));
        o = W_LIT(o, "\",\"n\":");
        o = w_str(o, a, r->alen);
        break;
    case R_END:
        o = W_LIT(o, "{\"e\":");
        o = w_int(o, r->span);
        o = W_LIT(o, ",\"t\":");
        o = w_int(o, r->t / 1000);
        if (r->kind & F_VALUE) {
            o = W_LIT(o, ",\"v\":");
            o = w_int(o, r->value);
        }
        if (r->alen) {
            o = W_LIT(o, ",\"err\":");
            o = w_str(o, a, r->alen);
            o = W_LIT(o, ",\"msg\":");
            o = w_str(o, b, r->blen);
        }
        break;
    default:
        o = W_LIT(o, "{\"m\":");
        o = w_str(o, a, r->alen);
        o = W_LIT(o, ",\"t\":");
        o = w_int(o, r->t / 1000);
        if (r->blen) {
            o = W_LIT(o, ",\"msg\":");
            o = w_str(o, b, r->blen);
        }
        break;
    }
    o = W_LIT(o, "}\n");
    x->len = (size_t)(o - x->p);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write j's lines: on a worker of the pool, or on the caller's thread.
 * Touches nothing but j (and the files). */
static void do_write(wjob_t *j) {
    int fd = j->fd;
    if (fd < 0) fd = open(j->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (j->trunc ? O_TRUNC : 0), 0644);
    j->err = fd < 0 || write_all(fd, j->text.p, j->text.len) < 0 ? errno : 0;
    j->newfd = -1;
    if (fd >= 0 && j->fd < 0) {
        if (j->keep && !j->err) j->newfd = fd;
        else if (close(fd) < 0 && !j->err) j->err = errno;
    }
    atomic_store_explicit(&j->done, 1, memory_order_release);
}

static void work_cb(uv_work_t *req) {
    do_write(req->data);
}

/* The loop thread takes j's results (once): the file it opened to keep, a
 * failure (the trace stops recording, said once). */
static void complete(tg_trace_t *tr, wjob_t *j) {
    if (j->completed) return;
    j->completed = 1;
    tg_tracer_t *tc = tr->tc;
    if (j->newfd >= 0) tr->fd = j->newfd;
    else if (j->keep) tc->nopen--;              /* the slot it had reserved */
    if (!j->err) {
        tr->created = 1;
        return;
    }
    if (tr->fd >= 0) {
        close(tr->fd);
        tr->fd = -1;
        tc->nopen--;
    }
    if (!tr->broken)
        fprintf(stderr, "tgrun: cannot write the trace %s: %s; tracing stops for this instance\n",
                tr->path, strerror(j->err));
    tr->broken = 1;
    free(tr->buf);
    tr->buf = NULL;
    tr->len = tr->cap = 0;
}

static void after_cb(uv_work_t *req, int status) {
    (void)status;
    wjob_t *j = req->data;
    tg_trace_t *tr = j->tr;
    tg_tracer_t *tc = tr->tc;
    complete(tr, j);
    if (tr->job == j) tr->job = NULL;
    free(j->text.p);
    free(j);
    tc->jobs--;
    tr->jobs--;
    if (tr->closing) {
        if (!tr->jobs) trace_free(tr);
    } else if (tr->again && !tr->job) {
        tr->again = 0;
        flush(tr, FLUSH_LATER);
    }
    if (tc->freeing && tc->timer_closed && !tc->jobs) free(tc);
}

/* Wait until the write in flight is done (a worker is at it or will be
 * soon) and take its results, so that what is written next comes after it. */
static void settle(tg_trace_t *tr) {
    wjob_t *j = tr->job;
    if (!j || j->completed) return;
    while (!atomic_load_explicit(&j->done, memory_order_acquire)) sched_yield();
    complete(tr, j);
}

/* Format the buffered records into a job (NULL when there is nothing to
 * write, or no memory: then the records stay for the next try). */
static wjob_t *take(tg_trace_t *tr) {
    if (!tr->len && !tr->dropped && tr->created) return NULL;
    wjob_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    text_t *x = &j->text;
    if (!tr->created) puts_(x, tr->header);
    for (size_t off = 0; off < tr->len;) {
        rec_t r;
        memcpy(&r, tr->buf + off, sizeof r);
        const char *a = (const char *)tr->buf + off + sizeof r;
        format(x, &r, a, a + r.alen);
        off += sizeof r + r.alen + r.blen;
    }
    if (tr->dropped) {
        puts_(x, "{\"m\":\"dropped\",\"t\":");
        put_int(x, now(tr) / 1000);
        puts_(x, ",\"msg\":\"");
        put_int(x, (long long)tr->dropped);
        puts_(x, " records lost: out of memory\"}\n");
    }
    if (x->nomem) {
        free(x->p);
        free(j);
        return NULL;
    }
    tg_tracer_t *tc = tr->tc;
    j->tr = tr;
    j->path = tr->path;
    j->fd = tr->fd;
    j->trunc = !tr->created;
    if (j->fd < 0 && tc->nopen < tc->max_open) {
        j->keep = 1;
        tc->nopen++;                            /* reserved; complete() settles it */
    }
    j->req.data = j;
    tr->len = 0;
    tr->dropped = 0;
    if (tr->header && !tr->created) {
        free(tr->header);                       /* it is in the job's lines */
        tr->header = NULL;
        tr->created = 1;                        /* for the next job: append */
    }
    return j;
}

/* Write the buffered records: handed to the pool (sync = 0; a trace with a
 * write in flight writes them after it), or done before returning. */
static int flush(tg_trace_t *tr, int how) {
    if (tr->job && !tr->job->completed) {
        if (how == FLUSH_LATER && !atomic_load_explicit(&tr->job->done, memory_order_acquire)) {
            tr->again = 1;
            return 0;
        }
        settle(tr);
    }
    if (tr->broken) return -1;
    wjob_t *j = take(tr);
    if (!j) return 0;
    tg_tracer_t *tc = tr->tc;
    if (how != FLUSH_NOW && uv_queue_work(tc->loop, &j->req, work_cb, after_cb) == 0) {
        tr->job = j;
        tr->jobs++;
        tc->jobs++;
        return 0;
    }
    do_write(j);                                /* here and now */
    complete(tr, j);
    free(j->text.p);
    free(j);
    return tr->broken ? -1 : 0;
}

int tg_trace_flush(tg_trace_t *tr) {
    if (!tr) return 0;
    return flush(tr, FLUSH_NOW);
}
