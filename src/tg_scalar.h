/*
 * tg_scalar.h -- strict parsers of single values: integers, numbers,
 * booleans, durations and byte sizes -- what a test parameter holds.  The
 * whole string (ASCII whitespace trimmed) must parse; on failure they
 * return -1 and leave *out untouched.  Pure libc, no locale, no state.
 *
 * Durations and sizes read what Go plans are given (Testground passes the
 * same strings to every SDK): durations in Go's time.ParseDuration syntax,
 * sizes as go-humanize's ParseBytes (what sdk-go's SizeParam uses) reads
 * them -- SI for "KB"/"K" (1000), IEC for "KiB"/"Ki" (1024).
 */
#ifndef TG_SCALAR_H
#define TG_SCALAR_H

#include <stddef.h>
#include <stdint.h>

/* Strict: the whole string (ASCII whitespace trimmed) must parse.  0 and
 * *out set, or -1 and *out untouched. */
int tg_parse_int(const char *s, long long *out);     /* decimal, +/- sign */
int tg_parse_number(const char *s, double *out);     /* finite strtod() */
/* true/false 1/0 yes/no on/off t/f, any case: everything Go's
 * strconv.ParseBool accepts (1 t T TRUE true True, 0 f F FALSE false
 * False) and what tgrun always took. */
int tg_parse_bool(const char *s, int *out);

/* A duration in Go's syntax, to nanoseconds: an optional sign, then one or
 * more <decimal><unit> ("1h30m", "1.5s", "-2m", "300ms"), units ns, us
 * (or the micro signs U+00B5 / U+03BC followed by s), ms, s, m, h, case
 * as written; a bare "0" is zero.  The magnitude must fit an int64 of
 * nanoseconds (about 292 years).  Fractions are computed as Go does. */
int tg_parse_duration(const char *s, int64_t *ns);
/* Go's Duration.String() form of ns ("1h2m3.5s", "1.5ms", "0s"), except
 * that microseconds are written "us".  buf of at least 40 bytes; returns
 * buf.  tg_parse_duration() reads it back to the same value. */
char *tg_format_duration(int64_t ns, char *buf, size_t len);
/* A byte size: a non-negative decimal (digits, optionally a '.' and a
 * fraction; ',' may group the digits before the point: "1,000"), then
 * optional spaces and a unit, any case: none or B (1), K/KB (1000),
 * Ki/KiB (1024), M/MB, Mi/MiB, G/GB, Gi/GiB, T/TB, Ti/TiB, P/PB, Pi/PiB,
 * E/EB, Ei/EiB.  Computed exactly and truncated to whole bytes ("1.5KiB"
 * = 1536, "0.5B" = 0); at most INT64_MAX bytes. */
int tg_parse_size(const char *s, int64_t *bytes);

#endif
