/*
 * tg_coord.c -- waits that are served one waiter at a time: locks,
 * semaphores, elections, queues.
 *
 * A waiter takes a ticket id ("<process>:<n>"), then runs the resource's
 * acquire script with it.  The script either grants at once ({1, value}) or
 * queues the ticket ({0}).  Whoever later frees the resource (a release, a
 * push, the death of a holder) hands it to the first queued ticket by adding
 * an entry to that ticket's process inbox (P:tg:inbox:<process>), which the
 * blocking connection reads with every other stream: a targeted, pushed
 * wake-up, so a hand-over costs O(1) reads, not one per process.
 *
 * Races are settled on the server: a waiter that gives up (timeout, cancel)
 * withdraws its ticket; a hand-over that reaches a ticket nobody waits for
 * any more is rejected, which gives the resource back (releases the lock,
 * returns the value to the head of the queue).  So nothing is held by a
 * waiter that left, and no value is lost.
 *
 * Ownership: tickets are malloc'd, indexed by id in r->tickets, and live
 * exactly as long as their wait.
 */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_embedded.h"
#include "tg_redis_int.h"

typedef struct ticket {
    tg_task_t *task;
    char id[48];
    char kind[16];
    char *res;                  /* the resource key, for withdraw */
} ticket_t;

static void ticket_free(tg_redis_t *r, ticket_t *k) {
    tg_map_del(&r->tickets, k->id, strlen(k->id));
    free(k->res);
    free(k);
}

/* Run the coord script with (op, kind, id, value) on resource res and
 * forget the reply: withdraw and reject are settled on the server. */
static void coord_fire(tg_redis_t *r, const char *res, const char *op, const char *kind,
                       const char *id, const char *v, size_t vlen) {
    if (r->down || !r->cmd.ac) return;
    int si = -1;
    for (int i = 0; tg_embedded_scripts[i].name; i++)
        if (strcmp(tg_embedded_scripts[i].name, "coord") == 0) si = i;
    if (si < 0) return;
    const char *argv[9] = {"EVAL", tg_embedded_scripts[si].data, "1", res, op, kind, id, v ? v : "", r->prefix};
    size_t lens[9] = {4, tg_embedded_scripts[si].len, 1, strlen(res), strlen(op), strlen(kind),
                      strlen(id), v ? vlen : 0, strlen(r->prefix)};
    r->stats.commands++;
    redisAsyncCommandArgv(r->cmd.ac, NULL, NULL, 9, argv, lens);
}

static void ticket_abort(tg_task_t *t, int why) {
    ticket_t *k = t->abort_data;
    tg_redis_t *r = t->ctx.inst->rt->redis;
    (void)why;
    coord_fire(r, k->res, "withdraw", k->kind, k->id, NULL, 0);
    ticket_free(r, k);
}

/* An entry in this process's inbox: ticket w was handed value v. */
void tg_coord_inbox(tg_redis_t *r, const char *w, size_t wlen, const char *v, size_t vlen,
                    const char *x, size_t xlen, const char *t, size_t tlen) {
    ticket_t *k = tg_map_get(&r->tickets, w, wlen);
    lua_State *co = k ? tg_wait_target(k->task, k->task->token) : NULL;
    if (co && k->task->abort == ticket_abort) {
        tg_task_t *task = k->task;
        ticket_free(r, k);
        lua_pushlstring(co, v ? v : "", v ? vlen : 0);
        tg_wait_done(task, 1, 1);
        return;
    }
    /* Nobody waits for it any more: give it back. */
    char res[1024], kind[16], id[64];
    if (!x || !t || xlen >= sizeof res || tlen >= sizeof kind || wlen >= sizeof id) return;
    memcpy(res, x, xlen); res[xlen] = '\0';
    memcpy(kind, t, tlen); kind[tlen] = '\0';
    memcpy(id, w, wlen); id[wlen] = '\0';
    coord_fire(r, res, "reject", kind, id, v, vlen);
}

