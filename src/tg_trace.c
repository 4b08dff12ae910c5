/*
 * tg_trace.c -- see tg_trace.h.
 *
 * One buffer per process.  The records of every instance of the process go
 * to the tracer's one buffer, in the order they come (a 48-byte header
 * naming their trace, then the bytes of their strings), not to a buffer of
 * each instance: with a thousand instances in a process a wait would
 * otherwise touch two or three cache lines nobody else touched since the
 * last round, and that -- not the instructions -- was what tracing cost.
 * The hot path reads and writes only the tracer and the end of its buffer
 * (and the task): a wait's end is a record of its own, appended, because
 * going back to complete the begin record costs a miss by then (a round of
 * other instances' work has passed over it).  The worker that writes a
 * job joins a begin and its end found in the same job into one line.
 *
 * Writing.  The buffer goes to a job -- with a snapshot of the file state
 * of each trace that has records in it -- when it would pass its limit (TG_TRACE_FLUSH_AT per
 * trace, 16 KB to 8 MB), when its oldest record is a second old (the
 * quarter-second tick), and when a trace must be on disk now (outcome, end,
 * close, the second Ctrl-C).  A job is formatted and written by a worker of
 * libuv's thread pool (uv_queue_work): the worker sorts the records into
 * one text per trace and writes each trace's text to its file, because a
 * write on a journalling file system costs tens of microseconds, which the
 * loop would otherwise spend between two waiters.  At most one job is in
 * flight; a full buffer waits for it, a tick leaves it for later.  What
 * must be on disk now waits for it too, then is written on the loop's
 * thread.  The worker touches only its job and, of the traces, their paths
 * and slots (which do not change while a job is in flight); everything
 * else is the loop thread's.  Closing a trace
 * writes everything first, so no job ever holds a trace that is gone.
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

#define TICK_MS 250             /* the tracer looks at its buffer this often ... */
#define MAX_AGE_MS 1000         /* ... and writes it when its oldest record is this old, */
#define AGE_PER_TRACE_US 1000   /* or this much per open trace when more */
#define BUF_MIN (16 * 1024)     /* the buffer's limit: TG_TRACE_FLUSH_AT per trace, within these */
#define BUF_MAX (8 * 1024 * 1024)
#define MAX_OPEN 4096           /* trace files kept open (a quarter of the descriptors at most) */

enum { R_BEGIN = 1, R_SPAN, R_END, R_MARK };   /* R_SPAN: only while formatting */
enum { F_VALUE = 1 };           /* value is set */

/* One record's header; its strings (a: name, code or mark; b: message)
 * follow it in the buffer, unaligned (read and written with memcpy).
 * R_SPAN is an R_BEGIN joined with its R_END by the worker (for format). */
typedef struct rec {
    uint8_t type;
    uint8_t kind;               /* R_BEGIN, R_SPAN: tg_wait_kind_t */
    uint8_t flags;              /* F_* */
    uint8_t unused;
    uint16_t alen, blen;
    uint32_t span;
    uint32_t task;
    tg_trace_t *tr;             /* whose */
    int64_t t;                  /* ns since the tracer's base */
    int64_t t2;                 /* R_SPAN: when it ended (set by the worker only) */
    int64_t value;
} rec_t;

/* A growing text buffer: lines of JSON. */
typedef struct text {
    char *p;
    size_t len, cap;
    int nomem;
} text_t;

/* A trace's file as one job sees it (snapshot taken on the loop thread;
 * the results are read back there). */
typedef struct target {
    tg_trace_t *tr;
    char *header;               /* the file's first line, when this job creates it; owned */
    int fd;                     /* the trace's open file, or -1: open it here */
    int trunc, keep, skip;      /* create it empty; keep what was opened; broken: write nothing */
    text_t text;                /* its lines (worker) */
    int newfd, err;             /* out: a file to keep; errno, 0 when written */
} target_t;

