/*
 * tg_net.c -- TCP for plans: listeners and connections on the runtime's
 * libuv loop, whose waits (accept, connect, read, write) yield only the
 * calling task.  This is the mechanism ("tg.net.c"); lua/tg/net.lua is the
 * interface plans use, with the argument checks and the documentation.
 *
 * Ownership and invariants:
 *  - A listener (lsn_t) or connection (conn_t) is malloc'd around its
 *    uv_tcp_t and freed only in libuv's close callback: libuv may call back
 *    (cancelled writes, a cancelled connect) until then.  The Lua userdata
 *    ("tg.listener", "tg.conn") is a box that points to it and keeps copies of
 *    its names; close() and __gc uv_close() the handle and clear the pointer,
 *    so a closed object still answers .address and .peer.
 *  - A connection has exactly one owner: its box, the queue of the listener
 *    that accepted it (until accept() takes it), or the dial (connect) that
 *    is making it.  Whoever owns it closes it.
 *  - At most one task waits in a listener's accept() and one in a
 *    connection's read; the waiter is registered with its wait token and
 *    unregistered by the wait's abort hook or by the callback that ends it.
 *    Writes and dials are requests instead: each holds a reference on its
 *    task (t->refs) until its libuv callback has run, and the token says
 *    whether the result is still wanted.
 *  - Received bytes collect in the connection's buffer, also while nobody
 *    reads (so EOF is noticed); the socket is read while a task waits in read
 *    or fewer than READ_HIGH bytes are buffered.
 *  - Callbacks never run plan Lua: they hand results to the waiting task
 *    with tg_wait_deliver/tg_wait_fail (converted under protection; see
 *    tg_rt.h).
 */
#include <arpa/inet.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_rt.h"
#include "tg_space.h"

#define LSN_META "tg.listener"
#define CONN_META "tg.conn"
#define NAME_LEN 64             /* "[v6 address]:port" */
#define ADDR_MAX 256            /* longest address string we accept */
#define READ_CHUNK 65536        /* least free space offered to each read */
#define READ_HIGH (1 << 20)     /* stop reading ahead at this many buffered bytes */
#define QUEUE_MAX 64            /* accepted connections waiting for accept() */
#define BACKLOG 128

enum { RD_EXACT = 1, RD_ANY, RD_LINE };

typedef struct conn conn_t;

struct conn {
    uv_tcp_t tcp;
    conn_t *next;               /* in a listener's queue */
    char *buf;                  /* received bytes: buf[off..len) not yet taken */
    size_t off, len, cap;
    size_t scan;                /* buf[off..off+scan) has no '\n' */
    int rerr;                   /* 0, or UV_EOF / the error that ended reading */
    int reading, closing;
    tg_task_t *reader;          /* the task waiting in read, if any */
    uint64_t rtoken;
    int rmode;
    size_t rwant;               /* RD_EXACT: bytes wanted */
    const char *rwhat;          /* what the waiting read is (its task's label) */
    char peer[NAME_LEN], local[NAME_LEN];
};

typedef struct lsn {
    uv_tcp_t tcp;
    conn_t *head, *tail;        /* accepted, not yet taken by accept() */
    int nqueued;
    int pending;                /* libuv holds a connection we did not uv_accept (queue full) */
    tg_task_t *waiter;          /* the task waiting in accept, if any */
    uint64_t token;
    char address[NAME_LEN];
} lsn_t;

/* A connect in progress: resolving the host, then connecting. */
typedef struct dial {
    uv_getaddrinfo_t gai;
    uv_connect_t req;
    conn_t *c;                  /* NULL while resolving */
    tg_task_t *t;               /* referenced until the last callback */
    uint64_t token;
    int aborted;                /* the wait ended without us */
    char address[ADDR_MAX];
} dial_t;

/* A write in flight, with its own copy of the data. */
typedef struct wreq {
    uv_write_t req;
    tg_task_t *t;               /* referenced until on_write */
    uint64_t token;
    char data[];
} wreq_t;

typedef struct {
    conn_t *c;                  /* NULL once closed */
    char peer[NAME_LEN], local[NAME_LEN];
} conn_box_t;

typedef struct {
    lsn_t *l;                   /* NULL once closed */
    char address[NAME_LEN];
} lsn_box_t;

/* ---- helpers ------------------------------------------------------------ */

/* "5 s", "0.3 s": durations as the runtime's messages print them. */
static const char *secs(double s, char *buf, size_t n) {
    if (s == floor(s) && s < 1e12) snprintf(buf, n, "%.0f s", s);
    else snprintf(buf, n, "%.3g s", s);
    return buf;
}

