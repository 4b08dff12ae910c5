/*
 * tg_barrier.c -- states and barriers; see tg_barrier.h for the contract
 * and docs/design.md for the wake-up protocol.
 *
 * Requests carry their task (one reference) and its wait token; the reply
 * finds the waiter through the task's abort data, and only while that
 * wait is still the barrier's (t->abort == bw_abort).  A callback whose
 * reply is NULL (the transport is closing or lost) touches only its own
 * data: the unit may already be detached.
 */
#include "tg_barrier.h"

#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_call.h"
#include "tg_keys.h"
#include "tg_map.h"
#include "tg_redis.h"
#include "tg_sargs.h"
#include "tg_scripts.h"

#define SAFETY_MS 1000

/* A task waiting at a barrier; lives exactly as long as that wait. */
typedef struct bwaiter {
    tg_task_t *task;
    long long target, seq;
    int replied, released;
    int tolerant;               /* the caller expects deaths: no peer_failed */
    struct blist *list;
    struct bwaiter *prev, *next;
    char label[128];
} bwaiter_t;

/* The local waiters of one state, and the last count seen for it. */
typedef struct blist {
    long long count;
    long long instances;        /* the run's instance count, for peer_failed */
    int checking;               /* a feasibility check is in flight */
    bwaiter_t *head;
    size_t klen, noff;          /* the state key; its name starts at noff */
    char key[];
} blist_t;

struct tg_barriers {
    tg_rt_t *rt;
    tg_redis_t *r;
    tg_map_t lists;             /* state key -> blist_t */
    long long ndead;            /* peers known to have failed or died */
    char *P, *notify, *dead;
    size_t plen, notify_len, dead_len;
    uv_timer_t safety;
    char notify_from[48];       /* where the notify stream was at start-up */
    unsigned long long notifies, safety_checks;
};

static void check_feasible(tg_barriers_t *b, blist_t *l);

static tg_barriers_t *of(lua_State *L, const char *what) {
    tg_barriers_t *b = tg_ctx(L)->inst->rt->barriers;
    if (!b) tg_err_raise(L, "closed", "%s: not connected to Redis", what);
    return b;
}

static void unlink_waiter(bwaiter_t *w) {
    blist_t *l = w->list;
    if (w->prev) w->prev->next = w->next;
    else l->head = w->next;
    if (w->next) w->next->prev = w->prev;
    free(w);
}

/* Release w if it may go: the script answered and the count is there. */
static void try_release(bwaiter_t *w) {
    if (!w->replied || !(w->released || w->list->count >= w->target)) return;
    tg_task_t *t = w->task;
    lua_pushinteger(t->co, w->seq);             /* an integer: no allocation */
    unlink_waiter(w);
    tg_wait_done(t, 1, 1);
}

/* A barrier wait that ended: the message says how far the barrier got. */
static void fail_waiter(tg_task_t *t, int why, const char *label, long long count, long long target) {
    char s[64];
    tg_rt_t *rt = t->ctx.inst->rt;
    if (why == TG_ABORT_TIMEOUT)
        tg_wait_fail(t, "timeout", "%s timed out after %s: %lld of %lld entered%s",
                     label, tg_wait_secs(t, s, sizeof s), count, target,
                     count >= target ? " (the last of them after the timeout)" : "");
    else if (why == TG_ABORT_INTERRUPT)
        tg_wait_fail(t, "interrupted", "interrupted (%s) while waiting at %s: %lld of %lld entered",
                     rt->interrupt_why, label, count, target);
    else if (why == TG_ABORT_CLOSED)
        tg_wait_fail(t, "closed", "%s: %s; %lld of %lld had entered", label,
                     rt->redis && tg_redis_down(rt->redis) ? tg_redis_down(rt->redis) : "the connection to Redis was lost",
                     count, target);
    else if (why == TG_ABORT_CANCEL)
        tg_wait_fail(t, "cancelled", "%s: cancelled; %lld of %lld had entered", label, count, target);
    else if (why == TG_ABORT_DEAD)
        tg_wait_fail(t, "dead", "%s: this instance was declared dead by the run (%s); %lld of %lld had entered",
                     label, t->ctx.inst->dead_why ? t->ctx.inst->dead_why : "?", count, target);
}

/* ---- the last step of a wait that timed out: one GET --------------------- */

/* So that the message gives the count as it is now, not as last seen. */
typedef struct bfinal {
    int why;
    long long count, target;
    char label[128];
} bfinal_t;

