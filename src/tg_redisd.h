/*
 * tg_redisd.h -- a private redis-server for one run: started on a unix
 * socket in a folder of ours, persistence off, and stopped (SIGTERM, then
 * SIGKILL) at the end.  The local runner uses it when no Redis is given.
 * For containers it also listens on TCP on one address of this host (the
 * run's bridge: only the run's network reaches it).  Its pid is written to
 * <dir>/redis.pid, so that whoever cleans up after a crashed runner finds it.
 *
 * Ownership: the caller owns the tg_redisd_t (and its folder); the process
 * handle inside it is closed by tg_redisd_stop, which runs the loop until
 * the server is reaped.
 */
#ifndef TG_REDISD_H
#define TG_REDISD_H

#include <uv.h>

typedef struct tg_redisd {
    uv_loop_t *loop;
    uv_process_t proc;
    uv_timer_t timer;
    int running, timer_on;
    char sock[4200];
    char url[4300];             /* unix://<sock>, once it answers */
    char tcp_url[128];          /* redis://<bind>:<port> when started with bind */
} tg_redisd_t;

/* Start redis-server with its socket and log in dir, allowing maxclients
 * connections, and wait (at most 5 s) until it answers PING.  With bind (an
 * IPv4 address of this host), it also listens there on a free port
 * (tcp_url).  It is started through `self --_guard` (self: this tgrun
 * binary), which makes it die with this process even when this one is
 * SIGKILLed.  0, or 2 after printing one line that says what went wrong. */
int tg_redisd_start(tg_redisd_t *d, uv_loop_t *loop, const char *dir, int maxclients, const char *bind,
                    const char *self);
/* Stop it (SIGTERM; SIGKILL after 5 s) and reap it.  Safe to call twice. */
void tg_redisd_stop(tg_redisd_t *d);

#endif
