/*
 * tg_reply.h -- hiredis replies as Lua values.
 *
 * The conversion follows the one Redis itself uses for scripts: a bulk or
 * status string becomes a Lua string, an integer a Lua integer, an array a
 * sequence; a nil reply is nil at the top level and false inside an array
 * (so arrays keep their length); an error reply becomes the string of the
 * error.  Replies belong to hiredis and die when the callback returns, so
 * callers convert before returning.  No uv.h here: the unit is pure.
 */
#ifndef TG_REPLY_H
#define TG_REPLY_H

#include <lua.h>
#include <hiredis/hiredis.h>

/* Push r converted as above.  Returns 0, or -1 (nothing pushed) when the
 * reply nests deeper than 64 or the Lua stack cannot grow. */
int tg_reply_push(lua_State *L, const redisReply *r);

#endif
