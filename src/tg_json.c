/* tg_json.c -- see tg_json.h. */
#include "tg_json.h"

#include <lauxlib.h>

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Address used as the null sentinel; never written. */
static const char json_null_tag = 0;

/* Push the shared null sentinel (a light userdata; nothing to free). */
void tg_json_push_null(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&json_null_tag);
}

static int is_null(lua_State *L, int idx) {
    return lua_touserdata(L, idx) == (void *)&json_null_tag &&
           lua_islightuserdata(L, idx);
}

/* Push the array marker metatable, creating it on first use. */
static void push_array_mt(lua_State *L) {
    luaL_newmetatable(L, TG_JSON_ARRAY_MT);
}

static int has_array_mt(lua_State *L, int idx) {
    int r;
    if (!lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, TG_JSON_ARRAY_MT);
    r = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return r;
}

/* ---------------------------------------------------------------- encode */

/* Output buffer.  The bytes live in a userdata at stack slot 'slot'; growing
 * replaces it with a bigger one, so a raised error cannot leak memory. */
typedef struct {
    lua_State *L;
    int slot;
    char *p;
    size_t n, cap;
    char err[96];
} enc_t;

static void enc_grow(enc_t *e, size_t need) {
    size_t cap = e->cap;
    char *np;
    if (need > ((size_t)-1) / 4 - e->n) luaL_error(e->L, "not enough memory");
    while (cap < e->n + need) cap *= 2;
    np = lua_newuserdatauv(e->L, cap, 0);
    memcpy(np, e->p, e->n);
    lua_replace(e->L, e->slot);
    e->p = np;
    e->cap = cap;
}

static void enc_add(enc_t *e, const char *s, size_t n) {
    if (e->cap - e->n < n) enc_grow(e, n);
    memcpy(e->p + e->n, s, n);
    e->n += n;
}

static void enc_char(enc_t *e, char c) {
    if (e->n == e->cap) enc_grow(e, 1);
    e->p[e->n++] = c;
}

/* Record "<a><b><c>" as the error; returns -1. */
static int enc_fail(enc_t *e, const char *a, const char *b, const char *c) {
    snprintf(e->err, sizeof e->err, "%s%s%s", a, b, c);
    return -1;
}

static void enc_string(enc_t *e, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    enc_char(e, '"');
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t elen = 2;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        enc_add(e, s + run, i - run);
        run = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"':  esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            elen = 6;
        }
        enc_add(e, esc, elen);
    }
    enc_add(e, s + run, n - run);
    enc_char(e, '"');
}

static int enc_number(enc_t *e, int idx) {
    char buf[40];
    int n;
    if (lua_isinteger(e->L, idx)) {
        n = snprintf(buf, sizeof buf, LUA_INTEGER_FMT,
                     (LUAI_UACINT)lua_tointeger(e->L, idx));
    } else {
        double d = (double)lua_tonumber(e->L, idx);
        if (isnan(d)) return enc_fail(e, "cannot encode NaN", "", "");
        if (isinf(d)) return enc_fail(e, "cannot encode ", d < 0 ? "-inf" : "inf", "");
        n = snprintf(buf, sizeof buf, "%.14g", d);
        if (strtod(buf, NULL) != d) n = snprintf(buf, sizeof buf, "%.17g", d);
        for (int i = 0; i < n; i++)            /* undo a ',' decimal locale */
            if (buf[i] != '-' && buf[i] != '+' && buf[i] != 'e' &&
                (buf[i] < '0' || buf[i] > '9')) buf[i] = '.';
    }
    enc_add(e, buf, (size_t)n);
    return 0;
}

typedef struct { const char *s; size_t n; lua_Integer k; } okey_t;

