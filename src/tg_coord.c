/*
 * tg_coord.c -- see tg_coord.h.
 *
 * A ticket lives as long as its wait.  A semaphore grant is the end of it:
 * the permit is on record as held by the instance's session.  A queue value
 * is different: it has left the queue, and if the consumer vanished now it
 * would be gone.  So a queue hand-over (at once, or through the inbox) is
 * first acknowledged on the server (coord.lua "ack": the record of the
 * hand-over is removed) and only then given to the task; a consumer that
 * dies before that gives the value back when its session ends.  The ticket
 * stays registered while its ack is in flight ("acking"): should the wait
 * end meanwhile, the acknowledged value goes back to the head of the queue.
 */
#include "tg_coord.h"

#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_call.h"
#include "tg_keys.h"
#include "tg_map.h"
#include "tg_redis.h"
#include "tg_scripts.h"

#define RESEND_ARG 13           /* coord.lua's ARGV[13], as an index of its argv */

typedef struct ticket {
    tg_task_t *task;
    char id[48];
    char kind[16];
    char sid[24];
    int acking;                 /* a hand-over's ack is in flight */
    char *res;                  /* the resource key, for withdraw */
    size_t rlen;
} ticket_t;

struct tg_tickets {
    tg_rt_t *rt;
    tg_redis_t *r;
    tg_map_t tickets;           /* ticket id -> ticket_t */
    unsigned long long seq;
    char proc_id[16];           /* this process, for its inbox, ticket and op ids */
    char *inbox;
    size_t inbox_len;
    char inbox_last[48];        /* the newest inbox entry handled */
};

int tg_coord_argv(const tg_coord_args_t *a, const char *res, size_t rlen, const char *P, size_t plen,
                  const char *ttl, const char **argv, size_t *lens, char nums[3][24]) {
    int n = 0;
#define ARG(s, l) (argv[n] = (s), lens[n] = (l), n++)
#define STR(s) ARG((s) ? (s) : "", (s) ? strlen(s) : 0)
    ARG(res, rlen);
    ARG(a->op, strlen(a->op));
    STR(a->kind);
    STR(a->ticket);
    ARG(a->value ? a->value : "", a->value ? a->vlen : 0);
    ARG(P, plen);
    STR(a->inbox);
    STR(a->sid);
    ARG(nums[0], (size_t)snprintf(nums[0], 24, "%lld", a->n));
    ARG(nums[1], (size_t)snprintf(nums[1], 24, "%lld", a->lease_ms));
    ARG(nums[2], (size_t)snprintf(nums[2], 24, "%lld", a->cap));
    ARG(ttl, strlen(ttl));
    STR(a->opid);
    ARG("", 0);                 /* RESEND_ARG: "1" on a resend (tg_redis_eval_marked) */
#undef STR
#undef ARG
    return n;
}

static tg_tickets_t *of(lua_State *L, const char *what) {
    tg_tickets_t *k = tg_ctx(L)->inst->rt->tickets;
    if (!k) tg_err_raise(L, "closed", "%s: not connected to Redis", what);
    return k;
}

static void ticket_free(tg_tickets_t *k, ticket_t *tk) {
    tg_map_del(&k->tickets, tk->id, strlen(tk->id));
    free(tk->res);
    free(tk);
}

/* Run coord.lua (not a task's wait) and give its reply to cb. */
static int run_coord(tg_tickets_t *k, const tg_coord_args_t *a, const char *res, size_t rlen,
                     tg_redis_cb cb, void *data, uint64_t tag) {
    tg_rt_t *rt = k->rt;
    const char *argv[TG_COORD_ARGC];
    size_t lens[TG_COORD_ARGC];
    char nums[3][24];
    int argc = tg_coord_argv(a, res, rlen, rt->prefix, rt->plen, rt->ttl, argv, lens, nums);
    return tg_redis_eval_marked(k->r, TG_SCRIPT_COORD, cb, data, tag, 1, argc, argv, lens, RESEND_ARG);
}

/* ---- withdraw and reject: settled on the server ------------------------ */

/* What a fire-and-forget call remembers to report a failure. */
typedef struct fired {
    tg_inst_t *inst;            /* whose log hears of a failure */
    char what[96];
} fired_t;

static void on_fired(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    fired_t *f = data;
    (void)r; (void)tag;
    if (rep && rep->type == REDIS_REPLY_ERROR && f->inst)
        tg_inst_warn(f->inst, "%s failed: Redis replied: %s", f->what, rep->str);
    free(f);
}

