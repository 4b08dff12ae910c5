/*
 * tg_barrier.c -- states and barriers; see tg_barrier.h for the contract
 * and docs/design.md for the wake-up protocol.
 *
 * Batches.  What the tasks of this process ask of a state during one turn
 * of the loop -- signal_entry, signal_and_wait, barrier -- is gathered in
 * the state's pending batch and goes to Redis as one enter_batch.lua call
 * when the turn ends (tg_rt_on_drained): one INCRBY for all the new
 * entries, one BITFIELD for their slots and the targets, one read of the
 * awaited targets they pass, and at most one XADD.  The new entries are
 * numbered consecutively in the order the tasks called, so arrival order
 * within a batch is call order.  A thousand local instances entering a
 * state in one turn cost one request, not a thousand.
 *
 * Waiters.  Every call registers a waiter (bwaiter_t) in its state's list
 * before anything is sent, so a notification that overtakes the reply is
 * not lost.  Waiters come from a free list that lives as long as the unit:
 * after a first round nothing is allocated per call, and the label the
 * wait's messages name ("barrier 'ready'") lives in the waiter, so
 * t->what can point at it (tg_wait_begin_ref) and nothing is formatted
 * unless a message is.  A wait bounded only by the run's deadline arms no
 * timer of its own (tg_rt's one deadline timer ends it).
 *
 * Release.  The batch's reply carries the count after it: every waiter of
 * the batch gets its seq and goes at once if the count is there, and so do
 * earlier waiters of the state whose target the count reached -- no need to
 * wait for the notify stream, which still releases the other processes'
 * waiters.  Releasing a waiter is an integer pushed on its coroutine, the
 * waiter back on the free list and the task on the ready queue.
 *
 * Lifetimes.  A waiter lives exactly as long as its wait: its abort hook
 * (timeout, cancel, lost connection, shutdown) takes it out of its list and
 * out of its batch, which then carries a NULL in its place: a batch not yet
 * sent drops the entry, one in flight ignores its answer.  A batch in
 * flight belongs to its request; when the unit lets go of the state (the
 * connection is lost for good, the unit is detached) the batch is orphaned
 * (l = NULL) and its late reply only frees it.  A state's list is freed
 * once it has no waiter, no batch and nobody walking it (busy).
 */
#include "tg_barrier.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#include "tg_keys.h"
#include "tg_map.h"
#include "tg_redis.h"
#include "tg_sargs.h"
#include "tg_scripts.h"

#define SAFETY_MS 1000
#define LABEL_NAME 120          /* bytes of a state's name that messages show */
#define FREE_BATCHES 64

/* What a waiter asked for. */
enum { W_ENTER = 1, W_SIGNAL, W_WAIT };        /* signal_and_wait, signal_entry, barrier */

struct batch;

/* A task waiting at a state; lives exactly as long as that wait. */
typedef struct bwaiter {
    tg_task_t *task;
    long long target;           /* LLONG_MAX for W_SIGNAL: only its own reply releases it */
    long long seq;              /* its arrival order (W_WAIT: the count), once replied */
    int kind, replied;
    int tolerant;               /* no peer_failed: the caller expects deaths, or only signals */
    struct blist *list;
    struct bwaiter *prev, *next;        /* the list's waiters; next: the free list */
    struct batch *batch;        /* the batch that carries it, until the reply */
    int bidx;                   /* its place there */
    char label[144];            /* "barrier '<name>'" or "signal_entry('<name>')": t->what */
} bwaiter_t;

/* One entry or wait of a batch. */
typedef struct bent {
    bwaiter_t *w;               /* NULL once the waiter left */
    int kind;
    uint32_t sid_off, sid_len, op_off, op_len;  /* in the batch's bytes, until sent */
} bent_t;

/* What one state's callers asked for in one turn. */
typedef struct batch {
    struct blist *l;            /* NULL once orphaned: the reply only frees it */
    struct batch *prev, *next;  /* the state's batches in flight; next: the free list */
    int n, cap;
    int ne;                     /* entries (not plain waits), as sent */
    bent_t *ents;
    char *bytes;                /* instance numbers and op ids, until sent */
    size_t blen, bcap;
} batch_t;

/* The local waiters of one state, its batches, and the last count seen. */
typedef struct blist {
    tg_barriers_t *b;
    long long count;
    long long instances;        /* the run's instance count, for peer_failed */
    long long min_target;       /* no waiter here has a lower target (a lower bound) */
    int nreplied;               /* waiters that have their answer and wait for the count */
    int checking;               /* a feasibility check is in flight */
    int busy;                   /* being walked: not to be freed */
    int dirty;                  /* on the unit's list of states to flush */
    struct blist *next_dirty;
    bwaiter_t *head;
    batch_t *pending;           /* gathered this turn */
    batch_t *flight;            /* sent, not answered */
    char *key, *members;        /* P:states:<name>, P:tg:members:<name> */
    size_t klen, mlen, nlen;
    char name[];
} blist_t;

