/*
 * tg_syncmsg.c -- see tg_syncmsg.h.
 *
 * A small strict JSON scanner of our own rather than tg_json: requests are
 * walked without building values (no lua_State on the server's hot path),
 * and a payload must stay the exact bytes it arrived as.  Every message is
 * first validated whole (so "not JSON" is told apart from "not a request"),
 * then walked.
 */
#include "tg_syncmsg.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXDEPTH 128

/* ---- buffers ---------------------------------------------------------------- */

int tg_sbuf_add(tg_sbuf_t *b, const void *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

void tg_sbuf_free(tg_sbuf_t *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

#define ADDS(b, lit) tg_sbuf_add((b), (lit), sizeof(lit) - 1)

/* ---- scanning ------------------------------------------------------------- */

typedef struct scan {
    const char *s, *p, *e;
    const char *why;            /* the first problem found */
} scan_t;

static void skip_ws(scan_t *c) {
    while (c->p < c->e && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int fail(scan_t *c, const char *why) {
    if (!c->why) c->why = why;
    return -1;
}

static int hex4(const char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9') d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') d = (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') d = (unsigned)(ch - 'A' + 10);
        else return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

/* A string at c->p (its opening quote): validated, c->p moved past it;
 * raw and rawlen give the bytes between the quotes. */
static int scan_string(scan_t *c, const char **raw, size_t *rawlen) {
    if (c->p >= c->e || *c->p != '"') return fail(c, "expected a string");
    const char *s = ++c->p;
    while (c->p < c->e) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *raw = s;
            *rawlen = (size_t)(c->p - s);
            c->p++;
            return 0;
        }
        if (ch < 0x20) return fail(c, "a control character in a string");
        if (ch == '\\') {
            if (c->e - c->p < 2) break;
            char esc = c->p[1];
            if (esc == 'u') {
                unsigned v;
                if (c->e - c->p < 6 || hex4(c->p + 2, &v) < 0) return fail(c, "a bad \\u escape");
                c->p += 6;
            } else if (strchr("\"\\/bfnrt", esc) && esc) {
                c->p += 2;
            } else {
                return fail(c, "a bad escape in a string");
            }
            continue;
        }
        c->p++;
    }
    return fail(c, "an unterminated string");
}

static int scan_number(scan_t *c) {
    const char *p = c->p;
    if (p < c->e && *p == '-') p++;
    if (p >= c->e) return fail(c, "a bad number");
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (p < c->e && *p >= '0' && *p <= '9') p++;
    else return fail(c, "a bad number");
    if (p < c->e && *p == '.') {
        p++;
        if (p >= c->e || *p < '0' || *p > '9') return fail(c, "a bad number");
        while (p < c->e && *p >= '0' && *p <= '9') p++;
    }
    if (p < c->e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < c->e && (*p == '+' || *p == '-')) p++;
        if (p >= c->e || *p < '0' || *p > '9') return fail(c, "a bad number");
        while (p < c->e && *p >= '0' && *p <= '9') p++;
    }
    c->p = p;
    return 0;
}

static int lit(scan_t *c, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(c->e - c->p) < n || memcmp(c->p, word, n) != 0) return fail(c, "an unexpected character");
    c->p += n;
    return 0;
}

/* One value at c->p (after whitespace), validated and skipped. */
static int skip_value(scan_t *c, int depth) {
    skip_ws(c);
    if (c->p >= c->e) return fail(c, "the message ends early");
    if (depth > MAXDEPTH) return fail(c, "nesting deeper than 128");
    const char *raw;
    size_t rawlen;
    switch (*c->p) {
    case '{':
        c->p++;
        skip_ws(c);
        if (c->p < c->e && *c->p == '}') { c->p++; return 0; }
        for (;;) {
            skip_ws(c);
            if (scan_string(c, &raw, &rawlen) < 0) return -1;
            skip_ws(c);
            if (c->p >= c->e || *c->p != ':') return fail(c, "expected ':' after an object key");
            c->p++;
            if (skip_value(c, depth + 1) < 0) return -1;
            skip_ws(c);
            if (c->p < c->e && *c->p == ',') { c->p++; continue; }
            if (c->p < c->e && *c->p == '}') { c->p++; return 0; }
            return fail(c, "expected ',' or '}' in an object");
        }
    case '[':
        c->p++;
        skip_ws(c);
        if (c->p < c->e && *c->p == ']') { c->p++; return 0; }
        for (;;) {
            if (skip_value(c, depth + 1) < 0) return -1;
            skip_ws(c);
            if (c->p < c->e && *c->p == ',') { c->p++; continue; }
            if (c->p < c->e && *c->p == ']') { c->p++; return 0; }
            return fail(c, "expected ',' or ']' in an array");
        }
    case '"': return scan_string(c, &raw, &rawlen);
    case 't': return lit(c, "true");
    case 'f': return lit(c, "false");
    case 'n': return lit(c, "null");
    default: return scan_number(c);
    }
}

int tg_syncmsg_is_json(const char *s, size_t len) {
    scan_t c = {s, s, s + len, NULL};
    if (skip_value(&c, 0) < 0) return 0;
    skip_ws(&c);
    return c.p == c.e;
}

/* Append the UTF-8 of code point v to out; returns the bytes written. */
static size_t put_utf8(char *out, unsigned v) {
    if (v < 0x80) { out[0] = (char)v; return 1; }
    if (v < 0x800) { out[0] = (char)(0xc0 | v >> 6); out[1] = (char)(0x80 | (v & 63)); return 2; }
    if (v < 0x10000) {
        out[0] = (char)(0xe0 | v >> 12); out[1] = (char)(0x80 | (v >> 6 & 63));
        out[2] = (char)(0x80 | (v & 63));
        return 3;
    }
    out[0] = (char)(0xf0 | v >> 18); out[1] = (char)(0x80 | (v >> 12 & 63));
    out[2] = (char)(0x80 | (v >> 6 & 63)); out[3] = (char)(0x80 | (v & 63));
    return 4;
}

/* Decode a validated string's raw bytes into out (room for rawlen bytes:
 * an escape never decodes longer than it is written).  Lone surrogates
 * become U+FFFD.  Returns the decoded length. */
static size_t decode_string(const char *raw, size_t rawlen, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < rawlen;) {
        if (raw[i] != '\\') { out[o++] = raw[i++]; continue; }
        char esc = raw[i + 1];
        if (esc != 'u') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            out[o++] = to[strchr(from, esc) - from];
            i += 2;
            continue;
        }
        unsigned v, lo;
        hex4(raw + i + 2, &v);
        i += 6;
        if (v >= 0xd800 && v < 0xdc00 && i + 6 <= rawlen && raw[i] == '\\' && raw[i + 1] == 'u'
            && hex4(raw + i + 2, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
            v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
            i += 6;
        } else if (v >= 0xd800 && v < 0xe000) {
            v = 0xfffd;
        }
        o += put_utf8(out + o, v);
    }
    return o;
}