/* Run coord.lua with op on resource res and report only a failure. */
static void fire(tg_tickets_t *k, tg_inst_t *inst, const char *res, size_t rlen, const char *op,
                 const char *kind, const char *id, const char *sid, const char *v, size_t vlen) {
    if (tg_redis_down(k->r)) return;
    fired_t *f = malloc(sizeof *f);
    if (!f) return;
    f->inst = inst ? inst : k->rt->insts;
    snprintf(f->what, sizeof f->what, "%s of ticket %s", op, id);
    tg_coord_args_t a = {.op = op, .kind = kind, .ticket = id, .sid = sid, .value = v, .vlen = vlen,
                         .n = 1, .cap = 1};
    if (run_coord(k, &a, res, rlen, on_fired, f, 0) < 0) free(f);
}

static void ticket_abort(tg_task_t *t, int why) {
    ticket_t *tk = t->abort_data;
    tg_tickets_t *k = t->ctx.inst->rt->tickets;
    (void)why;
    if (!k) return;
    if (tk->acking) {
        tk->task = NULL;        /* the ack's reply gives the value back */
        return;
    }
    fire(k, t->ctx.inst, tk->res, tk->rlen, "withdraw", tk->kind, tk->id, tk->sid, NULL, 0);
    ticket_free(k, tk);
}

/* ---- handing over ---------------------------------------------------------- */

typedef struct value {
    const char *v;
    size_t vlen;
} value_t;

static int push_value(lua_State *L, void *ud) {
    value_t *h = ud;
    lua_pushlstring(L, h->v, h->vlen);
    return 1;
}

/* The value of a reply element as bytes (integers as text). */
static value_t value_of(const redisReply *v, char num[32]) {
    value_t h = {v->str ? v->str : "", v->str ? v->len : 0};
    if (v->type == REDIS_REPLY_INTEGER) {
        h.vlen = (size_t)snprintf(num, 32, "%lld", (long long)v->integer);
        h.v = num;
    }
    return h;
}

/* What an ack in flight remembers: the ticket (by id) and the value. */
typedef struct ack {
    tg_tickets_t *k;
    char id[48];
    size_t vlen;
    char v[];
} ack_t;

static void on_ack(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    ack_t *q = data;
    (void)r; (void)tag;
    if (!rep) { free(q); return; }              /* the unit may be gone */
    tg_tickets_t *k = q->k;
    ticket_t *tk = tg_map_get(&k->tickets, q->id, strlen(q->id));
    tg_task_t *t = tk ? tk->task : NULL;
    int live = t && tg_wait_target(t, t->token) && t->abort == ticket_abort;
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 1) {
        if (live) {
            value_t h = {q->v, q->vlen};
            ticket_free(k, tk);
            tg_wait_deliver(t, 1, push_value, &h);
        } else {
            /* acknowledged, but nobody takes it any more: back to the head */
            if (tk) fire(k, NULL, tk->res, tk->rlen, "reject", "queue", tk->id, "", q->v, q->vlen);
            if (tk) ticket_free(k, tk);
        }
    } else if (live) {
        ticket_free(k, tk);
        if (rep->type == REDIS_REPLY_ERROR)
            tg_wait_fail(t, "redis", "%s: Redis replied: %s", t->what, rep->str);
        else
            tg_wait_fail(t, "dead", "%s: the value handed over went back to the queue: this instance's "
                         "session had ended (it was declared dead)", t->what);
    } else if (tk) {
        ticket_free(k, tk);
    }
    free(q);
}

/* A queue value was handed to ticket tk: acknowledge it, then deliver. */
static void acknowledge(tg_tickets_t *k, ticket_t *tk, const char *v, size_t vlen) {
    ack_t *q = malloc(sizeof *q + vlen);
    tg_coord_args_t a = {.op = "ack", .kind = "queue", .ticket = tk->id, .sid = tk->sid, .n = 1, .cap = 1};
    if (q) {
        q->k = k;
        memcpy(q->id, tk->id, sizeof q->id);
        q->vlen = vlen;
        memcpy(q->v, v, vlen);
        tk->acking = 1;
        if (run_coord(k, &a, tk->res, tk->rlen, on_ack, q, 0) == 0) return;
        free(q);
    }
    tg_task_t *t = tk->task;
    ticket_free(k, tk);
    if (t && tg_wait_target(t, t->token))
        tg_wait_fail(t, "closed", "%s: could not acknowledge the value handed over: %s", t->what,
                     tg_redis_down(k->r) ? tg_redis_down(k->r) : "out of memory");
}

/* An entry of this process's inbox: ticket w was handed value v (of
 * resource x, kind t, session i). */