static int okey_cmp(const void *a, const void *b) {
    const okey_t *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    if (c) return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

static int enc_value(enc_t *e, int idx, int depth);

static int enc_table(enc_t *e, int idx, int depth) {
    lua_State *L = e->L;
    lua_Integer nint = 0, nstr = 0, max = 0, i;
    int bad = 0, marked;

    if (depth > TG_JSON_MAXDEPTH)
        return enc_fail(e, "nesting deeper than 128 (cycle?)", "", "");
    if (!lua_checkstack(L, 8)) return enc_fail(e, "out of stack space", "", "");
    marked = has_array_mt(L, idx);

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            nstr++;
        } else if (kt == LUA_TNUMBER && lua_isinteger(L, -2)) {
            lua_Integer k = lua_tointeger(L, -2);
            if (k < 1) bad = 1;
            else if (k > max) max = k;
            nint++;
        } else if (kt == LUA_TNUMBER) {
            return enc_fail(e, "table has a float key", "", "");
        } else {
            return enc_fail(e, "table has a ", lua_typename(L, kt), " key");
        }
        lua_pop(L, 1);
    }
    if (nint && nstr)
        return enc_fail(e, "table has mixed keys (integer and string)", "", "");
    if (marked && nstr)
        return enc_fail(e, "array-marked table has string keys", "", "");

    if (nint || marked) {
        if (bad || max != nint)
            return enc_fail(e, "table has sparse keys (not exactly 1..n)", "", "");
        enc_char(e, '[');
        for (i = 1; i <= nint; i++) {
            if (i > 1) enc_char(e, ',');
            lua_rawgeti(L, idx, i);
            if (enc_value(e, lua_gettop(L), depth)) return -1;
            lua_pop(L, 1);
        }
        enc_char(e, ']');
        return 0;
    }
    if (!nstr) {
        enc_add(e, "{}", 2);
        return 0;
    }

    /* Object: anchor the keys in a fresh table (so the pointers we sort stay
     * valid whatever happens to the source table), sort, emit. */
    {
        int kidx;
        okey_t *ks;
        if ((size_t)nstr > ((size_t)-1) / sizeof *ks || nstr > INT_MAX)
            return enc_fail(e, "table too large", "", "");
        okey_t small[16];
        lua_createtable(L, (int)nstr, 0);
        kidx = lua_gettop(L);
        /* (most objects are small: their keys sort on the C stack) */
        if (nstr <= 16) {
            ks = small;
            lua_pushnil(L);                     /* keeps the stack as below */
        } else {
            ks = lua_newuserdatauv(L, (size_t)nstr * sizeof *ks, 0);
        }
        i = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            if (i == nstr || lua_type(L, -1) != LUA_TSTRING)  /* a finalizer */
                return enc_fail(e, "table changed during encoding", "", "");
            lua_pushvalue(L, -1);
            lua_rawseti(L, kidx, ++i);
            ks[i - 1].s = lua_tolstring(L, -1, &ks[i - 1].n);
            ks[i - 1].k = i;
        }
        qsort(ks, (size_t)i, sizeof *ks, okey_cmp);
        enc_char(e, '{');
        for (lua_Integer j = 0; j < i; j++) {
            if (j) enc_char(e, ',');
            enc_string(e, ks[j].s, ks[j].n);
            enc_char(e, ':');
            lua_rawgeti(L, kidx, ks[j].k);
            lua_rawget(L, idx);
            if (enc_value(e, lua_gettop(L), depth)) return -1;
            lua_pop(L, 1);
        }
        enc_char(e, '}');
        lua_pop(L, 2);
    }
    return 0;
}

static int enc_value(enc_t *e, int idx, int depth) {
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        enc_add(e, "null", 4);
        return 0;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) enc_add(e, "true", 4);
        else enc_add(e, "false", 5);
        return 0;
    case LUA_TNUMBER:
        return enc_number(e, idx);
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        enc_string(e, s, n);
        return 0;
    }
    case LUA_TTABLE:
        return enc_table(e, idx, depth + 1);
    case LUA_TLIGHTUSERDATA:
        if (is_null(L, idx)) {
            enc_add(e, "null", 4);
            return 0;
        }
        /* fall through */
    default:
        return enc_fail(e, "cannot encode a ",
                        lua_typename(L, lua_type(L, idx)), "");
    }
}

/* Encode the value at idx: 0 and the text pushed, or -1 and a message
 * pushed.  Scratch lives in a userdata slot that is dropped before return. */