/* ---- walking a message ------------------------------------------------------ */

typedef struct walk {
    scan_t c;
    char *scratch;
    size_t used;
    tg_syncmsg_t *m;
    char *err;
    size_t errlen;
} walk_t;

/* Decode the string at the cursor into scratch. */
static int take_string(walk_t *w, const char **out, size_t *outlen) {
    const char *raw;
    size_t rawlen;
    if (scan_string(&w->c, &raw, &rawlen) < 0) return -1;
    char *dst = w->scratch + w->used;
    *outlen = decode_string(raw, rawlen, dst);
    dst[*outlen] = '\0';
    w->used += *outlen + 1;
    *out = dst;
    return 0;
}

/* Compare an object key (raw, possibly escaped) with name. */
static int key_is(const char *raw, size_t rawlen, const char *name) {
    return rawlen == strlen(name) && memcmp(raw, name, rawlen) == 0;
}

static int bad(walk_t *w, const char *fmt, const char *what) {
    snprintf(w->err, w->errlen, fmt, what);
    return TG_SM_EBAD;
}

/* A whole number at the cursor (the message is already known to be JSON). */
static int take_int(walk_t *w, long long *v) {
    skip_ws(&w->c);
    const char *s = w->c.p;
    if (s < w->c.e && (*s == '-' || (*s >= '0' && *s <= '9'))) {
        scan_number(&w->c);
        size_t n = (size_t)(w->c.p - s);
        char buf[32];
        if (n >= sizeof buf) return -1;
        memcpy(buf, s, n);
        buf[n] = '\0';
        for (size_t i = (buf[0] == '-'); i < n; i++)
            if (buf[i] < '0' || buf[i] > '9') return -1;
        errno = 0;
        char *end;
        *v = strtoll(buf, &end, 10);
        return errno || *end ? -1 : 0;
    }
    skip_value(&w->c, 0);
    return -1;
}

