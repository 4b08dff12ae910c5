/*
 * tg_topic.h -- topics over the transport: publishing a value, and
 * subscriptions that read a topic's stream from its first entry on.
 *
 * One log of values per topic per process, shared by every local
 * subscription to that topic (each is a cursor into it), and one watch of
 * the topic's stream on the transport's blocking reader.  A subscription
 * that does not read never stalls the others.
 *
 * Ownership: the unit's state (rt->topics) is made by tg_topic_attach and
 * freed by tg_topic_detach; a topic's log lives until its last local
 * subscription is closed or collected.
 */
#ifndef TG_TOPIC_H
#define TG_TOPIC_H

#include "tg_rt.h"

/* Start serving topics of the run (rt->prefix).  0 or -1 (ENOMEM). */
int tg_topic_attach(tg_rt_t *rt);
void tg_topic_detach(tg_rt_t *rt);

/* The Lua module "tg.topic.c": publish, subscribe (and the "tg.sub"
 * methods next_raw, close, buffered). */
int luaopen_tg_topic_c(lua_State *L);

#endif