static void final_abort(tg_task_t *t, int why) {
    bfinal_t *f = t->abort_data;
    (void)why;                                  /* the GET did not answer in time */
    fail_waiter(t, f->why, f->label, f->count, f->target);
    free(f);
}

static void on_final(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    tg_task_t *t = data;
    (void)r;
    if (tg_wait_target(t, tag) && t->abort == final_abort) {
        bfinal_t *f = t->abort_data;
        if (rep && rep->type == REDIS_REPLY_STRING) {
            long long n = strtoll(rep->str, NULL, 10);
            if (n > f->count) f->count = n;
        }
        t->abort = NULL;
        fail_waiter(t, f->why, f->label, f->count, f->target);
        free(f);
    }
    tg_task_unref(t);
}

static void bw_abort(tg_task_t *t, int why) {
    bwaiter_t *w = t->abort_data;
    tg_barriers_t *b = t->ctx.inst->rt->barriers;
    blist_t *l = w->list;
    bfinal_t *f = NULL;
    if ((why == TG_ABORT_TIMEOUT || why == TG_ABORT_INTERRUPT) && b && !tg_redis_down(b->r)
        && (f = malloc(sizeof *f))) {
        f->why = why;
        f->count = l->count;
        f->target = w->target;
        memcpy(f->label, w->label, sizeof f->label);
        const char *argv[2] = {"GET", l->key};
        size_t lens[2] = {3, l->klen};
        if (tg_redis_cmd(b->r, on_final, tg_task_ref(t), t->token, 2, argv, lens) == 0) {
            unlink_waiter(w);
            tg_wait_on_abort(t, final_abort, f);
            tg_wait_extend(t, 1);
            return;
        }
        tg_task_unref(t);
        free(f);
    }
    long long count = l->count, target = w->target;
    char label[128];
    memcpy(label, w->label, sizeof label);
    unlink_waiter(w);
    fail_waiter(t, why, label, count, target);
}

/* ---- entering and waiting ------------------------------------------------ */

static blist_t *list_of(tg_barriers_t *b, const char *key, size_t klen) {
    blist_t *l = tg_map_get(&b->lists, key, klen);
    if (l) return l;
    if (!(l = calloc(1, sizeof *l + klen + 1))) return NULL;
    if (tg_map_set(&b->lists, key, klen, l) < 0) {
        free(l);
        return NULL;
    }
    memcpy(l->key, key, klen);
    l->klen = klen;
    l->noff = tg_key(NULL, 0, b->P, b->plen, TG_KEY_STATE, "", 0);
    return l;
}

/* The state's count is known to be n (a notification or the safety check). */
static void count_is(tg_barriers_t *b, const char *key, size_t klen, long long n) {
    blist_t *l = tg_map_get(&b->lists, key, klen);
    if (!l) return;
    if (n > l->count) l->count = n;
    for (bwaiter_t *w = l->head, *next; w; w = next) {
        next = w->next;
        if (w->target <= l->count) {
            w->released = 1;
            try_release(w);
        }
    }
    if (!l->head) free(tg_map_del(&b->lists, key, klen));
}

static void on_entered(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    tg_task_t *t = data;
    (void)r;
    if (tg_wait_target(t, tag) && t->abort == bw_abort) {
        bwaiter_t *w = t->abort_data;
        tg_barriers_t *b = t->ctx.inst->rt->barriers;
        if (!rep) {
            tg_wait_abort(t, TG_ABORT_CLOSED);
        } else if (rep->type != REDIS_REPLY_INTEGER) {
            char label[128];
            memcpy(label, w->label, sizeof label);
            unlink_waiter(w);
            tg_wait_fail(t, "redis", "%s: Redis replied: %s", label,
                         rep->type == REDIS_REPLY_ERROR ? rep->str : "an unexpected reply");
        } else {
            blist_t *l = w->list;
            w->replied = 1;
            w->seq = rep->integer;
            if (rep->integer > l->count) l->count = rep->integer;
            try_release(w);
            /* Peers died before this wait began: can it still complete?
             * (Only when this process knows of a death: checking every
             * wait would cost a script call per barrier.) */
            if (b && b->ndead > 0 && l->head) check_feasible(b, l);
        }
    }
    tg_task_unref(t);
}

