/*
 * fuzz_json.c -- libFuzzer target for tg_json.
 *
 * Every input is decoded in a fresh lua_State.  Whatever decodes must
 * encode (decoded values are always encodable), the encoding must decode,
 * and encoding that again must give the same bytes: encode(decode(x)) is a
 * fixed point.  Any violation, or an unbalanced stack, calls abort().
 *
 * Linked with tests/fuzz/replay.c it is a plain program (any compiler) that
 * runs each file named on its command line once: ctest replays the seeds
 * (and any crash file) that way.
 */
#include "../../src/tg_json.h"  /* builds without -Isrc */

#include <lauxlib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lua_State *L = luaL_newstate();
    size_t n1, n2;
    const char *e1, *e2;

    if (!L) abort();
    if (tg_json_decode(L, (const char *)data, size) != 0) {
        if (lua_gettop(L) != 1 || !lua_isstring(L, 1)) abort();
        if (strncmp(lua_tostring(L, 1), "invalid JSON at byte ", 21) != 0) abort();
        lua_close(L);
        return 0;
    }
    if (lua_gettop(L) != 1) abort();
    if (tg_json_encode(L, 1) != 0) {
        fprintf(stderr, "decoded value failed to encode: %s\n", lua_tostring(L, -1));
        abort();
    }
    e1 = lua_tolstring(L, 2, &n1);
    if (tg_json_decode(L, e1, n1) != 0) {
        fprintf(stderr, "own output failed to decode: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (tg_json_encode(L, 3) != 0) abort();
    e2 = lua_tolstring(L, 4, &n2);
    if (lua_gettop(L) != 4) abort();
    if (n1 != n2 || memcmp(e1, e2, n1) != 0) {
        fprintf(stderr, "unstable encoding:\n%.*s\n%.*s\n", (int)n1, e1, (int)n2, e2);
        abort();
    }
    lua_close(L);
    return 0;
}