/* One write of the buffer. */
typedef struct wjob {
    uv_work_t req;
    tg_tracer_t *tc;
    unsigned char *recs;        /* the records; owned */
    size_t len;
    uint64_t dropped;           /* records lost before these (each trace gets a mark) */
    int64_t dropped_t;
    target_t *targets;          /* every trace open when it was taken; owned */
    int ntargets;
    int completed;              /* the loop thread took the results */
    atomic_int done;            /* set last by whoever wrote */
} wjob_t;

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
    unsigned char *buf;         /* the records of every trace, not yet handed to a job */
    size_t len, cap, limit;
    int64_t oldest;             /* when the first of them was made (ns) */
    uint32_t next_span;
    uint64_t dropped;           /* records lost to a failed allocation */
    wjob_t *job;                /* the last job handed to the pool, until reported back */
    int jobs;                   /* jobs not yet reported back */
    int freeing, timer_closed;  /* tg_tracer_free was called; its timer is closed */
    uint64_t takes;             /* jobs taken so far (each trace's slot_take says in which) */
};

struct tg_trace {
    tg_tracer_t *tc;
    tg_trace_t *prev, *next;
    char *path;
    char *header;               /* the file's first line, until a job takes it */
    int created;                /* a job has (or will have) created the file */
    int fd;                     /* kept open between writes when the tracer allows, else -1 */
    int broken;                 /* cannot be written: its records are skipped */
    int slot;                   /* its index in the job being taken and written ... */
    uint64_t slot_take;         /* ... when slot_take is that job's take (tc->takes) */
};

static const char *const kind_names[TG_WAIT_NKINDS] = {
    "other", "entry", "barrier", "signal_and_wait", "publish", "topic", "lock", "semaphore",
    "election", "queue", "coord", "sleep", "exec", "accept", "connect", "read", "write", "join",
    "redis",
};

const char *tg_trace_kind_name(int kind) {
    return kind >= 0 && kind < TG_WAIT_NKINDS ? kind_names[kind] : "other";
}

/* How a flush may go: the tick's leaves the buffer for later while a job
 * is in flight; a full buffer waits for that job and hands the buffer to
 * the pool; NOW writes on this thread before it returns. */
enum { FLUSH_LATER, FLUSH_FULL, FLUSH_NOW };
static int flush(tg_tracer_t *tc, int how);

static int64_t now(const tg_tracer_t *tc) {
    return (int64_t)(uv_hrtime() - tc->mono0);
}

/* ---- the tracer --------------------------------------------------------- */

static void on_tick(uv_timer_t *h);

static void arm(tg_tracer_t *tc) {
    uv_timer_start(&tc->timer, on_tick, TICK_MS, 0);
}

/* Write the buffer when its oldest record is older than the age limit: a
 * busy process fills it before that, so the tick writes what quiet
 * instances recorded (an instance stuck in a wait among them); a process
 * of many instances waits longer, so that it writes no more than about a
 * thousand files a second this way. */
static void on_tick(uv_timer_t *h) {
    tg_tracer_t *tc = h->data;
    int64_t age = (int64_t)MAX_AGE_MS * 1000000;
    if ((int64_t)tc->n * AGE_PER_TRACE_US * 1000 > age) age = (int64_t)tc->n * AGE_PER_TRACE_US * 1000;
    if (tc->len && tc->oldest <= now(tc) - age) flush(tc, FLUSH_LATER);
    arm(tc);
}

/* The buffer's limit for n traces. */
static void set_limit(tg_tracer_t *tc) {
    size_t l = tc->n * (size_t)TG_TRACE_FLUSH_AT;
    tc->limit = l < BUF_MIN ? BUF_MIN : l > BUF_MAX ? BUF_MAX : l;
}

tg_tracer_t *tg_tracer_new(uv_loop_t *loop) {
    tg_tracer_t *tc = calloc(1, sizeof *tc);
    if (!tc) return NULL;
    tc->loop = loop;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tc->mono0 = uv_hrtime();
    tc->wall0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    tc->next_span = 1;
    gethostname(tc->host, sizeof tc->host - 1);
    tc->pid = (long)getpid();
    /* Keeping a trace's file open makes a write one system call instead of
     * three; a process of many instances keeps as many open as a quarter of
     * its descriptors allows, the rest open their file for each write. */
    struct rlimit rl;
    tc->max_open = MAX_OPEN;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < MAX_OPEN)
        tc->max_open = (int)(rl.rlim_cur / 4);
    set_limit(tc);
    uv_timer_init(loop, &tc->timer);
    tc->timer.data = tc;
    uv_unref((uv_handle_t *)&tc->timer);
    arm(tc);
    return tc;
}