/* Register a waiter for state (keys[0] is its key) and run the script.
 * The waiter is registered before the script is sent, so a notification
 * that overtakes the reply is not lost. */
/* Register a waiter for the state (argv[0] is its key) and run the script
 * (enter.lua, or await.lua when it only waits).  The waiter is registered
 * before the script is sent, so a notification that overtakes the reply is
 * not lost.  The script registers the target on the server in the same
 * step, so that any entry that reaches it -- whatever its own target --
 * pushes the release. */
static int wait_for(lua_State *L, tg_barriers_t *b, int script, lua_Integer target, double timeout,
                    lua_Integer instances, const char *label, int nkeys, int argc,
                    const char **argv, size_t *lens) {
    if (tg_redis_down(b->r)) return tg_err_raise(L, "closed", "%s: %s", label, tg_redis_down(b->r));
    /* the state's name is the key's tail (keys[0] is the state key) */
    size_t noff = tg_key(NULL, 0, b->P, b->plen, TG_KEY_STATE, "", 0);
    int kind = script == TG_SCRIPT_ENTER ? TG_WAIT_SIGNAL_WAIT : TG_WAIT_BARRIER;
    tg_task_t *t = tg_wait_begin(L, kind, argv[0] + noff, lens[0] - noff, timeout, label);   /* may raise */
    blist_t *l = list_of(b, argv[0], lens[0]);
    bwaiter_t *w = l ? calloc(1, sizeof *w) : NULL;
    if (!w) {
        tg_wait_fail(t, "nomem", "%s: out of memory", label);
        return tg_wait_yield(L);
    }
    w->task = t;
    w->target = target;
    w->list = l;
    w->tolerant = instances <= 0;
    if (instances > 0) l->instances = instances;
    snprintf(w->label, sizeof w->label, "%s", label);
    w->next = l->head;
    if (l->head) l->head->prev = w;
    l->head = w;
    tg_wait_on_abort(t, bw_abort, w);
    int mark = script == TG_SCRIPT_ENTER ? TG_ENTER_RESEND : -1;
    if (tg_redis_eval_marked(b->r, script, on_entered, tg_task_ref(t), t->token, nkeys, argc, argv, lens,
                             mark) < 0) {
        tg_task_unref(t);
        tg_wait_abort(t, TG_ABORT_CLOSED);
    }
    return tg_wait_yield(L);
}

static const char *state_arg(lua_State *L, int idx, size_t *len) {
    const char *s = luaL_checklstring(L, idx, len);
    if (*len == 0 || *len > 900) tg_err_raise(L, "invalid", "a state name must be 1 to 900 bytes long");
    return s;
}

/* barrier.signal(state, member, op_id) -> seq.  Yields: enter state without
 * waiting (sync.signal_entry). */
static int l_signal(lua_State *L) {
    size_t nlen, mlen, olen;
    const char *name = state_arg(L, 1, &nlen);
    const char *member = luaL_checklstring(L, 2, &mlen);
    const char *op = luaL_checklstring(L, 3, &olen);
    char label[160];
    snprintf(label, sizeof label, "signal_entry('%.*s')", (int)(nlen > 120 ? 120 : nlen), name);
    tg_barriers_t *b = of(L, label);
    tg_enter_args_t e;
    if (tg_enter_args(&e, b->P, b->plen, name, nlen, -1, b->rt->ttl, member, mlen, op, olen) < 0)
        return tg_err_raise(L, "invalid", "%s: the name is too long", label);
    return tg_call_yield_marked(L, TG_WAIT_ENTRY, name, nlen, -1, label, TG_SCRIPT_ENTER, TG_ENTER_NKEYS, TG_ENTER_ARGC, e.argv, e.lens,
                                TG_ENTER_RESEND);
}

/* barrier.wait(state, target, timeout, instances).  Yields until target
 * instances entered state (sync.barrier; instances > 0: fail with
 * peer_failed once it cannot complete). */
static int l_wait(lua_State *L) {
    size_t nlen;
    const char *name = state_arg(L, 1, &nlen);
    lua_Integer target = luaL_checkinteger(L, 2);
    double timeout = luaL_checknumber(L, 3);
    lua_Integer instances = luaL_checkinteger(L, 4);
    char label[160];
    snprintf(label, sizeof label, "barrier '%.*s'", (int)(nlen > 120 ? 120 : nlen), name);
    tg_barriers_t *b = of(L, label);
    tg_await_args_t a;
    if (tg_await_args(&a, b->P, b->plen, name, nlen, target, b->rt->ttl) < 0)
        return tg_err_raise(L, "invalid", "%s: the name is too long", label);
    return wait_for(L, b, TG_SCRIPT_AWAIT, target, timeout, instances, label, TG_AWAIT_NKEYS, TG_AWAIT_ARGC,
                    a.argv, a.lens);
}