struct tg_barriers {
    tg_rt_t *rt;
    tg_redis_t *r;
    tg_map_t lists;             /* state name -> blist_t */
    blist_t *dirty;             /* states with a pending batch */
    bwaiter_t *free;            /* waiters to reuse */
    batch_t *free_batches;      /* batches to reuse (their arrays kept), at most FREE_BATCHES */
    int nfree_batches;
    /* send_batch's argument vector, kept from one batch to the next */
    const char **argv;
    size_t *lens;
    char *nums;
    int argcap, numcap;
    tg_batch_head_t head;
    long long ndead;            /* peers known to have failed or died */
    char *P, *notify, *dead, *skey;     /* skey: P:states: (a state key's first part) */
    size_t plen, notify_len, dead_len, skey_len;
    uv_timer_t safety;
    char notify_from[48];       /* where the notify stream was at start-up */
    char pid[16];               /* this process, in batch ids */
    unsigned long long nbid;
    unsigned long long notifies, safety_checks, batches, entries;
    unsigned long long replays;         /* batches a resend found done (answered as then) */
};

static void check_feasible(tg_barriers_t *b, blist_t *l);

/* ---- labels, waiters, lists ------------------------------------------------- */

/* "barrier '<name>'" or "signal_entry('<name>')", the name cut at 120 bytes
 * or at a NUL, as the messages have always shown it. */
static void make_label(char *dst, int kind, const char *name, size_t nlen) {
    const char *pre = kind == W_SIGNAL ? "signal_entry('" : "barrier '";
    const char *post = kind == W_SIGNAL ? "')" : "'";
    size_t pl = strlen(pre), ql = strlen(post);
    size_t n = nlen > LABEL_NAME ? LABEL_NAME : nlen;
    const char *z = memchr(name, '\0', n);
    if (z) n = (size_t)(z - name);
    memcpy(dst, pre, pl);
    memcpy(dst + pl, name, n);
    memcpy(dst + pl + n, post, ql + 1);
}

/* A free waiter, left on the free list until pool_pop takes it (so that a
 * raise in between loses nothing).  NULL on ENOMEM. */
static bwaiter_t *pool_peek(tg_barriers_t *b) {
    if (!b->free) {
        bwaiter_t *w = malloc(sizeof *w);
        if (!w) return NULL;
        w->next = NULL;
        b->free = w;
    }
    return b->free;
}

static void pool_pop(tg_barriers_t *b) {
    b->free = b->free->next;
}

/* Take w out of its list and its batch, and back to the free list.  Its
 * label stays readable (the memory is the unit's) until it is reused. */
static void end_waiter(tg_barriers_t *b, bwaiter_t *w) {
    blist_t *l = w->list;
    if (w->replied) l->nreplied--;
    if (w->prev) w->prev->next = w->next;
    else l->head = w->next;
    if (w->next) w->next->prev = w->prev;
    if (w->batch) w->batch->ents[w->bidx].w = NULL;
    w->batch = NULL;
    w->next = b->free;
    b->free = w;
}

static void batch_free(batch_t *B) {
    if (!B) return;
    free(B->ents);
    free(B->bytes);
    free(B);
}

/* Done with B: back to the unit's free list, arrays and all. */
static void batch_put(tg_barriers_t *b, batch_t *B) {
    if (!B) return;
    if (b->nfree_batches >= FREE_BATCHES) {
        batch_free(B);
        return;
    }
    B->l = NULL;
    B->prev = NULL;
    B->n = B->ne = 0;
    B->blen = 0;
    B->next = b->free_batches;
    b->free_batches = B;
    b->nfree_batches++;
}

static void maybe_free_list(tg_barriers_t *b, blist_t *l) {
    if (l->head || l->pending || l->flight || l->dirty || l->busy) return;
    free(tg_map_del(&b->lists, l->name, l->nlen));
}

/* Would the keys of state name fit? */
static int name_fits(tg_barriers_t *b, const char *name, size_t nlen) {
    return tg_key(NULL, 0, b->P, b->plen, TG_KEY_STATE, name, nlen) < TG_KEY_MAX
        && tg_key(NULL, 0, b->P, b->plen, TG_KEY_MEMBERS, name, nlen) < TG_KEY_MAX
        && tg_key(NULL, 0, b->P, b->plen, TG_KEY_OPS, name, nlen) < TG_KEY_MAX;
}