static uv_loop_t *loop_of(lua_State *L) {
    return tg_ctx(L)->inst->rt->loop;
}

/* "host:port" of a socket address; IPv6 in brackets, v4-mapped as IPv4. */
static void sa_name(const struct sockaddr_storage *ss, char *out, size_t n) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            struct sockaddr_in a4;
            memset(&a4, 0, sizeof a4);
            a4.sin_family = AF_INET;
            memcpy(&a4.sin_addr, a6->sin6_addr.s6_addr + 12, 4);
            uv_ip4_name(&a4, host, sizeof host);
            snprintf(out, n, "%s:%d", host, ntohs(a6->sin6_port));
        } else {
            uv_ip6_name(a6, host, sizeof host);
            snprintf(out, n, "[%s]:%d", host, ntohs(a6->sin6_port));
        }
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)ss;
        uv_ip4_name(a4, host, sizeof host);
        snprintf(out, n, "%s:%d", host, ntohs(a4->sin_port));
    } else {
        snprintf(out, n, "?");
    }
}

/* Split "host:port" or "[v6]:port".  0, or -1 when malformed; *bracketed
 * says which form it was. */
static int split_addr(const char *s, char *host, size_t hn, int *port, int *bracketed) {
    const char *h, *colon;
    size_t hl;
    *bracketed = s[0] == '[';
    if (*bracketed) {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') return -1;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s))) return -1;   /* v6 needs brackets */
        h = s;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hn) return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    const char *p = colon + 1;
    if (!*p) return -1;
    long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
        if (v > 65535) return -1;
    }
    *port = (int)v;
    return 0;
}

/* An IP literal host into ss.  0 or -1. */
static int ip_addr(const char *host, int port, int bracketed, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    if (bracketed) return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0 ? 0 : -1;
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0 ? 0 : -1;
}

/* A plausible DNS name: letters, digits, '-', '.', '_', not all digits and dots. */
static int host_name_ok(const char *h) {
    int alpha = 0;
    for (const char *p = h; *p; p++) {
        char ch = *p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_') alpha = 1;
        else if (!((ch >= '0' && ch <= '9') || ch == '.')) return 0;
    }
    return alpha;
}

/* The error code for a socket error: the peer or this side went away, or else. */
static const char *err_code(int err) {
    switch (err) {
    case UV_EOF: case UV_ECONNRESET: case UV_EPIPE: case UV_ENOTCONN: case UV_ECANCELED:
    case UV_ECONNABORTED: case UV_EBADF:
        return "closed";
    case UV_ETIMEDOUT:
        return "timeout";
    default:
        return "net";
    }
}

static const char *err_why(int err) {
    switch (err) {
    case UV_EOF: return "the peer closed the connection";
    case UV_ECONNRESET: return "the peer reset the connection";
    case UV_EPIPE: return "the peer closed the connection";
    case UV_ECANCELED: case UV_EBADF: return "the connection was closed";
    default: return uv_strerror(err);
    }
}

/* tg_wait_target() found no room on the stack of a wait that is still
 * pending: take our abort hook off it, since its data may go away before
 * the deadline ends the wait. */
static void unhook(tg_task_t *t, uint64_t token, void *data) {
    if (t->token == token && t->state == TG_TASK_WAITING && t->abort_data == data) t->abort = NULL;
}


/* ---- connections: the buffer and the reader ----------------------------- */

static size_t avail(const conn_t *c) {
    return c->len - c->off;
}