static void on_inbox(void *data, const char *id, const redisReply *fields) {
    tg_tickets_t *k = data;
    size_t wlen, vlen, xlen, tlen, ilen;
    snprintf(k->inbox_last, sizeof k->inbox_last, "%s", id);
    const char *w = tg_stream_field(fields, 'w', &wlen);
    const char *v = tg_stream_field(fields, 'v', &vlen);
    const char *x = tg_stream_field(fields, 'x', &xlen);
    const char *t = tg_stream_field(fields, 't', &tlen);
    const char *sid = tg_stream_field(fields, 'i', &ilen);
    if (!w) return;
    if (!v) { v = ""; vlen = 0; }
    ticket_t *tk = tg_map_get(&k->tickets, w, wlen);
    tg_task_t *task = tk ? tk->task : NULL;
    if (tk && !tk->acking && task && tg_wait_target(task, task->token) && task->abort == ticket_abort) {
        if (strcmp(tk->kind, "queue") == 0) {
            acknowledge(k, tk, v, vlen);
        } else {
            ticket_free(k, tk);
            value_t h = {v, vlen};
            tg_wait_deliver(task, 1, push_value, &h);
        }
        return;
    }
    /* Nobody waits for it any more: give it back. */
    char kind[16], tid[64], s[24];
    if (!x || !t || tlen >= sizeof kind || wlen >= sizeof tid || ilen >= sizeof s) return;
    memcpy(kind, t, tlen); kind[tlen] = '\0';
    memcpy(tid, w, wlen); tid[wlen] = '\0';
    memcpy(s, sid ? sid : "", ilen); s[ilen] = '\0';
    fire(k, NULL, x, xlen, "reject", kind, tid, s, v, vlen);
}

static void on_trimmed(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    tg_tickets_t *k = data;
    (void)r; (void)tag;
    if (rep && rep->type == REDIS_REPLY_ERROR && k->rt->insts)
        tg_inst_warn(k->rt->insts, "trimming this process's inbox failed: Redis replied: %s", rep->str);
}

/* After a read: drop the inbox entries handled (nothing is trimmed that
 * was not read, so no hand-over can be lost to a length limit). */
static void on_inbox_batch(void *data) {
    tg_tickets_t *k = data;
    if (!k->inbox_last[0]) return;
    const char *argv[4] = {"XTRIM", k->inbox, "MINID", k->inbox_last};
    size_t lens[4] = {5, k->inbox_len, 5, strlen(k->inbox_last)};
    tg_redis_cmd(k->r, on_trimmed, k, 0, 4, argv, lens);
}

static const tg_stream_ops_t inbox_ops = {on_inbox, on_inbox_batch, NULL};

/* ---- the acquire (or pop) script's answer ---------------------------------- */

static int granted(const redisReply *rep) {
    return rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2
        && rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer == 1;
}

/* What an acquire request remembers: its task and, should the grant land
 * after the wait ended, what to give back. */
typedef struct acquire {
    tg_task_t *task;
    char id[48], kind[16], sid[24];
    size_t rlen;
    char res[];
} acquire_t;

static void on_acquire(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    acquire_t *q = data;
    tg_task_t *t = q->task;
    (void)r;
    tg_tickets_t *k = t->ctx.inst->rt->tickets;
    char num[32];
    if (tg_wait_target(t, tag) && t->abort == ticket_abort) {
        ticket_t *tk = t->abort_data;
        if (!rep) {
            tg_wait_abort(t, TG_ABORT_CLOSED);
        } else if (rep->type == REDIS_REPLY_ERROR) {
            ticket_free(k, tk);
            tg_wait_fail(t, "redis", "%s: Redis replied: %s", t->what, rep->str);
        } else if (granted(rep)) {
            value_t h = value_of(rep->element[1], num);
            if (strcmp(tk->kind, "queue") == 0) {
                acknowledge(k, tk, h.v, h.vlen);
            } else {
                ticket_free(k, tk);
                tg_wait_deliver(t, 1, push_value, &h);
            }
        } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1
                   && rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer == 0) {
            /* queued: the inbox brings the value */
        } else {
            ticket_free(k, tk);
            tg_wait_fail(t, "redis", "%s: unexpected reply from the server script", t->what);
        }
    } else if (granted(rep) && k) {
        /* Granted at once, but the wait already ended (timeout, cancel):
         * nobody will use it, so give it back as a stale hand-over is --
         * the permit is released, the value goes back to the queue's head. */
        value_t h = value_of(rep->element[1], num);
        fire(k, NULL, q->res, q->rlen, "reject", q->kind, q->id, q->sid, h.v, h.vlen);
    }
    tg_task_unref(t);
    free(q);
}