static int is_null(walk_t *w) {
    skip_ws(&w->c);
    if (w->c.p < w->c.e && *w->c.p == 'n') {
        w->c.p += 4;
        return 1;
    }
    return 0;
}

/* The body object of a request: {"state"|"topic": K, "target": N, "payload": v}. */
static int walk_body(walk_t *w, int kind, const char *name) {
    tg_syncmsg_t *m = w->m;
    const char *keyname = kind == TG_SM_PUBLISH || kind == TG_SM_SUBSCRIBE ? "topic" : "state";
    skip_ws(&w->c);
    if (*w->c.p != '{') {
        skip_value(&w->c, 0);
        return bad(w, "%s must be an object", name);
    }
    w->c.p++;
    int have_key = 0, have_target = 0, have_payload = 0;
    for (;;) {
        skip_ws(&w->c);
        if (*w->c.p == '}') { w->c.p++; break; }
        if (*w->c.p == ',') { w->c.p++; continue; }
        const char *raw;
        size_t rawlen;
        scan_string(&w->c, &raw, &rawlen);
        skip_ws(&w->c);
        w->c.p++;                               /* ':' */
        skip_ws(&w->c);
        if (key_is(raw, rawlen, keyname)) {
            if (*w->c.p != '"') {
                skip_value(&w->c, 0);
                snprintf(w->err, w->errlen, "%s.%s must be a string", name, keyname);
                return TG_SM_EBAD;
            }
            take_string(w, &m->key, &m->klen);
            have_key = 1;
        } else if (kind == TG_SM_BARRIER && key_is(raw, rawlen, "target")) {
            if (take_int(w, &m->target) < 0) return bad(w, "%s.target must be a whole number", name);
            have_target = 1;
        } else if (kind == TG_SM_PUBLISH && key_is(raw, rawlen, "payload")) {
            const char *s = w->c.p;
            skip_value(&w->c, 0);
            m->payload = s;
            m->plen = (size_t)(w->c.p - s);
            have_payload = 1;
        } else {
            skip_value(&w->c, 0);
        }
    }
    if (!have_key || m->klen == 0) {
        snprintf(w->err, w->errlen, "%s.%s must be a non-empty string", name, keyname);
        return TG_SM_EBAD;
    }
    if (kind == TG_SM_BARRIER && !have_target) return bad(w, "%s.target is missing", name);
    if (kind == TG_SM_PUBLISH && !have_payload) return bad(w, "%s.payload is missing", name);
    return 0;
}

static const struct { const char *name; int kind; } bodies[] = {
    {"signal_entry", TG_SM_SIGNAL_ENTRY},
    {"barrier", TG_SM_BARRIER},
    {"publish", TG_SM_PUBLISH},
    {"subscribe", TG_SM_SUBSCRIBE},
    {"count", TG_SM_COUNT},
    {NULL, 0},
};

/* Set up a walk: validate the whole message (TG_SM_ENOTJSON), take the
 * scratch block.  0, or a parse result. */
static int walk_begin(walk_t *w, const char *msg, size_t len, tg_syncmsg_t *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->error = "";
    w->m = m;
    w->err = err;
    w->errlen = errlen;
    w->used = 0;
    scan_t c = {msg, msg, msg + len, NULL};
    if (skip_value(&c, 0) < 0 || (skip_ws(&c), c.p != c.e)) {
        snprintf(err, errlen, "invalid JSON at byte %zu: %s", (size_t)(c.p - msg),
                 c.why ? c.why : "trailing data after the value");
        return TG_SM_ENOTJSON;
    }
    if (!(w->scratch = m->scratch = malloc(len + 2))) {
        snprintf(err, errlen, "out of memory");
        return -3;
    }
    w->c = (scan_t){msg, msg, msg + len, NULL};
    skip_ws(&w->c);
    return 0;
}

