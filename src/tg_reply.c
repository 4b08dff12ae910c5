/* tg_reply.c -- see tg_reply.h. */
#include "tg_reply.h"

static int push(lua_State *L, const redisReply *r, int depth, int in_array) {
    if (depth > 64 || !lua_checkstack(L, 3)) return -1;
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        lua_pushlstring(L, r->str, r->len);
        return 0;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)r->integer);
        return 0;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            if (push(L, r->element[i], depth + 1, 1) < 0) {
                lua_pop(L, 1);
                return -1;
            }
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return 0;
    case REDIS_REPLY_NIL:
    default:
        if (in_array) lua_pushboolean(L, 0);
        else lua_pushnil(L);
        return 0;
    }
}

int tg_reply_push(lua_State *L, const redisReply *r) {
    return push(L, r, 0, 0);
}
