/*
 * tg_params.c -- see tg_params.h for purpose, invariants and ownership.
 *
 * Character classes are ASCII-only and locale-free on purpose: a test
 * plan's parameters must mean the same thing on every machine.
 */
#define _POSIX_C_SOURCE 200809L

#include "tg_params.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================== helpers */

#define QMAX 80                 /* input bytes shown in an error message */
#define QBUF (2 + QMAX * 4 + 3 + 1)

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alpha(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static int is_alnum(int c) { return is_digit(c) || is_alpha(c); }
static int is_space(int c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
           c == '\r';
}
static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
static int hexval(int c) {
    if (is_digit(c)) return c - '0';
    c = lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Case-insensitive compare of s[0..n) with the NUL-terminated word w. */
static int eq_ci(const char *s, size_t n, const char *w) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!w[i] || lower((unsigned char)s[i]) != lower((unsigned char)w[i]))
            return 0;
    return w[n] == '\0';
}

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    if (!err || !errlen) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Render s[0..n) double-quoted into buf: '"' and '\' escaped, control
 * bytes as \xNN, more than QMAX bytes cut and marked with "...". */
static const char *qn(char *buf, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;
    buf[o++] = '"';
    for (i = 0; i < n && i < QMAX; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[o++] = '\\'; buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            buf[o++] = '\\'; buf[o++] = 'x';
            buf[o++] = hex[c >> 4]; buf[o++] = hex[c & 15];
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    if (n > QMAX) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o] = '\0';
    return buf;
}
static const char *q(char *buf, const char *s) {
    return qn(buf, s ? s : "", s ? strlen(s) : 0);
}

