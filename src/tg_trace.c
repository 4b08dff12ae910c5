/*
 * tg_trace.c -- see tg_trace.h.  Records are kept in memory as they come
 * (a 32-byte header and the bytes of their strings) and turned into JSON
 * lines only when they are written, so that the waits pay for a clock
 * reading and a copy, nothing more.
 */
#include "tg_trace.h"

#include <errno.h>
#include <fcntl.h>
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
    uv_timer_t timer;
    int64_t wall0;              /* CLOCK_REALTIME ns at ... */
    uint64_t mono0;             /* ... this uv_hrtime() */
    tg_trace_t *head;           /* open traces */
    size_t n;
    int max_open, nopen;        /* trace files that may stay open, and do */
    char host[256];             /* for the traces' first lines */
    long pid;
    text_t scratch;             /* formatting space, reused by every flush */
};

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
        if ((tr->len || !tr->created) && tr->oldest <= limit) tg_trace_flush(tr);
    arm(tc);
}

tg_tracer_t *tg_tracer_new(uv_loop_t *loop) {
    tg_tracer_t *tc = calloc(1, sizeof *tc);
    if (!tc) return NULL;
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
    free(tc->scratch.p);
    free(tc);
}

void tg_tracer_free(tg_tracer_t *tc) {
    if (!tc) return;
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

void tg_trace_close(tg_trace_t *tr) {
    if (!tr) return;
    tg_tracer_t *tc = tr->tc;
    tg_trace_flush(tr);
    if (tr->fd >= 0) {
        close(tr->fd);
        tc->nopen--;
    }
    if (tr->prev) tr->prev->next = tr->next;
    else tc->head = tr->next;
    if (tr->next) tr->next->prev = tr->prev;
    tc->n--;
    free(tr->path);
    free(tr->header);
    free(tr->buf);
    free(tr);
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
    if (tr->len && tr->len + need > TG_TRACE_FLUSH_AT && tg_trace_flush(tr) < 0) return;
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

int tg_trace_flush(tg_trace_t *tr) {
    if (!tr || tr->broken) return tr ? -1 : 0;
    if (!tr->len && !tr->dropped && tr->created) return 0;
    tg_tracer_t *tc = tr->tc;
    text_t x = tc->scratch;                     /* lent, given back below */
    x.len = 0;
    x.nomem = 0;
    if (!tr->created) puts_(&x, tr->header);
    for (size_t off = 0; off < tr->len;) {
        rec_t r;
        memcpy(&r, tr->buf + off, sizeof r);
        const char *a = (const char *)tr->buf + off + sizeof r;
        format(&x, &r, a, a + r.alen);
        off += sizeof r + r.alen + r.blen;
    }
    if (tr->dropped) {
        puts_(&x, "{\"m\":\"dropped\",\"t\":");
        put_int(&x, now(tr) / 1000);
        puts_(&x, ",\"msg\":\"");
        put_int(&x, (long long)tr->dropped);
        puts_(&x, " records lost: out of memory\"}\n");
    }
    tc->scratch = x;
    if (x.nomem) return 0;                      /* try again at the next flush */
    int fd = tr->fd;
    if (fd < 0) {
        int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (tr->created ? 0 : O_TRUNC);
        fd = open(tr->path, flags, 0644);
    }
    int rc = fd < 0 ? -1 : write_all(fd, x.p, x.len);
    int err = errno;
    if (fd >= 0 && tr->fd < 0 && rc == 0 && tc->nopen < tc->max_open) {
        tr->fd = fd;                            /* kept for the next write */
        tc->nopen++;
    } else if (fd >= 0 && (rc < 0 || fd != tr->fd)) {
        if (fd == tr->fd) {
            tr->fd = -1;
            tc->nopen--;
        }
        if (close(fd) < 0 && rc == 0) {
            rc = -1;
            err = errno;
        }
    }
    if (rc < 0) {
        fprintf(stderr, "tgrun: cannot write the trace %s: %s; tracing stops for this instance\n",
                tr->path, strerror(err));
        tr->broken = 1;
        free(tr->buf);
        tr->buf = NULL;
        tr->len = tr->cap = 0;
        return -1;
    }
    tr->created = 1;
    tr->len = 0;
    tr->dropped = 0;
    free(tr->header);
    tr->header = NULL;
    return 0;
}
