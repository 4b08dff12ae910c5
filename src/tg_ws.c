/*
 * tg_ws.c -- see tg_ws.h.
 *
 * wslay's event API pulls bytes through callbacks while libuv pushes them:
 * the read callback points `in` at what libuv read and runs
 * wslay_event_recv, whose recv callback hands it over and then says
 * WOULDBLOCK; wslay's send callback appends frames to `pend`, which one
 * uv_write at a time takes to the socket.
 *
 * Messages are assembled here, not by wslay (no_buffering): a frame header
 * that would take the message past max_message closes with 1009 and a
 * reason before any of it is stored, where wslay itself would first
 * allocate what the header claims.
 */
#define _POSIX_C_SOURCE 200809L
#include "tg_ws.h"

#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#include "tg_syncmsg.h"
#include "tg_wshs.h"

#define HANDSHAKE_SECS 10.0
#define CLOSE_WAIT_MS 2000
#define READ_BUF (64 * 1024)

enum { ST_HANDSHAKE = 1, ST_OPEN, ST_CLOSING, ST_DEAD };

struct tg_ws {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_write_t wreq;
    wslay_event_context_ptr ctx;
    const tg_ws_ops_t *ops;
    void *data;
    int server, state, handles, writing, paused, reading, tgrun;
    int refused;                /* write the refusal, then end */
    tg_sbuf_t head;             /* handshake bytes so far */
    tg_sbuf_t out, pend;        /* in flight; queued */
    const char *in;             /* what the read callback got, for wslay */
    size_t in_len;
    tg_sbuf_t msg;              /* the data message being assembled */
    uint64_t msg_total;
    int cur_ctrl, too_big;
    size_t max_message;
    int code;                   /* how it ended */
    char reason[600];
    char key[25];
    char peer[300];
    char path[256];
    uint64_t rnd;               /* mask generator state (client) */
};

static void teardown(tg_ws_t *ws, int code, const char *reason);
static void flush(tg_ws_t *ws);

static const tg_ws_ops_t no_ops;                /* a connection nobody owns yet */

/* ---- ending ---------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
    tg_ws_t *ws = h->data;
    if (h == (uv_handle_t *)&ws->tcp && ws->ops->closed) ws->ops->closed(ws, ws->data, ws->code, ws->reason);
    if (--ws->handles > 0) return;
    if (ws->ctx) wslay_event_context_free(ws->ctx);
    tg_sbuf_free(&ws->head);
    tg_sbuf_free(&ws->out);
    tg_sbuf_free(&ws->pend);
    tg_sbuf_free(&ws->msg);
    free(ws);
}

/* The end: both handles close; `closed` is called from the tcp handle's
 * close callback, so never from inside a call of the owner's. */
static void teardown(tg_ws_t *ws, int code, const char *reason) {
    if (ws->state == ST_DEAD) return;
    int stuck = ws->state == ST_CLOSING && tg_ws_backlog(ws) > 0;
    ws->state = ST_DEAD;
    ws->code = code;
    snprintf(ws->reason, sizeof ws->reason, "%.500s", reason ? reason : "");
    uv_timer_stop(&ws->timer);
    /* A peer that stopped reading would keep what is still queued (and the
     * kernel's buffers) alive for minutes: reset instead of a FIN that
     * could only come after it. */
    if (!stuck || uv_tcp_close_reset(&ws->tcp, on_handle_closed) != 0)
        uv_close((uv_handle_t *)&ws->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&ws->timer, on_handle_closed);
}

static void on_timer(uv_timer_t *t) {
    tg_ws_t *ws = t->data;
    if (ws->state == ST_HANDSHAKE) teardown(ws, 1006, "the websocket handshake did not finish in time");
    else if (ws->state == ST_CLOSING) teardown(ws, ws->code ? ws->code : 1006, ws->reason);
}

/* ---- writing ---------------------------------------------------------------- */