static blist_t *list_new(tg_barriers_t *b, const char *name, size_t nlen) {
    size_t klen = tg_key(NULL, 0, b->P, b->plen, TG_KEY_STATE, name, nlen);
    size_t mlen = tg_key(NULL, 0, b->P, b->plen, TG_KEY_MEMBERS, name, nlen);
    blist_t *l = calloc(1, sizeof *l + nlen + 1 + klen + 1 + mlen + 1);
    if (!l) return NULL;
    memcpy(l->name, name, nlen);
    l->nlen = nlen;
    l->key = l->name + nlen + 1;
    l->klen = tg_key(l->key, klen + 1, b->P, b->plen, TG_KEY_STATE, name, nlen);
    l->members = l->key + klen + 1;
    l->mlen = tg_key(l->members, mlen + 1, b->P, b->plen, TG_KEY_MEMBERS, name, nlen);
    l->b = b;
    l->min_target = LLONG_MAX;
    if (tg_map_set(&b->lists, name, nlen, l) < 0) {
        free(l);
        return NULL;
    }
    return l;
}

/* Release w: its seq to its coroutine (an integer: no allocation). */
static void release(tg_barriers_t *b, bwaiter_t *w) {
    tg_task_t *t = w->task;
    lua_pushinteger(t->co, w->seq);
    end_waiter(b, w);
    tg_wait_done(t, 1, 1);
}

/* The count reached some waiter's target: release every waiter that has
 * its answer and whose target is reached; keep the lowest target left.
 * (Only when some waiter has its answer: a notification that overtakes
 * the batch's reply finds a thousand waiters without one.) */
static void sweep(tg_barriers_t *b, blist_t *l) {
    if (l->nreplied == 0) return;
    long long min = LLONG_MAX;
    for (bwaiter_t *w = l->head, *next; w; w = next) {
        next = w->next;
        if (w->replied && w->target <= l->count) release(b, w);
        else if (w->target < min) min = w->target;
    }
    l->min_target = min;
}

/* The state's count is known to be at least n (a notification, the safety
 * check, a feasibility check). */
static void count_is(tg_barriers_t *b, blist_t *l, long long n) {
    if (n > l->count) l->count = n;
    if (l->count >= l->min_target) sweep(b, l);
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
    char label[144];
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
    if (w->kind == W_SIGNAL) {
        /* as any request: tg_wait_abort says what it waited for */
        end_waiter(l->b, w);
        maybe_free_list(l->b, l);
        if (why == TG_ABORT_CLOSED)
            tg_wait_fail(t, "closed", "%s: %s", w->label, b && tg_redis_down(b->r) ? tg_redis_down(b->r)
                         : "the connection to Redis was lost");
        return;
    }
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
            end_waiter(l->b, w);
            maybe_free_list(l->b, l);
            tg_wait_on_abort(t, final_abort, f);
            tg_wait_extend(t, 1);
            return;
        }
        tg_task_unref(t);
        free(f);
    }
    long long count = l->count, target = w->target;
    end_waiter(l->b, w);                        /* w->label stays readable */
    maybe_free_list(l->b, l);
    fail_waiter(t, why, w->label, count, target);
}

/* ---- sending a batch -------------------------------------------------------- */

/* Append an entry (or a plain wait) to the state's pending batch.  0, or
 * -1 on ENOMEM. */
static int batch_add(blist_t *l, bwaiter_t *w, int kind, const char *sid, size_t slen,
                     const char *op, size_t olen) {
    batch_t *B = l->pending;
    if (!B) {
        if ((B = l->b->free_batches)) {
            l->b->free_batches = B->next;
            l->b->nfree_batches--;
            B->next = NULL;
        } else if (!(B = calloc(1, sizeof *B))) {
            return -1;
        }
        l->pending = B;
    }
    if (B->n == B->cap) {
        int cap = B->cap ? 2 * B->cap : 16;
        bent_t *e = realloc(B->ents, (size_t)cap * sizeof *e);
        if (!e) goto nomem;
        B->ents = e;
        B->cap = cap;
    }
    if (B->blen + slen + olen > B->bcap) {
        size_t cap = B->bcap ? 2 * B->bcap : 256;
        while (cap < B->blen + slen + olen) cap *= 2;
        char *p = realloc(B->bytes, cap);
        if (!p) goto nomem;
        B->bytes = p;
        B->bcap = cap;
    }
    bent_t *e = &B->ents[B->n];
    e->w = w;
    e->kind = kind;
    e->sid_off = (uint32_t)B->blen;
    e->sid_len = (uint32_t)slen;
    if (slen) memcpy(B->bytes + B->blen, sid, slen);
    B->blen += slen;
    e->op_off = (uint32_t)B->blen;
    e->op_len = (uint32_t)olen;
    if (olen) memcpy(B->bytes + B->blen, op, olen);
    B->blen += olen;
    w->batch = B;
    w->bidx = B->n++;
    return 0;
nomem:
    if (B->n == 0) {                            /* a new batch that holds nothing */
        batch_put(l->b, B);
        l->pending = NULL;
    }
    return -1;
}

static void on_batch(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag);

