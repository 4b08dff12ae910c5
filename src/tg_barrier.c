/*
 * tg_barrier.c -- tasks waiting at barriers: registered locally before the
 * script that enters or awaits is sent, released by the notify stream (or the
 * once-a-second safety re-check), failed with the count they reached.
 */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_embedded.h"
#include "tg_redis_int.h"

static void check_feasible(tg_redis_t *r, blist_t *l);

void tg_barrier_unlink(bwaiter_t *w) {
    blist_t *l = w->list;
    if (w->prev) w->prev->next = w->next;
    else l->head = w->next;
    if (w->next) w->next->prev = w->prev;
    free(w);
}

/* Release w if it may go: the script answered and the count is there. */
static void bw_try_release(bwaiter_t *w) {
    if (!w->replied || !(w->released || w->list->count >= w->target)) return;
    tg_task_t *t = w->task;
    lua_State *co = t->co;
    lua_pushinteger(co, w->seq);
    tg_barrier_unlink(w);
    tg_wait_done(t, 1, 1);
}

/* A barrier wait that ended: the message says how far the barrier got. */
static void bw_fail(tg_task_t *t, int why, const char *label, long long count, long long target) {
    char b[64];
    if (why == TG_ABORT_TIMEOUT) {
        tg_wait_fail(t, "timeout", "%s timed out after %s: %I of %I entered",
                     label, tg_wait_secs(t, b, sizeof b), (lua_Integer)count, (lua_Integer)target);
    } else if (why == TG_ABORT_INTERRUPT) {
        tg_wait_fail(t, "interrupted", "interrupted (%s) while waiting at %s: %I of %I entered",
                     t->ctx.inst->rt->interrupt_why, label, (lua_Integer)count, (lua_Integer)target);
    } else if (why == TG_ABORT_CLOSED) {
        tg_wait_fail(t, "closed", "%s: %s; %I of %I had entered",
                     label, t->ctx.inst->rt->redis->down_msg, (lua_Integer)count, (lua_Integer)target);
    } else if (why == TG_ABORT_CANCEL) {
        tg_wait_fail(t, "cancelled", "%s: cancelled; %I of %I had entered", label,
                     (lua_Integer)count, (lua_Integer)target);
    }
}

/* The last step of a barrier that timed out or was interrupted: one GET, so
 * the message gives the count as it is now, not as last seen. */
typedef struct bfinal {
    int why;
    long long count, target;
    char label[128];
} bfinal_t;

static void bfinal_abort(tg_task_t *t, int why) {
    bfinal_t *f = t->abort_data;
    (void)why;                                  /* the GET did not answer in time */
    bw_fail(t, f->why, f->label, f->count, f->target);
    free(f);
}

static void on_bfinal_reply(redisAsyncContext *ac, void *reply, void *priv) {
    (void)ac;
    req_t *q = priv;
    redisReply *rep = reply;
    if (tg_wait_target(q->task, q->token) && q->task->abort == bfinal_abort) {
        bfinal_t *f = q->task->abort_data;
        if (rep && rep->type == REDIS_REPLY_STRING) {
            long long n = strtoll(rep->str, NULL, 10);
            if (n > f->count) f->count = n;
        }
        q->task->abort = NULL;
        bw_fail(q->task, f->why, f->label, f->count, f->target);
        free(f);
    }
    tg_redis_req_free(q);
}

static void bw_abort(tg_task_t *t, int why) {
    bwaiter_t *w = t->abort_data;
    tg_redis_t *r = t->ctx.inst->rt->redis;
    long long count = w->list->count, target = w->target;
    char label[128], key[1024];
    memcpy(label, w->label, sizeof label);
    snprintf(key, sizeof key, "%.*s", (int)w->list->klen, w->list->key);
    tg_barrier_unlink(w);
    if ((why == TG_ABORT_TIMEOUT || why == TG_ABORT_INTERRUPT) && !r->down && r->cmd.ac) {
        bfinal_t *f = malloc(sizeof *f);
        req_t *q = calloc(1, sizeof *q);
        if (f && q) {
            f->why = why;
            f->count = count;
            f->target = target;
            memcpy(f->label, label, sizeof f->label);
            q->r = r;
            q->task = t;
            q->token = t->token;
            t->refs++;
            if (redisAsyncCommand(r->cmd.ac, on_bfinal_reply, q, "GET %s", key) == REDIS_OK) {
                r->stats.commands++;
                tg_wait_on_abort(t, bfinal_abort, f);
                tg_wait_extend(t, 1);
                return;
            }
            tg_redis_req_free(q);
            q = NULL;
        }
        free(f);
        free(q);
    }
    bw_fail(t, why, label, count, target);
}

