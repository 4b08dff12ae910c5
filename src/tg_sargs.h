/*
 * tg_sargs.h -- the argument vectors of the server-side scripts that states
 * and topics run: enter.lua, enter_batch.lua, await.lua and publish.lua (each script's
 * header says what its arguments mean).  The one place that knows their
 * order, used by tg_barrier and tg_topic (tgrun instances) and tg_serve
 * (the sync service); coord.lua's vector is tg_coord_argv.
 *
 * Each builder fills a struct that holds the keys it built and the argv
 * and lens that point into it and into the caller's strings (which must
 * outlive the struct's use).  Pure: no libuv, no hiredis.
 */
#ifndef TG_SARGS_H
#define TG_SARGS_H

#include <stddef.h>

#define TG_KEY_MAX 1100         /* the longest key built here */

/* enter.lua: KEYS state, members, notify, ops; ARGV target, ttl, sid, op
 * id, resend. */
#define TG_ENTER_NKEYS 4
#define TG_ENTER_ARGC 9
#define TG_ENTER_RESEND 8       /* argv index of ARGV[5], "1" on a resend */
typedef struct tg_enter_args {
    char state[TG_KEY_MAX], members[TG_KEY_MAX], notify[TG_KEY_MAX], ops[TG_KEY_MAX];
    char target[32];
    const char *argv[TG_ENTER_ARGC];
    size_t lens[TG_ENTER_ARGC];
} tg_enter_args_t;

/* Enter state name (nlen bytes) of the run with prefix P: target < 0 when
 * the caller only signals; sid and op may be "" (no instance number, no op
 * id).  0, or -1 when a key would not fit. */
int tg_enter_args(tg_enter_args_t *e, const char *P, size_t plen, const char *name, size_t nlen,
                  long long target, const char *ttl, const char *sid, size_t sidlen, const char *op, size_t oplen);

/* enter_batch.lua: KEYS state, members, notify, ops; ARGV ttl, resend,
 * batch id, t, e, waits, lowest and highest instance number; then t
 * targets, e instance numbers, and one (i, op id) pair per entry i that has
 * an op id.  tg_batch_head fills the first TG_BATCH_HEAD arguments; the
 * caller appends the rest in that order. */
#define TG_BATCH_NKEYS 4
#define TG_BATCH_HEAD 12        /* arguments before the targets */
#define TG_BATCH_RESEND 5       /* argv index of ARGV[2], "1" on a resend */
typedef struct tg_batch_head {
    char state[TG_KEY_MAX], members[TG_KEY_MAX], notify[TG_KEY_MAX], ops[TG_KEY_MAX];
    char nt[24], ne[24], lo[24], hi[24];
    const char *argv[TG_BATCH_HEAD];
    size_t lens[TG_BATCH_HEAD];
} tg_batch_head_t;

/* The head of a batch for state name (nlen bytes) of the run with prefix P:
 * bid (blen bytes, may be empty) the batch id, nt targets and ne entries
 * follow, waits says whether a plain wait is among the targets, lo..hi the
 * entries' instance numbers (lo > hi: none).  0, or -1 when a key would not
 * fit. */
int tg_batch_head(tg_batch_head_t *h, const char *P, size_t plen, const char *name, size_t nlen,
                  const char *ttl, const char *bid, size_t blen, int nt, int ne, int waits,
                  long long lo, long long hi);

/* await.lua: KEYS state, members; ARGV target, ttl. */
#define TG_AWAIT_NKEYS 2
#define TG_AWAIT_ARGC 4
typedef struct tg_await_args {
    char state[TG_KEY_MAX], members[TG_KEY_MAX], target[32];
    const char *argv[TG_AWAIT_ARGC];
    size_t lens[TG_AWAIT_ARGC];
} tg_await_args_t;

int tg_await_args(tg_await_args_t *a, const char *P, size_t plen, const char *name, size_t nlen,
                  long long target, const char *ttl);

/* publish.lua: KEYS topic, op record; ARGV value, ttl, resend. */
#define TG_PUBLISH_NKEYS 2
#define TG_PUBLISH_ARGC 5
#define TG_PUBLISH_RESEND 4     /* argv index of ARGV[3] */
typedef struct tg_publish_args {
    char topic[TG_KEY_MAX], op[TG_KEY_MAX];
    const char *argv[TG_PUBLISH_ARGC];
    size_t lens[TG_PUBLISH_ARGC];
} tg_publish_args_t;

/* Publish value (vlen bytes, JSON) to the stream key (a topic, or the
 * run's run_events) of the run with prefix P; op is an id unique in the run
 * (a resend finds the first answer under it). */
int tg_publish_args(tg_publish_args_t *p, const char *P, size_t plen, const char *key, size_t klen,
                    const char *value, size_t vlen, const char *ttl, const char *op);

#endif