/* The first bytes of every encoding go to this scratch, so that the usual
 * small value allocates nothing but its result; an encoding that outgrows
 * it moves to a userdata (as before: a raised error leaks nothing).  A
 * finalizer that encodes while an encoding is under way (a GC step inside
 * this one) gets a userdata from the start. */
static char scratch[1024];
static int scratch_busy;

int tg_json_encode(lua_State *L, int idx) {
    enc_t e;
    int base, own = !scratch_busy;
    idx = lua_absindex(L, idx);
    base = lua_gettop(L);
    if (!lua_checkstack(L, 8)) {        /* the caller owes us one slot */
        lua_pushliteral(L, "out of stack space");
        return -1;
    }
    e.L = L;
    e.n = 0;
    e.err[0] = '\0';
    if (own) {
        scratch_busy = 1;
        e.cap = sizeof scratch;
        e.p = scratch;
        lua_pushnil(L);                         /* the slot a growth's userdata takes */
        e.slot = lua_gettop(L);
    } else {
        e.cap = 256;
        e.p = lua_newuserdatauv(L, e.cap, 0);
        e.slot = lua_gettop(L);
    }
    /* (an error raised inside -- out of memory -- leaves the scratch marked
     * busy: later encodings then use a userdata, which is only slower) */
    int bad = enc_value(&e, idx, 0);
    if (own) scratch_busy = 0;
    if (bad) {
        lua_settop(L, base);
        lua_pushstring(L, e.err);
        return -1;
    }
    lua_pushlstring(L, e.p, e.n);
    lua_replace(L, e.slot);
    lua_settop(L, base + 1);
    return 0;
}

/* ---------------------------------------------------------------- decode */

typedef struct {
    lua_State *L;
    const char *s, *p, *end;
    size_t errpos;
    char err[64];
} dec_t;

static int dec_fail(dec_t *d, const char *at, const char *why) {
    d->errpos = (size_t)(at - d->s);
    snprintf(d->err, sizeof d->err, "%s", why);
    return -1;
}

/* "unexpected character 'x'" or "unexpected end of input" at d->p. */
static int dec_unexpected(dec_t *d) {
    unsigned char c;
    if (d->p >= d->end) return dec_fail(d, d->end, "unexpected end of input");
    c = (unsigned char)*d->p;
    d->errpos = (size_t)(d->p - d->s);
    if (c > 0x20 && c < 0x7f)
        snprintf(d->err, sizeof d->err, "unexpected character '%c'", c);
    else
        snprintf(d->err, sizeof d->err, "unexpected byte 0x%02x", c);
    return -1;
}

