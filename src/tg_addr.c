/* tg_addr.c -- see tg_addr.h. */
#define _POSIX_C_SOURCE 200809L

#include "tg_addr.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_scalar.h"
#include "tg_text.h"


typedef struct {                /* error context for one redis address */
    char *err;
    size_t errlen;
    const char *what;           /* "redis URL" / "redis address" */
    char shown[TG_QBUF];           /* the address, redacted and quoted */
} actx_t;

/* Quote url into c->shown with credentials replaced by ***: the userinfo
 * after its first ':' (or all of it) before the last '@', and the values
 * of password= query options.  Password bytes are never copied. */
static void redact(actx_t *c, const char *url, int is_unix) {
    char tmp[TG_QMAX + 8];
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
    /* o > TG_QMAX whenever something was cut; tg_text_qn() then appends "..." */
    tg_text_qn(c->shown, tmp, o);
}

static int aerr(actx_t *c, const char *fmt, ...) {
    char msg[3 * TG_QBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tg_text_seterr(c->err, c->errlen, "%s %s: %s", c->what, c->shown, msg);
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
            int hi = i + 2 < n ? tg_hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? tg_hexval((unsigned char)s[i + 2]) : -1;
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
    char qb[TG_QBUF];

    if (!n) return aerr(c, "host is empty");
    for (i = 0; i < n; i++) {
        int ch = (unsigned char)h[i];
        if (ch == ':') colons++;
        else if (!tg_is_name_char(ch) && !(bracketed && ch == '%'))
            return aerr(c, "host %s may only contain letters, digits, "
                        "'.', '-' and '_'%s", tg_text_qn(qb, h, n),
                        bracketed ? ", ':' and '%'" : "");
    }
    if (bracketed && !colons)
        return aerr(c, "%s in brackets is not an IPv6 address",
                    tg_text_qn(qb, h, n));
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
    char qb[TG_QBUF];

    for (i = 0; i < n && v <= 65535; i++) {
        if (!tg_is_digit((unsigned char)p[i])) break;
        v = v * 10 + (p[i] - '0');
    }
    if (!n || i != n || v < 1 || v > 65535)
        return aerr(c, "port must be 1-65535, got %s", tg_text_qn(qb, p, n));
    a->port = (int)v;
    return 0;
}

/* Parse a db number in p[0..n): a non-negative integer <= INT_MAX. */
static int set_db(actx_t *c, tg_redis_addr_t *a, const char *p, size_t n) {
    size_t i;
    long long v = 0;
    char qb[TG_QBUF];

    for (i = 0; i < n && v <= INT_MAX; i++) {
        if (!tg_is_digit((unsigned char)p[i])) break;
        v = v * 10 + (p[i] - '0');
    }
    if (!n || i != n || v > INT_MAX)
        return aerr(c, "db must be a non-negative integer, got %s",
                    tg_text_qn(qb, p, n));
    a->db = (int)v;
    return 0;
}

/* host[:port], [v6][:port], and in URL form [[user]:password@] before and
 * [/db] after.  p points past "redis://" (is_url) or at a plain address. */
static int parse_tcp(actx_t *c, tg_redis_addr_t *a, const char *p,
                     int is_url) {
    const char *at = strrchr(p, '@'), *h, *he, *e, *colon;
    char qb[TG_QBUF];
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
        return aerr(c, "unexpected %s after the address%s", tg_text_q(qb, p),
                    is_url ? "" : " (a db number needs redis://host/DB)");
    return 0;
}

/* /path[?db=N&password=P&user=U], p points at the path. */
static int parse_unix(actx_t *c, tg_redis_addr_t *a, const char *p) {
    const char *e = p + strcspn(p, "?"), *kv, *ke, *eq;
    char qb[TG_QBUF];
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
                        tg_text_qn(qb, kv, (size_t)(ke - kv)));
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
                        tg_text_qn(qb, kv, (size_t)(eq - kv)));
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
    char qb[TG_QBUF];

    c.err = err; c.errlen = errlen;
    if (!url || !*url) {
        tg_text_seterr(err, errlen, "redis address is empty; give host[:port], "
               "redis://host[:port][/db] or unix:///path/to/socket");
        return -1;
    }
    memset(&a, 0, sizeof(a));
    a.port = 6379;
    /* "unix:/" first: a socket path may itself contain "://" */
    is_unix = tg_text_eq_ci(url, 6, "unix:/");
    c.what = sep || is_unix ? "redis URL" : "redis address";
    redact(&c, url, is_unix);
    if (is_unix) {
        /* unix:/path or unix:///path */
        rc = parse_unix(&c, &a, url + (url[6] == '/' ? 7 : 5));
    } else if (sep && !tg_text_eq_ci(url, (size_t)(sep - url), "redis")) {
        return aerr(&c, "scheme %s is not supported; use redis://, "
                    "unix:// or plain host:port",
                    tg_text_qn(qb, url, (size_t)(sep - url)));
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
    char qb[TG_QBUF];

    memset(&a, 0, sizeof(a));
    if (!host || !*host) host = "localhost";
    if (port && *port &&
        (tg_parse_int(port, &pv) < 0 || pv < 1 || pv > 65535)) {
        tg_text_seterr(err, errlen, "REDIS_PORT %s is not a port number; use "
               "1-65535", tg_text_q(qb, port));
        return -1;
    }
    c.err = err; c.errlen = errlen; c.what = "REDIS_HOST";
    tg_text_qn(c.shown, host, strlen(host));
    n = strlen(host);
    if (host[0] == '[' && n >= 2 && host[n - 1] == ']') {
        if (set_host(&c, &a, host + 1, n - 2, 1) < 0) return -1;
    } else {
        for (i = 0; i < n; i++) colons += host[i] == ':';
        if (colons == 1) {
            tg_text_seterr(err, errlen, "REDIS_HOST %s must be a host name only; "
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

const char *tg_redis_addr_url(const tg_redis_addr_t *a, char *buf, size_t len) {
    if (!buf || !len) return buf;
    if (a->is_unix) {
        if (a->db) snprintf(buf, len, "unix://%s?db=%d", a->path, a->db);
        else snprintf(buf, len, "unix://%s", a->path);
    } else if (strchr(a->host, ':')) {
        snprintf(buf, len, "redis://[%s]:%d/%d", a->host, a->port, a->db);
    } else {
        snprintf(buf, len, "redis://%s:%d/%d", a->host, a->port, a->db);
    }
    return buf;
}

int tg_redis_addr_credentials(tg_redis_addr_t *a, const char *user, const char *password, char *err,
                              size_t errlen) {
    if (password && *password && !a->password[0]) {
        if (strlen(password) >= sizeof a->password) {
            tg_text_seterr(err, errlen, "REDIS_PASSWORD is longer than %zu bytes", sizeof a->password - 1);
            return -1;
        }
        snprintf(a->password, sizeof a->password, "%s", password);
    }
    if (user && *user && !a->user[0]) {
        if (strlen(user) >= sizeof a->user) {
            tg_text_seterr(err, errlen, "REDIS_USERNAME is longer than %zu bytes", sizeof a->user - 1);
            return -1;
        }
        snprintf(a->user, sizeof a->user, "%s", user);
    }
    return 0;
}
