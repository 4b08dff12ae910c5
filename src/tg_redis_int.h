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
    tg_redis_lost_fn fn;
    void *data;
    struct listener *next;
} listener_t;

struct tg_redis {
    uv_loop_t *loop;
    conn_t cmd, blk;
    long long blk_id;
    int down, closing;
    char down_msg[640];
    char addr[300];
    char sha[TG_NSCRIPTS][41];
    size_t inflight;            /* requests whose callback has not run */
    listener_t *listeners;
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

#endif