/* ---- Lua ----------------------------------------------------------------- */

static int key_kind(lua_State *L, int idx) {
    static const char *const names[] = {"sem", "mutex", "election", "queue", "counter", "sessions", NULL};
    static const int kinds[] = {TG_KEY_SEM, TG_KEY_MUTEX, TG_KEY_ELECTION, TG_KEY_QUEUE, TG_KEY_COUNTER,
                                TG_KEY_SESSIONS};
    return kinds[luaL_checkoption(L, idx, NULL, names)];
}

/* coord.ticket_id() -> a fresh ticket id of this process */
static int l_ticket_id(lua_State *L) {
    tg_tickets_t *k = of(L, "ticket");
    lua_pushfstring(L, "%s:%I", k->proc_id, (lua_Integer)++k->seq);
    return 1;
}

/* coord.ticket(id, resource, name, op, sid, n, lease_ms, cap, timeout, label) -> value.
 * Yields until the script grants, or the inbox hands ticket id a value.
 * resource is "sem", "mutex", "election" or "queue"; op "acquire" or "pop". */
static int l_ticket(lua_State *L) {
    size_t idlen, sidlen;
    const char *id = luaL_checklstring(L, 1, &idlen);
    int kk = key_kind(L, 2);
    size_t nlen;
    const char *name = luaL_checklstring(L, 3, &nlen);
    const char *op = luaL_checkstring(L, 4);
    const char *sid = luaL_checklstring(L, 5, &sidlen);
    tg_coord_args_t a = {.op = op, .sid = sid, .n = luaL_checkinteger(L, 6),
                         .lease_ms = luaL_checkinteger(L, 7), .cap = luaL_checkinteger(L, 8)};
    double timeout = luaL_checknumber(L, 9);
    const char *label = luaL_checkstring(L, 10);
    a.kind = kk == TG_KEY_QUEUE ? "queue" : "sem";
    tg_tickets_t *k = of(L, label);
    tg_rt_t *rt = k->rt;
    if (tg_redis_down(k->r)) return tg_err_raise(L, "closed", "%s: %s", label, tg_redis_down(k->r));
    char res[1024];
    size_t rlen = tg_key(res, sizeof res, rt->prefix, rt->plen, kk, name, nlen);
    if (rlen >= sizeof res) return tg_err_raise(L, "invalid", "%s: the name is too long", label);
    if (idlen >= sizeof ((ticket_t *)0)->id || sidlen >= sizeof ((ticket_t *)0)->sid)
        return tg_err_raise(L, "invalid", "%s: bad ticket id", label);
    if (tg_map_get(&k->tickets, id, idlen))
        return tg_err_raise(L, "invalid", "%s: ticket %s is in use", label, id);
    a.ticket = id;
    a.inbox = k->inbox;
    int kind = kk == TG_KEY_MUTEX ? TG_WAIT_LOCK : kk == TG_KEY_ELECTION ? TG_WAIT_ELECTION
             : kk == TG_KEY_QUEUE ? TG_WAIT_QUEUE : TG_WAIT_SEMAPHORE;
    tg_task_t *t = tg_wait_begin(L, kind, name, nlen, timeout, label);   /* may raise: nothing allocated yet */
    ticket_t *tk = calloc(1, sizeof *tk);
    acquire_t *q = malloc(sizeof *q + rlen + 1);
    if (!tk || !q || !(tk->res = malloc(rlen + 1)) || tg_map_set(&k->tickets, id, idlen, tk) < 0) {
        if (tk) free(tk->res);
        free(tk);
        free(q);
        tg_wait_fail(t, "nomem", "%s: out of memory", label);
        return tg_wait_yield(L);
    }
    tk->task = t;
    memcpy(tk->id, id, idlen + 1);
    snprintf(tk->kind, sizeof tk->kind, "%s", a.kind);
    memcpy(tk->sid, sid, sidlen + 1);
    memcpy(tk->res, res, rlen + 1);
    tk->rlen = rlen;
    q->task = tg_task_ref(t);
    memcpy(q->id, id, idlen + 1);
    snprintf(q->kind, sizeof q->kind, "%s", a.kind);
    memcpy(q->sid, sid, sidlen + 1);
    memcpy(q->res, res, rlen + 1);
    q->rlen = rlen;
    tg_wait_on_abort(t, ticket_abort, tk);
    if (run_coord(k, &a, res, rlen, on_acquire, q, t->token) < 0) {
        tg_task_unref(t);
        free(q);
        tg_wait_abort(t, TG_ABORT_CLOSED);
    }
    return tg_wait_yield(L);
}

