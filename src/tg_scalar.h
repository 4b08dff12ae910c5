/*
 * tg_scalar.h -- strict parsers of single values: integers, numbers,
 * booleans.  The whole string (ASCII whitespace trimmed) must parse; on
 * failure they return -1 and leave *out untouched.  Pure libc.
 */
#ifndef TG_SCALAR_H
#define TG_SCALAR_H

/* Strict: the whole string (ASCII whitespace trimmed) must parse.  0 and
 * *out set, or -1 and *out untouched. */
int tg_parse_int(const char *s, long long *out);     /* decimal, +/- sign */
int tg_parse_number(const char *s, double *out);     /* finite strtod() */
int tg_parse_bool(const char *s, int *out); /* true/false 1/0 yes/no on/off */

#endif
