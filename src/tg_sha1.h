/*
 * tg_sha1.h -- SHA-1 (FIPS 180-4) as a lowercase hex digest.
 *
 * Used to compute the EVALSHA digest of a Redis script, which is the SHA-1
 * of the exact script bytes.  One-shot, no allocation, no global state; the
 * caller owns both the input and the 41-byte output buffer.  SHA-1 is used
 * here only as Redis's script identifier, not for security.
 */
#ifndef TG_SHA1_H
#define TG_SHA1_H

#include <stddef.h>

/* Write the SHA-1 of len bytes at data into out as 40 lowercase hex chars
 * followed by a NUL.  data may be NULL when len is 0.  Never fails. */
void tg_sha1_hex(const void *data, size_t len, char out[41]);

#endif