static void tracer_closed(uv_handle_t *h) {
    tg_tracer_t *tc = h->data;
    tc->timer_closed = 1;
    if (!tc->jobs) {
        free(tc->buf);
        free(tc);
    }
}

void tg_tracer_free(tg_tracer_t *tc) {
    if (!tc) return;
    tc->freeing = 1;
    uv_timer_stop(&tc->timer);
    uv_close((uv_handle_t *)&tc->timer, tracer_closed);
}

void tg_tracer_flush_all(tg_tracer_t *tc) {
    if (tc) flush(tc, FLUSH_NOW);
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

static void append(tg_tracer_t *tc, const rec_t *r, const char *a, const char *b);

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
    tr->next = tc->head;
    if (tc->head) tc->head->prev = tr;
    tc->head = tr;
    tc->n++;
    set_limit(tc);
    tg_trace_mark(tr, "start", NULL, 0);
    return tr;
}

/* Everything is written first (the buffer and any job may hold its
 * records), so nothing refers to it once it is gone. */
void tg_trace_close(tg_trace_t *tr) {
    if (!tr) return;
    tg_tracer_t *tc = tr->tc;
    flush(tc, FLUSH_NOW);
    if (tr->fd >= 0) {
        close(tr->fd);
        tc->nopen--;
    }
    if (tr->prev) tr->prev->next = tr->next;
    else tc->head = tr->next;
    if (tr->next) tr->next->prev = tr->prev;
    tc->n--;
    set_limit(tc);
    free(tr->path);
    free(tr->header);
    free(tr);
}

int tg_trace_flush(tg_trace_t *tr) {
    if (!tr) return 0;
    flush(tr->tc, FLUSH_NOW);
    return tr->broken ? -1 : 0;
}

size_t tg_trace_memory(const tg_trace_t *tr) {
    if (!tr) return 0;
    const tg_tracer_t *tc = tr->tc;
    return sizeof *tr + strlen(tr->path) + 1 + (tr->header ? strlen(tr->header) + 1 : 0)
        + (tc->n ? tc->cap / tc->n : tc->cap);
}

/* Cut n to at most max bytes, not inside a UTF-8 sequence. */
static size_t cut(const char *s, size_t n, size_t max) {
    if (n <= max) return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    return n;
}

/* Append one record to the tracer's buffer (or count it dropped).  A
 * buffer that would pass its limit goes to a job first. */
static void append(tg_tracer_t *tc, const rec_t *r, const char *a, const char *b) {
    size_t need = sizeof *r + r->alen + r->blen;
    if (tc->len && tc->len + need > tc->limit) flush(tc, FLUSH_FULL);
    if (tc->len + need > tc->cap) {
        size_t cap = tc->cap ? tc->cap : 4096;
        while (cap < tc->len + need) cap *= 2;
        if (cap > tc->limit && tc->len + need <= tc->limit) cap = tc->limit;
        unsigned char *p = realloc(tc->buf, cap);
        if (!p) {
            tc->dropped++;
            return;
        }
        tc->buf = p;
        tc->cap = cap;
    }
    if (!tc->len) tc->oldest = r->t;
    unsigned char *o = tc->buf + tc->len;
    memcpy(o, r, sizeof *r);
    if (r->alen && a) memcpy(o + sizeof *r, a, r->alen);
    if (r->blen && b) memcpy(o + sizeof *r + r->alen, b, r->blen);
    tc->len += need;
}

tg_span_t tg_trace_begin(tg_tracer_t *tc, tg_trace_t *tr, int kind, uint64_t task, const char *name,
                         size_t nlen, uint64_t hrtime) {
    tg_span_t sp = {0};
    if (!tr) return sp;                         /* tr itself stays untouched: a cold line */
    nlen = name ? cut(name, nlen, TG_TRACE_NAME_MAX) : 0;
    rec_t r = {.type = R_BEGIN, .kind = (uint8_t)kind, .alen = (uint16_t)nlen, .span = tc->next_span++,
               .task = (uint32_t)task, .tr = tr, .t = (int64_t)(hrtime - tc->mono0)};
    sp.id = r.span;
    append(tc, &r, name, NULL);
    return sp;
}