/* Trim ASCII whitespace: *b = first kept byte, *e = one past the last. */
static void trim(const char *s, const char **b, const char **e) {
    const char *end = s + strlen(s);
    while (s < end && is_space((unsigned char)*s)) s++;
    while (end > s && is_space((unsigned char)end[-1])) end--;
    *b = s; *e = end;
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ====================================================== key/value lists */

/* Release every key, value and the item array of l, and leave l as an
 * empty list that can be reused.  l may be NULL.  Returns nothing. */
void tg_kvlist_free(tg_kvlist_t *l) {
    size_t i;
    if (!l) return;
    for (i = 0; i < l->len; i++) {
        free(l->items[i].key);
        free(l->items[i].value);
    }
    free(l->items);
    l->items = NULL;
    l->len = l->cap = 0;
}

static tg_kv_t *kv_find(const tg_kvlist_t *l, const char *key, size_t klen) {
    size_t i;
    for (i = 0; i < l->len; i++)
        if (strncmp(l->items[i].key, key, klen) == 0 &&
            l->items[i].key[klen] == '\0')
            return &l->items[i];
    return NULL;
}

/* Set key[0..klen) to val[0..vlen); copies both. 0 or -1 (ENOMEM). */
static int kv_setn(tg_kvlist_t *l, const char *key, size_t klen,
                   const char *val, size_t vlen) {
    tg_kv_t *kv = kv_find(l, key, klen);
    char *v = dupn(val, vlen), *k;
    if (!v) return -1;
    if (kv) {
        free(kv->value);
        kv->value = v;
        return 0;
    }
    if (l->len == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        tg_kv_t *ni;
        if (ncap > SIZE_MAX / sizeof(tg_kv_t)) { free(v); return -1; }
        ni = realloc(l->items, ncap * sizeof(tg_kv_t));
        if (!ni) { free(v); return -1; }
        l->items = ni;
        l->cap = ncap;
    }
    if (!(k = dupn(key, klen))) { free(v); return -1; }
    l->items[l->len].key = k;
    l->items[l->len].value = v;
    l->len++;
    return 0;
}

/* Set key to value in l: replaces the value of an existing key in place,
 * otherwise appends.  Both strings are copied; l owns the copies.
 * Returns 0, or -1 with errno ENOMEM (l is then unchanged). */
int tg_kvlist_set(tg_kvlist_t *l, const char *key, const char *value) {
    if (kv_setn(l, key, strlen(key), value, strlen(value)) < 0) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

/* Look key up in l.  Returns the value (owned by l, valid until the key
 * is set again or l is freed) or NULL if absent. */
const char *tg_kvlist_get(const tg_kvlist_t *l, const char *key) {
    tg_kv_t *kv = kv_find(l, key, strlen(key));
    return kv ? kv->value : NULL;
}

/* Parse Testground's TEST_INSTANCE_PARAMS "k1=v1|k2=v2" into l: split on
 * '|', each pair on the first '=' (values may hold '='), empty segments
 * skipped, later keys override earlier ones and existing entries of l.
 * s == NULL is treated as "".  A segment without '=' or with an empty
 * key is an error, and then l is left unchanged.  Returns 0 or -1 (err
 * set); on ENOMEM l may hold part of the new pairs.  l owns what it
 * gained and is freed by the caller with tg_kvlist_free(). */
int tg_params_parse(tg_kvlist_t *l, const char *s, char *err, size_t errlen) {
    tg_kvlist_t tmp = {0};
    const char *p = s ? s : "", *end, *eq;
    char qb[QBUF];
    size_t i;

    for (;;) {
        end = strchr(p, '|');
        if (!end) end = p + strlen(p);
        if (end > p) {
            eq = memchr(p, '=', (size_t)(end - p));
            if (!eq || eq == p) {
                seterr(err, errlen, "TEST_INSTANCE_PARAMS entry %s %s; "
                       "write each entry as KEY=VALUE, separated by '|'",
                       qn(qb, p, (size_t)(end - p)),
                       eq ? "has an empty key" : "has no '='");
                tg_kvlist_free(&tmp);
                return -1;
            }
            if (kv_setn(&tmp, p, (size_t)(eq - p), eq + 1,
                        (size_t)(end - eq - 1)) < 0)
                goto oom;
        }
        if (!*end) break;
        p = end + 1;
    }
    for (i = 0; i < tmp.len; i++)
        if (tg_kvlist_set(l, tmp.items[i].key, tmp.items[i].value) < 0)
            goto oom;
    tg_kvlist_free(&tmp);
    return 0;
oom:
    seterr(err, errlen, "out of memory while parsing "
           "TEST_INSTANCE_PARAMS");
    tg_kvlist_free(&tmp);
    return -1;
}

/* Parse one "--param KEY=VALUE" (split on the first '=') and set it in l,
 * overriding an existing KEY.  The key must be non-empty; neither key nor
 * value may contain '|', because TEST_INSTANCE_PARAMS could not carry it
 * to child processes.  Returns 0 or -1 (err set, l unchanged). */
int tg_param_parse_one(tg_kvlist_t *l, const char *kv, char *err,
                       size_t errlen) {
    const char *eq = kv ? strchr(kv, '=') : NULL;
    char qb[QBUF];

    if (!eq) {
        seterr(err, errlen, "--param %s needs KEY=VALUE", q(qb, kv));
        return -1;
    }
    if (eq == kv) {
        seterr(err, errlen, "--param %s has an empty key; write it as "
               "KEY=VALUE", q(qb, kv));
        return -1;
    }
    if (strchr(kv, '|')) {
        seterr(err, errlen, "--param %s contains '|', which cannot be "
               "passed on in TEST_INSTANCE_PARAMS; remove it", q(qb, kv));
        return -1;
    }
    if (kv_setn(l, kv, (size_t)(eq - kv), eq + 1, strlen(eq + 1)) < 0) {
        seterr(err, errlen, "out of memory while storing --param %s",
               q(qb, kv));
        return -1;
    }
    return 0;
}

/* Render l as "k1=v1|k2=v2" (insertion order) for a child's
 * TEST_INSTANCE_PARAMS; an empty list gives "".  Returns a malloc'd string
 * the caller frees, or NULL on ENOMEM or when an entry cannot be
 * represented (empty key, '=' or '|' in a key, '|' in a value). */
char *tg_params_format(const tg_kvlist_t *l) {
    size_t i, n = 1, o = 0, kl, vl;
    char *s;

    for (i = 0; i < l->len; i++) {
        const char *k = l->items[i].key, *v = l->items[i].value;
        if (!*k || strpbrk(k, "=|") || strchr(v, '|')) return NULL;
        n += strlen(k) + strlen(v) + 2;
    }
    if (!(s = malloc(n))) return NULL;
    for (i = 0; i < l->len; i++) {
        if (i) s[o++] = '|';
        kl = strlen(l->items[i].key);
        vl = strlen(l->items[i].value);
        memcpy(s + o, l->items[i].key, kl); o += kl;
        s[o++] = '=';
        memcpy(s + o, l->items[i].value, vl); o += vl;
    }
    s[o] = '\0';
    return s;
}

/* ======================================================= typed values */

/* Parse a decimal integer with optional sign; surrounding ASCII
 * whitespace is ignored, anything else (including overflow) fails.
 * Returns 0 and sets *out, or -1 leaving *out alone. */
int tg_parse_int(const char *s, long long *out) {
    const char *b, *e;
    unsigned long long v = 0, lim;
    int neg = 0;

    if (!s) return -1;
    trim(s, &b, &e);
    if (b < e && (*b == '+' || *b == '-')) neg = *b++ == '-';
    if (b == e) return -1;
    lim = (unsigned long long)LLONG_MAX + (unsigned)neg;
    for (; b < e; b++) {
        unsigned d;
        if (!is_digit((unsigned char)*b)) return -1;
        d = (unsigned)(*b - '0');
        if (v > (lim - d) / 10) return -1;
        v = v * 10 + d;
    }
    /* -(LLONG_MAX+1) done without signed overflow */
    *out = neg ? (v ? -(long long)(v - 1) - 1 : 0) : (long long)v;
    return 0;
}

/* Parse a finite number in any form strtod() takes (decimal, exponent,
 * hex float); surrounding ASCII whitespace is ignored.  "nan", "inf" and
 * values overflowing a double fail.  Returns 0 and sets *out, or -1. */
int tg_parse_number(const char *s, double *out) {
    const char *b, *e;
    char *end;
    double v;

    if (!s) return -1;
    trim(s, &b, &e);
    if (b == e) return -1;
    /* strtod skips only leading space, which trim() already did; it stops
     * at the first byte it can't use, which must then be the end. */
    v = strtod(b, &end);
    if (end != e || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* Parse true/false/1/0/yes/no/on/off, case-insensitive, surrounding ASCII
 * whitespace ignored.  Returns 0 and sets *out to 1 or 0, or -1. */
int tg_parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    const char *b, *e;
    size_t i, n;

    if (!s) return -1;
    trim(s, &b, &e);
    n = (size_t)(e - b);
    for (i = 0; i < 4; i++) {
        if (eq_ci(b, n, yes[i])) { *out = 1; return 0; }
        if (eq_ci(b, n, no[i])) { *out = 0; return 0; }
    }
    return -1;
}

/* ================================================= --group NAME=COUNT */

static int is_name_char(int c) {
    return is_alnum(c) || c == '_' || c == '.' || c == '-';
}

/* Parse "NAME=COUNT" (split on the first '=').  NAME is non-empty, made of
 * [A-Za-z0-9_.-] and shorter than namelen; COUNT is an integer >= 1.
 * Returns 0 and fills name and *count, or -1 (err set, outputs untouched). */
int tg_group_spec_parse(const char *spec, char *name, size_t namelen,
                        long *count, char *err, size_t errlen) {
    const char *eq = spec ? strchr(spec, '=') : NULL, *p;
    char qb[QBUF], qb2[QBUF];
    long long c;
    size_t n;

    if (!eq) {
        seterr(err, errlen, "--group %s needs NAME=COUNT", q(qb, spec));
        return -1;
    }
    n = (size_t)(eq - spec);
    if (n == 0) {
        seterr(err, errlen, "--group %s has an empty NAME; write it as "
               "NAME=COUNT", q(qb, spec));
        return -1;
    }
    for (p = spec; p < eq; p++) {
        if (!is_name_char((unsigned char)*p)) {
            seterr(err, errlen, "--group %s: name %s may only contain "
                   "letters, digits, '_', '.' and '-'", q(qb, spec),
                   qn(qb2, spec, n));
            return -1;
        }
    }
    if (!name || n >= namelen) {
        seterr(err, errlen, "--group %s: name is longer than %zu characters",
               q(qb, spec), namelen ? namelen - 1 : 0);
        return -1;
    }
    if (tg_parse_int(eq + 1, &c) < 0 || c < 1 || c > LONG_MAX) {
        seterr(err, errlen, "--group %s: COUNT %s must be a whole number "
               ">= 1", q(qb, spec), q(qb2, eq + 1));
        return -1;
    }
    memcpy(name, spec, n);
    name[n] = '\0';
    *count = (long)c;
    return 0;
}

/* ===================================================== redis addresses */

typedef struct {                /* error context for one redis address */
    char *err;
    size_t errlen;
    const char *what;           /* "redis URL" / "redis address" */
    char shown[QBUF];           /* the address, redacted and quoted */
} actx_t;

/* Quote url into c->shown with credentials replaced by ***: the userinfo
 * after its first ':' (or all of it) before the last '@', and the values
 * of password= query options.  Password bytes are never copied. */
static void redact(actx_t *c, const char *url, int is_unix) {
    char tmp[QMAX + 8];
    const char *at = is_unix ? NULL : strrchr(url, '@');
    const char *ui = url, *p = url, *colon, *sep;
    size_t o = 0, cap = sizeof(tmp);

#define PUT(ch) do { if (o < cap) tmp[o++] = (ch); } while (0)
    if (at && (sep = strstr(url, "://")) && sep < at) ui = sep + 3;
    while (*p && o < cap) {
        if (at && p == ui) {
            colon = memchr(ui, ':', (size_t)(at - ui));
            if (colon) while (p <= colon) { PUT(*p); p++; }
            PUT('*'); PUT('*'); PUT('*');
            p = at;
            at = NULL;
        } else if ((*p == '?' || *p == '&') &&
                   strncmp(p + 1, "password=", 9) == 0) {
            int i;
            for (i = 0; i < 10; i++) PUT(p[i]);
            PUT('*'); PUT('*'); PUT('*');
            p += 10;
            p += strcspn(p, "&");
        } else {
            PUT(*p);
            p++;
        }
    }
#undef PUT
    /* o > QMAX whenever something was cut; qn() then appends "..." */
    qn(c->shown, tmp, o);
}

static int aerr(actx_t *c, const char *fmt, ...) {
    char msg[3 * QBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    seterr(c->err, c->errlen, "%s %s: %s", c->what, c->shown, msg);
    return -1;
}

/* Percent-decode s[0..n) into out (cap bytes incl. NUL).  0, or -1 with an
 * error naming the field ("user name"/"password"), which is not echoed. */
static int pct_decode(actx_t *c, const char *field, const char *s, size_t n,
                      char *out, size_t cap) {
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return aerr(c, "the %s has a '%%' not followed by two hex "
                            "digits; write a literal '%%' as %%25", field);
            ch = hi * 16 + lo;
            if (!ch) return aerr(c, "the %s must not contain %%00", field);
            i += 2;
        }
        if (o + 1 >= cap)
            return aerr(c, "the %s is longer than %zu bytes", field, cap - 1);
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return 0;
}

/* Validate host[0..n) and copy it into a->host.  ':' is always allowed
 * (callers cut host:port apart first); bracketed: an IPv6 literal that
 * came from inside [...] or stands alone, so '%' (zone) is allowed and a
 * ':' is required. */
static int set_host(actx_t *c, tg_redis_addr_t *a, const char *h, size_t n,
                    int bracketed) {
    size_t i, colons = 0;
    char qb[QBUF];

    if (!n) return aerr(c, "host is empty");
    for (i = 0; i < n; i++) {
        int ch = (unsigned char)h[i];
        if (ch == ':') colons++;
        else if (!is_name_char(ch) && !(bracketed && ch == '%'))
            return aerr(c, "host %s may only contain letters, digits, "
                        "'.', '-' and '_'%s", qn(qb, h, n),
                        bracketed ? ", ':' and '%'" : "");
    }
    if (bracketed && !colons)
        return aerr(c, "%s in brackets is not an IPv6 address",
                    qn(qb, h, n));
    if (n >= sizeof(a->host))
        return aerr(c, "host is longer than %zu bytes", sizeof(a->host) - 1);
    memcpy(a->host, h, n);
    a->host[n] = '\0';
    return 0;
}

/* Parse a port in p[0..n): digits only, 1-65535. */
static int set_port(actx_t *c, tg_redis_addr_t *a, const char *p, size_t n) {
    size_t i;
    long v = 0;
    char qb[QBUF];

    for (i = 0; i < n && v <= 65535; i++) {
        if (!is_digit((unsigned char)p[i])) break;
        v = v * 10 + (p[i] - '0');
    }
    if (!n || i != n || v < 1 || v > 65535)
        return aerr(c, "port must be 1-65535, got %s", qn(qb, p, n));
    a->port = (int)v;
    return 0;
}

/* Parse a db number in p[0..n): a non-negative integer <= INT_MAX. */
static int set_db(actx_t *c, tg_redis_addr_t *a, const char *p, size_t n) {
    size_t i;
    long long v = 0;
    char qb[QBUF];

    for (i = 0; i < n && v <= INT_MAX; i++) {
        if (!is_digit((unsigned char)p[i])) break;
        v = v * 10 + (p[i] - '0');
    }
    if (!n || i != n || v > INT_MAX)
        return aerr(c, "db must be a non-negative integer, got %s",
                    qn(qb, p, n));
    a->db = (int)v;
    return 0;
}

/* host[:port], [v6][:port], and in URL form [[user]:password@] before and
 * [/db] after.  p points past "redis://" (is_url) or at a plain address. */
static int parse_tcp(actx_t *c, tg_redis_addr_t *a, const char *p,
                     int is_url) {
    const char *at = strrchr(p, '@'), *h, *he, *e, *colon;
    char qb[QBUF];
    int br = 0;

    if (at) {
        if (!is_url)
            return aerr(c, "credentials are only accepted in the form "
                        "redis://user:password@host");
        colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return aerr(c, "write credentials as user:password@ or "
                        ":password@");
        if (pct_decode(c, "user name", p, (size_t)(colon - p), a->user,
                       sizeof(a->user)) < 0 ||
            pct_decode(c, "password", colon + 1, (size_t)(at - colon - 1),
                       a->password, sizeof(a->password)) < 0)
            return -1;
        p = at + 1;
    }
    if (*p == '[') {
        if (!(he = strchr(p, ']')))
            return aerr(c, "missing ']' after the IPv6 address");
        h = p + 1;
        p = he + 1;
        br = 1;
    } else {
        h = p;
        p += strcspn(p, ":/?#");
        he = p;
        e = p + strcspn(p, "/?#");
        if (*p == ':' && memchr(p + 1, ':', (size_t)(e - p - 1)))
            return aerr(c, "put an IPv6 address in brackets, e.g. "
                        "[::1]:6379");
    }
    if (set_host(c, a, h, (size_t)(he - h), br) < 0) return -1;
    if (*p == ':') {
        p++;
        e = p + strcspn(p, "/?#");
        if (set_port(c, a, p, (size_t)(e - p)) < 0) return -1;
        p = e;
    }
    if (is_url && *p == '/') {
        p++;
        e = p + strcspn(p, "?#");
        if (e > p && set_db(c, a, p, (size_t)(e - p)) < 0) return -1;
        p = e;
    }
    if (*p)
        return aerr(c, "unexpected %s after the address%s", q(qb, p),
                    is_url ? "" : " (a db number needs redis://host/DB)");
    return 0;
}

/* /path[?db=N&password=P&user=U], p points at the path. */
static int parse_unix(actx_t *c, tg_redis_addr_t *a, const char *p) {
    const char *e = p + strcspn(p, "?"), *kv, *ke, *eq;
    char qb[QBUF];
    size_t n = (size_t)(e - p);

    if (*p != '/')
        return aerr(c, "the socket path must be absolute, e.g. "
                    "unix:///run/redis.sock");
    if (n >= sizeof(a->path))
        return aerr(c, "socket path is longer than %zu bytes",
                    sizeof(a->path) - 1);
    memcpy(a->path, p, n);
    a->path[n] = '\0';
    a->is_unix = 1;
    if (!*e) return 0;
    for (kv = e + 1; *kv; kv = *ke ? ke + 1 : ke) {
        ke = kv + strcspn(kv, "&");
        if (ke == kv) continue;
        if (!(eq = memchr(kv, '=', (size_t)(ke - kv))))
            return aerr(c, "option %s needs NAME=VALUE",
                        qn(qb, kv, (size_t)(ke - kv)));
        if (eq - kv == 2 && !strncmp(kv, "db", 2)) {
            if (set_db(c, a, eq + 1, (size_t)(ke - eq - 1)) < 0) return -1;
        } else if (eq - kv == 8 && !strncmp(kv, "password", 8)) {
            if (pct_decode(c, "password", eq + 1, (size_t)(ke - eq - 1),
                           a->password, sizeof(a->password)) < 0)
                return -1;
        } else if (eq - kv == 4 && !strncmp(kv, "user", 4)) {
            if (pct_decode(c, "user name", eq + 1, (size_t)(ke - eq - 1),
                           a->user, sizeof(a->user)) < 0)
                return -1;
        } else {
            return aerr(c, "unknown option %s; use db, password or user",
                        qn(qb, kv, (size_t)(eq - kv)));
        }
    }
    return 0;
}

/* Parse a redis address: redis://[[user]:password@]host[:port][/db]
 * (IPv6 hosts in brackets), unix:///path or unix:/path with optional
 * ?db=N&password=P&user=U, or plain host, host:port, [v6]:port.  User and
 * password are percent-decoded.  Defaults: port 6379, db 0.  Returns 0
 * and fills *out, or -1 with err set and *out untouched.  Nothing to
 * free. */
int tg_redis_addr_parse(const char *url, tg_redis_addr_t *out, char *err,
                        size_t errlen) {
    tg_redis_addr_t a;
    actx_t c;
    const char *sep = url ? strstr(url, "://") : NULL;
    int is_unix, rc;
    char qb[QBUF];

    c.err = err; c.errlen = errlen;
    if (!url || !*url) {
        seterr(err, errlen, "redis address is empty; give host[:port], "
               "redis://host[:port][/db] or unix:///path/to/socket");
        return -1;
    }
    memset(&a, 0, sizeof(a));
    a.port = 6379;
    /* "unix:/" first: a socket path may itself contain "://" */
    is_unix = eq_ci(url, 6, "unix:/");
    c.what = sep || is_unix ? "redis URL" : "redis address";
    redact(&c, url, is_unix);
    if (is_unix) {
        /* unix:/path or unix:///path */
        rc = parse_unix(&c, &a, url + (url[6] == '/' ? 7 : 5));
    } else if (sep && !eq_ci(url, (size_t)(sep - url), "redis")) {
        return aerr(&c, "scheme %s is not supported; use redis://, "
                    "unix:// or plain host:port",
                    qn(qb, url, (size_t)(sep - url)));
    } else {
        rc = parse_tcp(&c, &a, sep ? sep + 3 : url, sep != NULL);
    }
    if (rc < 0) return -1;
    *out = a;
    return 0;
}

/* Build an address from REDIS_HOST/REDIS_PORT values.  NULL or "" host
 * means "localhost", NULL or "" port means 6379.  The host may be a name,
 * an IPv4 address or an IPv6 address with or without brackets; the port
 * must be an integer 1-65535 (surrounding whitespace ignored).  Returns 0
 * and fills *out, or -1 with err set and *out untouched. */
int tg_redis_addr_from_env(const char *host, const char *port,
                           tg_redis_addr_t *out, char *err, size_t errlen) {
    tg_redis_addr_t a;
    actx_t c;
    long long pv = 6379;
    size_t n, i, colons = 0;
    char qb[QBUF];

    memset(&a, 0, sizeof(a));
    if (!host || !*host) host = "localhost";
    if (port && *port &&
        (tg_parse_int(port, &pv) < 0 || pv < 1 || pv > 65535)) {
        seterr(err, errlen, "REDIS_PORT %s is not a port number; use "
               "1-65535", q(qb, port));
        return -1;
    }
    c.err = err; c.errlen = errlen; c.what = "REDIS_HOST";
    qn(c.shown, host, strlen(host));
    n = strlen(host);
    if (host[0] == '[' && n >= 2 && host[n - 1] == ']') {
        if (set_host(&c, &a, host + 1, n - 2, 1) < 0) return -1;
    } else {
        for (i = 0; i < n; i++) colons += host[i] == ':';
        if (colons == 1) {
            seterr(err, errlen, "REDIS_HOST %s must be a host name only; "
                   "put the port in REDIS_PORT", c.shown);
            return -1;
        }
        /* two or more ':' can only be a bare IPv6 address */
        if (set_host(&c, &a, host, n, colons > 0) < 0) return -1;
    }
    a.port = (int)pv;
    *out = a;
    return 0;
}

/* Render a for messages: "host:port", "[v6]:port" or "unix:/path";
 * credentials and db are never shown.  Writes at most len bytes
 * (truncating, always NUL-terminated when len > 0) and returns buf. */
const char *tg_redis_addr_str(const tg_redis_addr_t *a, char *buf,
                              size_t len) {
    if (!buf || !len) return buf;
    if (a->is_unix) snprintf(buf, len, "unix:%s", a->path);
    else if (strchr(a->host, ':')) snprintf(buf, len, "[%s]:%d", a->host,
                                             a->port);
    else snprintf(buf, len, "%s:%d", a->host, a->port);
    return buf;
}

/* ======================================================= RFC 3339 time */

#define NS_PER_S 1000000000LL

/* Days since 1970-01-01 of the proleptic Gregorian date y-m-d.  Shifts
 * the year to start in March so the leap day is last, then counts whole
 * 400-year eras (146097 days) and days within the era. */
static int64_t days_from_civil(int64_t y, int m, int d) {
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;                                    /* 0..399 */
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;  /* 0..365 */
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;            /* 0..146096 */
    return era * 146097 + doe - 719468;
}

/* Inverse of days_from_civil(). */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    int64_t era, doe, yoe, doy, mp;
    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int days_in_month(int y, int m) {
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) return 29;
    return dm[m - 1];
}

/* Read exactly n digits at *p into *v, advancing *p. 0 or -1. */
static int digits(const char **p, int n, int *v) {
    int i, x = 0;
    for (i = 0; i < n; i++) {
        if (!is_digit((unsigned char)(*p)[i])) return -1;
        x = x * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *v = x;
    return 0;
}

/* Parse an RFC 3339 timestamp: YYYY-MM-DD, 'T', 't' or ' ', hh:mm:ss,
 * optional '.' and 1+ fraction digits (beyond 9 truncated), then 'Z', 'z'
 * or +hh:mm/-hh:mm.  Ranges are checked (day within month, leap years;
 * second 60 is accepted and counts as the next minute's :00).  Returns 0
 * and sets *unix_ns to nanoseconds since 1970-01-01T00:00:00Z, or -1 when
 * malformed or outside int64 (years ~1677-2262). */
int tg_rfc3339_parse(const char *s, int64_t *unix_ns) {
    int Y, M, D, h, mi, sec, oh = 0, om = 0, sign = 0, i;
    int64_t frac = 0, t, a, b;
    const char *p = s;

    if (!s) return -1;
    if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) ||
        *p++ != '-' || digits(&p, 2, &D))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ') return -1;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) ||
        *p++ != ':' || digits(&p, 2, &sec))
        return -1;
    if (*p == '.') {
        p++;
        if (!is_digit((unsigned char)*p)) return -1;
        for (i = 0; is_digit((unsigned char)*p); i++, p++)
            if (i < 9) frac = frac * 10 + (*p - '0');
        for (; i < 9; i++) frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om))
            return -1;
    } else {
        return -1;
    }
    if (*p) return -1;
    if (M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 ||
        mi > 59 || sec > 60 || oh > 23 || om > 59)
        return -1;

    t = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + sec -
        sign * (oh * 3600 + om * 60);
    /* t * NS_PER_S + frac without signed overflow */
    if (t > INT64_MAX / NS_PER_S || t < INT64_MIN / NS_PER_S - 1) return -1;
    if (t >= 0) {
        a = t * NS_PER_S;
        if (frac > INT64_MAX - a) return -1;
        t = a + frac;
    } else {
        a = (t + 1) * NS_PER_S;
        b = NS_PER_S - frac;                /* 1..NS_PER_S */
        if (a < INT64_MIN + b) return -1;
        t = a - b;
    }
    *unix_ns = t;
    return 0;
}

/* Format unix_ns as "YYYY-MM-DDThh:mm:ss.nnnnnnnnnZ" (UTC, always nine
 * fraction digits) into buf; needs 31 bytes, 40 recommended.  Truncates
 * to len (NUL-terminated when len > 0).  Nothing to free. */
void tg_rfc3339_format(int64_t unix_ns, char *buf, size_t len) {
    int64_t sec = unix_ns / NS_PER_S, ns = unix_ns % NS_PER_S, days, sod, y;
    int m, d;

    if (!buf || !len) return;
    if (ns < 0) { ns += NS_PER_S; sec--; }
    days = sec / 86400;
    sod = sec % 86400;
    if (sod < 0) { sod += 86400; days--; }
    civil_from_days(days, &y, &m, &d);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%09dZ", (int)y, m, d,
             (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60),
             (int)ns);
}