/* Our close frame is written: the connection ends once the peer's close
 * has arrived too (or ours was the answer to it), else within
 * CLOSE_WAIT_MS.  1 when the close handshake is under way. */
static int closing_done(tg_ws_t *ws) {
    if (!ws->ctx || !wslay_event_get_close_sent(ws->ctx) || ws->writing || ws->pend.len) return 0;
    if (wslay_event_get_close_received(ws->ctx)) {
        teardown(ws, ws->code, ws->reason);
        return 1;
    }
    if (ws->state != ST_CLOSING) {
        ws->state = ST_CLOSING;
        uv_timer_start(&ws->timer, on_timer, CLOSE_WAIT_MS, 0);
    }
    return 1;
}

static void on_written(uv_write_t *req, int status) {
    tg_ws_t *ws = req->data;
    ws->writing = 0;
    ws->out.len = 0;
    if (ws->state == ST_DEAD) return;
    if (status < 0) {
        char why[500];
        snprintf(why, sizeof why, "writing to %s failed: %s", ws->peer, uv_strerror(status));
        teardown(ws, 1006, why);
        return;
    }
    if (ws->pend.len) {
        flush(ws);
        return;
    }
    if (ws->refused) {
        teardown(ws, 1006, ws->reason);
        return;
    }
    if (closing_done(ws)) return;
    if (ws->ops->drained && ws->state == ST_OPEN) ws->ops->drained(ws, ws->data);
}

/* Let wslay frame what is queued, then write what is pending. */
static void flush(tg_ws_t *ws) {
    if (ws->state == ST_DEAD) return;
    if (ws->ctx && wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) < 0) {
        teardown(ws, 1006, "out of memory while sending");
        return;
    }
    if (ws->writing || ws->pend.len == 0) return;
    tg_sbuf_t t = ws->out;                      /* the drained buffer is reused */
    ws->out = ws->pend;
    ws->pend = t;
    ws->pend.len = 0;
    uv_buf_t b = uv_buf_init(ws->out.p, (unsigned)ws->out.len);
    ws->wreq.data = ws;
    int rc = uv_write(&ws->wreq, (uv_stream_t *)&ws->tcp, &b, 1, on_written);
    if (rc < 0) {
        char why[500];
        snprintf(why, sizeof why, "writing to %s failed: %s", ws->peer, uv_strerror(rc));
        teardown(ws, 1006, why);
        return;
    }
    ws->writing = 1;
}

/* ---- wslay's callbacks ---------------------------------------------------- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud) {
    tg_ws_t *ws = ud;
    (void)flags;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->in_len ? len : ws->in_len;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud) {
    tg_ws_t *ws = ud;
    (void)flags;
    if (tg_sbuf_add(&ws->pend, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud) {
    tg_ws_t *ws = ud;
    (void)ctx;
    for (size_t i = 0; i < len; i++) {           /* xorshift64*, seeded from /dev/urandom */
        ws->rnd ^= ws->rnd >> 12;
        ws->rnd ^= ws->rnd << 25;
        ws->rnd ^= ws->rnd >> 27;
        buf[i] = (uint8_t)((ws->rnd * 2685821657736338717ULL) >> 56);
    }
    return 0;
}

static void on_frame_start(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *a,
                           void *ud) {
    tg_ws_t *ws = ud;
    ws->cur_ctrl = (a->opcode & 8) != 0;
    if (ws->cur_ctrl || ws->too_big) return;
    if (a->opcode != WSLAY_CONTINUATION_FRAME) {
        ws->msg.len = 0;
        ws->msg_total = 0;
    }
    ws->msg_total += a->payload_length;
    if (ws->msg_total > ws->max_message) {
        char why[124];
        snprintf(why, sizeof why, "message too big: over %zu bytes (the server's --max-message)", ws->max_message);
        ws->too_big = 1;
        wslay_event_queue_close(ctx, 1009, (const uint8_t *)why, strlen(why));
        wslay_event_shutdown_read(ctx);
        ws->code = 1009;
        snprintf(ws->reason, sizeof ws->reason, "%s", why);
    }
}

