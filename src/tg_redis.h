/*
 * tg_redis.h -- the process's two Redis connections and what runs over them.
 *
 *  - "cmd" carries every command and script of every task and instance of the
 *    process, pipelined by hiredis.
 *  - "blk" carries one XREAD BLOCK at a time over every stream the process
 *    watches: the topics that local subscriptions read, and the run's notify
 *    stream on which barrier releases are pushed.  Adding a stream unblocks
 *    the pending read with CLIENT UNBLOCK (on cmd); nothing reconnects.
 *
 * Both connections go through our own libuv adapter (hiredis 0.14's loses
 * callbacks when a connect fails).  When either connection drops, every
 * pending wait that needs Redis fails with code "closed", and later calls
 * fail at once: a run does not outlive its Redis.
 *
 * Ownership: tg_redis_t belongs to the runtime (rt->redis).  A topic stream's
 * log of values is shared by every local subscription to that topic and is
 * freed with the last of them.
 */
#ifndef TG_REDIS_H
#define TG_REDIS_H

#include "tg_params.h"
#include "tg_rt.h"

/* Connect both connections to addr (AUTH/SELECT as the address says), start
 * watching the run's notify stream (prefix:tg:notify) and this process's
 * inbox (prefix:tg:inbox:<id>), and return when all is ready.  Runs rt->loop
 * until then, at most timeout seconds.  0, or -1 with one sentence in err. */
int tg_redis_open(tg_rt_t *rt, const tg_redis_addr_t *addr, const char *prefix,
                  double timeout, char *err, size_t errlen);
/* Disconnect and free; pending callbacks fire and find their waits stale. */
void tg_redis_close(tg_rt_t *rt);
/* Add the Redis functions (call, script, barrier, subscribe, ...) to the
 * table at the top of L's stack and register the subscription metatable. */
void tg_redis_open_lua(lua_State *L);

/* Counters for tests and benchmarks. */
typedef struct tg_redis_stats {
    unsigned long long commands, xreads, unblocks, notifies, safety_checks;
} tg_redis_stats_t;
const tg_redis_stats_t *tg_redis_stats(const tg_rt_t *rt);

#endif
