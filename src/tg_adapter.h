/*
 * tg_adapter.h -- hiredis's asynchronous context on a libuv loop.
 *
 * hiredis 0.14 ships a libuv adapter that loses every pending callback when
 * a connect fails; this one hands poll errors to hiredis, so that hiredis
 * notices the failure and calls back everything that waits.
 *
 * Output is written as soon as it is queued (after the read callbacks that
 * queued it, else just before the loop polls), not on a writability event:
 * see tg_adapter.c.
 *
 * Ownership: the adapter's poll and prepare handles belong to the context.
 * When hiredis frees the context it calls our cleanup, which closes both;
 * the second close callback frees the adapter.  The caller never frees it.
 */
#ifndef TG_ADAPTER_H
#define TG_ADAPTER_H

#include <hiredis/async.h>
#include <uv.h>

/* Attach ac to loop.  0, or a negative libuv code (ac is left unattached). */
int tg_adapter_attach(uv_loop_t *loop, redisAsyncContext *ac);

#endif
