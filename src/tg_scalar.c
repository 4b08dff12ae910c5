/* tg_scalar.c -- see tg_scalar.h. */
#define _POSIX_C_SOURCE 200809L

#include "tg_scalar.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_text.h"


/* Parse a decimal integer with optional sign; surrounding ASCII
 * whitespace is ignored, anything else (including overflow) fails.
 * Returns 0 and sets *out, or -1 leaving *out alone. */
int tg_parse_int(const char *s, long long *out) {
    const char *b, *e;
    unsigned long long v = 0, lim;
    int neg = 0;

    if (!s) return -1;
    tg_text_trim(s, &b, &e);
    if (b < e && (*b == '+' || *b == '-')) neg = *b++ == '-';
    if (b == e) return -1;
    lim = (unsigned long long)LLONG_MAX + (unsigned)neg;
    for (; b < e; b++) {
        unsigned d;
        if (!tg_is_digit((unsigned char)*b)) return -1;
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
    tg_text_trim(s, &b, &e);
    if (b == e) return -1;
    /* strtod skips only leading space, which tg_text_trim() already did; it stops
     * at the first byte it can't use, which must then be the end. */
    v = strtod(b, &end);
    if (end != e || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* Parse true/false/1/0/yes/no/on/off/t/f, case-insensitive, surrounding
 * ASCII whitespace ignored: a superset of Go's strconv.ParseBool.  Returns
 * 0 and sets *out to 1 or 0, or -1. */
int tg_parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"true", "1", "yes", "on", "t"};
    static const char *const no[] = {"false", "0", "no", "off", "f"};
    const char *b, *e;
    size_t i, n;

    if (!s) return -1;
    tg_text_trim(s, &b, &e);
    n = (size_t)(e - b);
    for (i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (tg_text_eq_ci(b, n, yes[i])) { *out = 1; return 0; }
        if (tg_text_eq_ci(b, n, no[i])) { *out = 0; return 0; }
    }
    return -1;
}

/* ---- durations ------------------------------------------------------------ */

#define NS_SECOND 1000000000ULL
#define TWO63 ((uint64_t)1 << 63)

static const struct { const char *name; size_t len; uint64_t ns; } dur_units[] = {
    {"ns", 2, 1}, {"us", 2, 1000}, {"\xc2\xb5s", 3, 1000}, {"\xce\xbcs", 3, 1000},
    {"ms", 2, 1000000}, {"s", 1, NS_SECOND}, {"m", 1, 60 * NS_SECOND}, {"h", 1, 3600 * NS_SECOND},
};

/* Parse a duration the way Go's time.ParseDuration does (see tg_scalar.h):
 * each segment's whole part must stay within 2^63, its fraction keeps the
 * digits that fit (the rest is read and dropped) and is scaled in double
 * precision, like Go, so that both give the same nanoseconds.  0 or -1. */
int tg_parse_duration(const char *s, int64_t *ns) {
    const char *b, *e;
    uint64_t d = 0;
    int neg = 0;

    if (!s) return -1;
    tg_text_trim(s, &b, &e);
    if (b < e && (*b == '-' || *b == '+')) neg = *b++ == '-';
    if (e - b == 1 && *b == '0') {              /* a bare zero needs no unit */
        *ns = 0;
        return 0;
    }
    if (b == e) return -1;
    while (b < e) {
        uint64_t v = 0, f = 0, unit = 0;
        double scale = 1;
        int pre = 0, post = 0, full = 0;
        const char *u;
        size_t i;

        if (!(*b == '.' || tg_is_digit((unsigned char)*b))) return -1;
        for (; b < e && tg_is_digit((unsigned char)*b); b++, pre = 1) {
            if (v > TWO63 / 10) return -1;
            v = v * 10 + (uint64_t)(*b - '0');
            if (v > TWO63) return -1;
        }
        if (b < e && *b == '.') {
            for (b++; b < e && tg_is_digit((unsigned char)*b); b++, post = 1) {
                uint64_t y;
                if (full || f > (TWO63 - 1) / 10) { full = 1; continue; }
                y = f * 10 + (uint64_t)(*b - '0');
                if (y > TWO63) { full = 1; continue; }
                f = y;
                scale *= 10;
            }
        }
        if (!pre && !post) return -1;           /* "." or ".s": no digits */
        for (u = b; b < e && *b != '.' && !tg_is_digit((unsigned char)*b); b++) {}
        for (i = 0; i < sizeof dur_units / sizeof dur_units[0]; i++)
            if ((size_t)(b - u) == dur_units[i].len && memcmp(u, dur_units[i].name, dur_units[i].len) == 0)
                unit = dur_units[i].ns;
        if (!unit) return -1;                   /* missing or unknown unit */
        if (v > TWO63 / unit) return -1;
        v *= unit;
        if (f > 0) {
            v += (uint64_t)((double)f * ((double)unit / scale));
            if (v > TWO63) return -1;
        }
        d += v;
        if (d > TWO63) return -1;
    }
    if (neg) *ns = d == TWO63 ? INT64_MIN : -(int64_t)d;
    else if (d > TWO63 - 1) return -1;
    else *ns = (int64_t)d;
    return 0;
}

/* Write v's digits ending just before buf[*w]. */
static void put_uint(char *buf, size_t *w, uint64_t v) {
    do {
        buf[--*w] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
}

/* Write the prec lowest decimal digits of *v as a fraction (".25"; trailing
 * zeros and a zero fraction left out) ending before buf[*w]; *v loses them. */
static void put_frac(char *buf, size_t *w, uint64_t *v, int prec) {
    int shown = 0;
    for (int i = 0; i < prec; i++) {
        unsigned digit = (unsigned)(*v % 10);
        shown = shown || digit != 0;
        if (shown) buf[--*w] = (char)('0' + digit);
        *v /= 10;
    }
    if (shown) buf[--*w] = '.';
}

char *tg_format_duration(int64_t ns, char *buf, size_t len) {
    char t[48];
    size_t w = sizeof t;
    uint64_t u = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;

    t[--w] = '\0';
    if (u == 0) {
        t[--w] = 's';
        t[--w] = '0';
    } else if (u < NS_SECOND) {                 /* below a second: ns, us or ms */
        int prec = u < 1000 ? 0 : u < 1000000 ? 3 : 6;
        t[--w] = 's';
        t[--w] = u < 1000 ? 'n' : u < 1000000 ? 'u' : 'm';
        put_frac(t, &w, &u, prec);
        put_uint(t, &w, u);
    } else {
        t[--w] = 's';
        put_frac(t, &w, &u, 9);                 /* u: whole seconds */
        put_uint(t, &w, u % 60);
        u /= 60;
        if (u) {                                /* minutes */
            t[--w] = 'm';
            put_uint(t, &w, u % 60);
            u /= 60;
            if (u) {                            /* hours */
                t[--w] = 'h';
                put_uint(t, &w, u);
            }
        }
    }
    if (ns < 0) t[--w] = '-';
    snprintf(buf, len, "%s", t + w);
    return buf;
}

/* ---- sizes ---------------------------------------------------------------- */

static const struct { const char *name; uint64_t mult; } size_units[] = {
    {"", 1}, {"b", 1},
    {"k", 1000ULL}, {"kb", 1000ULL}, {"ki", 1ULL << 10}, {"kib", 1ULL << 10},
    {"m", 1000000ULL}, {"mb", 1000000ULL}, {"mi", 1ULL << 20}, {"mib", 1ULL << 20},
    {"g", 1000000000ULL}, {"gb", 1000000000ULL}, {"gi", 1ULL << 30}, {"gib", 1ULL << 30},
    {"t", 1000000000000ULL}, {"tb", 1000000000000ULL}, {"ti", 1ULL << 40}, {"tib", 1ULL << 40},
    {"p", 1000000000000000ULL}, {"pb", 1000000000000000ULL}, {"pi", 1ULL << 50}, {"pib", 1ULL << 50},
    {"e", 1000000000000000000ULL}, {"eb", 1000000000000000000ULL}, {"ei", 1ULL << 60}, {"eib", 1ULL << 60},
};

/* floor(f * m / d) for f < d <= 10^18 and m <= 2^60, without overflow: m's
 * bits from the top, keeping q * d + r == f * (the bits so far), r < d. */
static uint64_t mul_div_floor(uint64_t f, uint64_t m, uint64_t d) {
    uint64_t q = 0, r = 0;
    for (int bit = 63; bit >= 0; bit--) {
        q <<= 1;
        r <<= 1;
        if (r >= d) { q++; r -= d; }
        if ((m >> bit) & 1) {
            r += f;                             /* f < d: at most one carry */
            if (r >= d) { q++; r -= d; }
        }
    }
    return q;
}

/* Parse a byte size (see tg_scalar.h): exact integer arithmetic, fraction
 * digits past the 18th ignored.  0 or -1. */
int tg_parse_size(const char *s, int64_t *bytes) {
    const char *b, *e, *p;
    uint64_t whole = 0, frac = 0, den = 1, mult = 0, total;
    int digits = 0, fdigits = 0;
    char unit[4];
    size_t i, n;

    if (!s) return -1;
    tg_text_trim(s, &b, &e);
    for (p = b; p < e && (tg_is_digit((unsigned char)*p) || *p == ','); p++) {
        if (*p == ',') {                        /* only between digits: "1,000" */
            if (!digits || p + 1 >= e || !tg_is_digit((unsigned char)p[1])) return -1;
            continue;
        }
        if (whole > (uint64_t)INT64_MAX / 10) return -1;
        whole = whole * 10 + (uint64_t)(*p - '0');
        digits++;
    }
    if (p < e && *p == '.') {
        for (p++; p < e && tg_is_digit((unsigned char)*p); p++, fdigits++) {
            if (fdigits >= 18) continue;
            frac = frac * 10 + (uint64_t)(*p - '0');
            den *= 10;
        }
    }
    if (!digits && !fdigits) return -1;
    while (p < e && tg_is_space((unsigned char)*p)) p++;
    for (n = 0; p < e; p++, n++) {
        if (n == sizeof unit - 1) return -1;
        unit[n] = (char)tg_lower((unsigned char)*p);
    }
    unit[n] = '\0';
    for (i = 0; i < sizeof size_units / sizeof size_units[0]; i++)
        if (strcmp(unit, size_units[i].name) == 0) mult = size_units[i].mult;
    if (!mult) return -1;
    if (whole > (uint64_t)INT64_MAX / mult) return -1;
    total = whole * mult;
    if (frac) {
        uint64_t part = mul_div_floor(frac, mult, den);
        if (part > (uint64_t)INT64_MAX - total) return -1;
        total += part;
    }
    *bytes = (int64_t)total;
    return 0;
}