static const char *data_of(const conn_t *c) {
    return c->buf ? c->buf + c->off : "";
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

/* Read from the socket while someone waits or the buffer has room. */
static void update_reading(conn_t *c) {
    int want = !c->closing && !c->rerr && (c->reader || avail(c) < READ_HIGH);
    if (want && !c->reading) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (rc < 0) c->rerr = rc;               /* reads report it */
        else c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void consume(conn_t *c, size_t n) {
    c->off += n;
    c->scan = 0;
    if (c->off == c->len) {
        c->off = c->len = 0;
        if (c->cap > 4 * READ_CHUNK) {          /* a big transfer is over: give it back */
            free(c->buf);
            c->buf = NULL;
            c->cap = 0;
        }
    }
    update_reading(c);
}

static const char *find_nl(conn_t *c) {
    size_t a = avail(c);
    if (a == 0) return NULL;
    if (c->scan > a) c->scan = 0;
    const char *p = data_of(c);
    const char *nl = memchr(p + c->scan, '\n', a - c->scan);
    if (!nl) c->scan = a;
    return nl;
}

/* Whether a read in mode could end now, with data or with an error. */
static int read_ready(conn_t *c, int mode, size_t n) {
    if (c->rerr || c->closing) return 1;
    switch (mode) {
    case RD_EXACT: return avail(c) >= n;
    case RD_ANY: return avail(c) > 0;
    default: return find_nl(c) != NULL;
    }
}

/* Push the result of a read that read_ready() allowed: the data (returns 1)
 * or the error value (returns 0), taking what it returns from the buffer.
 * what names the read for the message. */
static int read_push(lua_State *L, conn_t *c, int mode, size_t n, const char *what) {
    size_t a = avail(c);
    const char *p = data_of(c);
    if (mode == RD_EXACT && a >= n) {
        lua_pushlstring(L, p, n);
        consume(c, n);
        return 1;
    }
    if (mode == RD_ANY && a > 0) {
        lua_pushlstring(L, p, a);
        consume(c, a);
        return 1;
    }
    if (mode == RD_LINE) {
        const char *nl = find_nl(c);
        if (nl) {
            size_t k = (size_t)(nl - p), m = k;
            if (m > 0 && p[m - 1] == '\r') m--;
            lua_pushlstring(L, p, m);
            consume(c, k + 1);
            return 1;
        }
        if (a > 0) {                            /* the last line, without a newline */
            lua_pushlstring(L, p, a);
            consume(c, a);
            return 1;
        }
    }
    int err = c->rerr ? c->rerr : UV_ECANCELED;
    if (mode == RD_EXACT) {
        tg_err_push(L, err_code(err), "%s: %s: got %I", what, err_why(err), (lua_Integer)a);
        lua_pushlstring(L, p, a);
        lua_setfield(L, -2, "partial");
        consume(c, a);
    } else {
        tg_err_push(L, err_code(err), "%s: %s", what, err_why(err));
    }
    return 0;
}

/* read_push for tg_wait_deliver: the data, or the error raised. */
static int push_read(lua_State *L, void *ud) {
    conn_t *c = ud;
    if (!read_push(L, c, c->rmode, c->rwant, c->rwhat)) return lua_error(L);
    return 1;
}

/* Data, EOF or an error arrived (or the connection is closing): end the
 * read that waits if it can end now. */
static void serve_reader(conn_t *c) {
    if (!c->reader || !read_ready(c, c->rmode, c->rwant)) return;
    tg_task_t *t = c->reader;
    c->reader = NULL;
    if (!tg_wait_target(t, c->rtoken)) {
        unhook(t, c->rtoken, c);
        return;
    }
    c->rwhat = t->what;
    tg_wait_deliver(t, 1, push_read, c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    (void)hint;
    conn_t *c = h->data;
    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, avail(c));
        c->len -= c->off;
        c->off = 0;
    }
    if (c->cap - c->len < READ_CHUNK) {
        size_t cap = c->cap ? c->cap : READ_CHUNK;
        while (cap - c->len < READ_CHUNK) cap *= 2;
        char *nb = realloc(c->buf, cap);
        if (!nb) {
            *b = uv_buf_init(NULL, 0);          /* on_read gets UV_ENOBUFS */
            return;
        }
        c->buf = nb;
        c->cap = cap;
    }
    size_t room = c->cap - c->len;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(room > UINT_MAX ? UINT_MAX : room));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    (void)b;
    conn_t *c = s->data;
    if (n == 0) return;                         /* EAGAIN */
    if (n > 0) {
        c->len += (size_t)n;
    } else {
        c->rerr = (int)n;                       /* EOF, or an error: reading is over */
        uv_read_stop(s);
        c->reading = 0;
    }
    serve_reader(c);
    update_reading(c);
}

static void on_conn_closed(uv_handle_t *h) {
    conn_t *c = h->data;
    free(c->buf);
    free(c);
}

static conn_t *conn_new(uv_loop_t *loop) {
    conn_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    return c;
}

/* The connection is established: learn its names, start reading. */
static void conn_start(conn_t *c) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) sa_name(&ss, c->peer, sizeof c->peer);
    else snprintf(c->peer, sizeof c->peer, "?");
    len = sizeof ss;
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0) sa_name(&ss, c->local, sizeof c->local);
    else snprintf(c->local, sizeof c->local, "?");
    uv_tcp_nodelay(&c->tcp, 1);                 /* plans exchange small messages */
    update_reading(c);
}

/* Close c (once): a read that waits ends with "closed", writes in flight are
 * cancelled by libuv; c is freed in the close callback. */