int tg_syncmsg_parse_request(const char *msg, size_t len, tg_syncmsg_t *m, char *err, size_t errlen) {
    walk_t w;
    int rc = walk_begin(&w, msg, len, m, err, errlen);
    if (rc) return rc;
    if (*w.c.p != '{') {
        snprintf(err, errlen, "a request must be a JSON object, not %s",
                 *w.c.p == 'n' ? "null" : *w.c.p == '[' ? "an array" : *w.c.p == '"' ? "a string" : "a scalar");
        return TG_SM_EBAD;
    }
    w.c.p++;
    int nbodies = 0, result = 0;
    const char *body_name = NULL;
    for (;;) {
        skip_ws(&w.c);
        if (*w.c.p == '}') break;
        if (*w.c.p == ',') { w.c.p++; continue; }
        const char *raw;
        size_t rawlen;
        scan_string(&w.c, &raw, &rawlen);
        skip_ws(&w.c);
        w.c.p++;
        skip_ws(&w.c);
        if (key_is(raw, rawlen, "id")) {
            if (*w.c.p != '"') {
                skip_value(&w.c, 0);
                if (!result) result = bad(&w, "%s", "id must be a string");
                continue;
            }
            take_string(&w, &m->id, &m->idlen);
            m->has_id = 1;
            continue;
        }
        if (key_is(raw, rawlen, "is_cancel")) {
            if (*w.c.p == 't') m->is_cancel = 1;
            else if (*w.c.p != 'f' && *w.c.p != 'n' && !result) result = bad(&w, "%s", "is_cancel must be true or false");
            skip_value(&w.c, 0);
            continue;
        }
        int kind = 0;
        for (int i = 0; bodies[i].name; i++)
            if (key_is(raw, rawlen, bodies[i].name)) { kind = bodies[i].kind; body_name = bodies[i].name; }
        if (!kind) {
            skip_value(&w.c, 0);
            continue;
        }
        if (is_null(&w)) continue;
        if (++nbodies > 1) {
            skip_value(&w.c, 0);
            if (!result) result = bad(&w, "%s", "a request must carry exactly one of signal_entry, barrier, "
                                      "publish, subscribe");
            continue;
        }
        m->kind = kind;
        const char *start = w.c.p;
        int r = walk_body(&w, kind, body_name);
        if (r) {                                /* go on past the body: the id may follow it */
            if (!result) result = r;
            w.c.p = start;
            skip_value(&w.c, 0);
        }
    }
    if (result) return result;
    if (!m->has_id) {
        snprintf(err, errlen, "a request needs an \"id\" string");
        return TG_SM_EBAD;
    }
    if (!nbodies) {
        if (m->is_cancel) {
            m->kind = TG_SM_CANCEL;
            return 0;
        }
        snprintf(err, errlen, "unknown request: expected one of signal_entry, barrier, publish, subscribe");
        return TG_SM_EBAD;
    }
    if (m->is_cancel) m->kind = TG_SM_CANCEL;  /* a cancel may repeat its request's body */
    return 0;
}

