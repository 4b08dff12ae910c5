/* tg_pool.c -- see tg_pool.h. */
#include "tg_pool.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define TG_POOL_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_POOL_OFF 1
#endif
#endif

#define CHUNK (64 * 1024)

#ifndef TG_POOL_OFF
static size_t cls(size_t n) {
    return (n + TG_POOL_STEP - 1) / TG_POOL_STEP;
}
#endif

static void *get(tg_pool_t *p, size_t n) {
#ifdef TG_POOL_OFF
    (void)p;
    return malloc(n);
#else
    if (n > TG_POOL_MAX) return malloc(n);
    size_t c = cls(n), sz = c * TG_POOL_STEP;
    void *b = p->free[c];
    if (b) {
        p->free[c] = *(void **)b;
        p->in_use += sz;
        return b;
    }
    if (p->left < sz) {
        if (p->nchunks == p->capchunks) {
            size_t cap = p->capchunks ? p->capchunks * 2 : 64;
            char **ch = realloc(p->chunks, cap * sizeof *ch);
            if (!ch) return NULL;
            p->chunks = ch;
            p->capchunks = cap;
        }
        char *chunk = malloc(CHUNK);
        if (!chunk) return NULL;
        p->chunks[p->nchunks++] = chunk;
        p->cur = chunk;
        p->left = CHUNK;        /* the tail of the old chunk is dropped: at most 511 bytes */
    }
    b = p->cur;
    p->cur += sz;
    p->left -= sz;
    p->in_use += sz;
    return b;
#endif
}

static void put(tg_pool_t *p, void *b, size_t n) {
#ifdef TG_POOL_OFF
    (void)p; (void)n;
    free(b);
#else
    if (n > TG_POOL_MAX) { free(b); return; }
    size_t c = cls(n);
    *(void **)b = p->free[c];
    p->free[c] = b;
    p->in_use -= c * TG_POOL_STEP;
#endif
}

void *tg_pool_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    tg_pool_t *p = ud;
    if (!ptr) osize = 0;                        /* then osize is a type tag */
    if (nsize == 0) {
        if (ptr) put(p, ptr, osize);
        return NULL;
    }
#ifndef TG_POOL_OFF
    if (ptr && osize <= TG_POOL_MAX && nsize <= TG_POOL_MAX && cls(osize) == cls(nsize)) return ptr;
    if (ptr && osize > TG_POOL_MAX && nsize > TG_POOL_MAX) return realloc(ptr, nsize);
#endif
    void *n = get(p, nsize);
    if (!n) return NULL;                        /* Lua keeps ptr on failure */
    if (ptr) {
        memcpy(n, ptr, osize < nsize ? osize : nsize);
        put(p, ptr, osize);
    }
    return n;
}

void tg_pool_free(tg_pool_t *p) {
    for (size_t i = 0; i < p->nchunks; i++) free(p->chunks[i]);
    free(p->chunks);
    memset(p, 0, sizeof *p);
}
