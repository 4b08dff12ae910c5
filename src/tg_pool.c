/* tg_pool.c -- see tg_pool.h. */
#include "tg_pool.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define TG_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_POOL_ASAN 1
#endif
#endif

#ifdef TG_POOL_ASAN
#include <sanitizer/asan_interface.h>
#define REDZONE 16              /* poisoned bytes after every pooled block */
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define REDZONE 0
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define CHUNK (64 * 1024)

static size_t cls(size_t n) {
    return (n + TG_POOL_STEP - 1) / TG_POOL_STEP;
}

static int over(tg_pool_t *p, size_t n) {
    return p->limit && p->in_use + n > p->limit;
}

static void *get(tg_pool_t *p, size_t n) {
    if (n > TG_POOL_MAX) {
        if (over(p, n)) return NULL;
        void *b = malloc(n);
        if (b) p->in_use += n;
        return b;
    }
    size_t c = cls(n), sz = c * TG_POOL_STEP;
    if (over(p, sz)) return NULL;
    void *b = p->free[c];
    if (b) {
        UNPOISON(b, sz);
        p->free[c] = *(void **)b;
        p->in_use += sz;
        POISON((char *)b + n, sz - n);          /* the class's slack, too */
        return b;
    }
    size_t step = sz + REDZONE;
    if (p->left < step) {
        if (p->nchunks == p->capchunks) {
            size_t cap = p->capchunks ? p->capchunks * 2 : 64;
            char **ch = realloc(p->chunks, cap * sizeof *ch);
            if (!ch) return NULL;
            p->chunks = ch;
            p->capchunks = cap;
        }
        char *chunk = malloc(CHUNK);
        if (!chunk) return NULL;
        POISON(chunk, CHUNK);
        p->chunks[p->nchunks++] = chunk;
        p->cur = chunk;
        p->left = CHUNK;        /* the tail of the old chunk is dropped: at most 511 bytes */
    }
    b = p->cur;
    p->cur += step;
    p->left -= step;
    p->in_use += sz;
    UNPOISON(b, n);
    return b;
}

static void put(tg_pool_t *p, void *b, size_t n) {
    if (n > TG_POOL_MAX) {
        free(b);
        p->in_use -= n;
        return;
    }
    size_t c = cls(n), sz = c * TG_POOL_STEP;
    UNPOISON(b, sizeof(void *));
    *(void **)b = p->free[c];
    p->free[c] = b;
    p->in_use -= sz;
    POISON(b, sz);
}

void *tg_pool_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    tg_pool_t *p = ud;
    if (!ptr) osize = 0;                        /* then osize is a type tag */
    if (nsize == 0) {
        if (ptr) put(p, ptr, osize);
        return NULL;
    }
    if (ptr && osize <= TG_POOL_MAX && nsize <= TG_POOL_MAX && cls(osize) == cls(nsize)) {
        /* same class: the block stays; only what is in use changes */
        size_t sz = cls(nsize) * TG_POOL_STEP;
        UNPOISON(ptr, nsize);
        if (nsize < sz) POISON((char *)ptr + nsize, sz - nsize);
        return ptr;
    }
    if (ptr && osize > TG_POOL_MAX && nsize > TG_POOL_MAX) {
        if (nsize > osize && over(p, nsize - osize)) return NULL;
        void *n = realloc(ptr, nsize);
        if (n) p->in_use = p->in_use - osize + nsize;
        return n;
    }
    void *n = get(p, nsize);
    if (!n) return NULL;                        /* Lua keeps ptr on failure */
    if (ptr) {
        memcpy(n, ptr, osize < nsize ? osize : nsize);
        put(p, ptr, osize);
    }
    return n;
}

void tg_pool_free(tg_pool_t *p) {
    for (size_t i = 0; i < p->nchunks; i++) {
        UNPOISON(p->chunks[i], CHUNK);
        free(p->chunks[i]);
    }
    free(p->chunks);
    memset(p, 0, sizeof *p);
}