int tg_syncmsg_parse_response(const char *msg, size_t len, tg_syncmsg_t *m, char *err, size_t errlen) {
    walk_t w;
    int rc = walk_begin(&w, msg, len, m, err, errlen);
    if (rc) return rc;
    if (*w.c.p != '{') {
        snprintf(err, errlen, "a response must be a JSON object");
        return TG_SM_EBAD;
    }
    w.c.p++;
    m->kind = TG_SM_BARRIER;
    for (;;) {
        skip_ws(&w.c);
        if (*w.c.p == '}') break;
        if (*w.c.p == ',') { w.c.p++; continue; }
        const char *raw;
        size_t rawlen;
        scan_string(&w.c, &raw, &rawlen);
        skip_ws(&w.c);
        w.c.p++;
        skip_ws(&w.c);
        int seqkind = key_is(raw, rawlen, "publish") ? TG_SM_PUBLISH
                    : key_is(raw, rawlen, "signal_entry") ? TG_SM_SIGNAL_ENTRY : 0;
        if (key_is(raw, rawlen, "id") || key_is(raw, rawlen, "error") || key_is(raw, rawlen, "subscribe")) {
            if (*w.c.p == 'n') { w.c.p += 4; continue; }
            if (*w.c.p != '"') {
                snprintf(err, errlen, "response field \"%.*s\" must be a string", (int)rawlen, raw);
                return TG_SM_EBAD;
            }
            if (raw[0] == 'i') { take_string(&w, &m->id, &m->idlen); m->has_id = 1; }
            else if (raw[0] == 'e') take_string(&w, &m->error, &m->elen);
            else {
                take_string(&w, &m->payload, &m->plen);
                if (m->plen) m->kind = TG_SM_SUBSCRIBE;
            }
        } else if (seqkind) {
            if (is_null(&w)) continue;
            if (*w.c.p != '{') {
                snprintf(err, errlen, "response field \"%.*s\" must be an object or null", (int)rawlen, raw);
                return TG_SM_EBAD;
            }
            w.c.p++;
            for (;;) {
                skip_ws(&w.c);
                if (*w.c.p == '}') { w.c.p++; break; }
                if (*w.c.p == ',') { w.c.p++; continue; }
                const char *k;
                size_t kl;
                scan_string(&w.c, &k, &kl);
                skip_ws(&w.c);
                w.c.p++;
                if (key_is(k, kl, "seq")) {
                    if (take_int(&w, &m->seq) < 0) {
                        snprintf(err, errlen, "a response's seq must be a whole number");
                        return TG_SM_EBAD;
                    }
                    m->kind = seqkind;
                } else {
                    skip_value(&w.c, 0);
                }
            }
        } else if (key_is(raw, rawlen, "count")) {
            if (take_int(&w, &m->seq) < 0) {
                snprintf(err, errlen, "a response's count must be a whole number");
                return TG_SM_EBAD;
            }
            m->kind = TG_SM_COUNT;
        } else {
            skip_value(&w.c, 0);
        }
    }
    if (!m->has_id) {
        snprintf(err, errlen, "a response without an id");
        return TG_SM_EBAD;
    }
    return 0;
}

void tg_syncmsg_free(tg_syncmsg_t *m) {
    free(m->scratch);
    m->scratch = NULL;
}

/* ---- formatting --------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t need;
    unsigned v;
    if (c >= 0xc2 && c <= 0xdf) { need = 2; v = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { need = 3; v = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { need = 4; v = c & 0x07; }
    else return 0;
    if (n < need) return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    if ((need == 3 && (v < 0x800 || (v >= 0xd800 && v < 0xe000))) || (need == 4 && (v < 0x10000 || v > 0x10ffff)))
        return 0;
    return need;
}

int tg_syncmsg_add_string(tg_sbuf_t *b, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    if (ADDS(b, "\"") < 0) return -1;
    size_t run = 0;                             /* bytes copied as they are, in one go */
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        const char *esc = NULL;
        char ubuf[8];
        size_t step = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20) {
            snprintf(ubuf, sizeof ubuf, "\\u%04x", c);
            esc = ubuf;
        } else if (c >= 0x80) {
            step = utf8_len(u + i, len - i);
            if (!step) { esc = "\\ufffd"; step = 1; }
        }
        if (esc) {
            if (tg_sbuf_add(b, s + i - run, run) < 0 || tg_sbuf_add(b, esc, strlen(esc)) < 0) return -1;
            run = 0;
        } else {
            run += step;
        }
        i += step;
    }
    if (tg_sbuf_add(b, s + len - run, run) < 0) return -1;
    return ADDS(b, "\"");
}

static int add_int(tg_sbuf_t *b, long long v) {
    char n[32];
    int k = snprintf(n, sizeof n, "%lld", v);
    return tg_sbuf_add(b, n, (size_t)k);
}

