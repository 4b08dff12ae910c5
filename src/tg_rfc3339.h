/*
 * tg_rfc3339.h -- RFC 3339 timestamps (TEST_START_TIME) to and from
 * nanoseconds since the Unix epoch, computed arithmetically (no time zone
 * database, no locale).  Pure libc.
 */
#ifndef TG_RFC3339_H
#define TG_RFC3339_H

#include <stddef.h>
#include <stdint.h>

/* RFC 3339 to ns since the Unix epoch (UTC), computed arithmetically.
 * 0 or -1 (malformed, out of range, or outside int64: ~1677-2262). */
int tg_rfc3339_parse(const char *s, int64_t *unix_ns);
/* "2006-01-02T15:04:05.123456789Z" (UTC, 9 digits); len >= 31, 40 is safe. */
void tg_rfc3339_format(int64_t unix_ns, char *buf, size_t len);

#endif
