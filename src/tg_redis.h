/*
 * tg_redis.h -- the transport: a process's two connections to Redis and
 * what travels over them.  It knows nothing of barriers, locks, sessions or
 * topics; those units (and anything added later) plug in from above:
 *
 *  - Requests.  Every command or script carries its own completion callback,
 *    its private data and a 64-bit tag, as hiredis's own API does.  The
 *    callback runs exactly once: with the reply, or with NULL when the
 *    connection was lost first.  "cmd" carries every request of every task
 *    and instance of the process, pipelined.
 *  - Scripts.  The scripts/ folder is compiled in (tg_scripts.h names them);
 *    each is loaded once per connection with SCRIPT LOAD and then run with
 *    EVALSHA.  A NOSCRIPT reply (a restarted server, SCRIPT FLUSH) loads it
 *    again and resends the request, once.
 *  - Streams.  "blk" carries one XREAD BLOCK at a time over every stream
 *    that a user watches (tg_streams.c); each stream has the handler its
 *    owner registered.  Watching a new stream unblocks the pending read with
 *    CLIENT UNBLOCK (on cmd); nothing reconnects.
 *  - Drops.  When a connection drops, both are made again (with backoff,
 *    for at most the retry bound: tg_redis_set_retry, default 5 s); the
 *    requests that were in flight are sent again -- a script request may
 *    name an argument (tg_redis_eval_marked) that is set to "1" on such a
 *    resend, so that the script answers as it did the first time instead of
 *    doing it twice -- and requests made meanwhile wait for the connection.
 *    Before anything is resent, the probe the run set-up registered
 *    (tg_redis_set_probe) checks that the store still holds the run (a
 *    restart without persistence loses it).  Streams are read again from
 *    where they were.  Listeners hear "restored".
 *  - Loss.  When the connection cannot be had back (or the probe fails),
 *    the listeners hear it first (so that waits which are not requests can
 *    end), then every pending request's callback runs with NULL, and later
 *    requests fail at once.
 *
 * Status convention (all of src/): 0 or a positive count for success, a
 * negative number for failure -- a libuv code where libuv said it, else -1;
 * functions that can say why take (char *err, size_t errlen) and write one
 * sentence there.
 *
 * Ownership: tg_redis_open() returns a tg_redis_t that tg_redis_close()
 * frees; the runtime keeps it in rt->redis.  A request's argv is copied at
 * send time (callers may reuse their buffers at once).  A reply lives only
 * during its callback.  A watched stream's handler data belongs to the
 * watcher.
 */
#ifndef TG_REDIS_H
#define TG_REDIS_H

#include <stdint.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "tg_addr.h"

typedef struct tg_redis tg_redis_t;

/* A request's completion: rep is the reply (valid only during the call), or
 * NULL when the connection was lost (tg_redis_down() says why). */
typedef void (*tg_redis_cb)(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag);

/* Connect both connections to addr (AUTH/SELECT as the address says, load
 * every script) and return when all is ready, running loop at most timeout
 * seconds.  0 and *out set, or -1 with one sentence in err (and *out NULL). */
int tg_redis_open(tg_redis_t **out, uv_loop_t *loop, const tg_redis_addr_t *addr,
                  double timeout, char *err, size_t errlen);
/* Disconnect and free.  Pending callbacks run with NULL first. */
void tg_redis_close(tg_redis_t *r);

/* Run the loop until no request is in flight, at most timeout seconds
 * (start-up steps of the users).  0, or -1 with one sentence in err. */
int tg_redis_settle(tg_redis_t *r, double timeout, char *err, size_t errlen);

/* Send a command (or queue it while reconnecting).  0, or -1 when the
 * connection is lost for good or memory ran out (cb is then never called).
 * A plain command is resent as it is after a drop: at least once. */
int tg_redis_cmd(tg_redis_t *r, tg_redis_cb cb, void *data, uint64_t tag,
                 int argc, const char **argv, const size_t *lens);
/* Run compiled-in script `script` (TG_SCRIPT_*) with nkeys keys followed by
 * the other arguments in argv (argc in all).  As tg_redis_cmd. */
int tg_redis_eval(tg_redis_t *r, int script, tg_redis_cb cb, void *data, uint64_t tag,
                  int nkeys, int argc, const char **argv, const size_t *lens);
/* The same; argv[mark] (which the caller passes as "" or "0") becomes "1"
 * when the request is resent after a drop that it may have outlived. */