static void dec_ws(dec_t *d) {
    while (d->p < d->end &&
           (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

static int is_digit(const char *p, const char *end) {
    return p < end && *p >= '0' && *p <= '9';
}

static int dec_number(dec_t *d) {
    lua_State *L = d->L;
    const char *start = d->p, *p = d->p, *end = d->end;
    int isint = 1, neg = 0;

    if (*p == '-') { neg = 1; p++; }
    if (!is_digit(p, end)) {
        d->p = p;
        return p < end ? dec_fail(d, p, "expected digit after '-'")
                       : dec_unexpected(d);
    }
    if (*p == '0') {
        p++;
        if (is_digit(p, end)) return dec_fail(d, p - 1, "leading zero in number");
    } else {
        while (is_digit(p, end)) p++;
    }
    if (p < end && *p == '.') {
        isint = 0;
        p++;
        if (!is_digit(p, end)) return dec_fail(d, p, "expected digit after '.'");
        while (is_digit(p, end)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        isint = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (!is_digit(p, end)) return dec_fail(d, p, "expected digit in exponent");
        while (is_digit(p, end)) p++;
    }
    d->p = p;

    if (isint) {
        /* Exact int64 if it fits; "-0" stays a float so its sign survives. */
        lua_Unsigned u = 0, lim = (lua_Unsigned)LUA_MAXINTEGER + (lua_Unsigned)neg;
        const char *q = start + neg;
        int fits = !(neg && p - q == 1 && *q == '0');
        for (; fits && q < p; q++) {
            unsigned dg = (unsigned)(*q - '0');
            if (u > (lim - dg) / 10) fits = 0;
            else u = u * 10 + dg;
        }
        if (fits) {
            lua_pushinteger(L, neg ? (lua_Integer)(0u - u) : (lua_Integer)u);
            return 0;
        }
    }
    {
        size_t n = (size_t)(p - start);
        char sbuf[64], *buf = sbuf, *ep;
        double v;
        if (n >= sizeof sbuf) buf = lua_newuserdatauv(L, n + 1, 0);
        memcpy(buf, start, n);
        buf[n] = '\0';
        v = strtod(buf, &ep);
        if (ep != buf + n) {                   /* non-'.' decimal locale */
            char *dot = strchr(buf, '.');
            if (dot) *dot = localeconv()->decimal_point[0];
            v = strtod(buf, &ep);
        }
        if (buf != sbuf) lua_pop(L, 1);
        if (ep != buf + n) return dec_fail(d, start, "invalid number");
        if (isinf(v)) return dec_fail(d, start, "number out of range");
        lua_pushnumber(L, (lua_Number)v);
    }
    return 0;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static char *put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* d->p is at the opening quote.  Pushes the string. */
static int dec_string(dec_t *d) {
    lua_State *L = d->L;
    const char *p = d->p + 1, *q, *end = d->end;
    int esc = 0;
    char *buf, *o;

    /* Find the closing quote; reject raw control characters on the way. */
    for (q = p; q < end && *q != '"'; q++) {
        if (*q == '\\') {
            esc = 1;
            if (++q == end) break;
        } else if ((unsigned char)*q < 0x20) {
            return dec_fail(d, q, "control character in string");
        }
    }
    if (q >= end) return dec_fail(d, end, "unterminated string");
    d->p = q + 1;
    if (!esc) {
        lua_pushlstring(L, p, (size_t)(q - p));
        return 0;
    }

    /* Unescaping never grows the text, so q - p bytes are enough. */
    o = buf = lua_newuserdatauv(L, (size_t)(q - p), 0);
    while (p < q) {
        unsigned cp, lo;
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        switch (p[1]) {             /* p + 1 < q: a quote after '\' was skipped */
        case '"':  *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/':  *o++ = '/'; break;
        case 'b':  *o++ = '\b'; break;
        case 'f':  *o++ = '\f'; break;
        case 'n':  *o++ = '\n'; break;
        case 'r':  *o++ = '\r'; break;
        case 't':  *o++ = '\t'; break;
        case 'u':
            if (q - p < 6 || hex4(p + 2, &cp)) {
                lua_pop(L, 1);
                return dec_fail(d, p, "invalid \\u escape");
            }
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                lua_pop(L, 1);
                return dec_fail(d, p, "unpaired surrogate");
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (q - p < 12 || p[6] != '\\' || p[7] != 'u' ||
                    hex4(p + 8, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    lua_pop(L, 1);
                    return dec_fail(d, p, "unpaired surrogate");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            o = put_utf8(o, cp);
            p += 6;
            continue;
        default:
            lua_pop(L, 1);
            return dec_fail(d, p, "invalid escape");
        }
        p += 2;
    }
    lua_pushlstring(L, buf, (size_t)(o - buf));
    lua_remove(L, -2);
    return 0;
}

static int dec_value(dec_t *d, int depth);

static int dec_literal(dec_t *d, const char *word, size_t n) {
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0) {
        /* point at the first byte that differs */
        const char *p = d->p;
        size_t i = 0;
        while (p < d->end && i < n && *p == word[i]) p++, i++;
        d->p = p;
        return p < d->end ? dec_fail(d, p, "invalid literal") : dec_unexpected(d);
    }
    d->p += n;
    return 0;
}

static int dec_array(dec_t *d, int depth) {
    lua_State *L = d->L;
    lua_Integer n = 0;
    lua_createtable(L, 0, 0);
    push_array_mt(L);
    lua_setmetatable(L, -2);
    d->p++;
    dec_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        return 0;
    }
    for (;;) {
        if (dec_value(d, depth)) return -1;
        lua_rawseti(L, -2, ++n);
        dec_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            return 0;
        }
        if (d->p >= d->end) return dec_unexpected(d);
        return dec_fail(d, d->p, "expected ',' or ']'");
    }
}

static int dec_object(dec_t *d, int depth) {
    lua_State *L = d->L;
    lua_createtable(L, 0, 0);
    d->p++;
    dec_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return 0;
    }
    for (;;) {
        dec_ws(d);
        if (d->p >= d->end) return dec_unexpected(d);
        if (*d->p != '"') return dec_fail(d, d->p, "expected string key");
        if (dec_string(d)) return -1;
        dec_ws(d);
        if (d->p >= d->end) return dec_unexpected(d);
        if (*d->p != ':') return dec_fail(d, d->p, "expected ':'");
        d->p++;
        if (dec_value(d, depth)) return -1;
        lua_rawset(L, -3);
        dec_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            return 0;
        }
        if (d->p >= d->end) return dec_unexpected(d);
        return dec_fail(d, d->p, "expected ',' or '}'");
    }
}

static int dec_value(dec_t *d, int depth) {
    dec_ws(d);
    if (d->p >= d->end) return dec_unexpected(d);
    switch (*d->p) {
    case '{':
    case '[':
        if (depth >= TG_JSON_MAXDEPTH)
            return dec_fail(d, d->p, "nesting deeper than 128");
        if (!lua_checkstack(d->L, 4))
            return dec_fail(d, d->p, "out of stack space");
        return *d->p == '{' ? dec_object(d, depth + 1) : dec_array(d, depth + 1);
    case '"':
        return dec_string(d);
    case 't':
        if (dec_literal(d, "true", 4)) return -1;
        lua_pushboolean(d->L, 1);
        return 0;
    case 'f':
        if (dec_literal(d, "false", 5)) return -1;
        lua_pushboolean(d->L, 0);
        return 0;
    case 'n':
        if (dec_literal(d, "null", 4)) return -1;
        tg_json_push_null(d->L);
        return 0;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) return dec_number(d);
        return dec_unexpected(d);
    }
}

/* Decode s[0..len): 0 and the value pushed, or -1 and "invalid JSON at
 * byte N: why" pushed, anything pushed on the way popped first.  s stays
 * the caller's; it is not referenced after return. */
int tg_json_decode(lua_State *L, const char *s, size_t len) {
    dec_t d;
    int base = lua_gettop(L);
    if (!lua_checkstack(L, 6)) {
        lua_pushliteral(L, "invalid JSON at byte 0: out of stack space");
        return -1;
    }
    d.L = L;
    d.s = d.p = s;
    d.end = s + len;
    d.errpos = 0;
    d.err[0] = '\0';
    if (dec_value(&d, 0) == 0) {
        dec_ws(&d);
        if (d.p == d.end) return 0;
        dec_fail(&d, d.p, "trailing garbage after value");
    }
    lua_settop(L, base);
    lua_pushfstring(L, "invalid JSON at byte %I: %s",
                    (LUAI_UACINT)d.errpos, d.err);
    return -1;
}

/* ------------------------------------------------------------ Lua module */

static int l_encode(lua_State *L) {
    luaL_checkany(L, 1);
    if (tg_json_encode(L, 1) == 0) return 1;
    lua_pushfstring(L, "json.encode: %s", lua_tostring(L, -1));
    return lua_error(L);
}

static int l_decode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (tg_json_decode(L, s, n) == 0) return 1;
    lua_pushfstring(L, "json.decode: %s", lua_tostring(L, -1));
    return lua_error(L);
}

static int l_array(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    push_array_mt(L);
    lua_setmetatable(L, 1);
    return 1;
}

/* Push and return the module table {encode, decode, null, array}; also
 * creates this state's array marker metatable.  Owned by Lua. */
int luaopen_tg_json(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"encode", l_encode},
        {"decode", l_decode},
        {"array", l_array},
        {NULL, NULL}
    };
    luaL_newlib(L, fns);
    tg_json_push_null(L);
    lua_setfield(L, -2, "null");
    push_array_mt(L);
    lua_pop(L, 1);
    return 1;
}