int tg_syncmsg_format_request(tg_sbuf_t *b, const tg_syncmsg_t *m) {
    const char *body = NULL, *field = "state";
    for (int i = 0; bodies[i].name; i++)
        if (bodies[i].kind == m->kind) body = bodies[i].name;
    if (m->kind == TG_SM_PUBLISH || m->kind == TG_SM_SUBSCRIBE) field = "topic";
    if (ADDS(b, "{\"id\":") < 0 || tg_syncmsg_add_string(b, m->id, m->idlen) < 0) return -1;
    if (m->kind == TG_SM_CANCEL) return ADDS(b, ",\"is_cancel\":true}");
    if (!body) return -1;
    if (ADDS(b, ",\"") < 0 || tg_sbuf_add(b, body, strlen(body)) < 0 || ADDS(b, "\":{\"") < 0
        || tg_sbuf_add(b, field, strlen(field)) < 0 || ADDS(b, "\":") < 0
        || tg_syncmsg_add_string(b, m->key, m->klen) < 0) return -1;
    if (m->kind == TG_SM_BARRIER && (ADDS(b, ",\"target\":") < 0 || add_int(b, m->target) < 0)) return -1;
    if (m->kind == TG_SM_PUBLISH
        && (ADDS(b, ",\"payload\":") < 0 || tg_sbuf_add(b, m->payload, m->plen) < 0)) return -1;
    return ADDS(b, "}}");
}

int tg_syncmsg_format_response(tg_sbuf_t *b, const char *id, size_t idlen, int kind, long long seq,
                               const char *payload, size_t plen, const char *error) {
    if (ADDS(b, "{\"id\":") < 0 || tg_syncmsg_add_string(b, id, idlen) < 0 || ADDS(b, ",\"error\":") < 0
        || tg_syncmsg_add_string(b, error ? error : "", error ? strlen(error) : 0) < 0) return -1;
    if (ADDS(b, ",\"publish\":") < 0) return -1;
    if (kind == TG_SM_PUBLISH && !error) {
        if (ADDS(b, "{\"seq\":") < 0 || add_int(b, seq) < 0 || ADDS(b, "}") < 0) return -1;
    } else if (ADDS(b, "null") < 0) return -1;
    if (ADDS(b, ",\"subscribe\":") < 0) return -1;
    if (kind == TG_SM_SUBSCRIBE && !error) {
        if (tg_syncmsg_add_string(b, payload, plen) < 0) return -1;
    } else if (ADDS(b, "\"\"") < 0) return -1;
    if (ADDS(b, ",\"signal_entry\":") < 0) return -1;
    if (kind == TG_SM_SIGNAL_ENTRY && !error) {
        if (ADDS(b, "{\"seq\":") < 0 || add_int(b, seq) < 0 || ADDS(b, "}") < 0) return -1;
    } else if (ADDS(b, "null") < 0) return -1;
    if (kind == TG_SM_COUNT && !error && (ADDS(b, ",\"count\":") < 0 || add_int(b, seq) < 0)) return -1;
    return ADDS(b, "}");
}

/* ---- keys ---------------------------------------------------------------------- */

static const char *find(const char *s, const char *e, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = s; p + n <= e; p++)
        if (memcmp(p, needle, n) == 0) return p;
    return NULL;
}

int tg_syncmsg_split_key(const char *key, size_t klen, size_t *plen, int *kind, size_t *noff) {
    const char *e = key + klen;
    if (klen < 4 || memcmp(key, "run:", 4) != 0) return -1;
    const char *plan = find(key + 4, e, ":plan:");
    const char *cs = plan ? find(plan + 6, e, ":case:") : NULL;
    if (!cs) return -1;
    /* the earliest of the three suffixes after the case's name */
    const char *st = find(cs + 6, e, ":states:"), *tp = find(cs + 6, e, ":topics:");
    const char *ev = klen >= 11 && memcmp(e - 11, ":run_events", 11) == 0 && e - 11 >= cs + 6 ? e - 11 : NULL;
    const char *best = NULL;
    if (st) { best = st; *kind = TG_SM_KEY_STATE; *noff = (size_t)(st - key) + 8; }
    if (tp && (!best || tp < best)) { best = tp; *kind = TG_SM_KEY_TOPIC; *noff = (size_t)(tp - key) + 8; }
    if (ev && (!best || ev < best)) { best = ev; *kind = TG_SM_KEY_EVENTS; *noff = klen; }
    if (!best || (*kind != TG_SM_KEY_EVENTS && *noff >= klen)) return -1;
    *plen = (size_t)(best - key);
    return 0;
}