int tg_redis_eval_marked(tg_redis_t *r, int script, tg_redis_cb cb, void *data, uint64_t tag,
                         int nkeys, int argc, const char **argv, const size_t *lens, int mark);

/* How long to try to get a dropped connection back (0: never). */
void tg_redis_set_retry(tg_redis_t *r, double secs);
/* The command sent (and check(data, reply, why, whylen) asked: 0 fine, -1
 * not, with why) after every reconnect, before anything is resent.  0 or
 * -1 (ENOMEM). */
int tg_redis_set_probe(tg_redis_t *r, int argc, const char **argv, const size_t *lens,
                       int (*check)(void *data, const redisReply *rep, char *why, size_t whylen),
                       void *data);
/* Push queued requests to the socket now (a long turn of the loop). */
void tg_redis_flush(tg_redis_t *r);

/* Read and dispatch what has already arrived on the connections, without
 * waiting: replies and notifications that a long turn of plan code (the
 * loop busy resuming thousands of instances) left unread in the socket.
 * The runtime calls it before it declares a wait timed out, so that a
 * timeout means "no answer came", not "the loop did not look".  Not from
 * inside a transport callback. */
void tg_redis_catch_up(tg_redis_t *r);

/* NULL while connected or reconnecting, else why not ("lost the
 * connection to Redis at host:port (...)"). */
const char *tg_redis_down(const tg_redis_t *r);
/* 1 while a dropped connection is being made again. */
int tg_redis_reconnecting(const tg_redis_t *r);
/* The address it connects to (with the credentials), and a script's SHA-1. */
const tg_redis_addr_t *tg_redis_address(const tg_redis_t *r);
const char *tg_redis_script_sha(const tg_redis_t *r, int script);
/* "host:port" or "unix:/path", for messages. */
const char *tg_redis_addr(const tg_redis_t *r);
/* Requests whose callback has not run yet. */
size_t tg_redis_inflight(const tg_redis_t *r);
/* The script's name ("enter") and text. */
const char *tg_redis_script_name(int script);
const char *tg_redis_script_text(int script, size_t *len);

/* Listen for the loss of the connection: lost(data, why) runs once, before
 * the pending requests' callbacks; restored(data) after every reconnect
 * (either may be NULL).  0 or -1 (ENOMEM).  Listeners are removed with
 * tg_redis_off_lost() (by the lost function) or by tg_redis_close(). */
typedef void (*tg_redis_lost_fn)(void *data, const char *why);
typedef void (*tg_redis_restored_fn)(void *data);
int tg_redis_listen(tg_redis_t *r, tg_redis_lost_fn lost, tg_redis_restored_fn restored, void *data);
int tg_redis_on_lost(tg_redis_t *r, tg_redis_lost_fn fn, void *data);
void tg_redis_off_lost(tg_redis_t *r, tg_redis_lost_fn fn, void *data);

/* ---- streams (tg_streams.c) ------------------------------------------ */

/* What the owner of a watched stream is told. */
typedef struct tg_stream_ops {
    /* One entry: its id and its field/value array (k1, v1, k2, v2, ...). */
    void (*entry)(void *data, const char *id, const redisReply *fields);
    /* After the entries of one read (may be NULL). */
    void (*batch)(void *data);
    /* The read failed with an error reply (may be NULL); reading goes on. */
    void (*error)(void *data, const char *msg);
} tg_stream_ops_t;

/* Watch stream key from entry id `from` ("0-0": from the start) with ops.
 * 0, -1 (ENOMEM) or -2 (already watched). */
int tg_redis_watch(tg_redis_t *r, const char *key, size_t klen, const char *from,
                   const tg_stream_ops_t *ops, void *data);
/* Stop watching key; its handler is not called again. */
void tg_redis_unwatch(tg_redis_t *r, const char *key, size_t klen);
/* Begin the blocking reads (after the users' start-up steps). */
void tg_redis_start_reading(tg_redis_t *r);
/* The value of one-letter field c of a stream entry's fields, or NULL. */
const char *tg_stream_field(const redisReply *fields, char c, size_t *len);

/* Counters for tests and benchmarks. */
typedef struct tg_redis_stats {
    unsigned long long commands, xreads, unblocks, reloads;
} tg_redis_stats_t;
/* Reconnects so far. */
unsigned tg_redis_reconnects(const tg_redis_t *r);
const tg_redis_stats_t *tg_redis_stats(const tg_redis_t *r);

#endif