void tg_trace_end(tg_tracer_t *tc, tg_trace_t *tr, tg_span_t span, const char *code, const char *msg,
                  size_t mlen, const int64_t *value) {
    if (!tr || !span.id) return;
    int64_t t = now(tc);
    size_t clen = code ? cut(code, strlen(code), 64) : 0;
    mlen = msg ? cut(msg, mlen, TG_TRACE_MSG_MAX) : 0;
    rec_t r = {.type = R_END, .flags = value ? F_VALUE : 0, .alen = (uint16_t)clen, .blen = (uint16_t)mlen,
               .span = span.id, .tr = tr, .t = t, .value = value ? *value : 0};
    if (code && !clen) {                        /* an error without a code still is one */
        code = "error";
        r.alen = 5;
    }
    append(tc, &r, code, msg);
}

void tg_trace_mark(tg_trace_t *tr, const char *what, const char *text, size_t tlen) {
    if (!tr) return;
    size_t wlen = cut(what, strlen(what), 64);
    tlen = text ? cut(text, tlen, TG_TRACE_MSG_MAX) : 0;
    rec_t r = {.type = R_MARK, .alen = (uint16_t)wlen, .blen = (uint16_t)tlen, .tr = tr, .t = now(tr->tc)};
    append(tr->tc, &r, what, text);
}