/* Every waiter still in B ends with "closed" (the request could not go). */
static void batch_closed(blist_t *l, batch_t *B) {
    l->busy++;
    for (int i = 0; i < B->n; i++) {
        bwaiter_t *w = B->ents[i].w;
        if (w && w->task->state == TG_TASK_WAITING && w->task->abort_data == w)
            tg_wait_abort(w->task, TG_ABORT_CLOSED);
        else if (w) end_waiter(l->b, w);
    }
    l->busy--;
}

/* Send state l's pending batch B as one enter_batch.lua call. */
static void send_batch(tg_barriers_t *b, blist_t *l, batch_t *B) {
    int n = 0, ne = 0, nt = 0, nops = 0, waits = 0;
    /* drop the entries whose waiters left; count what goes */
    for (int i = 0; i < B->n; i++) {
        bent_t e = B->ents[i];
        if (!e.w) continue;
        e.w->bidx = n;
        B->ents[n++] = e;
        if (e.kind != W_WAIT) {
            ne++;
            if (e.op_len) nops++;
        }
        if (e.kind != W_SIGNAL) nt++;
        if (e.kind == W_WAIT) waits = 1;
    }
    B->n = n;
    B->ne = ne;
    if (n == 0) {
        batch_put(b, B);
        return;
    }
    int argc = TG_BATCH_HEAD + nt + ne + 2 * nops, nnum = nt + nops + 1;
    if (argc > b->argcap) {
        const char **v = realloc(b->argv, (size_t)argc * sizeof *v);
        if (v) b->argv = v;
        size_t *ls = v ? realloc(b->lens, (size_t)argc * sizeof *ls) : NULL;
        if (ls) b->lens = ls;
        if (v && ls) b->argcap = argc;
    }
    if (nnum > b->numcap) {
        char *p = realloc(b->nums, (size_t)nnum * 24);
        if (p) b->nums = p, b->numcap = nnum;
    }
    const char **argv = b->argv;
    size_t *lens = b->lens;
    char *nums = b->nums;
    tg_batch_head_t *h = &b->head;
    char bid[64] = "";
    size_t blen = 0;
    int rc = -1;
    if (argc <= b->argcap && nnum <= b->numcap) {
        /* the batch's id: the script records it when a resend could not
         * tell otherwise whether the batch ran (enter_batch.lua) */
        blen = (size_t)snprintf(bid, sizeof bid, "tg.batch:%s:%llu", b->pid, ++b->nbid);
        /* the targets, each once (a round's entries usually share one) */
        int t = 0;
        size_t np = 0;
        long long last = LLONG_MIN, first[16];
        for (int i = 0; i < n; i++) {
            bent_t *e = &B->ents[i];
            if (e->kind == W_SIGNAL || e->w->target == last) continue;
            last = e->w->target;
            int seen = 0;
            for (int j = 0; j < t && j < 16; j++) if (first[j] == last) seen = 1;
            if (seen) continue;                 /* (past 16 distinct ones, repeats are harmless) */
            if (t < 16) first[t] = last;
            argv[TG_BATCH_HEAD + t] = nums + np;
            lens[TG_BATCH_HEAD + t] = (size_t)snprintf(nums + np, 24, "%lld", last);
            np += 24;
            t++;
        }
        nt = t;
        argc = TG_BATCH_HEAD + nt + ne + 2 * nops;
        /* the entries' instance numbers (and their range: the script
         * writes many close ones as one stretch), then (i, op id) pairs */
        int a = TG_BATCH_HEAD + nt, o = a + ne, ei = 0;
        long long lo = LLONG_MAX, hi = LLONG_MIN;
        for (int i = 0; i < n; i++) {
            bent_t *e = &B->ents[i];
            if (e->kind == W_WAIT) continue;
            ei++;
            argv[a] = B->bytes ? B->bytes + e->sid_off : "";
            lens[a++] = e->sid_len;
            long long sid = 0;
            const char *d = B->bytes ? B->bytes + e->sid_off : "";
            uint32_t j = 0;
            while (j < e->sid_len && j < 18 && d[j] >= '0' && d[j] <= '9') sid = sid * 10 + (d[j++] - '0');
            if (j > 0 && j == e->sid_len) {
                if (sid < lo) lo = sid;
                if (sid > hi) hi = sid;
            }
            if (e->op_len) {
                argv[o] = nums + np;
                lens[o++] = (size_t)snprintf(nums + np, 24, "%d", ei);
                np += 24;
                argv[o] = B->bytes + e->op_off;
                lens[o++] = e->op_len;
            }
        }
        if (tg_batch_head(h, b->P, b->plen, l->name, l->nlen, b->rt->ttl, bid, blen, nt, ne, waits, lo, hi) == 0) {
            memcpy(argv, h->argv, sizeof h->argv);
            memcpy(lens, h->lens, sizeof h->lens);
            rc = tg_redis_eval_marked(b->r, TG_SCRIPT_ENTER_BATCH, on_batch, B, 0, TG_BATCH_NKEYS, argc, argv,
                                      lens, TG_BATCH_RESEND);
        }
    }
    B->blen = 0;                                /* the request has its own copy */
    if (rc < 0) {
        batch_closed(l, B);
        batch_put(b, B);
        return;
    }
    B->l = l;
    B->next = l->flight;
    if (l->flight) l->flight->prev = B;
    l->flight = B;
    b->batches++;
    b->entries += (unsigned long long)ne;
}

