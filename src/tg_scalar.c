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

/* Parse true/false/1/0/yes/no/on/off, case-insensitive, surrounding ASCII
 * whitespace ignored.  Returns 0 and sets *out to 1 or 0, or -1. */
int tg_parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    const char *b, *e;
    size_t i, n;

    if (!s) return -1;
    tg_text_trim(s, &b, &e);
    n = (size_t)(e - b);
    for (i = 0; i < 4; i++) {
        if (tg_text_eq_ci(b, n, yes[i])) { *out = 1; return 0; }
        if (tg_text_eq_ci(b, n, no[i])) { *out = 0; return 0; }
    }
    return -1;
}
