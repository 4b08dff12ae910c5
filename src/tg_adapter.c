/* tg_adapter.c -- see tg_adapter.h.
 *
 * Writes.  hiredis asks for the socket's writability (addWrite) whenever it
 * has output and gives it up (delWrite) once it wrote it.  libuv's
 * uv_poll_start takes the descriptor out of epoll and puts it back each
 * time (EPOLL_CTL_DEL, then ADD at the next poll), so toggling writability
 * per command cost four epoll_ctl calls and an extra turn of the loop for
 * every burst of commands.  Instead, once connected, output is written
 * without asking: right after the read callbacks that queued it (a reply
 * that leads to the next command), else by a prepare handle just before
 * the loop polls (commands queued by timers or by the drain of the ready
 * queue).  Only a write the socket could not take whole waits for
 * writability.  While connecting, writability is how hiredis learns that
 * connect() finished, so then it is asked for as before.
 */
#include "tg_adapter.h"

#include <stdlib.h>

typedef struct adapter {
    uv_poll_t poll;
    uv_prepare_t prep;          /* writes what was queued before the loop polls */
    redisAsyncContext *ac;      /* NULL once hiredis let go of us */
    int events;                 /* what the poll handle watches */
    int want_write;             /* hiredis has output to write */
    int writing;                /* inside redisAsyncHandleWrite, from flush() */
    int closed;                 /* handles closed (both: free) */
} adapter_t;

static void on_poll(uv_poll_t *h, int status, int events);

static void update(adapter_t *a, int add, int ev) {
    int events = add ? (a->events | ev) : (a->events & ~ev);
    if (events == a->events) return;
    a->events = events;
    if (events) uv_poll_start(&a->poll, events, on_poll);
    else uv_poll_stop(&a->poll);
}

/* Write hiredis's output now; wait for writability only for what the
 * socket did not take. */
static void flush(adapter_t *a) {
    a->writing = 1;
    redisAsyncHandleWrite(a->ac);       /* calls delWrite when done, addWrite when not */
    a->writing = 0;
    if (a->ac && a->want_write) update(a, 1, UV_WRITABLE);
}

static void on_poll(uv_poll_t *h, int status, int events) {
    adapter_t *a = h->data;
    if (!a->ac) return;
    /* On a poll error hiredis must still look at the socket, or a failed
     * connect would leave its callbacks pending forever (the 0.14 bug). */
    if (status < 0) events = a->events ? a->events : UV_READABLE;
    if ((events & UV_READABLE) && a->ac) redisAsyncHandleRead(a->ac);
    if ((events & UV_WRITABLE) && a->ac) redisAsyncHandleWrite(a->ac);
    else if (a->ac && a->want_write && !(a->events & UV_WRITABLE)) flush(a);   /* what the replies queued */
}

static void on_prepare(uv_prepare_t *h) {
    adapter_t *a = h->data;
    uv_prepare_stop(h);
    if (a->ac && a->want_write && !(a->events & UV_WRITABLE)) flush(a);
}

static void add_read(void *p)  { update(p, 1, UV_READABLE); }
static void del_read(void *p)  { update(p, 0, UV_READABLE); }

static void add_write(void *p) {
    adapter_t *a = p;
    if (!(a->ac->c.flags & REDIS_CONNECTED)) {  /* writable = connected */
        update(a, 1, UV_WRITABLE);
        return;
    }
    a->want_write = 1;
    if (!a->writing && !(a->events & UV_WRITABLE)) uv_prepare_start(&a->prep, on_prepare);
}

static void del_write(void *p) {
    adapter_t *a = p;
    a->want_write = 0;
    update(a, 0, UV_WRITABLE);
}

static void adapter_closed(uv_handle_t *h) {
    adapter_t *a = h->data;
    if (++a->closed == 2) free(a);
}

static void cleanup(void *p) {
    adapter_t *a = p;
    a->ac = NULL;
    uv_poll_stop(&a->poll);
    uv_prepare_stop(&a->prep);
    uv_close((uv_handle_t *)&a->poll, adapter_closed);
    uv_close((uv_handle_t *)&a->prep, adapter_closed);
}

int tg_adapter_attach(uv_loop_t *loop, redisAsyncContext *ac) {
    adapter_t *a = calloc(1, sizeof *a);
    if (!a) return UV_ENOMEM;
    int rc = uv_poll_init_socket(loop, &a->poll, ac->c.fd);
    if (rc != 0) {
        free(a);
        return rc;
    }
    uv_prepare_init(loop, &a->prep);
    a->poll.data = a;
    a->prep.data = a;
    a->ac = ac;
    ac->ev.data = a;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return 0;
}
