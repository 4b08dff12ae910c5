/*
 * tg_pool.h -- the allocator of every lua_State of a process.
 *
 * Lua tells its allocator the size of the block it frees, so small blocks
 * need no header: they are carved from 64 KB chunks in 16-byte size classes
 * and recycled through one free list per class, shared by every state of
 * the process (one thread).  With thousands of instances in one process
 * (--inproc) that saves the 30-40 % that malloc's headers and rounding cost
 * on Lua's many small objects.  Blocks above 512 bytes go to malloc.
 *
 * A limit (bytes, 0 = none) makes every allocation past it fail, as if
 * memory ran out: plans and specs use it to see out-of-memory handled.
 *
 * Under AddressSanitizer the pool stays on (it is what production runs):
 * every block is poisoned while it is free and followed by a poisoned red
 * zone, so a use after free or an overflow into the next block is reported.
 *
 * The pool owns its chunks and frees them all in tg_pool_free(), which must
 * come after the last lua_close() of a state that used it.
 */
#ifndef TG_POOL_H
#define TG_POOL_H

#include <stddef.h>

#define TG_POOL_STEP 16
#define TG_POOL_MAX 512

typedef struct tg_pool {
    void *free[TG_POOL_MAX / TG_POOL_STEP + 1];
    char **chunks;
    size_t nchunks, capchunks;
    char *cur;
    size_t left;
    size_t in_use;              /* bytes handed out (pooled and large) */
    size_t limit;               /* 0: none */
} tg_pool_t;

/* A lua_Alloc: pass the pool as ud to lua_newstate. */
void *tg_pool_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Release every chunk. */
void tg_pool_free(tg_pool_t *p);

#endif
