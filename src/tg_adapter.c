/* tg_adapter.c -- see tg_adapter.h. */
#include "tg_adapter.h"

#include <stdlib.h>

typedef struct adapter {
    uv_poll_t poll;
    redisAsyncContext *ac;      /* NULL once hiredis let go of us */
    int events;
} adapter_t;

static void on_poll(uv_poll_t *h, int status, int events) {
    adapter_t *a = h->data;
    if (!a->ac) return;
    /* On a poll error hiredis must still look at the socket, or a failed
     * connect would leave its callbacks pending forever (the 0.14 bug). */
    if (status < 0) events = a->events ? a->events : UV_READABLE;
    if ((events & UV_READABLE) && a->ac) redisAsyncHandleRead(a->ac);
    if ((events & UV_WRITABLE) && a->ac) redisAsyncHandleWrite(a->ac);
}

static void update(adapter_t *a, int add, int ev) {
    int events = add ? (a->events | ev) : (a->events & ~ev);
    if (events == a->events) return;
    a->events = events;
    if (events) uv_poll_start(&a->poll, events, on_poll);
    else uv_poll_stop(&a->poll);
}

static void add_read(void *p)  { update(p, 1, UV_READABLE); }
static void del_read(void *p)  { update(p, 0, UV_READABLE); }
static void add_write(void *p) { update(p, 1, UV_WRITABLE); }
static void del_write(void *p) { update(p, 0, UV_WRITABLE); }

static void adapter_free(uv_handle_t *h) {
    free(h->data);
}

static void cleanup(void *p) {
    adapter_t *a = p;
    a->ac = NULL;
    uv_poll_stop(&a->poll);
    uv_close((uv_handle_t *)&a->poll, adapter_free);
}

int tg_adapter_attach(uv_loop_t *loop, redisAsyncContext *ac) {
    adapter_t *a = calloc(1, sizeof *a);
    if (!a) return UV_ENOMEM;
    int rc = uv_poll_init_socket(loop, &a->poll, ac->c.fd);
    if (rc != 0) {
        free(a);
        return rc;
    }
    a->poll.data = a;
    a->ac = ac;
    ac->ev.data = a;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return 0;
}
