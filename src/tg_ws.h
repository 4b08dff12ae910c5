/*
 * tg_ws.h -- one websocket connection on a libuv loop, either side: the
 * client's (tgrun's sync-service client) or the server's (tgrun serve).
 *
 * Framing is libwslay's event API (continuation frames reassembled, pings
 * answered, control frames checked, UTF-8 of text validated, RSV bits
 * refused: no extension is ever negotiated, see tg_wshs.h); the opening
 * handshake is tg_wshs; this unit owns the socket, the bytes in and out,
 * and the close handshake.
 *
 *  - Messages.  The owner is handed each complete data message, however it
 *    was fragmented.  A message longer than max_message bytes is refused
 *    as soon as its frame headers say so: close 1009 with a reason naming
 *    the limit, nothing of it buffered.
 *  - Sending.  tg_ws_send queues one text message; bytes go out in as few
 *    writes as the loop allows (what is queued while a write is in flight
 *    goes out with the next one).  tg_ws_backlog says how many bytes wait;
 *    owners that must bound memory (a server facing a client that does not
 *    read) stop producing past their limit and resume on `drained`.
 *  - Ending.  `closed` is called exactly once, from a libuv callback (never
 *    from inside a tg_ws_* call), with the close code and reason: the
 *    peer's, ours, or 1006 and what went wrong.  After it the owner must
 *    not touch the connection again; its memory is freed right after.
 *
 * Ownership: tg_ws_connect/tg_ws_accept allocate the connection; it frees
 * itself after `closed`.  Messages handed to `message` live only during
 * the call.
 */
#ifndef TG_WS_H
#define TG_WS_H

#include <stddef.h>
#include <uv.h>

typedef struct tg_ws tg_ws_t;

typedef struct tg_ws_ops {
    /* The handshake is done (client: the server accepted; server: we answered). */
    void (*open)(tg_ws_t *ws, void *data);
    /* One whole data message. */
    void (*message)(tg_ws_t *ws, void *data, const char *msg, size_t len);
    /* Everything queued was written (may be NULL). */
    void (*drained)(tg_ws_t *ws, void *data);
    /* The connection is over; code is the close code (1006: no close frame). */
    void (*closed)(tg_ws_t *ws, void *data, int code, const char *reason);
} tg_ws_ops_t;

/* Start a client connection to ws://host:port/path (host a name or an
 * address; resolved here, at once).  open or closed follows; the handshake
 * must be done within timeout seconds.  0, or -1 with one sentence in err
 * (the name does not resolve, out of memory, ...). */
int tg_ws_connect(tg_ws_t **out, uv_loop_t *loop, const char *host, int port, const char *path,
                  double timeout, size_t max_message, const tg_ws_ops_t *ops, void *data,
                  char *err, size_t errlen);

/* Accept a connection on a listening server stream and serve the handshake
 * (it must arrive within 10 s).  0 or a negative libuv code. */
int tg_ws_accept(tg_ws_t **out, uv_stream_t *server, size_t max_message, const tg_ws_ops_t *ops,
                 void *data);

/* Queue one text message.  0, or -1 when the connection is closing or
 * memory ran out. */
int tg_ws_send(tg_ws_t *ws, const char *msg, size_t len);
/* Bytes queued and not yet written. */
size_t tg_ws_backlog(const tg_ws_t *ws);
/* Begin the close handshake with code and reason (at most 123 bytes);
 * the connection ends when the peer answers, or 2 s later. */
void tg_ws_close(tg_ws_t *ws, int code, const char *reason);
/* Drop the connection at once (no close frame); closed follows with code. */
void tg_ws_abort(tg_ws_t *ws, int code, const char *reason);
/* Read and handle what the socket already holds, without waiting (the
 * runtime's look before it declares a timeout: libuv reads streams only
 * in its poll phase, after the timers).  Not from inside a callback of ws. */
void tg_ws_catch_up(tg_ws_t *ws);
/* Stop (1) or resume (0) reading from the peer. */
void tg_ws_pause(tg_ws_t *ws, int paused);
/* Client side: did the server say it is tgrun's own (X-Tgrun-Sync)? */
int tg_ws_peer_is_tgrun(const tg_ws_t *ws);
/* "host:port" of the peer, for messages. */
const char *tg_ws_peer(const tg_ws_t *ws);
/* Change the owner's data pointer. */
void tg_ws_set_data(tg_ws_t *ws, void *data);

#endif