static void on_frame_chunk(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_chunk_arg *a,
                           void *ud) {
    tg_ws_t *ws = ud;
    (void)ctx;
    if (ws->cur_ctrl || ws->too_big || ws->state == ST_DEAD) return;
    if (tg_sbuf_add(&ws->msg, a->data, a->data_length) < 0) {
        ws->too_big = 1;
        wslay_event_queue_close(ctx, 1011, (const uint8_t *)"out of memory", 13);
        wslay_event_shutdown_read(ctx);
    }
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a, void *ud) {
    tg_ws_t *ws = ud;
    (void)ctx;
    if (a->opcode == WSLAY_CONNECTION_CLOSE) {
        /* wslay has queued the answer; the end comes once it is written.
         * When we began the close, ours is what the owner hears. */
        if (ws->state == ST_CLOSING && ws->code) return;
        ws->code = a->status_code ? a->status_code : 1005;
        size_t n = a->msg_length > 2 ? a->msg_length - 2 : 0;
        if (n >= sizeof ws->reason) n = sizeof ws->reason - 1;
        memcpy(ws->reason, a->msg_length > 2 ? (const char *)a->msg + 2 : "", n);
        ws->reason[n] = '\0';
        return;
    }
    if (a->opcode != WSLAY_TEXT_FRAME && a->opcode != WSLAY_BINARY_FRAME) return;
    if (ws->too_big || ws->state != ST_OPEN) return;
    if (tg_sbuf_add(&ws->msg, "", 0) < 0) return;   /* NUL-terminated for the owner's parsers */
    ws->ops->message(ws, ws->data, ws->msg.p ? ws->msg.p : "", ws->msg.len);
    ws->msg.len = 0;
}

static const struct wslay_event_callbacks callbacks = {
    ws_recv, ws_send, ws_genmask, on_frame_start, on_frame_chunk, NULL, on_msg,
};

/* ---- reading ------------------------------------------------------------------- */

static char read_buf[READ_BUF];
static int read_buf_busy;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    (void)h; (void)hint;
    /* one buffer for every connection of the process: a read is consumed
     * whole before the next one is allocated */
    if (!read_buf_busy) {
        read_buf_busy = 1;
        *b = uv_buf_init(read_buf, sizeof read_buf);
    } else {
        char *p = malloc(READ_BUF);
        *b = uv_buf_init(p, p ? READ_BUF : 0);
    }
}

static void release_buf(const uv_buf_t *b) {
    if (b->base == read_buf) read_buf_busy = 0;
    else free(b->base);
}

/* Feed bytes to wslay (the connection is open). */
static void feed(tg_ws_t *ws, const char *p, size_t n) {
    ws->in = p;
    ws->in_len = n;
    int rc = wslay_event_recv(ws->ctx);
    ws->in_len = 0;
    if (ws->state == ST_DEAD) return;
    if (rc < 0) {
        teardown(ws, 1006, "out of memory while reading");
        return;
    }
    if (!wslay_event_get_read_enabled(ws->ctx)) {
        /* a close arrived, or wslay refused a frame (and queued a close:
         * 1002 protocol error, 1007 bad UTF-8, 1009 too big) */
        if (ws->reading) uv_read_stop((uv_stream_t *)&ws->tcp);
        ws->reading = 0;
        if (!ws->code) {
            ws->code = wslay_event_get_status_code_sent(ws->ctx);
            if (ws->code == WSLAY_CODE_ABNORMAL_CLOSURE) ws->code = 1002;
            snprintf(ws->reason, sizeof ws->reason, "%s",
                     ws->code == 1007 ? "invalid UTF-8 in a text message"
                     : ws->code == 1009 ? "message too big" : "websocket protocol error");
        }
        if (ws->state == ST_OPEN) {
            ws->state = ST_CLOSING;
            uv_timer_start(&ws->timer, on_timer, CLOSE_WAIT_MS, 0);
        }
    }
    flush(ws);
    closing_done(ws);
}

