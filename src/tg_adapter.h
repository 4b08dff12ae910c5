/*
 * tg_adapter.h -- hiredis's asynchronous context on a libuv loop.
 *
 * hiredis 0.14 ships a libuv adapter that loses every pending callback when
 * a connect fails; this one hands poll errors to hiredis, so that hiredis
 * notices the failure and calls back everything that waits.
 *
 * Ownership: the adapter's poll handle belongs to the context.  When hiredis
 * frees the context it calls our cleanup, which closes the handle; the
 * handle's close callback frees the adapter.  The caller never frees it.
 */
#ifndef TG_ADAPTER_H
#define TG_ADAPTER_H

#include <hiredis/async.h>
#include <uv.h>

/* Attach ac to loop.  0, or a negative libuv code (ac is left unattached). */
int tg_adapter_attach(uv_loop_t *loop, redisAsyncContext *ac);

#endif
