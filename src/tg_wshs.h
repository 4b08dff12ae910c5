/*
 * tg_wshs.h -- the websocket opening handshake (RFC 6455 section 4) as
 * text: the HTTP/1.1 Upgrade request a client sends, the 101 response a
 * server answers with, and the parsers of both.  Pure: no sockets, no
 * event loop, no allocation; the connection unit (tg_ws.c) feeds it bytes.
 *
 * What we offer and accept, on purpose:
 *  - No extension is ever offered or accepted.  A client that offers
 *    permessage-deflate is answered without it (RFC 7692 lets a server
 *    decline), so no peer ever compresses to us; a server that answers
 *    with an extension we did not offer is refused.
 *  - No subprotocol is selected (Testground's clients ask for none).
 *  - tgrun's own server adds the header "X-Tgrun-Sync: 1" to its answer, so
 *    that tgrun's client knows it may use the protocol's extensions (the
 *    "count" request); a reference server does not send it.
 *
 * Parsers take a buffer that may hold only part of the head: they return
 * TG_WSHS_MORE until the blank line has arrived, and then how many bytes the
 * head took (anything after it is the first websocket frame).  Heads longer
 * than TG_WSHS_MAX_HEAD are refused.
 */
#ifndef TG_WSHS_H
#define TG_WSHS_H

#include <stddef.h>

#define TG_WSHS_MAX_HEAD 8192
#define TG_WSHS_MORE 0          /* the head is not complete yet */

/* Standard base64 (with padding) of len bytes into out (cap bytes, NUL
 * terminated).  Returns the length written, or 0 when cap is too small. */
size_t tg_b64_encode(const void *src, size_t len, char *out, size_t cap);

/* The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (base64 of the
 * SHA-1 of key + the RFC's GUID): 28 characters and a NUL. */
void tg_wshs_accept(const char *key, size_t klen, char out[29]);

/* A fresh Sec-WebSocket-Key from 16 random bytes (caller's): 24 characters. */
void tg_wshs_key(const unsigned char rnd[16], char out[25]);

/* The client's Upgrade request for ws://host:port/path with key.  Returns
 * its length, or 0 when cap is too small. */
size_t tg_wshs_request(char *buf, size_t cap, const char *host, int port, const char *path,
                       const char *key);

/* What a server learnt from a client's request head. */
typedef struct tg_wshs_req {
    char key[64];               /* Sec-WebSocket-Key, as sent */
    char path[256];             /* request target (truncated) */
} tg_wshs_req_t;

/* Parse a client's request head in buf[0..len).  Returns TG_WSHS_MORE, the
 * head's length (> 0) when it is a valid websocket upgrade, or -status (an
 * HTTP status: -400, -405, -426, -431) with one sentence in err. */
int tg_wshs_parse_request(const char *buf, size_t len, tg_wshs_req_t *r, char *err, size_t errlen);

/* The server's 101 answer for key.  Returns its length, or 0 when cap is
 * too small. */
size_t tg_wshs_response(char *buf, size_t cap, const char *key);

/* A refusal: "HTTP/1.1 <status> ...", Connection: close, reason as body.
 * Returns its length (truncated to cap). */
size_t tg_wshs_refusal(char *buf, size_t cap, int status, const char *reason);

/* Parse a server's answer head to a request made with key.  Returns
 * TG_WSHS_MORE, the head's length (> 0) when the upgrade was accepted, or
 * -1 with one sentence in err.  *tgrun is set to 1 when the server is
 * tgrun's own (X-Tgrun-Sync). */
int tg_wshs_parse_response(const char *buf, size_t len, const char *key, int *tgrun,
                           char *err, size_t errlen);

/* HOST:PORT, [v6]:PORT or :PORT (host "" then) into host (hostcap bytes)
 * and *port (0..65535).  0, or -1 with one sentence in err. */
int tg_wshs_parse_hostport(const char *s, char *host, size_t hostcap, int *port, char *err, size_t errlen);

/* ws://host[:port][/path] (port default 5050, path "/").  0, or -1 with one
 * sentence in err (wss:// is refused: no TLS). */
int tg_wshs_parse_url(const char *url, char *host, size_t hostcap, int *port, char *path, size_t pathcap,
                      char *err, size_t errlen);

#endif