static void become_open(tg_ws_t *ws, const char *rest, size_t nrest) {
    int rc = ws->server ? wslay_event_context_server_init(&ws->ctx, &callbacks, ws)
                        : wslay_event_context_client_init(&ws->ctx, &callbacks, ws);
    if (rc != 0) {
        teardown(ws, 1006, "out of memory");
        return;
    }
    wslay_event_config_set_no_buffering(ws->ctx, 1);
    /* our own check (on_frame_start) decides, with a reason */
    wslay_event_config_set_max_recv_msg_length(ws->ctx, (uint64_t)1 << 62);
    ws->state = ST_OPEN;
    uv_timer_stop(&ws->timer);
    tg_sbuf_free(&ws->head);
    ws->ops->open(ws, ws->data);
    if (ws->state == ST_OPEN && nrest) feed(ws, rest, nrest);
}

static void refuse(tg_ws_t *ws, int status, const char *why) {
    char buf[600];
    size_t n = tg_wshs_refusal(buf, sizeof buf, status, why);
    snprintf(ws->reason, sizeof ws->reason, "refused the handshake: %.400s", why);
    ws->refused = 1;
    if (ws->reading) uv_read_stop((uv_stream_t *)&ws->tcp);
    ws->reading = 0;
    if (tg_sbuf_add(&ws->pend, buf, n) < 0) teardown(ws, 1006, ws->reason);
    else flush(ws);
}

static void handshake(tg_ws_t *ws, const char *p, size_t n) {
    if (tg_sbuf_add(&ws->head, p, n) < 0) {
        teardown(ws, 1006, "out of memory");
        return;
    }
    char err[256];
    if (ws->server) {
        tg_wshs_req_t r;
        int rc = tg_wshs_parse_request(ws->head.p, ws->head.len, &r, err, sizeof err);
        if (rc == TG_WSHS_MORE) return;
        if (rc < 0) {
            refuse(ws, -rc, err);
            return;
        }
        char ans[400];
        size_t alen = tg_wshs_response(ans, sizeof ans, r.key);
        snprintf(ws->path, sizeof ws->path, "%s", r.path);
        if (tg_sbuf_add(&ws->pend, ans, alen) < 0) {
            teardown(ws, 1006, "out of memory");
            return;
        }
        /* the head buffer is freed by become_open: keep the rest apart */
        tg_sbuf_t rest = {0};
        if (ws->head.len > (size_t)rc && tg_sbuf_add(&rest, ws->head.p + rc, ws->head.len - (size_t)rc) < 0) {
            teardown(ws, 1006, "out of memory");
            return;
        }
        flush(ws);
        become_open(ws, rest.p, rest.len);
        tg_sbuf_free(&rest);
        return;
    }
    int rc = tg_wshs_parse_response(ws->head.p, ws->head.len, ws->key, &ws->tgrun, err, sizeof err);
    if (rc == TG_WSHS_MORE) return;
    if (rc < 0) {
        teardown(ws, 1006, err);
        return;
    }
    tg_sbuf_t rest = {0};
    if (ws->head.len > (size_t)rc && tg_sbuf_add(&rest, ws->head.p + rc, ws->head.len - (size_t)rc) < 0) {
        teardown(ws, 1006, "out of memory");
        return;
    }
    become_open(ws, rest.p, rest.len);
    tg_sbuf_free(&rest);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    tg_ws_t *ws = s->data;
    if (n > 0 && ws->state != ST_DEAD) {
        if (ws->state == ST_HANDSHAKE) handshake(ws, b->base, (size_t)n);
        else if (ws->ctx && wslay_event_get_read_enabled(ws->ctx)) feed(ws, b->base, (size_t)n);
    } else if (n < 0 && ws->state != ST_DEAD) {
        char why[500];
        if (ws->ctx && wslay_event_get_close_received(ws->ctx)) {
            teardown(ws, ws->code, ws->reason);
        } else {
            snprintf(why, sizeof why, "%s %s", n == UV_EOF ? "the connection was closed by" : "the connection failed:",
                     n == UV_EOF ? ws->peer : uv_strerror((int)n));
            teardown(ws, 1006, why);
        }
    }
    release_buf(b);
}