static void conn_close(conn_t *c) {
    if (c->closing) return;
    c->closing = 1;
    serve_reader(c);
    c->reading = 0;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Push a new "tg.conn" box for c on L; the box owns c from now on. */
static void push_conn(lua_State *L, conn_t *c) {
    conn_box_t *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->c = c;                                   /* owned by the box from here on */
    memcpy(b->peer, c->peer, sizeof b->peer);
    memcpy(b->local, c->local, sizeof b->local);
    luaL_setmetatable(L, CONN_META);
}

/* push_conn for tg_wait_deliver (ud: the conn_t). */
static int deliver_conn(lua_State *L, void *ud) {
    push_conn(L, ud);
    return 1;
}

static conn_box_t *check_conn(lua_State *L, const char *call) {
    conn_box_t *b = luaL_testudata(L, 1, CONN_META);
    if (!b)
        tg_err_raise(L, "invalid", "conn:%s: expected a connection (call it as conn:%s(...)), got %s",
                     call, call, luaL_typename(L, 1));
    return b;
}

/* ---- connections: Lua ---------------------------------------------------- */

/* The read's abort hook: unregister; a deadline says how far it got. */
static void read_abort(tg_task_t *t, int why) {
    conn_t *c = t->abort_data;
    c->reader = NULL;
    update_reading(c);
    if (why != TG_ABORT_TIMEOUT || !tg_wait_target(t, t->token)) return;
    char b[32];
    if (c->rmode == RD_LINE)
        tg_wait_fail(t, "timeout", "%s timed out after %s: got %lld bytes without a newline",
                     t->what, secs(t->timeout, b, sizeof b), (long long)avail(c));
    else
        tg_wait_fail(t, "timeout", "%s timed out after %s: got %lld",
                     t->what, secs(t->timeout, b, sizeof b), (long long)avail(c));
}

/* Shared by read and read_line: return at once when the buffer (or EOF)
 * allows, else wait.  Bytes that arrived before a timeout stay buffered. */
static int do_read(lua_State *L, conn_box_t *b, int mode, size_t n, double timeout, const char *what) {
    if (!b->c) return tg_err_raise(L, "closed", "%s: the connection is closed", what);
    conn_t *c = b->c;
    if (c->reader)
        return tg_err_raise(L, "invalid", "%s: another task is already reading from this connection", what);
    if (mode == RD_EXACT && n == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (read_ready(c, mode, n)) {
        if (read_push(L, c, mode, n, what)) return 1;
        return lua_error(L);
    }
    tg_task_t *t = tg_wait_begin(L, TG_WAIT_READ, b->peer, strlen(b->peer), timeout, what);
    c->reader = t;
    c->rtoken = t->token;
    c->rmode = mode;
    c->rwant = n;
    tg_wait_on_abort(t, read_abort, c);
    update_reading(c);
    return tg_wait_yield(L);
}

/* c.read(conn, [n], [opts]) -> data: exactly n bytes, or without n whatever
 * is buffered else the next chunk.  Yields unless the data is there.  At EOF
 * raises "closed" (for n: with .partial, what arrived). */
static int l_net_read(lua_State *L) {
    conn_box_t *b = check_conn(L, "read");
    int mode = RD_ANY;
    lua_Integer n = 0;
    if (!lua_isnoneornil(L, 2)) {
        int isint;
        n = lua_tointegerx(L, 2, &isint);
        if (!isint || n < 0)
            return tg_err_raise(L, "invalid", "conn:read: n must be a whole number >= 0");
        mode = RD_EXACT;
    }
    double timeout = tg_opt_timeout(L, 3, "conn:read");
    char what[160];
    if (mode == RD_EXACT) snprintf(what, sizeof what, "read of %lld bytes from %s", (long long)n, b->peer);
    else snprintf(what, sizeof what, "read from %s", b->peer);
    return do_read(L, b, mode, (size_t)n, timeout, what);
}

/* c.read_line(conn, [opts]) -> line, without "\n" or "\r\n".  Yields unless
 * a line is buffered.  At EOF returns the unterminated rest, if any, else
 * raises "closed". */
static int l_net_read_line(lua_State *L) {
    conn_box_t *b = check_conn(L, "read_line");
    double timeout = tg_opt_timeout(L, 2, "conn:read_line");
    char what[160];
    snprintf(what, sizeof what, "read_line from %s", b->peer);
    return do_read(L, b, RD_LINE, 0, timeout, what);
}

static void on_write(uv_write_t *req, int status) {
    wreq_t *w = req->data;
    tg_task_t *t = w->t;
    if (tg_wait_target(t, w->token)) {
        if (status == 0) tg_wait_done(t, 1, 0);
        else tg_wait_fail(t, err_code(status), "%s: %s", t->what, err_why(status));
    }
    tg_task_unref(t);
    free(w);
}

/* c.write(conn, data, [opts]).  Yields until libuv has handed all of data to
 * the kernel.  A write that timed out or was cancelled still completes in
 * the background. */
static int l_net_write(lua_State *L) {
    conn_box_t *b = check_conn(L, "write");
    size_t len;
    if (lua_type(L, 2) != LUA_TSTRING)
        return tg_err_raise(L, "invalid", "conn:write: data must be a string, got %s", luaL_typename(L, 2));
    const char *data = lua_tolstring(L, 2, &len);
    double timeout = tg_opt_timeout(L, 3, "conn:write");
    char what[160];
    snprintf(what, sizeof what, "write of %llu bytes to %s", (unsigned long long)len, b->peer);
    if (!b->c) return tg_err_raise(L, "closed", "%s: the connection is closed", what);
    if (len > UINT_MAX) return tg_err_raise(L, "invalid", "%s: too large for one write", what);
    if (len == 0) return 0;
    conn_t *c = b->c;
    tg_task_t *t = tg_wait_begin(L, TG_WAIT_WRITE, b->peer, strlen(b->peer), timeout, what);
    wreq_t *w = malloc(sizeof *w + len);
    if (!w) {
        tg_wait_fail(t, "net", "%s: out of memory", what);
        return tg_wait_yield(L);
    }
    memcpy(w->data, data, len);
    w->req.data = w;
    w->t = t;
    w->token = t->token;
    uv_buf_t ub = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
    if (rc < 0) {
        free(w);
        tg_wait_fail(t, err_code(rc), "%s: %s", what, err_why(rc));
        return tg_wait_yield(L);
    }
    t->refs++;                                  /* on_write's */
    return tg_wait_yield(L);
}

/* c.close(conn).  A read that waits ends with "closed".  Does not yield. */
static int l_net_close(lua_State *L) {
    conn_box_t *b = check_conn(L, "close");
    if (b->c) conn_close(b->c);
    b->c = NULL;
    return 0;
}

/* __gc and __close of "tg.conn": close it unless closed. */
static int l_net_conn_gc(lua_State *L) {
    conn_box_t *b = luaL_checkudata(L, 1, CONN_META);
    if (b->c) conn_close(b->c);
    b->c = NULL;
    return 0;
}

/* conn.peer, conn.address, else the methods (upvalue 1). */
static int l_net_conn_index(lua_State *L) {
    conn_box_t *b = luaL_checkudata(L, 1, CONN_META);
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    if (k && strcmp(k, "peer") == 0) lua_pushstring(L, b->peer);
    else if (k && strcmp(k, "address") == 0) lua_pushstring(L, b->local);
    else {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
    }
    return 1;
}

/* tostring(conn) -> "tg.conn local -> peer [(closed)]" */
static int l_net_conn_tostring(lua_State *L) {
    conn_box_t *b = luaL_checkudata(L, 1, CONN_META);
    lua_pushfstring(L, "tg.conn %s -> %s%s", b->local, b->peer, b->c ? "" : " (closed)");
    return 1;
}

/* ---- connect ------------------------------------------------------------ */

static void dial_free(dial_t *d) {
    tg_task_unref(d->t);
    free(d);
}

/* End the dial's wait with the error err (a libuv code). */
static void dial_fail(dial_t *d, int err) {
    if (!tg_wait_target(d->t, d->token)) {
        unhook(d->t, d->token, d);
        return;
    }
    if (err == UV_ECONNREFUSED) tg_wait_fail(d->t, "refused", "connect to %s refused", d->address);
    else if (err == UV_ETIMEDOUT)
        tg_wait_fail(d->t, "timeout", "connect to %s timed out (no answer from the host)", d->address);
    else tg_wait_fail(d->t, "net", "connect to %s failed: %s", d->address, uv_strerror(err));
}

/* The wait ended without us: stop what is in progress; its callback frees d. */
static void dial_abort(tg_task_t *t, int why) {
    (void)why;
    dial_t *d = t->abort_data;
    d->aborted = 1;
    if (d->c) conn_close(d->c);                 /* on_connect comes with UV_ECANCELED */
    else uv_cancel((uv_req_t *)&d->gai);        /* if it has not started yet */
}

static void on_connect(uv_connect_t *req, int status) {
    dial_t *d = req->data;
    conn_t *c = d->c;
    lua_State *co = d->aborted ? NULL : tg_wait_target(d->t, d->token);
    if (!co || status < 0) {
        if (!co && !d->aborted) unhook(d->t, d->token, d);
        conn_close(c);
        if (co) dial_fail(d, status);
        dial_free(d);
        return;
    }
    conn_start(c);
    if (tg_wait_deliver(d->t, 1, deliver_conn, c) < 0) conn_close(c);   /* no box took it */
    dial_free(d);
}

/* Connect to sa; on failure end the wait and free d. */
static void dial_connect(dial_t *d, uv_loop_t *loop, const struct sockaddr *sa) {
    conn_t *c = conn_new(loop);
    if (!c) {
        dial_fail(d, UV_ENOMEM);
        dial_free(d);
        return;
    }
    d->c = c;
    d->req.data = d;
    int rc = uv_tcp_connect(&d->req, &c->tcp, sa, on_connect);
    if (rc < 0) {
        conn_close(c);
        dial_fail(d, rc);
        dial_free(d);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    dial_t *d = req->data;
    if (d->aborted || !tg_wait_target(d->t, d->token)) {
        if (!d->aborted) unhook(d->t, d->token, d);
        if (res) uv_freeaddrinfo(res);
        dial_free(d);
        return;
    }
    if (status < 0 || !res) {
        tg_wait_fail(d->t, "net", "connect to %s: cannot resolve the host: %s", d->address,
                     uv_strerror(status < 0 ? status : UV_EAI_NONAME));
        if (res) uv_freeaddrinfo(res);
        dial_free(d);
        return;
    }
    dial_connect(d, req->loop, res->ai_addr);
    uv_freeaddrinfo(res);
}

/* c.connect(address, [opts]) -> conn.  Yields until connected.  address is
 * "ip:port", "[ipv6]:port" or "name:port".  Errors: "invalid" (at once),
 * "refused", "timeout", "net". */
static int l_net_connect(lua_State *L) {
    if (lua_type(L, 1) != LUA_TSTRING)
        return tg_err_raise(L, "invalid", "net.connect: address must be a string, got %s", luaL_typename(L, 1));
    const char *a = lua_tostring(L, 1);
    double timeout = tg_opt_timeout(L, 2, "net.connect");
    char host[ADDR_MAX];
    int port, bracketed;
    struct sockaddr_storage ss;
    int literal = 0;
    if (strlen(a) < ADDR_MAX && split_addr(a, host, sizeof host, &port, &bracketed) == 0 && port > 0) {
        literal = ip_addr(host, port, bracketed, &ss) == 0;
        if (!literal && (bracketed || !host_name_ok(host))) port = -1;
    } else {
        port = -1;
    }
    if (port < 0)
        return tg_err_raise(L, "invalid", "net.connect: address must be \"host:port\" (an IP address, "
                            "[IPv6 address] or host name, and a port 1-65535), got \"%s\"", a);
    char what[ADDR_MAX + 16];
    snprintf(what, sizeof what, "connect to %s", a);
    tg_task_t *t = tg_wait_begin(L, TG_WAIT_CONNECT, a, strlen(a), timeout, what);
    dial_t *d = calloc(1, sizeof *d);
    if (!d) {
        tg_wait_fail(t, "net", "%s: out of memory", what);
        return tg_wait_yield(L);
    }
    t->refs++;                                  /* the dial's, dropped by dial_free */
    d->t = t;
    d->token = t->token;
    snprintf(d->address, sizeof d->address, "%s", a);
    tg_wait_on_abort(t, dial_abort, d);
    uv_loop_t *loop = loop_of(L);
    if (literal) {
        dial_connect(d, loop, (struct sockaddr *)&ss);
    } else {
        struct addrinfo hints;
        char portstr[12];
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(portstr, sizeof portstr, "%d", port);
        d->gai.data = d;
        int rc = uv_getaddrinfo(loop, &d->gai, on_resolved, host, portstr, &hints);
        if (rc < 0) {
            tg_wait_fail(t, "net", "connect to %s: cannot resolve the host: %s", d->address, uv_strerror(rc));
            dial_free(d);
        }
    }
    return tg_wait_yield(L);
}

/* ---- listeners ---------------------------------------------------------- */

static void on_lsn_closed(uv_handle_t *h) {
    free(h->data);
}

static lsn_box_t *check_lsn(lua_State *L, const char *call) {
    lsn_box_t *b = luaL_testudata(L, 1, LSN_META);
    if (!b)
        tg_err_raise(L, "invalid", "listener:%s: expected a listener (call it as listener:%s(...)), got %s",
                     call, call, luaL_typename(L, 1));
    return b;
}

/* Take the connection libuv has for us: hand it to the task in accept(),
 * else queue it. */
static void accept_one(lsn_t *l) {
    conn_t *c = conn_new(l->tcp.loop);
    if (!c) {
        l->pending = 1;                         /* try again at the next accept() */
        return;
    }
    l->pending = 0;
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    conn_start(c);
    if (l->waiter) {
        tg_task_t *t = l->waiter;
        l->waiter = NULL;
        if (tg_wait_target(t, l->token)) {
            if (tg_wait_deliver(t, 1, deliver_conn, c) < 0) conn_close(c);
            return;
        }
        unhook(t, l->token, l);
    }
    c->next = NULL;
    if (l->tail) l->tail->next = c;
    else l->head = c;
    l->tail = c;
    l->nqueued++;
}

static void on_connection(uv_stream_t *server, int status) {
    lsn_t *l = server->data;
    if (status < 0) {
        if (l->waiter) {
            tg_task_t *t = l->waiter;
            l->waiter = NULL;
            if (tg_wait_target(t, l->token))
                tg_wait_fail(t, "net", "accept on %s: %s", l->address, uv_strerror(status));
            else unhook(t, l->token, l);
        }
        return;
    }
    /* Not accepting makes libuv stop listening until we do: the kernel's
     * backlog holds further connections meanwhile. */
    if (l->nqueued >= QUEUE_MAX && !l->waiter) {
        l->pending = 1;
        return;
    }
    accept_one(l);
}

static void lsn_close(lsn_t *l) {
    if (l->waiter) {
        tg_task_t *t = l->waiter;
        l->waiter = NULL;
        if (tg_wait_target(t, l->token))
            tg_wait_fail(t, "closed", "accept on %s: the listener was closed", l->address);
        else unhook(t, l->token, l);
    }
    while (l->head) {
        conn_t *c = l->head;
        l->head = c->next;
        conn_close(c);
    }
    l->tail = NULL;
    l->nqueued = 0;
    uv_close((uv_handle_t *)&l->tcp, on_lsn_closed);
}

/* The address a peer can dial: the bound one, with the instance's ip
 * (config.ip) for a wildcard address. */
static void dialable(lua_State *L, const struct sockaddr_storage *ss, char *out, size_t n) {
    int port = 0, wildcard = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)ss;
        port = ntohs(a4->sin_port);
        wildcard = a4->sin_addr.s_addr == htonl(INADDR_ANY);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
        port = ntohs(a6->sin6_port);
        wildcard = IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr);
    }
    if (!wildcard) {
        sa_name(ss, out, n);
        return;
    }
    const char *ip = NULL;
    tg_space_push_config(L, tg_ctx(L)->inst);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "ip");
        if (lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0) ip = lua_tostring(L, -1);
        lua_remove(L, -2);
    }
    if (!ip) ip = ss->ss_family == AF_INET6 ? "::1" : "127.0.0.1";
    if (strchr(ip, ':')) snprintf(out, n, "[%s]:%d", ip, port);
    else snprintf(out, n, "%s:%d", ip, port);
    lua_pop(L, 1);
}