/* barrier.signal_and_wait(state, target, timeout, instances, member, op_id)
 * -> seq.  Yields: enter, then wait; one script call. */
static int l_signal_and_wait(lua_State *L) {
    size_t nlen, mlen, olen;
    const char *name = state_arg(L, 1, &nlen);
    lua_Integer target = luaL_checkinteger(L, 2);
    double timeout = luaL_checknumber(L, 3);
    lua_Integer instances = luaL_checkinteger(L, 4);
    const char *member = luaL_checklstring(L, 5, &mlen);
    const char *op = luaL_checklstring(L, 6, &olen);
    char label[160];
    snprintf(label, sizeof label, "barrier '%.*s'", (int)(nlen > 120 ? 120 : nlen), name);
    tg_barriers_t *b = of(L, label);
    tg_enter_args_t e;
    if (tg_enter_args(&e, b->P, b->plen, name, nlen, target, b->rt->ttl, member, mlen, op, olen) < 0)
        return tg_err_raise(L, "invalid", "%s: the name is too long", label);
    return wait_for(L, b, TG_SCRIPT_ENTER, target, timeout, instances, label, TG_ENTER_NKEYS, TG_ENTER_ARGC,
                    e.argv, e.lens);
}

/* barrier.stats() -> {notifies=, safety_checks=, waiting=} */
static int l_stats(lua_State *L) {
    tg_barriers_t *b = of(L, "barrier.stats");
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)b->notifies); lua_setfield(L, -2, "notifies");
    lua_pushinteger(L, (lua_Integer)b->safety_checks); lua_setfield(L, -2, "safety_checks");
    lua_pushinteger(L, (lua_Integer)b->lists.len); lua_setfield(L, -2, "states");
    return 1;
}

static const luaL_Reg funcs[] = {
    {"signal", l_signal},
    {"wait", l_wait},
    {"signal_and_wait", l_signal_and_wait},
    {"stats", l_stats},
    {NULL, NULL},
};

int luaopen_tg_barrier_c(lua_State *L) {
    luaL_newlib(L, funcs);
    return 1;
}

/* ---- the safety net: MGET every state with local waiters, once a second -- */

typedef struct mget {
    tg_barriers_t *b;
    int n;
    char **keys;
    size_t *lens;
} mget_t;

static void mget_free(mget_t *m) {
    for (int i = 1; i < m->n; i++) free(m->keys[i]);
    free(m->keys);
    free(m->lens);
    free(m);
}

static void on_mget(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    mget_t *m = data;
    (void)r; (void)tag;
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements && (int)i + 1 < m->n; i++) {
            const redisReply *e = rep->element[i];
            if (e->type == REDIS_REPLY_STRING)
                count_is(m->b, m->keys[i + 1], m->lens[i + 1], strtoll(e->str, NULL, 10));
        }
    }
    mget_free(m);
}

static void on_safety(uv_timer_t *h) {
    tg_barriers_t *b = h->data;
    if (tg_redis_down(b->r) || b->lists.len == 0) return;
    mget_t *m = calloc(1, sizeof *m);
    int n = (int)b->lists.len + 1;
    if (!m || !(m->keys = calloc((size_t)n, sizeof *m->keys)) || !(m->lens = calloc((size_t)n, sizeof *m->lens))) {
        if (m) free(m->keys);
        free(m);
        return;
    }
    m->b = b;
    m->keys[0] = (char *)"MGET";
    m->lens[0] = 4;
    m->n = 1;
    size_t bk;
    for (tg_map_ent_t *e = tg_map_next(&b->lists, NULL, &bk); e; e = tg_map_next(&b->lists, e, &bk)) {
        if (!(m->keys[m->n] = malloc(e->klen + 1))) break;
        memcpy(m->keys[m->n], e->key, e->klen + 1);
        m->lens[m->n++] = e->klen;
    }
    b->safety_checks++;
    if (tg_redis_cmd(b->r, on_mget, m, 0, m->n, (const char **)m->keys, m->lens) < 0) mget_free(m);
}

