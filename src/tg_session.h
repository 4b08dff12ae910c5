/*
 * tg_session.h -- the sessions of this process's instances and their one
 * heartbeat.
 *
 * Each instance holds a session: its global_seq in the sorted set
 * P:tg:sessions, scored with the time it lapses.  One timer of the process
 * pushes the expiry of all its instances' sessions forward every ttl/3
 * seconds in one coord.lua "beat" (EVALSHA like every script), which also
 * ends the sessions of other processes that lapsed -- so ten thousand
 * in-process instances cost one call per beat, not ten thousand.  A beat
 * that fails is reported in every instance's log (once per run of
 * failures), not dropped.
 *
 * Ownership: the unit's state (rt->sessions) is made by tg_session_attach
 * and freed by tg_session_detach; it owns copies of the session ids.
 */
#ifndef TG_SESSION_H
#define TG_SESSION_H

#include "tg_rt.h"

int tg_session_attach(tg_rt_t *rt);
void tg_session_detach(tg_rt_t *rt);

/* The Lua module "tg.session.c": start, stop, die, bye. */
int luaopen_tg_session_c(lua_State *L);

#endif
