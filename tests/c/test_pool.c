/*
 * test_pool.c -- the allocator every production lua_State uses
 * (src/tg_pool.c): size classes and reuse, reallocation, large blocks,
 * accounting, the limit, a real lua_State on it, and -- in a sanitizer
 * build -- that a use after free or an overflow into the next block is
 * caught (in a forked child, which must die).
 */
#define _POSIX_C_SOURCE 200809L
#include "tg_pool.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>

#include "tg_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN 1
#endif
#endif

static void *A(tg_pool_t *p, size_t n) { return tg_pool_lua_alloc(p, NULL, 0, n); }
static void F(tg_pool_t *p, void *b, size_t n) { tg_pool_lua_alloc(p, b, n, 0); }
static void *R(tg_pool_t *p, void *b, size_t o, size_t n) { return tg_pool_lua_alloc(p, b, o, n); }

TG_TEST(classes_and_reuse) {
    tg_pool_t p = {0};
    char *a = A(&p, 20), *b = A(&p, 20);
    TG_CHECK(a && b && a != b);
    TG_CHECK_INT(p.in_use, 64);                 /* two blocks of the 32-byte class */
    memset(a, 'a', 20);
    memset(b, 'b', 20);
    F(&p, a, 20);
    TG_CHECK_INT(p.in_use, 32);
    char *c = A(&p, 30);                        /* same class: the freed block comes back */
    TG_CHECK(c == a);
    TG_CHECK(b[0] == 'b' && b[19] == 'b');      /* the neighbour is untouched */
    char *d = A(&p, 33);                        /* another class: another block */
    TG_CHECK(d && d != a && d != b);
    F(&p, b, 20);
    F(&p, c, 30);
    F(&p, d, 33);
    TG_CHECK_INT(p.in_use, 0);
    tg_pool_free(&p);
    TG_CHECK_INT(p.nchunks, 0);
}

TG_TEST(realloc_keeps_content) {
    tg_pool_t p = {0};
    char *a = A(&p, 10);
    memcpy(a, "0123456789", 10);
    char *b = R(&p, a, 10, 16);                 /* same class: stays */
    TG_CHECK(b == a);
    char *c = R(&p, b, 16, 100);                /* grows into another class */
    TG_CHECK(c != NULL && memcmp(c, "0123456789", 10) == 0);
    char *d = R(&p, c, 100, 5000);              /* to malloc */
    TG_CHECK(d != NULL && memcmp(d, "0123456789", 10) == 0);
    TG_CHECK_INT(p.in_use, 5000);
    char *e = R(&p, d, 5000, 40);               /* and back to the pool */
    TG_CHECK(e != NULL && memcmp(e, "0123456789", 10) == 0);
    TG_CHECK_INT(p.in_use, 48);
    F(&p, e, 40);
    TG_CHECK_INT(p.in_use, 0);
    tg_pool_free(&p);
}

TG_TEST(many_blocks_across_chunks) {
    tg_pool_t p = {0};
    enum { N = 20000 };
    static void *b[N];
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 37) % 512;
        b[i] = A(&p, n);
        TG_CHECK(b[i] != NULL);
        memset(b[i], (int)(i & 0xff), n);
    }
    TG_CHECK(p.nchunks > 1);
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 37) % 512;
        unsigned char *q = b[i];
        if (q[0] != (unsigned char)(i & 0xff) || q[n - 1] != (unsigned char)(i & 0xff)) {
            TG_CHECK(!"a block was overwritten");
            break;
        }
    }
    for (int i = 0; i < N; i++) F(&p, b[i], 1 + (size_t)(i * 37) % 512);
    TG_CHECK_INT(p.in_use, 0);
    tg_pool_free(&p);
}

TG_TEST(limit) {
    tg_pool_t p = {0};
    p.limit = 1000;
    void *a = A(&p, 500);                       /* pooled: 512 bytes */
    TG_CHECK(a != NULL);
    TG_CHECK(A(&p, 600) == NULL);               /* a large block past the limit */
    TG_CHECK(A(&p, 500) == NULL);               /* a pooled one past it */
    void *b = A(&p, 400);
    TG_CHECK(b != NULL);                        /* 912 <= 1000 */
    TG_CHECK(R(&p, b, 400, 900) == NULL);       /* growing past it fails, b stays */
    F(&p, a, 500);
    F(&p, b, 400);
    TG_CHECK_INT(p.in_use, 0);
    p.limit = 0;
    void *c = A(&p, 6000);                      /* no limit: fine again */
    TG_CHECK(c != NULL);
    F(&p, c, 6000);
    tg_pool_free(&p);
}

static int alloc_lots(lua_State *L) {
    lua_newtable(L);
    for (int i = 1; i <= 100000; i++) {
        lua_pushfstring(L, "value %d", i);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

TG_TEST(lua_state) {
    tg_pool_t p = {0};
    lua_State *L = lua_newstate(tg_pool_lua_alloc, &p);
    TG_CHECK(L != NULL);
    luaL_openlibs(L);
    TG_CHECK_INT(luaL_dostring(L, "local t = {} for i = 1, 10000 do t[i] = ('x'):rep(i % 700) end "
                                  "return #t"), LUA_OK);
    TG_CHECK_INT(lua_tointeger(L, -1), 10000);
    lua_pop(L, 1);
    /* past the limit: a memory error Lua catches, not a crash */
    p.limit = p.in_use + 64 * 1024;
    lua_pushcfunction(L, alloc_lots);
    TG_CHECK_INT(lua_pcall(L, 0, 1, 0), LUA_ERRMEM);
    lua_pop(L, 1);
    p.limit = 0;
    lua_gc(L, LUA_GCCOLLECT);
    TG_CHECK_INT(luaL_dostring(L, "return 1 + 1"), LUA_OK);
    lua_close(L);
    TG_CHECK_INT(p.in_use, 0);
    tg_pool_free(&p);
}

#ifdef ASAN
/* Run fn in a child; it must die (ASan reports and exits non-zero). */
static int dies(void (*fn)(void)) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 2);      /* the expected report */
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void use_after_free(void) {
    tg_pool_t p = {0};
    volatile char *a = A(&p, 40);
    F(&p, (void *)a, 40);
    a[8] = 1;
}

static void overflow(void) {
    tg_pool_t p = {0};
    volatile char *a = A(&p, 32);
    (void)A(&p, 32);
    a[32] = 1;                                   /* one past the end */
}

static void clean(void) {
    tg_pool_t p = {0};
    volatile char *a = A(&p, 32);
    a[31] = 1;
    F(&p, (void *)a, 32);
    tg_pool_free(&p);
}

TG_TEST(sanitized) {
    TG_CHECK(dies(use_after_free));
    TG_CHECK(dies(overflow));
    TG_CHECK(!dies(clean));
}
#endif

int main(void) {
    TG_RUN(classes_and_reuse);
    TG_RUN(realloc_keeps_content);
    TG_RUN(many_blocks_across_chunks);
    TG_RUN(limit);
    TG_RUN(lua_state);
#ifdef ASAN
    TG_RUN(sanitized);
#endif
    return tg_test_report();
}