/* c.listen(address) -> listener.  Does not yield.  address is "ip:port" or
 * "[ipv6]:port"; port 0 picks a free one.  Raises "invalid" for a malformed
 * address, "net" when the system refuses (address in use, ...). */
static int l_net_listen(lua_State *L) {
    if (lua_type(L, 1) != LUA_TSTRING)
        return tg_err_raise(L, "invalid", "net.listen: address must be a string, got %s", luaL_typename(L, 1));
    const char *a = lua_tostring(L, 1);
    char host[ADDR_MAX];
    int port, bracketed;
    struct sockaddr_storage ss;
    if (strlen(a) >= ADDR_MAX || split_addr(a, host, sizeof host, &port, &bracketed) < 0
        || ip_addr(host, port, bracketed, &ss) < 0)
        return tg_err_raise(L, "invalid", "net.listen: address must be \"ip:port\" or \"[ipv6]:port\" "
                            "(0.0.0.0 for every interface, port 0 for any free one), got \"%s\"", a);
    lsn_box_t *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, LSN_META);
    lsn_t *l = calloc(1, sizeof *l);
    if (!l) return tg_err_raise(L, "net", "net.listen on %s: out of memory", a);
    uv_tcp_init(loop_of(L), &l->tcp);
    l->tcp.data = l;
    int rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&l->tcp, BACKLOG, on_connection);
    int len = sizeof ss;
    if (rc == 0) rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
    if (rc < 0) {
        uv_close((uv_handle_t *)&l->tcp, on_lsn_closed);
        return tg_err_raise(L, "net", "net.listen on %s: %s", a, uv_strerror(rc));
    }
    dialable(L, &ss, l->address, sizeof l->address);
    memcpy(b->address, l->address, sizeof b->address);
    b->l = l;
    return 1;
}

