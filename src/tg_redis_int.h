/*
 * tg_redis_int.h -- what the Redis units share inside the runtime: the
 * connection state (tg_redis.c), the barrier and coordination waiters
 * (tg_barrier.c), and the request plumbing both use.  Not for other units.
 */
#ifndef TG_REDIS_INT_H
#define TG_REDIS_INT_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "tg_map.h"
#include "tg_redis.h"

#define SUB_META "tg.sub"
#define MAX_ARGS 256
#define MAX_SCRIPTS 32
#define SAFETY_MS 1000

typedef struct tg_redis tg_redis_t;
typedef struct conn conn_t;

struct conn {
    tg_redis_t *r;
    redisAsyncContext *ac;      /* NULL once hiredis freed it */
    const char *name;
    int connected;
};

/* One value read from a topic, shared by every local subscription. */
typedef struct msg {
    long long seq;
    size_t len;
    char data[];
} msg_t;

typedef struct sub sub_t;

typedef struct stream {
    char *key;
    size_t klen;
    char last_id[48];
    msg_t **log;
    size_t nlog, cap;
    sub_t *subs;
    int is_notify, is_inbox;
    uint64_t gen;               /* watch_gen when it was added */
} stream_t;

/* A subscription: a cursor into its stream's log (the "tg.sub" userdata). */
struct sub {
    tg_redis_t *r;
    stream_t *stream;           /* NULL once closed */
    size_t pos;
    tg_task_t *task;            /* the task waiting in sub:next, if any */
    uint64_t token;
    sub_t *prev, *next;
    char topic[128];
};

/* A task waiting at a barrier; lives exactly as long as that wait. */
typedef struct bwaiter {
    tg_task_t *task;
    long long target, seq;
    int replied, released;
    int tolerant;               /* the caller expects deaths: no peer_failed */
    struct blist *list;
    struct bwaiter *prev, *next;
    char label[128];
} bwaiter_t;

/* The local waiters of one state key, and the last count seen for it. */
typedef struct blist {
    long long count;
    long long instances;        /* the run's instance count, for peer_failed */
    int checking;               /* a feasibility check is in flight */
    bwaiter_t *head;
    size_t klen;
    char key[];
} blist_t;

struct tg_redis {
    tg_rt_t *rt;
    conn_t cmd, blk;
    long long blk_id;
    int down;
    char down_msg[640];
    char addr[300];
    tg_map_t streams, barriers;
    uint64_t watch_gen, xread_gen;
    int xread_inflight, unblock_pending, unblock_retries;
    uv_timer_t safety, retry, reissue, tick;
    int nscripts;
    char sha[MAX_SCRIPTS][41];
    int startup_pending, startup_failed;
    char *startup_err;
    size_t startup_errlen;
    tg_redis_stats_t stats;
    char proc_id[16];           /* this process, for its inbox and ticket ids */
    char prefix[512];           /* run:<run>:plan:<plan>:case:<case> */
    char inbox[600];            /* P:tg:inbox:<proc_id> */
    tg_map_t tickets;           /* ticket id -> ticket_t, for waits served through the inbox */
    unsigned long long ticket_seq;
    long long ndead;            /* peers known to have failed or died */
    char **sessions;            /* sids of this process's instances (tg_session.c) */
    int nsessions, capsessions, session_timer_on;
    long long session_ttl_ms;
    uv_timer_t session_timer;
};

enum { REQ_CALL, REQ_SCRIPT, REQ_BARRIER, REQ_TICKET };

typedef struct req {
    tg_redis_t *r;
    tg_task_t *task;
    uint64_t token;
    int kind, script, argc, retried;
    char **argv;                /* scripts only: kept (in the request's own block) to resend as EVAL on NOSCRIPT */
    size_t *lens;
} req_t;


/* tg_redis.c */
void tg_redis_req_free(req_t *q);
tg_redis_t *tg_redis_of(lua_State *L);
int tg_redis_check_up(lua_State *L, tg_redis_t *r, const char *what);
void tg_redis_on_reply(redisAsyncContext *ac, void *reply, void *priv);
int tg_redis_table_args(lua_State *L, int idx, const char **argv, size_t *lens, int at, int max);
int tg_redis_send_for(tg_redis_t *r, tg_task_t *t, int kind, int script, int argc,
                      const char **argv, size_t *lens, int keep);
int tg_redis_script_index(lua_State *L, const char *name);
int tg_redis_script_argv(lua_State *L, tg_redis_t *r, int si, int kidx, int aidx,
                         const char **argv, size_t *lens, char *nkeys);
void tg_redis_lost(tg_redis_t *r, const char *why);

/* tg_barrier.c */
void tg_barrier_dead(tg_redis_t *r, const char *sid, size_t len);
void tg_barrier_unlink(bwaiter_t *w);
void tg_barrier_on_reply(tg_redis_t *r, req_t *q, redisReply *rep);
void tg_barrier_count(tg_redis_t *r, const char *key, size_t klen, long long n);
void tg_barrier_on_safety(uv_timer_t *h);
void tg_barrier_open_lua(lua_State *L);

/* tg_coord.c */
void tg_coord_inbox(tg_redis_t *r, const char *w, size_t wlen, const char *v, size_t vlen,
                    const char *x, size_t xlen, const char *t, size_t tlen);
void tg_coord_lost(tg_redis_t *r);
void tg_coord_on_reply(req_t *q, redisReply *rep);
void tg_coord_free(tg_redis_t *r);
void tg_coord_open_lua(lua_State *L);

/* tg_session.c */
void tg_session_free(tg_redis_t *r);
void tg_session_open_lua(lua_State *L);

#endif
