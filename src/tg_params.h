/*
 * tg_params.h -- parsing of everything a test plan is configured with.
 *
 * Purpose: turn the strings tgrun receives from the command line and the
 * environment (TEST_INSTANCE_PARAMS, --param, --group, REDIS_HOST/PORT,
 * redis URLs, RFC 3339 timestamps) into checked C values, and back where
 * a child process needs them.  Pure libc, no I/O, no global state.
 *
 * Invariants:
 *   - A kvlist never holds the same key twice: tg_kvlist_set() replaces.
 *     Items keep insertion order; a replaced key keeps its old position.
 *   - Everything parsed from TEST_INSTANCE_PARAMS or --param is
 *     representable again by tg_params_format(): keys are non-empty and
 *     contain neither '=' nor '|', values contain no '|'.  Testground has
 *     no escaping, so a '|' can never travel inside a value.
 *   - Parsers are strict: the whole input must be consumed.  On failure
 *     they return -1, leave their output arguments untouched (except
 *     where noted) and, when given an err buffer, write one sentence that
 *     quotes the offending input and says how to fix it.  Quoted inputs
 *     are escaped and capped in length; redis passwords are shown as ***.
 *
 * Ownership: a kvlist owns its items and every key/value string (all
 * malloc'd copies).  The caller owns the tg_kvlist_t itself (usually on
 * the stack, zero-initialised: tg_kvlist_t l = {0};) and must release it
 * with tg_kvlist_free().  tg_params_format() returns a malloc'd string the
 * caller frees.  Nothing else allocates memory that outlives a call.
 */
#ifndef TG_PARAMS_H
#define TG_PARAMS_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------- key/value lists */

typedef struct tg_kv { char *key; char *value; } tg_kv_t;
typedef struct tg_kvlist { tg_kv_t *items; size_t len, cap; } tg_kvlist_t;

/* Free all items and strings; l is left empty and reusable. */
void tg_kvlist_free(tg_kvlist_t *l);
/* Replace if key exists (in place), else append; copies. 0 or -1 ENOMEM. */
int tg_kvlist_set(tg_kvlist_t *l, const char *key, const char *value);
/* Value owned by l, or NULL if absent. */
const char *tg_kvlist_get(const tg_kvlist_t *l, const char *key);
/* TEST_INSTANCE_PARAMS "k1=v1|k2=v2" (split on the first '='; empty
 * segments skipped; NULL = "") merged into l.  0 or -1; l unchanged on a
 * syntax error. */
int tg_params_parse(tg_kvlist_t *l, const char *s, char *err, size_t errlen);
/* One "--param KEY=VALUE" into l; '|' anywhere is rejected.  0 or -1. */
int tg_param_parse_one(tg_kvlist_t *l, const char *kv, char *err,
                       size_t errlen);
/* "k1=v1|k2=v2", malloc'd (caller frees); NULL on ENOMEM or an entry
 * TEST_INSTANCE_PARAMS cannot carry. */
char *tg_params_format(const tg_kvlist_t *l);

/* --------------------------------------------------- typed values */

/* Strict: the whole string (ASCII whitespace trimmed) must parse.  0 and
 * *out set, or -1 and *out untouched. */
int tg_parse_int(const char *s, long long *out);     /* decimal, +/- sign */
int tg_parse_number(const char *s, double *out);     /* finite strtod() */
int tg_parse_bool(const char *s, int *out); /* true/false 1/0 yes/no on/off */

/* --------------------------------------------------- --group NAME=COUNT */

/* NAME of [A-Za-z0-9_.-] (< namelen bytes), COUNT >= 1.  0 or -1. */
int tg_group_spec_parse(const char *spec, char *name, size_t namelen,
                        long *count, char *err, size_t errlen);

/* --------------------------------------------------- redis addresses */

typedef struct tg_redis_addr {
    int is_unix;            /* 1: path is a unix socket */
    char host[256];         /* without IPv6 brackets */
    int port;               /* default 6379 */
    char path[108];
    char password[256];     /* "" if none */
    char user[128];         /* "" if none (redis 6 ACL user) */
    int db;                 /* default 0 */
} tg_redis_addr_t;

/* redis://[[user]:password@]host[:port][/db] (host may be [v6]),
 * unix:///path or unix:/path [?db=N&password=P&user=U], or plain host,
 * host:port, [v6]:port.  User/password percent-decoded.  0 or -1. */
int tg_redis_addr_parse(const char *url, tg_redis_addr_t *out, char *err,
                        size_t errlen);
/* REDIS_HOST/REDIS_PORT values; NULL or "" = localhost / 6379.  0 or -1. */
int tg_redis_addr_from_env(const char *host, const char *port,
                           tg_redis_addr_t *out, char *err, size_t errlen);
/* "host:port", "[v6]:port" or "unix:/path", no credentials.  Returns buf. */
const char *tg_redis_addr_str(const tg_redis_addr_t *a, char *buf,
                              size_t len);

/* --------------------------------------------------- RFC 3339 time */

/* RFC 3339 to ns since the Unix epoch (UTC), computed arithmetically.
 * 0 or -1 (malformed, out of range, or outside int64: ~1677-2262). */
int tg_rfc3339_parse(const char *s, int64_t *unix_ns);
/* "2006-01-02T15:04:05.123456789Z" (UTC, 9 digits); len >= 31, 40 is safe. */
void tg_rfc3339_format(int64_t unix_ns, char *buf, size_t len);

#endif
