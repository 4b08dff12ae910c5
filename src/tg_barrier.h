/*
 * tg_barrier.h -- states and barriers over the transport: entering a state,
 * and tasks waiting until a state's count reaches their target.
 *
 * A waiter is registered locally before the script that enters or awaits is
 * sent, and released by the run's notify stream (P:tg:notify, read by the
 * transport's stream reader on this unit's behalf) or by a once-a-second
 * safety re-check, which also releases barriers entered by clients that
 * only INCR (Testground's Go SDK).  Deaths announced on the notify stream
 * make every local barrier check whether it can still complete
 * (peer_failed).  See docs/design.md for the wake-up protocol.
 *
 * Ownership: the unit's state (rt->barriers) is made by tg_barrier_attach
 * and freed by tg_barrier_detach; a waiter lives exactly as long as its wait.
 */
#ifndef TG_BARRIER_H
#define TG_BARRIER_H

#include "tg_rt.h"

/* Start serving barriers of the run (rt->prefix) on rt->redis: read
 * where the notify stream is and how many peers already died, then watch
 * the stream.  The replies come during the caller's tg_redis_settle().
 * 0 or -1 (ENOMEM). */
int tg_barrier_attach(tg_rt_t *rt);
/* Stop (every waiter must be gone: instances are freed first) and free. */
void tg_barrier_detach(tg_rt_t *rt);

/* The Lua module "tg.barrier.c": signal, wait, signal_and_wait, stats. */
int luaopen_tg_barrier_c(lua_State *L);

#endif
