/* test_reply.c -- hiredis replies converted to Lua values, built by hand. */
#include <stdlib.h>
#include <lauxlib.h>
#include <lualib.h>

#include "tg_reply.h"
#include "tg_test.h"

static redisReply *mk(int type) {
    redisReply *r = calloc(1, sizeof *r);
    r->type = type;
    return r;
}

static redisReply *str(int type, const char *s) {
    redisReply *r = mk(type);
    r->str = (char *)s;
    r->len = strlen(s);
    return r;
}

static redisReply *arr(size_t n, redisReply **els) {
    redisReply *r = mk(REDIS_REPLY_ARRAY);
    r->elements = n;
    r->element = els;
    return r;
}

static void drop(redisReply *r) {
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) drop(r->element[i]);
    free(r);
}

TG_TEST(scalars) {
    lua_State *L = luaL_newstate();
    redisReply *r = str(REDIS_REPLY_STRING, "he\0llo");
    r->len = 6;
    TG_CHECK_INT(tg_reply_push(L, r), 0);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    TG_CHECK_INT(n, 6);
    TG_CHECK(memcmp(s, "he\0llo", 6) == 0);
    drop(r);

    r = str(REDIS_REPLY_STATUS, "OK");
    tg_reply_push(L, r);
    TG_CHECK_STR(lua_tostring(L, -1), "OK");
    drop(r);

    r = mk(REDIS_REPLY_INTEGER);
    r->integer = -9007199254740993LL;
    tg_reply_push(L, r);
    TG_CHECK(lua_isinteger(L, -1));
    TG_CHECK_INT(lua_tointeger(L, -1), -9007199254740993LL);
    drop(r);

    r = mk(REDIS_REPLY_NIL);
    tg_reply_push(L, r);
    TG_CHECK(lua_isnil(L, -1));
    drop(r);
    TG_CHECK_INT(lua_gettop(L), 4);
    lua_close(L);
}

TG_TEST(arrays_keep_length_with_nil) {
    lua_State *L = luaL_newstate();
    redisReply **els = calloc(3, sizeof *els);
    els[0] = str(REDIS_REPLY_STRING, "a");
    els[1] = mk(REDIS_REPLY_NIL);
    redisReply **inner = calloc(1, sizeof *inner);
    inner[0] = mk(REDIS_REPLY_INTEGER);
    inner[0]->integer = 7;
    els[2] = arr(1, inner);
    redisReply *r = arr(3, els);
    TG_CHECK_INT(tg_reply_push(L, r), 0);
    TG_CHECK_INT(luaL_len(L, -1), 3);
    lua_rawgeti(L, -1, 2);
    TG_CHECK(lua_isboolean(L, -1) && !lua_toboolean(L, -1));
    lua_pop(L, 1);
    lua_rawgeti(L, -1, 3);
    lua_rawgeti(L, -1, 1);
    TG_CHECK_INT(lua_tointeger(L, -1), 7);
    free(inner[0]);
    free(inner);
    free(els[0]); free(els[1]); free(els[2]); free(els); free(r);
    lua_close(L);
}

TG_TEST(too_deep_pushes_nothing) {
    lua_State *L = luaL_newstate();
    redisReply *leaf = mk(REDIS_REPLY_INTEGER), *cur = leaf;
    redisReply **holders[100];
    for (int i = 0; i < 100; i++) {
        holders[i] = calloc(1, sizeof(redisReply *));
        holders[i][0] = cur;
        cur = arr(1, holders[i]);
    }
    int top = lua_gettop(L);
    TG_CHECK_INT(tg_reply_push(L, cur), -1);
    TG_CHECK_INT(lua_gettop(L), top);
    for (int i = 99; i >= 0; i--) {
        redisReply *next = holders[i][0];
        free(holders[i]);
        free(cur);
        cur = next;
    }
    free(leaf);
    lua_close(L);
}

int main(void) {
    TG_RUN(scalars);
    TG_RUN(arrays_keep_length_with_nil);
    TG_RUN(too_deep_pushes_nothing);
    return tg_test_report();
}