static void accept_abort(tg_task_t *t, int why) {
    (void)why;
    lsn_t *l = t->abort_data;
    l->waiter = NULL;
}

/* c.accept(listener, [opts]) -> conn.  Yields unless a connection is queued. */
static int l_net_accept(lua_State *L) {
    lsn_box_t *b = check_lsn(L, "accept");
    double timeout = tg_opt_timeout(L, 2, "listener:accept");
    char what[NAME_LEN + 16];
    snprintf(what, sizeof what, "accept on %s", b->address);
    if (!b->l) return tg_err_raise(L, "closed", "%s: the listener is closed", what);
    lsn_t *l = b->l;
    if (!l->head && l->pending) accept_one(l);
    if (l->head) {
        conn_t *c = l->head;
        push_conn(L, c);                        /* first: it may raise (memory) */
        l->head = c->next;
        if (!l->head) l->tail = NULL;
        l->nqueued--;
        if (l->pending) accept_one(l);
        return 1;
    }
    if (l->waiter)
        return tg_err_raise(L, "invalid", "%s: another task is already waiting in accept()", what);
    tg_task_t *t = tg_wait_begin(L, TG_WAIT_ACCEPT, b->address, strlen(b->address), timeout, what);
    l->waiter = t;
    l->token = t->token;
    tg_wait_on_abort(t, accept_abort, l);
    return tg_wait_yield(L);
}