/* The end of a turn: every state's pending batch goes, one call each. */
static void on_drained(void *data) {
    tg_barriers_t *b = data;
    blist_t *l;
    while ((l = b->dirty)) {
        b->dirty = l->next_dirty;
        l->next_dirty = NULL;
        l->dirty = 0;
        batch_t *B = l->pending;
        l->pending = NULL;
        l->busy++;
        if (B) send_batch(b, l, B);
        l->busy--;
        maybe_free_list(b, l);
    }
}

static int int_reply(const redisReply *e, long long *v) {
    if (e->type != REDIS_REPLY_INTEGER) return -1;
    *v = e->integer;
    return 0;
}

/* The reply {n0, n, i1, s1, ...} (enter_batch.lua's header): every entry
 * gets its seq, every plain wait the count; whoever's target the count
 * reached goes at once. */
static void on_batch(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    batch_t *B = data;
    blist_t *l = B->l;
    (void)r; (void)tag;
    if (!l) {                                   /* orphaned: nobody waits for it */
        batch_free(B);
        return;
    }
    tg_barriers_t *b = l->b;
    if (B->prev) B->prev->next = B->next;
    else l->flight = B->next;
    if (B->next) B->next->prev = B->prev;
    B->l = NULL;
    long long n0 = 0, n = 0;
    size_t np = 0;
    int ok = 0;
    if (rep && rep->type == REDIS_REPLY_INTEGER) {    /* every entry new */
        n = rep->integer;
        n0 = n - B->ne;
        ok = 1;
    } else if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2 && rep->elements % 2 == 0
               && int_reply(rep->element[0], &n0) == 0 && int_reply(rep->element[1], &n) == 0) {
        np = (rep->elements - 2) / 2;
        ok = 1;
        /* a resend that found its batch done ends with (0, 0) */
        long long z0, z1;
        if (np > 0 && int_reply(rep->element[rep->elements - 2], &z0) == 0 && z0 == 0
            && int_reply(rep->element[rep->elements - 1], &z1) == 0 && z1 == 0) {
            b->replays++;
            np--;
        }
    }
    l->busy++;
    if (!rep) {
        batch_closed(l, B);
    } else if (!ok) {
        for (int i = 0; i < B->n; i++) {
            bwaiter_t *w = B->ents[i].w;
            if (!w) continue;
            tg_task_t *t = w->task;
            end_waiter(b, w);
            tg_wait_fail(t, "redis", "%s: Redis replied: %s", w->label,
                         rep->type == REDIS_REPLY_ERROR ? rep->str : "an unexpected reply");
        }
    } else {
        if (n > l->count) l->count = n;
        size_t pi = 0;
        long long rank = 0, ei = 0;
        for (int i = 0; i < B->n; i++) {
            bent_t *e = &B->ents[i];
            long long seq = n;
            if (e->kind != W_WAIT) {
                ei++;
                long long li, ls;
                if (pi < np && int_reply(rep->element[2 + 2 * pi], &li) == 0 && li == ei
                    && int_reply(rep->element[3 + 2 * pi], &ls) == 0) {
                    seq = ls;
                    pi++;
                } else {
                    seq = n0 + ++rank;
                }
            }
            bwaiter_t *w = e->w;
            if (!w) continue;
            w->batch = NULL;
            w->seq = seq;
            w->replied = 1;
            l->nreplied++;
            if (w->kind == W_SIGNAL || w->target <= l->count) release(b, w);
        }
        if (l->count >= l->min_target) sweep(b, l);
        /* Peers died before these waits began: can they still complete?
         * (Only when this process knows of a death: checking every batch
         * would cost a script call each.) */
        if (b->ndead > 0 && l->head) check_feasible(b, l);
    }
    l->busy--;
    batch_put(b, B);
    maybe_free_list(b, l);
}

/* ---- entering and waiting ------------------------------------------------ */

static const char *state_arg(lua_State *L, int idx, size_t *len) {
    const char *s = luaL_checklstring(L, idx, len);
    if (*len == 0 || *len > 900) tg_err_raise(L, "invalid", "a state name must be 1 to 900 bytes long");
    return s;
}

/* The member argument at idx: the instance's number as an integer (sync.lua
 * passes it so: a string made per call is an allocation, a string-table
 * probe and garbage, a thousand times a round) written into buf, or a
 * string as it is. */
