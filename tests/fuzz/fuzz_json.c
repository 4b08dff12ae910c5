/*
 * fuzz_json.c -- libFuzzer target for tg_json.
 *
 * Every input is decoded in a fresh lua_State.  Whatever decodes must
 * encode (decoded values are always encodable), the encoding must decode,
 * and encoding that again must give the same bytes: encode(decode(x)) is a
 * fixed point.  Any violation, or an unbalanced stack, calls abort().
 *
 * Built with -DTG_FUZZ_STANDALONE it is a plain program whose main() feeds
 * each file named on the command line through the target once, so ctest can
 * replay the seed corpus without libFuzzer.
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

#ifdef TG_FUZZ_STANDALONE
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0, r;
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        do {
            if (len == cap) {
                uint8_t *nb = realloc(buf, cap = cap ? cap * 2 : 4096);
                if (!nb) abort();
                buf = nb;
            }
            r = fread(buf + len, 1, cap - len, f);
            len += r;
        } while (r > 0);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
    }
    printf("%d inputs replayed\n", argc - 1);
    return 0;
}
#endif