/* The acquire script answered: granted at once, queued, or an error. */
void tg_coord_on_reply(req_t *q, redisReply *rep) {
    lua_State *co = tg_wait_target(q->task, q->token);
    if (co) {
        tg_task_t *t = q->task;
        ticket_t *k = t->abort_data;
        if (!rep) {
            tg_wait_abort(t, TG_ABORT_CLOSED);
        } else if (rep->type == REDIS_REPLY_ERROR) {
            ticket_free(q->r, k);
            tg_wait_fail(t, "redis", "%s: Redis replied: %s", t->what, rep->str);
        } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2 && rep->element[0]->type == REDIS_REPLY_INTEGER
                   && rep->element[0]->integer == 1) {
            redisReply *v = rep->element[1];
            ticket_free(q->r, k);
            if (v->type == REDIS_REPLY_INTEGER) lua_pushfstring(co, "%I", (lua_Integer)v->integer);
            else lua_pushlstring(co, v->str ? v->str : "", v->str ? v->len : 0);
            tg_wait_done(t, 1, 1);
        } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 && rep->element[0]->type == REDIS_REPLY_INTEGER
                   && rep->element[0]->integer == 0) {
            /* queued: the inbox brings the value */
        } else {
            ticket_free(q->r, k);
            tg_wait_fail(t, "redis", "%s: unexpected reply from the server script", t->what);
        }
    } else if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2
               && rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer == 1
               && q->argv && q->argc >= 7) {
        /* Granted at once, but the wait already ended (timeout, cancel):
         * nobody will use it, so give it back as a stale hand-over is --
         * the permit is released, the value goes back to the queue's head.
         * argv: EVALSHA sha 1 <res> <op> <kind> <id> ... */
        redisReply *v = rep->element[1];
        char num[32];
        const char *vs = v->str;
        size_t vl = v->str ? v->len : 0;
        if (v->type == REDIS_REPLY_INTEGER) {
            vl = (size_t)snprintf(num, sizeof num, "%lld", (long long)v->integer);
            vs = num;
        }
        coord_fire(q->r, q->argv[3], "reject", q->argv[5], q->argv[6], vs, vl);
    }
}

/* core.ticket_id() -> id, inbox key.  A fresh ticket id of this process. */
static int l_ticket_id(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    lua_pushfstring(L, "%s:%I", r->proc_id, (lua_Integer)++r->ticket_seq);
    lua_pushstring(L, r->inbox);
    return 2;
}

/* core.ticket(id, resource, kind, script, {keys}, {args}, timeout, label) -> value.
 * Yields until the script grants, or the inbox hands the ticket a value. */
static int l_ticket(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    size_t idlen;
    const char *id = luaL_checklstring(L, 1, &idlen);
    const char *res = luaL_checkstring(L, 2);
    const char *kind = luaL_checkstring(L, 3);
    int si = tg_redis_script_index(L, luaL_checkstring(L, 4));
    luaL_checktype(L, 5, LUA_TTABLE);
    luaL_checktype(L, 6, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 7, -1);
    const char *label = luaL_checkstring(L, 8);
    if (idlen >= sizeof ((ticket_t *)0)->id || strlen(kind) >= sizeof ((ticket_t *)0)->kind)
        return tg_err_raise(L, "invalid", "%s: bad ticket", label);
    lua_settop(L, 8);
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    char nkeys[16];
    int argc = tg_redis_script_argv(L, r, si, 5, 6, argv, lens, nkeys);
    tg_redis_check_up(L, r, label);
    if (tg_map_get(&r->tickets, id, idlen))
        return tg_err_raise(L, "invalid", "%s: ticket %s is in use", label, id);
    tg_task_t *t = tg_wait_begin(L, timeout, label);
    ticket_t *k = calloc(1, sizeof *k);
    if (!k || !(k->res = strdup(res)) || tg_map_set(&r->tickets, id, idlen, k) < 0) {
        if (k) free(k->res);
        free(k);
        tg_wait_fail(t, "invalid", "%s: out of memory", label);
        return tg_wait_yield(L);
    }
    k->task = t;
    memcpy(k->id, id, idlen + 1);
    snprintf(k->kind, sizeof k->kind, "%s", kind);
    tg_wait_on_abort(t, ticket_abort, k);
    if (tg_redis_send_for(r, t, REQ_TICKET, si, argc, argv, lens, 1) < 0)
        tg_wait_abort(t, TG_ABORT_CLOSED);
    return tg_wait_yield(L);
}

void tg_coord_lost(tg_redis_t *r) {
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&r->tickets, NULL, &b))) {
        ticket_t *k = e->value;
        if (k->task->state == TG_TASK_WAITING && k->task->abort_data == k)
            tg_wait_abort(k->task, TG_ABORT_CLOSED);    /* frees k */
        else ticket_free(r, k);
    }
}

void tg_coord_free(tg_redis_t *r) {
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&r->tickets, NULL, &b))) ticket_free(r, e->value);
    tg_map_free(&r->tickets);
}

static const luaL_Reg coord_funcs[] = {
    {"ticket_id", l_ticket_id},
    {"ticket", l_ticket},
    {NULL, NULL},
};

void tg_coord_open_lua(lua_State *L) {
    luaL_setfuncs(L, coord_funcs, 0);
}