/* ---- peer failure -------------------------------------------------------- */

/* After a peer failed or died: can the barrier on l still reach its
 * waiters' targets?  feasible.lua reads the count, which instances died and
 * how many of them had entered (membership bitmap), atomically.  At most
 * instances - dead + dead_entered can ever enter, so a waiter whose target
 * is above that fails at once with "peer_failed" instead of waiting for its
 * timeout.  Waiters that said they tolerate deaths are left alone. */
typedef struct fcheck {
    tg_barriers_t *b;
    size_t klen;
    char key[];
} fcheck_t;

static void on_feasible(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    fcheck_t *f = data;
    (void)r; (void)tag;
    if (!rep) { free(f); return; }              /* the unit may be gone */
    tg_barriers_t *b = f->b;
    blist_t *l = tg_map_get(&b->lists, f->key, f->klen);
    if (l) l->checking = 0;
    if (l && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 4 && l->instances > 0) {
        long long count = rep->element[0]->integer, ndead = rep->element[1]->integer;
        long long dead_entered = rep->element[2]->integer;
        const char *ids = rep->element[3]->str ? rep->element[3]->str : "?";
        long long most = l->instances - ndead + dead_entered;
        if (ndead > b->ndead) b->ndead = ndead;     /* deaths from before this process read the stream */
        if (count > l->count) l->count = count;
        /* Nobody died: the bound below assumes each instance enters at most
         * once, which tasks of one instance entering together break. */
        if (ndead == 0) most = count + l->instances + 1000000000LL;
        for (bwaiter_t *w = l->head, *next; w; w = next) {
            next = w->next;
            /* A target above the instance count, or more entries than
             * instances, means instances enter more than once (from several
             * tasks): the bound does not hold, so do not judge. */
            if (w->tolerant || w->target <= most || w->target <= l->count
                || w->target > l->instances || count > l->instances) continue;
            tg_task_t *t = w->task;
            char label[128];
            memcpy(label, w->label, sizeof label);
            long long target = w->target;
            unlink_waiter(w);
            tg_wait_fail(t, "peer_failed", "%s can no longer complete: instance%s %s failed or died; "
                         "%lld of %lld entered, at most %lld can", label, ndead > 1 ? "s" : "", ids,
                         count, target, most);
        }
        if (!l->head) free(tg_map_del(&b->lists, f->key, f->klen));
    }
    free(f);
}

static void check_feasible(tg_barriers_t *b, blist_t *l) {
    if (l->checking || tg_redis_down(b->r) || l->instances <= 0) return;
    int judged = 0;
    for (bwaiter_t *w = l->head; w; w = w->next) if (!w->tolerant) judged = 1;
    if (!judged) return;
    fcheck_t *f = malloc(sizeof *f + l->klen + 1);
    if (!f) return;
    f->b = b;
    f->klen = l->klen;
    memcpy(f->key, l->key, l->klen + 1);
    char members[1100];
    size_t mlen = tg_key(members, sizeof members, b->P, b->plen, TG_KEY_MEMBERS,
                         l->key + l->noff, l->klen - l->noff);
    const char *argv[3] = {l->key, members, b->dead};
    size_t lens[3] = {l->klen, mlen, b->dead_len};
    if (mlen >= sizeof members
        || tg_redis_eval(b->r, TG_SCRIPT_FEASIBLE, on_feasible, f, 0, 3, 3, argv, lens) < 0) {
        free(f);
        return;
    }
    l->checking = 1;
}

/* ---- the notify stream ------------------------------------------------- */

/* One entry: s=<state key> n=<count> (a barrier reached a target), or
 * d=<sid> (an instance failed or died). */
static void on_notify(void *data, const char *id, const redisReply *fields) {
    tg_barriers_t *b = data;
    size_t slen, nlen;
    (void)id;
    b->notifies++;
    const char *s = tg_stream_field(fields, 's', &slen);
    const char *n = tg_stream_field(fields, 'n', &nlen);
    if (s && n) count_is(b, s, slen, strtoll(n, NULL, 10));
    if (tg_stream_field(fields, 'd', NULL)) {
        b->ndead++;
        size_t bk;
        for (tg_map_ent_t *e = tg_map_next(&b->lists, NULL, &bk); e; e = tg_map_next(&b->lists, e, &bk)) {
            blist_t *l = e->value;
            if (l->head) check_feasible(b, l);
        }
    }
}

