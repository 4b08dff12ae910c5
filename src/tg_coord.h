/*
 * tg_coord.h -- waits that are served one waiter at a time: locks,
 * semaphores, elections, queues (scripts/coord.lua), and the one builder of
 * coord.lua's argument vector, which the session heartbeat uses too.
 *
 * A waiter takes a ticket id ("<process>:<n>") and runs the resource's
 * acquire script with it.  The script grants at once ({1, value}) or queues
 * the ticket ({0}).  Whoever later frees the resource (a release, a push,
 * the death of a holder) hands it to the first queued ticket by adding an
 * entry to that ticket's process inbox (P:tg:inbox:<process>), which the
 * transport's stream reader reads for this unit: a targeted, pushed
 * wake-up, so a hand-over costs O(1) reads, not one per process.
 *
 * Races are settled on the server: a waiter that gives up (timeout, cancel)
 * withdraws its ticket; a hand-over that reaches a ticket nobody waits for
 * any more is rejected, which gives the resource back (releases the lock,
 * returns the value to the head of the queue).  A queue value is
 * acknowledged before its consumer gets it, and a consumer that dies first
 * gives it back with its session.  So nothing is held by a waiter that
 * left, and every value is popped exactly once.
 *
 * Ownership: the unit's state (rt->tickets) is made by tg_coord_attach and
 * freed by tg_coord_detach; tickets are malloc'd, indexed by id, and live
 * exactly as long as their wait.
 */
#ifndef TG_COORD_H
#define TG_COORD_H

#include <stddef.h>

#include "tg_rt.h"

/* One call of scripts/coord.lua (see its header for what each field means). */
typedef struct tg_coord_args {
    const char *op;             /* acquire release withdraw reject holder add push pop beat die bye */
    const char *kind;           /* "sem", "queue" or "" */
    const char *ticket;         /* "" when none */
    const char *value;          /* bytes; vlen of them */
    size_t vlen;
    const char *inbox;          /* "" when the call cannot queue */
    const char *sid;            /* the caller's session id (global_seq), or a list for beat */
    long long n, lease_ms, cap;
    const char *opid;           /* add, push: an id unique in the run, or NULL */
} tg_coord_args_t;

#define TG_COORD_ARGC 14

/* The argument vector for coord.lua: resource key res, then the ARGV of
 * the script header, with P and ttl as the run's.  nums is scratch space
 * the vector points into.  Returns argc (TG_COORD_ARGC); the last
 * argument is the resend flag, for tg_redis_eval_marked. */
int tg_coord_argv(const tg_coord_args_t *a, const char *res, size_t rlen, const char *P, size_t plen,
                  const char *ttl, const char **argv, size_t *lens, char nums[3][24]);

/* Start serving tickets of the run (rt->prefix): a process id, and a
 * watch of this process's inbox.  0 or -1 (ENOMEM). */
int tg_coord_attach(tg_rt_t *rt);
void tg_coord_detach(tg_rt_t *rt);

/* The Lua module "tg.coord.c": ticket_id, ticket, call. */
int luaopen_tg_coord_c(lua_State *L);

#endif