static const char *member_arg(lua_State *L, int idx, char *buf, size_t *len) {
    if (!lua_isinteger(L, idx)) return luaL_checklstring(L, idx, len);
    lua_Integer v = lua_tointeger(L, idx);
    unsigned long long u = v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v;
    char tmp[24], *p = tmp + sizeof tmp;
    do *--p = (char)('0' + u % 10); while ((u /= 10));
    if (v < 0) *--p = '-';
    *len = (size_t)(tmp + sizeof tmp - p);
    memcpy(buf, p, *len);
    return buf;
}

/* Register a waiter of kind for state name and queue its entry (or plain
 * wait) in the state's batch of this turn; yield.  The waiter is
 * registered before anything is sent. */
static int join_batch(lua_State *L, int kind, const char *name, size_t nlen, lua_Integer target,
                      double timeout, lua_Integer instances, const char *sid, size_t slen,
                      const char *op, size_t olen) {
    tg_barriers_t *b = tg_ctx(L)->inst->rt->barriers;
    blist_t *l = b ? tg_map_get(&b->lists, name, nlen) : NULL;
    bwaiter_t *w = NULL;
    const char *code = NULL, *bad = NULL;
    if (!b) code = "closed", bad = "not connected to Redis";
    else if (tg_redis_down(b->r)) code = "closed", bad = tg_redis_down(b->r);
    else if (!l && !name_fits(b, name, nlen)) code = "invalid", bad = "the name is too long";
    else if (!(w = pool_peek(b))) code = "nomem", bad = "out of memory";
    if (bad) {
        char label[144];
        make_label(label, kind, name, nlen);
        return tg_err_raise(L, code, "%s: %s", label, bad);
    }
    make_label(w->label, kind, name, nlen);
    int wkind = kind == W_SIGNAL ? TG_WAIT_ENTRY : kind == W_WAIT ? TG_WAIT_BARRIER : TG_WAIT_SIGNAL_WAIT;
    tg_task_t *t = tg_wait_begin_ref(L, wkind, name, nlen, timeout, w->label);  /* may raise: w is still free */
    if ((!l && !(l = list_new(b, name, nlen))) || batch_add(l, w, kind, sid, slen, op, olen) < 0) {
        if (l) maybe_free_list(b, l);
        tg_wait_fail(t, "nomem", "%s: out of memory", w->label);
        return tg_wait_yield(L);
    }
    pool_pop(b);
    w->task = t;
    w->kind = kind;
    w->target = kind == W_SIGNAL ? LLONG_MAX : target;
    w->seq = 0;
    w->replied = 0;
    w->list = l;
    w->tolerant = kind == W_SIGNAL || instances <= 0;
    if (instances > 0) l->instances = instances;
    if (w->target < l->min_target) l->min_target = w->target;
    w->prev = NULL;
    w->next = l->head;
    if (l->head) l->head->prev = w;
    l->head = w;
    tg_wait_on_abort(t, bw_abort, w);
    if (!l->dirty) {
        l->dirty = 1;
        l->next_dirty = b->dirty;
        b->dirty = l;
    }
    /* Tasks run in a drain, whose end sends the batch; a call from anywhere
     * else (there is none today) must not wait for the next one. */
    if (!b->rt->running) on_drained(b);
    return tg_wait_yield(L);
}

/* barrier.signal(state, member, op_id) -> seq.  Yields: enter state without
 * waiting (sync.signal_entry; member: the instance's number, or ""). */
static int l_signal(lua_State *L) {
    size_t nlen, mlen, olen;
    char mbuf[24];
    const char *name = state_arg(L, 1, &nlen);
    const char *member = member_arg(L, 2, mbuf, &mlen);
    const char *op = luaL_checklstring(L, 3, &olen);
    return join_batch(L, W_SIGNAL, name, nlen, 0, -1, 0, member, mlen, op, olen);
}

/* barrier.wait(state, target, timeout, instances) -> count.  Yields until
 * target instances entered state (sync.barrier; instances > 0: fail with
 * peer_failed once it cannot complete). */
static int l_wait(lua_State *L) {
    size_t nlen;
    const char *name = state_arg(L, 1, &nlen);
    lua_Integer target = luaL_checkinteger(L, 2);
    double timeout = luaL_checknumber(L, 3);
    lua_Integer instances = luaL_checkinteger(L, 4);
    return join_batch(L, W_WAIT, name, nlen, target, timeout, instances, NULL, 0, NULL, 0);
}

/* barrier.signal_and_wait(state, target, timeout, instances, member, op_id)
 * -> seq.  Yields: enter, then wait; one entry of the state's batch. */