static const tg_stream_ops_t notify_ops = {on_notify, NULL, NULL};

static void on_safety(uv_timer_t *h);

/* After a reconnect: counts may have moved while nothing was read. */
static void on_restored(void *data) {
    tg_barriers_t *b = data;
    on_safety(&b->safety);
}

/* Every waiter fails with "closed": their completions are not requests. */
static void on_lost(void *data, const char *why) {
    tg_barriers_t *b = data;
    (void)why;
    uv_timer_stop(&b->safety);
    size_t bk;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&b->lists, NULL, &bk))) {
        blist_t *l = e->value;
        while (l->head) {
            bwaiter_t *w = l->head;
            if (w->task->state == TG_TASK_WAITING && w->task->abort_data == w)
                tg_wait_abort(w->task, TG_ABORT_CLOSED);
            else unlink_waiter(w);
        }
        free(tg_map_del(&b->lists, e->key, e->klen));
    }
}

/* ---- start-up and shutdown ----------------------------------------------- */

static void on_last_notify(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    (void)r; (void)tag;
    if (!rep) return;
    tg_barriers_t *b = data;
    /* Start reading the notify stream after its newest entry: older ones
     * are about barriers that are over. */
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements && rep->element[0]->type == REDIS_REPLY_ARRAY
        && rep->element[0]->elements >= 1)
        snprintf(b->notify_from, sizeof b->notify_from, "%s", rep->element[0]->element[0]->str);
    tg_redis_watch(b->r, b->notify, b->notify_len, b->notify_from, &notify_ops, b);
}

static void on_dead_count(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    (void)r; (void)tag;
    if (!rep) return;
    tg_barriers_t *b = data;
    /* Peers that died before this process started: barriers check whether
     * they can still complete. */
    if (rep->type == REDIS_REPLY_INTEGER) b->ndead = rep->integer;
}

int tg_barrier_attach(tg_rt_t *rt) {
    const char *P = rt->prefix;
    size_t plen = rt->plen;
    tg_barriers_t *b = calloc(1, sizeof *b);
    if (!b) return -1;
    b->rt = rt;
    b->r = rt->redis;
    b->plen = plen;
    snprintf(b->notify_from, sizeof b->notify_from, "0-0");
    if (!(b->P = malloc(plen + 1))
        || !(b->notify = tg_key_new(P, plen, TG_KEY_NOTIFY, NULL, 0, &b->notify_len))
        || !(b->dead = tg_key_new(P, plen, TG_KEY_DEAD, NULL, 0, &b->dead_len))
        || tg_redis_listen(b->r, on_lost, on_restored, b) < 0) {
        free(b->P);
        free(b->notify);
        free(b->dead);
        free(b);
        return -1;
    }
    memcpy(b->P, P, plen);
    b->P[plen] = '\0';
    uv_timer_init(rt->loop, &b->safety);
    b->safety.data = b;
    uv_timer_start(&b->safety, on_safety, SAFETY_MS, SAFETY_MS);
    rt->barriers = b;
    const char *rev[6] = {"XREVRANGE", b->notify, "+", "-", "COUNT", "1"};
    size_t rlens[6] = {9, b->notify_len, 1, 1, 5, 1};
    const char *scard[2] = {"SCARD", b->dead};
    size_t slens[2] = {5, b->dead_len};
    if (tg_redis_cmd(b->r, on_last_notify, b, 0, 6, rev, rlens) < 0
        || tg_redis_cmd(b->r, on_dead_count, b, 0, 2, scard, slens) < 0) return -1;
    return 0;
}

static void close_free(uv_handle_t *h) {
    free(h->data);
}

void tg_barrier_detach(tg_rt_t *rt) {
    tg_barriers_t *b = rt->barriers;
    if (!b) return;
    rt->barriers = NULL;
    tg_redis_off_lost(b->r, on_lost, b);
    tg_redis_unwatch(b->r, b->notify, b->notify_len);
    size_t bk;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&b->lists, NULL, &bk))) {
        blist_t *l = e->value;
        while (l->head) unlink_waiter(l->head);
        free(tg_map_del(&b->lists, e->key, e->klen));
    }
    tg_map_free(&b->lists);
    free(b->P);
    free(b->notify);
    free(b->dead);
    uv_timer_stop(&b->safety);
    uv_close((uv_handle_t *)&b->safety, close_free);    /* frees b */
}