/* c.close_listener(listener).  Queued connections are closed; an accept()
 * that waits ends with "closed".  Does not yield. */
static int l_net_close_listener(lua_State *L) {
    lsn_box_t *b = check_lsn(L, "close");
    if (b->l) lsn_close(b->l);
    b->l = NULL;
    return 0;
}

/* __gc and __close of "tg.listener": close it unless closed. */
static int l_net_lsn_gc(lua_State *L) {
    lsn_box_t *b = luaL_checkudata(L, 1, LSN_META);
    if (b->l) lsn_close(b->l);
    b->l = NULL;
    return 0;
}

/* listener.address, else the methods (upvalue 1). */
static int l_net_lsn_index(lua_State *L) {
    lsn_box_t *b = luaL_checkudata(L, 1, LSN_META);
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    if (k && strcmp(k, "address") == 0) lua_pushstring(L, b->address);
    else {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
    }
    return 1;
}

/* tostring(listener) -> "tg.listener address [(closed)]" */
static int l_net_lsn_tostring(lua_State *L) {
    lsn_box_t *b = luaL_checkudata(L, 1, LSN_META);
    lua_pushfstring(L, "tg.listener %s%s", b->address, b->l ? "" : " (closed)");
    return 1;
}

/* ---- module ------------------------------------------------------------- */

