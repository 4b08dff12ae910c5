/* tg_rfc3339.c -- see tg_rfc3339.h. */
#define _POSIX_C_SOURCE 200809L

#include "tg_rfc3339.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_text.h"


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
        if (!tg_is_digit((unsigned char)(*p)[i])) return -1;
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
        if (!tg_is_digit((unsigned char)*p)) return -1;
        for (i = 0; tg_is_digit((unsigned char)*p); i++, p++)
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
