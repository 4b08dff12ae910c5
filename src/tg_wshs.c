/* tg_wshs.c -- see tg_wshs.h. */
#include "tg_wshs.h"

#include <stdio.h>
#include <string.h>

#include "tg_sha1.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t tg_b64_encode(const void *src, size_t len, char *out, size_t cap) {
    const unsigned char *s = src;
    size_t need = (len + 2) / 3 * 4;
    if (cap < need + 1) return 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < len) v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < len) v |= s[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static int hexval(char c) {
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

void tg_wshs_accept(const char *key, size_t klen, char out[29]) {
    char buf[128], hex[41];
    unsigned char raw[20];
    if (klen > sizeof buf - sizeof WS_GUID) klen = sizeof buf - sizeof WS_GUID;
    memcpy(buf, key, klen);
    memcpy(buf + klen, WS_GUID, sizeof WS_GUID - 1);
    /* tg_sha1 speaks hex (Redis's script ids); the handshake wants the bytes */
    tg_sha1_hex(buf, klen + sizeof WS_GUID - 1, hex);
    for (int i = 0; i < 20; i++) raw[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    tg_b64_encode(raw, 20, out, 29);
}

void tg_wshs_key(const unsigned char rnd[16], char out[25]) {
    tg_b64_encode(rnd, 16, out, 25);
}

size_t tg_wshs_request(char *buf, size_t cap, const char *host, int port, const char *path,
                       const char *key) {
    int n = snprintf(buf, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "User-Agent: tgrun\r\n"
                     "\r\n",
                     path && *path ? path : "/", host, port, key);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t tg_wshs_response(char *buf, size_t cap, const char *key) {
    char accept[29];
    tg_wshs_accept(key, strlen(key), accept);
    int n = snprintf(buf, cap,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "X-Tgrun-Sync: 1\r\n"
                     "\r\n",
                     accept);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

static const char *status_text(int status) {
    switch (status) {
    case 400: return "Bad Request";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

size_t tg_wshs_refusal(char *buf, size_t cap, int status, const char *reason) {
    int n = snprintf(buf, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "Connection: close\r\n"
                     "Content-Type: text/plain\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Content-Length: %zu\r\n"
                     "\r\n"
                     "%s\n",
                     status, status_text(status), strlen(reason) + 1, reason);
    if (n < 0) return 0;
    return (size_t)n >= cap ? cap - 1 : (size_t)n;
}

/* ---- parsing ------------------------------------------------------------- */

/* Where the head ends (just after the blank line), 0 when it has not come
 * yet.  Bare LF line ends are accepted, as most servers do. */
static size_t head_end(const char *buf, size_t len) {
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n') continue;
        if (buf[i + 1] == '\n') return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n') return i + 3;
    }
    return 0;
}

static int lower(int c) {
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int ieq(const char *a, size_t alen, const char *b) {
    size_t blen = strlen(b);
    if (alen != blen) return 0;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
    return 1;
}

/* Does the comma-separated value hold token (case-insensitive)? */
static int has_token(const char *v, size_t vlen, const char *token) {
    size_t i = 0;
    while (i < vlen) {
        while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t s = i;
        while (i < vlen && v[i] != ',') i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e > s && ieq(v + s, e - s, token)) return 1;
    }
    return 0;
}

/* One header line: name and value (trimmed), or -1 when it is not one. */
typedef struct hline {
    const char *name, *value;
    size_t nlen, vlen;
} hline_t;

static int split_header(const char *line, size_t len, hline_t *h) {
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line) return -1;
    h->name = line;
    h->nlen = (size_t)(colon - line);
    for (size_t i = 0; i < h->nlen; i++)
        if (line[i] == ' ' || line[i] == '\t') return -1;
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) end--;
    h->value = v;
    h->vlen = (size_t)(end - v);
    return 0;
}

/* Iterate the lines of head[0..n): *pos moves past each; returns the line's
 * length without its line end, or -1 at the end. */
static long next_line(const char *head, size_t n, size_t *pos, const char **line) {
    if (*pos >= n) return -1;
    const char *s = head + *pos, *nl = memchr(s, '\n', n - *pos);
    size_t l = nl ? (size_t)(nl - s) : n - *pos;
    *pos += l + 1;
    if (l && s[l - 1] == '\r') l--;
    *line = s;
    return (long)l;
}

int tg_wshs_parse_request(const char *buf, size_t len, tg_wshs_req_t *r, char *err, size_t errlen) {
    size_t n = head_end(buf, len);
    if (!n) {
        if (len >= TG_WSHS_MAX_HEAD) {
            snprintf(err, errlen, "the request head is longer than %d bytes", TG_WSHS_MAX_HEAD);
            return -431;
        }
        return TG_WSHS_MORE;
    }
    if (n > TG_WSHS_MAX_HEAD) {
        snprintf(err, errlen, "the request head is longer than %d bytes", TG_WSHS_MAX_HEAD);
        return -431;
    }
    memset(r, 0, sizeof *r);
    size_t pos = 0;
    const char *line;
    long l = next_line(buf, n, &pos, &line);
    /* GET <target> HTTP/1.1 */
    const char *sp1 = l > 0 ? memchr(line, ' ', (size_t)l) : NULL;
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line + l - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp2 == sp1 + 1) {
        snprintf(err, errlen, "not an HTTP request");
        return -400;
    }
    if (!(sp1 - line == 3 && memcmp(line, "GET", 3) == 0)) {
        snprintf(err, errlen, "a websocket upgrade must be a GET request");
        return -405;
    }
    size_t vlen = (size_t)(line + l - sp2 - 1);
    if (!(vlen == 8 && (memcmp(sp2 + 1, "HTTP/1.1", 8) == 0))) {
        snprintf(err, errlen, "a websocket upgrade needs HTTP/1.1");
        return -400;
    }
    size_t tlen = (size_t)(sp2 - sp1 - 1);
    if (tlen >= sizeof r->path) tlen = sizeof r->path - 1;
    memcpy(r->path, sp1 + 1, tlen);
    int upgrade = 0, connection = 0, version = 0;
    while ((l = next_line(buf, n, &pos, &line)) > 0) {
        hline_t h;
        if (split_header(line, (size_t)l, &h) < 0) {
            snprintf(err, errlen, "a malformed header line");
            return -400;
        }
        if (ieq(h.name, h.nlen, "upgrade")) upgrade |= has_token(h.value, h.vlen, "websocket");
        else if (ieq(h.name, h.nlen, "connection")) connection |= has_token(h.value, h.vlen, "upgrade");
        else if (ieq(h.name, h.nlen, "sec-websocket-version")) version = h.vlen == 2 && memcmp(h.value, "13", 2) == 0;
        else if (ieq(h.name, h.nlen, "sec-websocket-key")) {
            if (h.vlen == 0 || h.vlen >= sizeof r->key) {
                snprintf(err, errlen, "a bad Sec-WebSocket-Key");
                return -400;
            }
            memcpy(r->key, h.value, h.vlen);
            r->key[h.vlen] = '\0';
        }
        /* Sec-WebSocket-Extensions (permessage-deflate) and -Protocol are
         * declined by not answering them. */
    }
    if (!upgrade || !connection) {
        snprintf(err, errlen, "this is a websocket sync service: the request must ask for "
                 "\"Upgrade: websocket\" and \"Connection: Upgrade\"");
        return -426;
    }
    if (!version) {
        snprintf(err, errlen, "only websocket version 13 is spoken");
        return -426;
    }
    if (!r->key[0]) {
        snprintf(err, errlen, "the request has no Sec-WebSocket-Key");
        return -400;
    }
    return (int)n;
}

int tg_wshs_parse_response(const char *buf, size_t len, const char *key, int *tgrun,
                           char *err, size_t errlen) {
    size_t n = head_end(buf, len);
    *tgrun = 0;
    if (!n) {
        if (len >= TG_WSHS_MAX_HEAD) {
            snprintf(err, errlen, "the server's answer is not HTTP (no end of head in %d bytes)", TG_WSHS_MAX_HEAD);
            return -1;
        }
        return TG_WSHS_MORE;
    }
    size_t pos = 0;
    const char *line;
    long l = next_line(buf, n, &pos, &line);
    if (l < 12 || memcmp(line, "HTTP/1.", 7) != 0) {
        snprintf(err, errlen, "the server's answer is not HTTP");
        return -1;
    }
    if (memcmp(line + 8, " 101", 4) != 0) {
        snprintf(err, errlen, "the server refused the websocket upgrade: %.*s", (int)(l > 120 ? 120 : l), line);
        return -1;
    }
    char want[29];
    tg_wshs_accept(key, strlen(key), want);
    int upgrade = 0, connection = 0, accept = 0;
    while ((l = next_line(buf, n, &pos, &line)) > 0) {
        hline_t h;
        if (split_header(line, (size_t)l, &h) < 0) {
            snprintf(err, errlen, "the server's answer has a malformed header line");
            return -1;
        }
        if (ieq(h.name, h.nlen, "upgrade")) upgrade |= has_token(h.value, h.vlen, "websocket");
        else if (ieq(h.name, h.nlen, "connection")) connection |= has_token(h.value, h.vlen, "upgrade");
        else if (ieq(h.name, h.nlen, "sec-websocket-accept"))
            accept = h.vlen == 28 && memcmp(h.value, want, 28) == 0;
        else if (ieq(h.name, h.nlen, "sec-websocket-extensions") && h.vlen) {
            snprintf(err, errlen, "the server chose an extension that was not offered: %.*s",
                     (int)(h.vlen > 80 ? 80 : h.vlen), h.value);
            return -1;
        } else if (ieq(h.name, h.nlen, "x-tgrun-sync")) *tgrun = 1;
    }
    if (!upgrade || !connection) {
        snprintf(err, errlen, "the server's answer does not upgrade to websocket");
        return -1;
    }
    if (!accept) {
        snprintf(err, errlen, "the server's Sec-WebSocket-Accept does not match the key");
        return -1;
    }
    return (int)n;
}

/* ---- addresses ------------------------------------------------------------ */

static int parse_port(const char *p, size_t n, int *port) {
    if (n == 0 || n > 5) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    if (v > 65535) return -1;
    *port = (int)v;
    return 0;
}

/* host[:port] or [v6][:port] in s[0..n); dflt when no port (-1: required). */
static int split_hostport(const char *s, size_t n, char *host, size_t hostcap, int *port, int dflt) {
    const char *hs = s, *he, *rest;
    if (n && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb) return -1;
        hs = s + 1;
        he = rb;
        rest = rb + 1;
    } else {
        const char *colon = memchr(s, ':', n);
        he = colon ? colon : s + n;
        rest = he;
    }
    size_t hl = (size_t)(he - hs);
    if (hl >= hostcap) return -1;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    size_t left = (size_t)(s + n - rest);
    if (left == 0) {
        if (dflt < 0) return -1;
        *port = dflt;
        return 0;
    }
    if (rest[0] != ':') return -1;
    return parse_port(rest + 1, left - 1, port);
}

int tg_wshs_parse_hostport(const char *s, char *host, size_t hostcap, int *port, char *err, size_t errlen) {
    if (split_hostport(s, strlen(s), host, hostcap, port, -1) < 0) {
        snprintf(err, errlen, "\"%s\" is not HOST:PORT (for example 0.0.0.0:5050, 127.0.0.1:0 or [::1]:5050)", s);
        return -1;
    }
    return 0;
}

int tg_wshs_parse_url(const char *url, char *host, size_t hostcap, int *port, char *path, size_t pathcap,
                      char *err, size_t errlen) {
    if (strncmp(url, "wss://", 6) == 0) {
        snprintf(err, errlen, "\"%s\": wss:// (TLS) is not supported; use ws://HOST:PORT", url);
        return -1;
    }
    if (strncmp(url, "ws://", 5) != 0) {
        snprintf(err, errlen, "\"%s\" is not a sync service address: use ws://HOST:PORT", url);
        return -1;
    }
    const char *s = url + 5, *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || split_hostport(s, n, host, hostcap, port, 5050) < 0 || !host[0]) {
        snprintf(err, errlen, "\"%s\" is not a sync service address: use ws://HOST:PORT", url);
        return -1;
    }
    snprintf(path, pathcap, "%s", slash ? slash : "/");
    return 0;
}