void tg_barrier_on_reply(tg_redis_t *r, req_t *q, redisReply *rep) {
    if (!tg_wait_target(q->task, q->token)) return;
    bwaiter_t *w = q->task->abort_data;
    if (!rep) { tg_wait_abort(q->task, TG_ABORT_CLOSED); return; }
    if (rep->type != REDIS_REPLY_INTEGER) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s: Redis replied: %s", w->label,
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "an unexpected reply");
        tg_barrier_unlink(w);
        tg_wait_fail(q->task, "redis", "%s", msg);
        return;
    }
    w->replied = 1;
    w->seq = rep->integer;
    if (rep->integer > w->list->count) w->list->count = rep->integer;
    blist_t *l = w->list;
    bw_try_release(w);
    /* Peers died before this wait began: can it still complete?  (Only when
     * this process knows of a death -- from the notify stream, or from
     * P:tg:dead at start-up: checking every wait would cost a script call per
     * barrier.) */
    if (r->ndead > 0 && l->head) check_feasible(r, l);
}

/* A state's count is known to be n (notification or safety re-check). */
void tg_barrier_count(tg_redis_t *r, const char *key, size_t klen, long long n) {
    blist_t *l = tg_map_get(&r->barriers, key, klen);
    if (!l) return;
    if (n > l->count) l->count = n;
    bwaiter_t *w = l->head, *next;
    for (; w; w = next) {
        next = w->next;
        if (w->target <= l->count) {
            w->released = 1;
            bw_try_release(w);
        }
    }
    if (!l->head) free(tg_map_del(&r->barriers, key, klen));
}

/* core.barrier(script, {keys}, {args}, target, timeout, label [, instances]) -> n.
 * Yields.  instances (the run's instance count) enables the peer_failed check.
 * Runs the script (which enters and/or registers the target and returns the
 * count, or the caller's seq when it enters) and waits until the count
 * reaches target.  The waiter is registered before the script is sent, so a
 * notification that overtakes the reply is not lost.  KEYS[1] is the state
 * counter. */