/* coord.call(resource, name, op, sid, ticket, value, n, label) -> reply.
 * Yields: one coord.lua call that never queues (release, holder, add, push,
 * beat, die, bye).  add and push carry an op id, so that a resend after a
 * dropped connection does not count twice. */
static int l_call(lua_State *L) {
    int kk = key_kind(L, 1);
    size_t nlen, vlen;
    const char *name = luaL_optlstring(L, 2, "", &nlen);
    tg_coord_args_t a = {.op = luaL_checkstring(L, 3), .sid = luaL_checkstring(L, 4),
                         .ticket = luaL_optstring(L, 5, ""), .n = luaL_optinteger(L, 7, 1), .cap = 1};
    a.value = luaL_optlstring(L, 6, "", &vlen);
    a.vlen = vlen;
    const char *label = luaL_checkstring(L, 8);
    a.kind = kk == TG_KEY_QUEUE ? "queue" : kk == TG_KEY_COUNTER ? "counter" : kk == TG_KEY_SESSIONS ? "" : "sem";
    tg_tickets_t *k = of(L, label);
    tg_rt_t *rt = k->rt;
    char res[1024], opid[48];
    size_t rlen = tg_key(res, sizeof res, rt->prefix, rt->plen, kk, name, nlen);
    if (rlen >= sizeof res) return tg_err_raise(L, "invalid", "%s: the name is too long", label);
    if (strcmp(a.op, "add") == 0 || strcmp(a.op, "push") == 0) {
        snprintf(opid, sizeof opid, "%s:o%llu", k->proc_id, ++k->seq);
        a.opid = opid;
    }
    const char *argv[TG_COORD_ARGC];
    size_t lens[TG_COORD_ARGC];
    char nums[3][24];
    int argc = tg_coord_argv(&a, res, rlen, rt->prefix, rt->plen, rt->ttl, argv, lens, nums);
    double timeout = kk == TG_KEY_SESSIONS ? 5 : -1;
    return tg_call_yield_marked(L, TG_WAIT_COORD, name, nlen, timeout, label, TG_SCRIPT_COORD, 1, argc, argv, lens,
                                RESEND_ARG);
}

static const luaL_Reg funcs[] = {
    {"ticket_id", l_ticket_id},
    {"ticket", l_ticket},
    {"call", l_call},
    {NULL, NULL},
};

int luaopen_tg_coord_c(lua_State *L) {
    luaL_newlib(L, funcs);
    return 1;
}

/* ---- attach / detach ----------------------------------------------------- */

/* The connection is gone: every ticket's wait fails with "closed". */
static void on_lost(void *data, const char *why) {
    tg_tickets_t *k = data;
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&k->tickets, NULL, &b))) {
        ticket_t *tk = e->value;
        tg_task_t *t = tk->task;
        ticket_free(k, tk);
        if (t && t->state == TG_TASK_WAITING && t->abort == ticket_abort && t->abort_data == tk) {
            t->abort = NULL;
            tg_wait_fail(t, "closed", "%s: %s", t->what, why);
        }
    }
}

int tg_coord_attach(tg_rt_t *rt) {
    tg_tickets_t *k = calloc(1, sizeof *k);
    if (!k) return -1;
    k->rt = rt;
    k->r = rt->redis;
    tg_rt_random_id(k->proc_id, sizeof k->proc_id);
    if (!(k->inbox = tg_key_new(rt->prefix, rt->plen, TG_KEY_INBOX, k->proc_id, strlen(k->proc_id), &k->inbox_len))
        || tg_redis_on_lost(k->r, on_lost, k) < 0
        || tg_redis_watch(k->r, k->inbox, k->inbox_len, "0-0", &inbox_ops, k) < 0) {
        tg_redis_off_lost(k->r, on_lost, k);
        free(k->inbox);
        free(k);
        return -1;
    }
    rt->tickets = k;
    return 0;
}

void tg_coord_detach(tg_rt_t *rt) {
    tg_tickets_t *k = rt->tickets;
    if (!k) return;
    rt->tickets = NULL;
    tg_redis_off_lost(k->r, on_lost, k);
    tg_redis_unwatch(k->r, k->inbox, k->inbox_len);
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&k->tickets, NULL, &b))) ticket_free(k, e->value);
    tg_map_free(&k->tickets);
    free(k->inbox);
    free(k);
}