void tg_ws_catch_up(tg_ws_t *ws) {
    uv_os_fd_t fd;
    if (!ws || !ws->reading || ws->paused || ws->state != ST_OPEN) return;
    if (uv_fileno((uv_handle_t *)&ws->tcp, &fd) != 0) return;
    /* bounded, in case it keeps coming; EOF and errors are left for
     * libuv's own read, which sees them again */
    for (int i = 0; i < 256 && ws->state == ST_OPEN && !ws->paused; i++) {
        uv_buf_t b;
        on_alloc((uv_handle_t *)&ws->tcp, READ_BUF, &b);
        if (!b.base) return;
        ssize_t n = recv(fd, b.base, b.len, MSG_DONTWAIT);
        if (n <= 0) {
            release_buf(&b);
            return;
        }
        on_read((uv_stream_t *)&ws->tcp, n, &b);
    }
}

static void start_reading(tg_ws_t *ws) {
    if (ws->reading || ws->paused || ws->state == ST_DEAD || ws->refused) return;
    if (uv_read_start((uv_stream_t *)&ws->tcp, on_alloc, on_read) == 0) ws->reading = 1;
}

/* ---- set-up ------------------------------------------------------------------- */

static tg_ws_t *ws_new(uv_loop_t *loop, size_t max_message, const tg_ws_ops_t *ops, void *data) {
    tg_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->ops = ops;
    ws->data = data;
    ws->max_message = max_message;
    ws->state = ST_HANDSHAKE;
    uv_tcp_init(loop, &ws->tcp);
    uv_timer_init(loop, &ws->timer);
    ws->tcp.data = ws->timer.data = ws;
    ws->handles = 2;
    return ws;
}

static void peer_name(tg_ws_t *ws) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[64] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&ws->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(ws->peer, sizeof ws->peer, "%s:%d", ip, port);
}

int tg_ws_accept(tg_ws_t **out, uv_stream_t *server, size_t max_message, const tg_ws_ops_t *ops,
                 void *data) {
    tg_ws_t *ws = ws_new(server->loop, max_message, ops, data);
    *out = NULL;
    if (!ws) return UV_ENOMEM;
    ws->server = 1;
    int rc = uv_accept(server, (uv_stream_t *)&ws->tcp);
    if (rc < 0) {
        ws->ops = &no_ops;                      /* nobody to tell */
        teardown(ws, 1006, "");
        return rc;
    }
    uv_tcp_nodelay(&ws->tcp, 1);
    peer_name(ws);
    uv_timer_start(&ws->timer, on_timer, (uint64_t)(HANDSHAKE_SECS * 1000), 0);
    start_reading(ws);
    *out = ws;
    return 0;
}

static void on_connect(uv_connect_t *req, int status) {
    tg_ws_t *ws = req->data;
    if (ws->state == ST_DEAD) return;
    if (status < 0) {
        char why[500];
        snprintf(why, sizeof why, "cannot connect to %s: %s", ws->peer, uv_strerror(status));
        teardown(ws, 1006, why);
        return;
    }
    uv_tcp_nodelay(&ws->tcp, 1);
    start_reading(ws);
    flush(ws);                                  /* the upgrade request */
}

