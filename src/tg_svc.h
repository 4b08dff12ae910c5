/*
 * tg_svc.h -- the sync-service client: states, barriers, topics and outcome
 * events through a Testground sync service (`tgrun serve`, or Testground's
 * own) instead of Redis.  One websocket per process, shared by every
 * instance (--inproc too) and every wait in it.
 *
 *  - Requests carry ids "1", "2", ... of this process; a response finds its
 *    waiter by id.  A wait that ends first (timeout, cancel) forgets its id
 *    (a late answer is dropped) and tells the server with is_cancel, which
 *    tgrun serve honours and a reference server ignores.
 *  - signal_and_wait sends signal_entry and barrier together (one round
 *    trip).  A barrier that times out says how many entered when the
 *    server is tgrun's own (its "count" request: a read, no entry);
 *    against another server the message says the count is not known.
 *  - Subscriptions: one per topic per process, whose values are kept once
 *    and read by every local subscription as a cursor (as tg_topic does).
 *    Values are the publishers' JSON text, decoded only when taken.
 *  - Loss: when the socket drops, every wait fails with code "closed" and
 *    one message (what was waited for, and why the connection ended);
 *    later calls fail at once the same way.  tgrun does not reconnect: a
 *    run does not outlive its sync service.
 *
 * Ownership: tg_svc_attach makes rt->svc (and the connection) and runs the
 * loop until the handshake is done; tg_svc_detach closes and frees it.  A
 * request's waiter lives exactly as long as its wait.
 */
#ifndef TG_SVC_H
#define TG_SVC_H

#include "tg_rt.h"

/* Connect rt to the sync service at ws://host:port/path for the run of
 * rt->prefix, running the loop at most timeout seconds.  0, or -1 with one
 * sentence in err. */
int tg_svc_attach(tg_rt_t *rt, const char *host, int port, const char *path, double timeout,
                  char *err, size_t errlen);
/* Can a sync service be reached there?  Connects, completes the handshake
 * and closes again, running loop at most timeout seconds (a local run asks
 * before it starts any instance).  0, or -1 with one sentence in err. */
int tg_svc_probe(uv_loop_t *loop, const char *host, int port, const char *path, double timeout,
                 char *err, size_t errlen);
/* Close the connection (after every instance is gone) and free. */
void tg_svc_detach(tg_rt_t *rt);
/* What the connection already holds, read now (rt->catch_up: before a
 * wait is declared timed out).  data: the runtime. */
void tg_svc_catch_up(void *rt);

/* Requests in flight (and subscriptions open), for tests. */
size_t tg_svc_inflight(const tg_rt_t *rt);

/* The Lua module "tg.svc.c": active, where, down, signal, wait,
 * signal_and_wait, publish, subscribe (and the "tg.svcsub" methods
 * next_raw, close, buffered), event, stats.  The calls mirror tg.barrier.c
 * and tg.topic.c so that tg.sync picks one backend once. */
int luaopen_tg_svc_c(lua_State *L);

#endif