static const luaL_Reg net_funcs[] = {
    {"listen", l_net_listen},
    {"accept", l_net_accept},
    {"close_listener", l_net_close_listener},
    {"connect", l_net_connect},
    {"read", l_net_read},
    {"read_line", l_net_read_line},
    {"write", l_net_write},
    {"close", l_net_close},
    {NULL, NULL},
};

static const luaL_Reg conn_meta[] = {
    {"__gc", l_net_conn_gc},
    {"__close", l_net_conn_gc},
    {"__tostring", l_net_conn_tostring},
    {NULL, NULL},
};

static const luaL_Reg lsn_meta[] = {
    {"__gc", l_net_lsn_gc},
    {"__close", l_net_lsn_gc},
    {"__tostring", l_net_lsn_tostring},
    {NULL, NULL},
};

/* Metatable name with __index = a function over the methods table mt_field
 * of the module table (at the top of L); lua/tg/net.lua fills the methods. */
static void new_meta(lua_State *L, const char *name, const luaL_Reg *fns, lua_CFunction index,
                     const char *methods_field) {
    lua_newtable(L);                            /* mod methods */
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, methods_field);         /* mod methods */
    luaL_newmetatable(L, name);                 /* mod methods mt */
    luaL_setfuncs(L, fns, 0);
    lua_insert(L, -2);                          /* mod mt methods */
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

/* require "tg.net.c" -> {listen, accept, close_listener, connect, read,
 * read_line, write, close, listener_methods, conn_methods}; lua/tg/net.lua
 * puts the plan-facing methods into the two methods tables. */
int luaopen_tg_net_c(lua_State *L) {
    luaL_newlib(L, net_funcs);
    new_meta(L, LSN_META, lsn_meta, l_net_lsn_index, "listener_methods");
    new_meta(L, CONN_META, conn_meta, l_net_conn_index, "conn_methods");
    return 1;
}
