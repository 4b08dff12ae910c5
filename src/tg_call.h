/*
 * tg_call.h -- one Redis request that a task waits for: the wait begins,
 * the command or script goes out, and the reply comes back to the task as
 * Lua values (tg_reply.h), converted under protection.  Also the Lua module
 * "tg.redis" (call, script, down, stats) that plans and specs use for raw
 * commands.
 *
 * Ownership: each request holds a reference on its task until its callback
 * has run; the wait token tells whether the task still wants the reply.
 */
#ifndef TG_CALL_H
#define TG_CALL_H

#include "tg_redis.h"
#include "tg_rt.h"

/* The transport of L's runtime; raises "closed" when there is none or it is
 * down (what names the call in the message). */
tg_redis_t *tg_call_redis(lua_State *L, const char *what);

/* Begin the running task's wait (kind and name as tg_wait_begin takes
 * them; timeout < 0: the run's deadline; what names it in messages) and
 * send argv -- a script when script >= 0, with nkeys keys first.  The wait
 * ends with the converted reply, or with "redis" (an error reply),
 * "closed", "timeout", ...  Use as `return tg_call_yield(L, ...)`. */
int tg_call_yield(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                  const char *what, int script, int nkeys, int argc, const char **argv,
                  const size_t *lens);
/* The same for a script whose argv[mark] is set to "1" on a resend after a
 * dropped connection (tg_redis_eval_marked). */
int tg_call_yield_marked(lua_State *L, int kind, const char *name, size_t nlen, double timeout,
                         const char *what, int script, int nkeys, int argc, const char **argv,
                         const size_t *lens, int mark);

int luaopen_tg_redis(lua_State *L);

#endif