/* The JSON line of one record (see docs/api.md, "The trace"). */
static void format(text_t *x, const rec_t *r, const char *a, const char *b) {
    /* room for the longest line: keys, four integers, the strings escaped */
    if (!text_room(x, 160 + 6 * ((size_t)r->alen + r->blen))) return;
    char *o = x->p + x->len;
    switch (r->type) {
    case R_BEGIN:
    case R_SPAN:
        if (r->type == R_SPAN) {
            o = W_LIT(o, "{\"s\":");
            o = w_int(o, r->span);
            o = W_LIT(o, ",\"t\":");
            o = w_int(o, r->t / 1000);
            o = W_LIT(o, ",\"d\":");
            o = w_int(o, r->t2 / 1000 - r->t / 1000);
        } else {
            o = W_LIT(o, "{\"b\":");
            o = w_int(o, r->span);
            o = W_LIT(o, ",\"t\":");
            o = w_int(o, r->t / 1000);
        }
        o = W_LIT(o, ",\"task\":");
        o = w_int(o, r->task);
        o = W_LIT(o, ",\"k\":\"");
        const char *k = tg_trace_kind_name(r->kind);
        o = w_mem(o, k, strlen(k));
        o = W_LIT(o, "\",\"n\":");
        o = w_str(o, a, r->alen);
        if (r->flags & F_VALUE) {
            o = W_LIT(o, ",\"v\":");
            o = w_int(o, r->value);
        }
        break;
    case R_END:
        o = W_LIT(o, "{\"e\":");
        o = w_int(o, r->span);
        o = W_LIT(o, ",\"t\":");
        o = w_int(o, r->t / 1000);
        if (r->flags & F_VALUE) {
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

/* Format j's records into one text per trace and write each to its file:
 * on a worker of the pool, or on the caller's thread.  Touches nothing but
 * j (and the files, and the traces' paths and slots, which do not change
 * while j is in flight). */
static void do_write(wjob_t *j) {
    /* Join each begin with its end in this job (one "s" line): span ids
     * grow by one per begin, so the job's begins cover a range, and two
     * arrays over it say where each one's begin and (good) end are. */
    uint32_t lo = UINT32_MAX, hi = 0;
    for (size_t off = 0; off < j->len;) {
        rec_t r;
        memcpy(&r, j->recs + off, sizeof r);
        if (r.type == R_BEGIN) {
            if (r.span < lo) lo = r.span;
            if (r.span > hi) hi = r.span;
        }
        off += sizeof r + r.alen + r.blen;
    }
    size_t range = lo <= hi ? (size_t)(hi - lo) + 1 : 0;
    uint32_t *beg = range ? calloc(range, sizeof *beg) : NULL;
    uint32_t *end = range ? calloc(range, sizeof *end) : NULL;
    if (!beg || !end) range = 0;                /* no memory: write them apart */
    for (size_t off = 0; range && off < j->len;) {
        rec_t r;
        memcpy(&r, j->recs + off, sizeof r);
        if (r.span >= lo && r.span <= hi) {
            if (r.type == R_BEGIN) beg[r.span - lo] = (uint32_t)off + 1;
            else if (r.type == R_END && !r.alen && beg[r.span - lo]) end[r.span - lo] = (uint32_t)off + 1;
        }
        off += sizeof r + r.alen + r.blen;
    }
    for (size_t off = 0; off < j->len;) {
        rec_t r;
        memcpy(&r, j->recs + off, sizeof r);
        const char *a = (const char *)j->recs + off + sizeof r;
        size_t next = off + sizeof r + r.alen + r.blen;
        target_t *g = &j->targets[r.tr->slot];
        int joined = range && r.span >= lo && r.span <= hi && end[r.span - lo];
        if (joined && r.type == R_END) {
            off = next;                         /* written with its begin */
            continue;
        }
        if (joined && r.type == R_BEGIN) {
            rec_t e;
            memcpy(&e, j->recs + end[r.span - lo] - 1, sizeof e);
            r.type = R_SPAN;
            r.t2 = e.t;
            r.flags = e.flags;
            r.value = e.value;
        }
        if (!g->skip) format(&g->text, &r, a, a + r.alen);
        off = next;
    }
    free(beg);
    free(end);
    for (int i = 0; i < j->ntargets; i++) {
        target_t *g = &j->targets[i];
        text_t *x = &g->text;
        g->newfd = -1;
        g->err = 0;
        if (g->skip || (!x->len && !g->header && !j->dropped)) continue;
        text_t all = {0};                       /* the first line, then the records */
        if (g->header) puts_(&all, g->header);
        put(&all, x->p ? x->p : "", x->len);
        if (j->dropped) {
            puts_(&all, "{\"m\":\"dropped\",\"t\":");
            put_int(&all, j->dropped_t / 1000);
            puts_(&all, ",\"msg\":\"");
            put_int(&all, (long long)j->dropped);
            puts_(&all, " records of this process lost: out of memory\"}\n");
        }
        int fd = -1;
        if (all.nomem || x->nomem) {
            g->err = ENOMEM;
        } else {
            fd = g->fd;
            if (fd < 0)
                fd = open(g->tr->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (g->trunc ? O_TRUNC : 0), 0644);
            g->err = fd < 0 || write_all(fd, all.p, all.len) < 0 ? errno : 0;
        }
        if (fd >= 0 && g->fd < 0) {
            if (g->keep && !g->err) g->newfd = fd;
            else if (close(fd) < 0 && !g->err) g->err = errno;
        }
        free(all.p);
    }
    atomic_store_explicit(&j->done, 1, memory_order_release);
}

static void work_cb(uv_work_t *req) {
    do_write(req->data);
}

static void job_free(wjob_t *j) {
    for (int i = 0; i < j->ntargets; i++) {
        free(j->targets[i].header);
        free(j->targets[i].text.p);
    }
    free(j->targets);
    free(j->recs);
    free(j);
}

/* The loop thread takes j's results (once): the files opened to keep, the
 * failures (that trace stops recording, said once). */
static void complete(tg_tracer_t *tc, wjob_t *j) {
    if (j->completed) return;
    j->completed = 1;
    for (int i = 0; i < j->ntargets; i++) {
        target_t *g = &j->targets[i];
        tg_trace_t *tr = g->tr;
        if (g->newfd >= 0) tr->fd = g->newfd;
        else if (g->keep) tc->nopen--;          /* the slot it had reserved */
        if (!g->err) continue;
        if (tr->fd >= 0) {
            close(tr->fd);
            tr->fd = -1;
            tc->nopen--;
        }
        if (!tr->broken)
            fprintf(stderr, "tgrun: cannot write the trace %s: %s; tracing stops for this instance\n",
                    tr->path, strerror(g->err));
        tr->broken = 1;
    }
}

/* Wait until the job in flight is done (a worker is at it or soon will be)
 * and take its results, so that what is written next comes after it. */
static void settle(tg_tracer_t *tc) {
    wjob_t *j = tc->job;
    if (!j || j->completed) return;
    while (!atomic_load_explicit(&j->done, memory_order_acquire)) sched_yield();
    complete(tc, j);
}

static void after_cb(uv_work_t *req, int status) {
    (void)status;
    wjob_t *j = req->data;
    tg_tracer_t *tc = j->tc;
    complete(tc, j);                            /* no-op when settle() did it */
    if (tc->job == j) tc->job = NULL;
    job_free(j);
    tc->jobs--;
    if (tc->freeing && tc->timer_closed && !tc->jobs) {
        free(tc->buf);
        free(tc);
    }
}

/* Hand the buffer to a job, with the file state of each trace that has
 * records in it (every new trace has: its start mark) -- NULL when there
 * is nothing to write, or no memory: then the records stay for the next
 * try.  The tracer starts a new buffer of the same size. */
static wjob_t *take(tg_tracer_t *tc) {
    if (!tc->len && !tc->dropped) return NULL;
    wjob_t *j = calloc(1, sizeof *j);
    unsigned char *buf = tc->cap ? malloc(tc->cap) : NULL;
    if (!j || (tc->cap && !buf)) {
        free(j);
        free(buf);
        return NULL;
    }
    /* which traces: one pass over the records, each trace counted once
     * (its slot is this job's once slot_take says so).  Not a pass over
     * every trace: an instance that ends flushes, and 100,000 instances
     * ending one by one made that quadratic (minutes at the end of a run). */
    uint64_t take_no = ++tc->takes;
    int n = 0, cap = 0;
    target_t *g = NULL;
    for (size_t off = 0; off < tc->len;) {
        rec_t r;
        memcpy(&r, tc->buf + off, sizeof r);
        off += sizeof r + r.alen + r.blen;
        tg_trace_t *tr = r.tr;
        if (tr->slot_take == take_no) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            target_t *ng = realloc(g, (size_t)cap * sizeof *g);
            if (!ng) {
                free(g);
                free(j);
                free(buf);
                return NULL;
            }
            g = ng;
        }
        memset(&g[n], 0, sizeof g[n]);
        tr->slot = n;
        tr->slot_take = take_no;
        g[n].tr = tr;
        g[n].fd = tr->fd;
        g[n].skip = tr->broken;
        g[n].trunc = !tr->created;
        n++;
    }
    for (int i = 0; i < n; i++) {
        tg_trace_t *tr = g[i].tr;
        if (!tr->created) {
            g[i].header = tr->header;           /* the job writes the first line */
            tr->header = NULL;
            tr->created = 1;
        }
        if (tr->fd < 0 && !tr->broken && tc->nopen < tc->max_open) {
            g[i].keep = 1;
            tc->nopen++;                        /* reserved; complete() settles it */
        }
    }
    j->tc = tc;
    j->targets = g;
    j->ntargets = n;
    j->recs = tc->buf;
    j->len = tc->len;
    j->dropped = tc->dropped;
    j->dropped_t = now(tc);
    j->req.data = j;
    tc->buf = buf;
    tc->len = 0;
    tc->dropped = 0;
    return j;
}

/* Write the buffered records (see the enum above for how). */
static int flush(tg_tracer_t *tc, int how) {
    if (tc->job && !tc->job->completed) {
        if (how == FLUSH_LATER && !atomic_load_explicit(&tc->job->done, memory_order_acquire)) return 0;
        settle(tc);
    }
    wjob_t *j = take(tc);
    if (!j) return 0;
    if (how != FLUSH_NOW && uv_queue_work(tc->loop, &j->req, work_cb, after_cb) == 0) {
        tc->job = j;
        tc->jobs++;
        return 0;
    }
    do_write(j);                                /* here and now */
    complete(tc, j);
    job_free(j);
    return 0;
}