static int l_signal_and_wait(lua_State *L) {
    size_t nlen, mlen, olen;
    char mbuf[24];
    const char *name = state_arg(L, 1, &nlen);
    lua_Integer target = luaL_checkinteger(L, 2);
    double timeout = luaL_checknumber(L, 3);
    lua_Integer instances = luaL_checkinteger(L, 4);
    const char *member = member_arg(L, 5, mbuf, &mlen);
    const char *op = luaL_checklstring(L, 6, &olen);
    return join_batch(L, W_ENTER, name, nlen, target, timeout, instances, member, mlen, op, olen);
}

/* barrier.stats() -> {notifies=, safety_checks=, states=, batches=, entries=,
 * replays=} */
static int l_stats(lua_State *L) {
    tg_barriers_t *b = tg_ctx(L)->inst->rt->barriers;
    if (!b) return tg_err_raise(L, "closed", "barrier.stats: not connected to Redis");
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)b->notifies); lua_setfield(L, -2, "notifies");
    lua_pushinteger(L, (lua_Integer)b->safety_checks); lua_setfield(L, -2, "safety_checks");
    lua_pushinteger(L, (lua_Integer)b->lists.len); lua_setfield(L, -2, "states");
    lua_pushinteger(L, (lua_Integer)b->batches); lua_setfield(L, -2, "batches");
    lua_pushinteger(L, (lua_Integer)b->entries); lua_setfield(L, -2, "entries");
    lua_pushinteger(L, (lua_Integer)b->replays); lua_setfield(L, -2, "replays");
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
    int n;                      /* names (argv has n + 1: MGET and the keys) */
    char **names;
    size_t *nlens;
    const char **argv;
    size_t *lens;
} mget_t;

static void mget_free(mget_t *m) {
    for (int i = 0; i < m->n; i++) free(m->names[i]);
    free(m->names);
    free(m->nlens);
    free(m->argv);
    free(m->lens);
    free(m);
}

static void on_mget(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    mget_t *m = data;
    (void)r; (void)tag;
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements && (int)i < m->n; i++) {
            const redisReply *e = rep->element[i];
            blist_t *l = tg_map_get(&m->b->lists, m->names[i], m->nlens[i]);
            if (l && e->type == REDIS_REPLY_STRING) {
                l->busy++;
                count_is(m->b, l, strtoll(e->str, NULL, 10));
                l->busy--;
                maybe_free_list(m->b, l);
            }
        }
    }
    mget_free(m);
}

static void on_safety(uv_timer_t *h) {
    tg_barriers_t *b = h->data;
    if (tg_redis_down(b->r) || b->lists.len == 0) return;
    mget_t *m = calloc(1, sizeof *m);
    int n = (int)b->lists.len;
    if (!m || !(m->names = calloc((size_t)n, sizeof *m->names)) || !(m->nlens = calloc((size_t)n, sizeof *m->nlens))
        || !(m->argv = calloc((size_t)n + 1, sizeof *m->argv)) || !(m->lens = calloc((size_t)n + 1, sizeof *m->lens))) {
        if (m) mget_free(m);
        return;
    }
    m->b = b;
    m->argv[0] = "MGET";
    m->lens[0] = 4;
    size_t bk;
    for (tg_map_ent_t *e = tg_map_next(&b->lists, NULL, &bk); e && m->n < n; e = tg_map_next(&b->lists, e, &bk)) {
        blist_t *l = e->value;
        if (!(m->names[m->n] = malloc(l->nlen + 1))) break;
        memcpy(m->names[m->n], l->name, l->nlen + 1);
        m->nlens[m->n] = l->nlen;
        m->argv[m->n + 1] = l->key;
        m->lens[m->n + 1] = l->klen;
        m->n++;
    }
    b->safety_checks++;
    if (m->n == 0 || tg_redis_cmd(b->r, on_mget, m, 0, m->n + 1, m->argv, m->lens) < 0) mget_free(m);
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
    size_t nlen;
    char name[];
} fcheck_t;

static void on_feasible(tg_redis_t *r, const redisReply *rep, void *data, uint64_t tag) {
    fcheck_t *f = data;
    (void)r; (void)tag;
    if (!rep) { free(f); return; }              /* the unit may be gone */
    tg_barriers_t *b = f->b;
    blist_t *l = tg_map_get(&b->lists, f->name, f->nlen);
    if (l) l->checking = 0;
    if (l && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 4 && l->instances > 0) {
        long long count = rep->element[0]->integer, ndead = rep->element[1]->integer;
        long long dead_entered = rep->element[2]->integer;
        const char *ids = rep->element[3]->str ? rep->element[3]->str : "?";
        long long most = l->instances - ndead + dead_entered;
        if (ndead > b->ndead) b->ndead = ndead;     /* deaths from before this process read the stream */
        l->busy++;
        count_is(b, l, count);
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
            long long target = w->target;
            end_waiter(b, w);
            tg_wait_fail(t, "peer_failed", "%s can no longer complete: instance%s %s failed or died; "
                         "%lld of %lld entered, at most %lld can", w->label, ndead > 1 ? "s" : "", ids,
                         count, target, most);
        }
        l->busy--;
    }
    if (l) maybe_free_list(b, l);
    free(f);
}

