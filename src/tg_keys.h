/*
 * tg_keys.h -- the Redis key layout of a run: the one place where a key
 * string is built.  C units call it directly; Lua reaches it through the
 * `tg.keys` module (tg_inst.c), so both always agree.
 *
 * With P = run:<run>:plan:<plan>:case:<case>:
 *
 *   P:states:<state>          counter (INCR)                 Go SDK compatible
 *   P:topics:<topic>          stream, field p = JSON value   Go SDK compatible
 *   P:run_events              stream, field p = JSON event   Go SDK compatible
 *   P:tg:members:<state>      BITFIELD of u32 slots: slot i's top bit = target i
 *                             awaited, its low 31 bits = instance i's seq
 *   P:tg:notify               stream: s/n = state reached count, d = instance died
 *   P:tg:dead                 set of dead sids
 *   P:tg:sessions             zset sid -> expiry (ms)
 *   P:tg:run                  the run's marker: which launch made it (a restart
 *                             of Redis without persistence loses it)
 *   P:tg:inbox:<process>      stream: hand-overs to this process's waiters
 *   P:tg:sem:<name>, P:tg:mutex:<name>, P:tg:election:<name>, P:tg:queue:<name>,
 *   P:tg:counter:<name>       coordination resources (derived keys: scripts/coord.lua)
 *   P:tg:ops:<state>          hash op id -> first answer (idempotent entries)
 *   P:tg:op:<op id>           first answer of another idempotent operation
 *   P:tg:<name>               anything else of tgrun's own
 *
 * Names may hold any byte, NUL included; lengths are explicit everywhere.
 * States and topics keep the user's name byte for byte (the Go SDK builds
 * the same keys).  Every other name -- whatever lands under P:tg: -- is
 * escaped (':' as %3A, '%' as %25), so that no user name can address
 * another key: a semaphore named "s:q" is P:tg:sem:s%3Aq, not the queue of
 * semaphore "s" (P:tg:sem:s:q).  Pure libc, no global state.
 */
#ifndef TG_KEYS_H
#define TG_KEYS_H

#include <stddef.h>

typedef enum tg_key_kind {
    TG_KEY_STATE, TG_KEY_TOPIC, TG_KEY_RUN_EVENTS,
    TG_KEY_MEMBERS, TG_KEY_NOTIFY, TG_KEY_DEAD, TG_KEY_SESSIONS,
    TG_KEY_INBOX, TG_KEY_SEM, TG_KEY_MUTEX, TG_KEY_ELECTION, TG_KEY_QUEUE,
    TG_KEY_COUNTER, TG_KEY_OPS, TG_KEY_OP, TG_KEY_RUN, TG_KEY_TG,
    TG_KEY_NKINDS
} tg_key_kind_t;

/* Write run:<run>:plan:<plan>:case:<case> into buf (cap bytes, always
 * NUL-terminated when cap > 0).  Returns the full length, as snprintf does:
 * a result >= cap means it did not fit. */
size_t tg_keys_prefix(char *buf, size_t cap, const char *run, const char *plan, const char *case_name);

/* Write kind's key for name (nlen bytes; ignored by kinds without a name)
 * under prefix P (plen bytes) into buf (cap bytes, NUL-terminated when cap
 * > 0).  Returns the full length; >= cap means it did not fit. */
size_t tg_key(char *buf, size_t cap, const char *P, size_t plen, tg_key_kind_t kind,
              const char *name, size_t nlen);

/* The same, malloc'd (the caller frees); *len gets its length.  NULL on
 * ENOMEM. */
char *tg_key_new(const char *P, size_t plen, tg_key_kind_t kind, const char *name, size_t nlen,
                 size_t *len);

/* Write name escaped as under P:tg: (':' -> %3A, '%' -> %25) into buf
 * (cap bytes, NUL-terminated when cap > 0).  Returns the full length. */
size_t tg_key_escape(char *buf, size_t cap, const char *name, size_t nlen);

/* Does kind take a name? */
int tg_key_named(tg_key_kind_t kind);

/* The kind whose Lua name is s ("state", "topic", ..., "tg"), or -1; and
 * back. */
int tg_key_kind_of(const char *s);
const char *tg_key_lua_name(tg_key_kind_t kind);

#endif
