/*
 * tg_params.h -- parsing of everything a test plan is configured with.
 *
 * Purpose: turn the strings tgrun receives from the command line and the
 * environment (TEST_INSTANCE_PARAMS, --param, --group) into checked C values, and
 * back where a child process needs them.  Typed values are tg_scalar.h,
 * Redis addresses tg_addr.h, timestamps tg_rfc3339.h.  Pure libc, no I/O, no global state.
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

/* --------------------------------------------------- --group NAME=COUNT */

/* NAME of [A-Za-z0-9_.-] (< namelen bytes), COUNT >= 1.  0 or -1. */
int tg_group_spec_parse(const char *spec, char *name, size_t namelen,
                        long *count, char *err, size_t errlen);

#endif