int tg_ws_connect(tg_ws_t **out, uv_loop_t *loop, const char *host, int port, const char *path,
                  double timeout, size_t max_message, const tg_ws_ops_t *ops, void *data,
                  char *err, size_t errlen) {
    *out = NULL;
    struct addrinfo hints = {0}, *ai = NULL;
    char portstr[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(portstr, sizeof portstr, "%d", port);
    int grc = getaddrinfo(host, portstr, &hints, &ai);
    if (grc != 0 || !ai) {
        snprintf(err, errlen, "cannot resolve the sync service's host \"%s\": %s", host, gai_strerror(grc));
        if (ai) freeaddrinfo(ai);
        return -1;
    }
    tg_ws_t *ws = ws_new(loop, max_message, ops, data);
    if (!ws) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(ws->peer, sizeof ws->peer, "%s:%d", host, port);
    unsigned char rnd[16];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(rnd, 1, sizeof rnd, f) != sizeof rnd) {
        for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (unsigned char)(rand() ^ (int)uv_hrtime());
    }
    if (f && fread(&ws->rnd, 1, sizeof ws->rnd, f) != sizeof ws->rnd) ws->rnd = uv_hrtime();
    if (f) fclose(f);
    ws->rnd |= 1;
    tg_wshs_key(rnd, ws->key);
    char req[700];
    size_t n = tg_wshs_request(req, sizeof req, host, port, path, ws->key);
    int rc = n ? tg_sbuf_add(&ws->pend, req, n) : -1;
    ws->creq.data = ws;
    if (rc == 0) rc = uv_tcp_connect(&ws->creq, &ws->tcp, ai->ai_addr, on_connect);
    freeaddrinfo(ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot connect to %s:%d: %s", host, port, rc < 0 && rc != -1 ? uv_strerror(rc) : "bad request");
        ws->ops = &no_ops;
        teardown(ws, 1006, "");
        return -1;
    }
    uv_timer_start(&ws->timer, on_timer, (uint64_t)(timeout * 1000), 0);
    *out = ws;
    return 0;
}

/* ---- the owner's calls --------------------------------------------------------- */

int tg_ws_send(tg_ws_t *ws, const char *msg, size_t len) {
    if (ws->state != ST_OPEN || !wslay_event_get_write_enabled(ws->ctx)) return -1;
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)msg, len};
    if (wslay_event_queue_msg(ws->ctx, &m) != 0) return -1;
    flush(ws);
    return 0;
}

size_t tg_ws_backlog(const tg_ws_t *ws) {
    /* what libuv has not written yet of the write in flight, not all of it:
     * a slow reader's backlog shrinks while one big write goes on */
    size_t n = ws->pend.len + (ws->writing ? ws->tcp.write_queue_size : 0);
    if (ws->ctx) n += wslay_event_get_queued_msg_length(ws->ctx);
    return n;
}

void tg_ws_close(tg_ws_t *ws, int code, const char *reason) {
    if (ws->state == ST_DEAD || ws->state == ST_CLOSING) return;
    if (ws->state == ST_HANDSHAKE || !ws->ctx) {
        teardown(ws, code, reason);
        return;
    }
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > 123) rlen = 123;                 /* a control frame carries at most 125 bytes */
    ws->code = code;
    snprintf(ws->reason, sizeof ws->reason, "%.*s", (int)rlen, reason ? reason : "");
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, rlen);
    ws->state = ST_CLOSING;
    uv_timer_start(&ws->timer, on_timer, CLOSE_WAIT_MS, 0);
    flush(ws);
}

void tg_ws_abort(tg_ws_t *ws, int code, const char *reason) {
    teardown(ws, code, reason);
}

void tg_ws_pause(tg_ws_t *ws, int paused) {
    ws->paused = paused;
    if (paused && ws->reading) {
        uv_read_stop((uv_stream_t *)&ws->tcp);
        ws->reading = 0;
    } else if (!paused && ws->state != ST_DEAD && (!ws->ctx || wslay_event_get_read_enabled(ws->ctx))) {
        start_reading(ws);
    }
}

int tg_ws_peer_is_tgrun(const tg_ws_t *ws) {
    return ws->tgrun;
}

const char *tg_ws_peer(const tg_ws_t *ws) {
    return ws->peer;
}

void tg_ws_set_data(tg_ws_t *ws, void *data) {
    ws->data = data;
}