static void check_feasible(tg_barriers_t *b, blist_t *l) {
    if (l->checking || tg_redis_down(b->r) || l->instances <= 0) return;
    int judged = 0;
    for (bwaiter_t *w = l->head; w; w = w->next) if (!w->tolerant) judged = 1;
    if (!judged) return;
    fcheck_t *f = malloc(sizeof *f + l->nlen + 1);
    if (!f) return;
    f->b = b;
    f->nlen = l->nlen;
    memcpy(f->name, l->name, l->nlen + 1);
    const char *argv[3] = {l->key, l->members, b->dead};
    size_t lens[3] = {l->klen, l->mlen, b->dead_len};
    if (tg_redis_eval(b->r, TG_SCRIPT_FEASIBLE, on_feasible, f, 0, 3, 3, argv, lens) < 0) {
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
    if (s && n && slen > b->skey_len && memcmp(s, b->skey, b->skey_len) == 0) {
        blist_t *l = tg_map_get(&b->lists, s + b->skey_len, slen - b->skey_len);
        if (l) {
            l->busy++;
            count_is(b, l, strtoll(n, NULL, 10));
            l->busy--;
            maybe_free_list(b, l);
        }
    }
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

/* After a reconnect: counts may have moved while nothing was read. */
static void on_restored(void *data) {
    tg_barriers_t *b = data;
    on_safety(&b->safety);
}

/* Let go of every state: batches in flight are orphaned, pending ones
 * dropped, lists freed.  Their waiters must be gone already. */
static void drop_lists(tg_barriers_t *b) {
    size_t bk;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&b->lists, NULL, &bk))) {
        blist_t *l = e->value;
        while (l->head) end_waiter(b, l->head);
        for (batch_t *B = l->flight; B; B = B->next) B->l = NULL;
        batch_free(l->pending);
        free(tg_map_del(&b->lists, e->key, e->klen));
    }
    b->dirty = NULL;
}

/* Every waiter fails with "closed": their completions are not requests
 * the transport would fail (a batch's reply only carries seqs). */
static void on_lost(void *data, const char *why) {
    tg_barriers_t *b = data;
    (void)why;
    uv_timer_stop(&b->safety);
    size_t bk;
    for (tg_map_ent_t *e = tg_map_next(&b->lists, NULL, &bk); e; e = tg_map_next(&b->lists, e, &bk)) {
        blist_t *l = e->value;
        l->busy++;
        bwaiter_t *w;
        while ((w = l->head)) {
            if (w->task->state == TG_TASK_WAITING && w->task->abort_data == w)
                tg_wait_abort(w->task, TG_ABORT_CLOSED);
            if (l->head == w) end_waiter(b, w);
        }
        l->busy--;
    }
    drop_lists(b);
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
    tg_rt_random_id(b->pid, sizeof b->pid);
    if (!(b->P = malloc(plen + 1))
        || !(b->notify = tg_key_new(P, plen, TG_KEY_NOTIFY, NULL, 0, &b->notify_len))
        || !(b->dead = tg_key_new(P, plen, TG_KEY_DEAD, NULL, 0, &b->dead_len))
        || !(b->skey = tg_key_new(P, plen, TG_KEY_STATE, "", 0, &b->skey_len))
        || tg_rt_on_drained(rt, on_drained, b) < 0)
        goto fail;
    if (tg_redis_listen(b->r, on_lost, on_restored, b) < 0) {
        tg_rt_off_drained(rt, on_drained, b);
        goto fail;
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
fail:
    free(b->P);
    free(b->notify);
    free(b->dead);
    free(b->skey);
    free(b);
    return -1;
}

static void close_free(uv_handle_t *h) {
    free(h->data);
}

void tg_barrier_detach(tg_rt_t *rt) {
    tg_barriers_t *b = rt->barriers;
    if (!b) return;
    rt->barriers = NULL;
    tg_rt_off_drained(rt, on_drained, b);
    tg_redis_off_lost(b->r, on_lost, b);
    tg_redis_unwatch(b->r, b->notify, b->notify_len);
    drop_lists(b);
    tg_map_free(&b->lists);
    while (b->free) {
        bwaiter_t *w = b->free;
        b->free = w->next;
        free(w);
    }
    while (b->free_batches) {
        batch_t *B = b->free_batches;
        b->free_batches = B->next;
        batch_free(B);
    }
    free(b->argv);
    free(b->lens);
    free(b->nums);
    free(b->P);
    free(b->notify);
    free(b->dead);
    free(b->skey);
    uv_timer_stop(&b->safety);
    uv_close((uv_handle_t *)&b->safety, close_free);    /* frees b */
}