static int l_barrier(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    int si = tg_redis_script_index(L, luaL_checkstring(L, 1));
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer target = luaL_checkinteger(L, 4);
    double timeout = luaL_optnumber(L, 5, -1);
    const char *label = luaL_checkstring(L, 6);
    lua_Integer instances = luaL_optinteger(L, 7, 0);   /* 0: tolerate deaths */
    lua_settop(L, 6);
    lua_rawgeti(L, 2, 1);
    size_t klen;
    const char *key = luaL_checklstring(L, -1, &klen);  /* stays at 7 */
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    char nkeys[16];
    int argc = tg_redis_script_argv(L, r, si, 2, 3, argv, lens, nkeys);
    tg_redis_check_up(L, r, label);
    tg_task_t *t = tg_wait_begin(L, timeout, label);      /* may raise: nothing allocated yet */

    blist_t *l = tg_map_get(&r->barriers, key, klen);
    if (!l) {
        l = calloc(1, sizeof *l + klen + 1);
        if (!l || tg_map_set(&r->barriers, key, klen, l) < 0) {
            free(l);
            tg_wait_fail(t, "invalid", "%s: out of memory", label);
            return tg_wait_yield(L);
        }
        memcpy(l->key, key, klen);
        l->klen = klen;
    }
    bwaiter_t *w = calloc(1, sizeof *w);
    if (!w) {
        tg_wait_fail(t, "invalid", "%s: out of memory", label);
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
    /* Registered before the script is sent: a notification that overtakes
     * the reply finds the waiter. */
    if (tg_redis_send_for(r, t, REQ_BARRIER, si, argc, argv, lens, 1) < 0)
        tg_wait_abort(t, TG_ABORT_CLOSED);
    return tg_wait_yield(L);
}

/* The once-a-second safety net: MGET every state with local waiters.  It
 * covers entries made by clients that only INCR (Testground's Go SDK). */
typedef struct mget {
    tg_redis_t *r;
    int n;
    char **keys;
    size_t *lens;
} mget_t;

static void on_mget_keys(redisAsyncContext *ac, void *reply, void *priv) {
    mget_t *m = priv;
    redisReply *rep = reply;
    (void)ac;
    if (rep && rep->type == REDIS_REPLY_ARRAY && !m->r->down) {
        for (size_t i = 0; i < rep->elements && (int)i + 1 < m->n; i++) {
            redisReply *e = rep->element[i];
            if (e->type != REDIS_REPLY_STRING) continue;
            long long n = strtoll(e->str, NULL, 10);
            tg_barrier_count(m->r, m->keys[i + 1], m->lens[i + 1], n);
        }
    }
    for (int i = 1; i < m->n; i++) free(m->keys[i]);
    free(m->keys);
    free(m->lens);
    free(m);
}

void tg_barrier_on_safety(uv_timer_t *h) {
    tg_redis_t *r = h->data;
    if (r->down || !r->cmd.ac || r->barriers.len == 0) return;
    mget_t *m = calloc(1, sizeof *m);
    int n = (int)r->barriers.len + 1;
    if (!m || !(m->keys = calloc((size_t)n, sizeof *m->keys)) || !(m->lens = calloc((size_t)n, sizeof *m->lens))) {
        if (m) free(m->keys);
        free(m);
        return;
    }
    m->r = r;
    m->keys[0] = (char *)"MGET";
    m->lens[0] = 4;
    m->n = 1;
    size_t b;
    for (tg_map_ent_t *e = tg_map_next(&r->barriers, NULL, &b); e; e = tg_map_next(&r->barriers, e, &b)) {
        m->keys[m->n] = malloc(e->klen + 1);
        if (!m->keys[m->n]) break;
        memcpy(m->keys[m->n], e->key, e->klen + 1);
        m->lens[m->n] = e->klen;
        m->n++;
    }
    r->stats.safety_checks++;
    if (redisAsyncCommandArgv(r->cmd.ac, on_mget_keys, m, m->n, (const char **)m->keys, m->lens) != REDIS_OK) {
        for (int i = 1; i < m->n; i++) free(m->keys[i]);
        free(m->keys);
        free(m->lens);
        free(m);
    }
}


static const luaL_Reg barrier_funcs[] = {
    {"barrier", l_barrier},
    {NULL, NULL},
};

void tg_barrier_open_lua(lua_State *L) {
    luaL_setfuncs(L, barrier_funcs, 0);
}

/* ---- peer failure -------------------------------------------------------- */

/* After a peer failed or died: can the barrier on l still reach the targets
 * of its waiters?  One script reads the count, which instances died, and how
 * many of them had entered (membership bitmap), atomically.  At most
 * instances - dead + dead_entered can ever enter, so a waiter whose target is
 * above that fails at once with "peer_failed" instead of waiting for its
 * timeout.  Waiters that said they tolerate deaths are left alone. */
typedef struct fcheck {
    tg_redis_t *r;
    size_t klen;
    char key[];
} fcheck_t;

static void on_feasible(redisAsyncContext *ac, void *reply, void *priv) {
    (void)ac;
    fcheck_t *f = priv;
    tg_redis_t *r = f->r;
    redisReply *rep = reply;
    blist_t *l = r->down ? NULL : tg_map_get(&r->barriers, f->key, f->klen);
    if (l) l->checking = 0;
    if (l && rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 4 && l->instances > 0) {
        long long count = rep->element[0]->integer, ndead = rep->element[1]->integer;
        long long dead_entered = rep->element[2]->integer;
        const char *ids = rep->element[3]->str ? rep->element[3]->str : "?";
        long long most = l->instances - ndead + dead_entered;
        if (ndead > r->ndead) r->ndead = ndead;     /* deaths from before this process read the stream */
        if (count > l->count) l->count = count;
        /* Nobody died: the bound below assumes each instance enters at most
         * once, which tasks of one instance entering together break. */
        if (ndead == 0) most = count + l->instances + 1000000000LL;
        bwaiter_t *w = l->head, *next;
        for (; w; w = next) {
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
            tg_barrier_unlink(w);
            tg_wait_fail(t, "peer_failed", "%s can no longer complete: instance%s %s failed or died; "
                         "%I of %I entered, at most %I can", label, ndead > 1 ? "s" : "", ids,
                         (lua_Integer)count, (lua_Integer)target, (lua_Integer)most);
        }
    }
    free(f);
}

static void check_feasible(tg_redis_t *r, blist_t *l) {
    if (l->checking || r->down || !r->cmd.ac || l->instances <= 0) return;
    int tolerant_only = 1;
    for (bwaiter_t *w = l->head; w; w = w->next) if (!w->tolerant) tolerant_only = 0;
    if (tolerant_only) return;
    int si = -1;
    for (int i = 0; tg_embedded_scripts[i].name; i++)
        if (strcmp(tg_embedded_scripts[i].name, "feasible") == 0) si = i;
    fcheck_t *f = malloc(sizeof *f + l->klen + 1);
    if (si < 0 || !f) { free(f); return; }
    f->r = r;
    f->klen = l->klen;
    memcpy(f->key, l->key, l->klen + 1);
    /* members and dead keys live beside the state key: P:states:<s> ->
     * P:tg:members:<s>, P:tg:dead */
    const char *st = strstr(l->key, ":states:");
    if (!st) { free(f); return; }
    char members[1200], dead[1200];
    snprintf(members, sizeof members, "%.*s:tg:members:%s", (int)(st - l->key), l->key, st + 8);
    snprintf(dead, sizeof dead, "%.*s:tg:dead", (int)(st - l->key), l->key);
    const char *argv[6] = {"EVAL", tg_embedded_scripts[si].data, "3", l->key, members, dead};
    size_t lens[6] = {4, tg_embedded_scripts[si].len, 1, l->klen, strlen(members), strlen(dead)};
    r->stats.commands++;
    if (redisAsyncCommandArgv(r->cmd.ac, on_feasible, f, 6, argv, lens) != REDIS_OK) { free(f); return; }
    l->checking = 1;
}

/* The notify stream says instance sid failed or died. */
void tg_barrier_dead(tg_redis_t *r, const char *sid, size_t len) {
    (void)sid; (void)len;
    r->ndead++;
    size_t b;
    for (tg_map_ent_t *e = tg_map_next(&r->barriers, NULL, &b); e; e = tg_map_next(&r->barriers, e, &b)) {
        blist_t *l = e->value;
        if (l->head) check_feasible(r, l);
    }
}
