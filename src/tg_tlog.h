/*
 * tg_tlog.h -- a topic's log: the values read from one topic, in order,
 * shared by every subscription of the process (each keeps its own
 * position in it).  Pure: no libuv, no Redis.  The three readers of topics
 * -- tg_topic (from Redis), tg_svc (from a sync service) and tg_serve (for
 * its websocket clients) -- keep their logs in it.
 *
 * Ownership: the log owns its values (tg_tlog_free frees them); a value's
 * address stays valid until then (the log grows an array of pointers).
 */
#ifndef TG_TLOG_H
#define TG_TLOG_H

#include <stddef.h>

typedef struct tg_tmsg {
    long long seq;              /* 1-based position in the log */
    size_t len;
    char data[];                /* len bytes, then a NUL */
} tg_tmsg_t;

typedef struct tg_tlog {
    tg_tmsg_t **v;
    size_t n, cap;
} tg_tlog_t;

/* Append a copy of p[0..len).  The value, or NULL (nothing appended) when
 * memory ran out. */
tg_tmsg_t *tg_tlog_append(tg_tlog_t *l, const char *p, size_t len);
/* Free every value and the array; the log is empty again. */
void tg_tlog_free(tg_tlog_t *l);

#endif
