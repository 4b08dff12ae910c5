/*
 * tg_redis_int.h -- the transport's own state, shared by its two files:
 * tg_redis.c (connections, requests, scripts) and tg_streams.c (the
 * blocking stream reader).  Nothing outside the transport includes it.
 */
#ifndef TG_REDIS_INT_H
#define TG_REDIS_INT_H

#include <hiredis/async.h>

#include "tg_map.h"
#include "tg_redis.h"
#include "tg_scripts.h"

typedef struct conn {
    tg_redis_t *r;
    redisAsyncContext *ac;      /* NULL once hiredis freed it */
    const char *name;
    int connected;
} conn_t;

/* One watched stream. */
typedef struct stream {
    char *key;
    size_t klen;
    char last_id[48];
    const tg_stream_ops_t *ops;
    void *data;
    uint64_t gen;               /* watch_gen when it was added */
} stream_t;

typedef struct listener {
    tg_redis_lost_fn lost;
    tg_redis_restored_fn restored;
    void *data;
    struct listener *next;
} listener_t;

enum { TG_REDIS_UP = 0, TG_REDIS_RECONNECTING, TG_REDIS_DOWN };

struct req;

struct tg_redis {
    uv_loop_t *loop;
    tg_redis_addr_t a;
    conn_t cmd, blk;
    long long blk_id;
    int state, closing, opening;
    char down_msg[1400];
    char addr[300];
    char last_err[1400];
    char sha[TG_NSCRIPTS][41];
    size_t inflight;            /* requests whose callback has not run */
    struct req *sent_head, *sent_tail;      /* handed to hiredis (tg_redis.c) */
    struct req *queued_head, *queued_tail;  /* waiting for a connection */
    listener_t *listeners;
    /* reconnecting */
    double retry_secs;
    uint64_t reconnect_end;
    uint64_t backoff_ms;
    int attempt_failed, probe_failed;
    unsigned reconnects;
    uv_timer_t rtimer;
    char *probe_block;
    char **probe_argv;
    size_t *probe_lens;
    int probe_argc;
    int (*probe_check)(void *data, const redisReply *rep, char *why, size_t whylen);
    void *probe_data;
    /* the stream reader */
    tg_map_t streams;
    int reading;
    uint64_t watch_gen, xread_gen;
    int xread_inflight, unblock_pending, unblock_retries;
    uv_timer_t retry, reissue, tick;
    /* start-up */
    int startup_pending, startup_failed;
    char *startup_err;
    size_t startup_errlen;
    tg_redis_stats_t stats;
};

/* tg_streams.c */
void tg_streams_init(tg_redis_t *r);
void tg_streams_free(tg_redis_t *r);
void tg_streams_stop(tg_redis_t *r);
/* After a reconnect: read again, each stream from where it was. */
void tg_streams_resume(tg_redis_t *r);

#endif
