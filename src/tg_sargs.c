/* tg_sargs.c -- see tg_sargs.h. */
#include "tg_sargs.h"

#include <stdio.h>
#include <string.h>

#include "tg_keys.h"

#define KEY(buf, kind, n, l) tg_key((buf), sizeof (buf), P, plen, (kind), (n), (l))

int tg_enter_args(tg_enter_args_t *e, const char *P, size_t plen, const char *name, size_t nlen,
                  long long target, const char *ttl, const char *sid, size_t sidlen, const char *op, size_t oplen) {
    size_t *l = e->lens;
    const char **v = e->argv;
    l[0] = KEY(e->state, TG_KEY_STATE, name, nlen);
    l[1] = KEY(e->members, TG_KEY_MEMBERS, name, nlen);
    l[2] = KEY(e->notify, TG_KEY_NOTIFY, NULL, 0);
    l[3] = KEY(e->ops, TG_KEY_OPS, name, nlen);
    for (int i = 0; i < TG_ENTER_NKEYS; i++)
        if (l[i] >= TG_KEY_MAX) return -1;
    v[0] = e->state;
    v[1] = e->members;
    v[2] = e->notify;
    v[3] = e->ops;
    if (target >= 0) l[4] = (size_t)snprintf(e->target, sizeof e->target, "%lld", target);
    else e->target[0] = '\0', l[4] = 0;
    v[4] = e->target;
    v[5] = ttl; l[5] = strlen(ttl);
    v[6] = sid; l[6] = sidlen;
    v[7] = op; l[7] = oplen;
    v[TG_ENTER_RESEND] = ""; l[TG_ENTER_RESEND] = 0;
    return 0;
}

int tg_batch_head(tg_batch_head_t *h, const char *P, size_t plen, const char *name, size_t nlen,
                  const char *ttl, const char *bid, size_t blen, int nt, int ne, int waits,
                  long long lo, long long hi) {
    size_t *l = h->lens;
    const char **v = h->argv;
    l[0] = KEY(h->state, TG_KEY_STATE, name, nlen);
    l[1] = KEY(h->members, TG_KEY_MEMBERS, name, nlen);
    l[2] = KEY(h->notify, TG_KEY_NOTIFY, NULL, 0);
    l[3] = KEY(h->ops, TG_KEY_OPS, name, nlen);
    for (int i = 0; i < TG_BATCH_NKEYS; i++)
        if (l[i] >= TG_KEY_MAX) return -1;
    v[0] = h->state;
    v[1] = h->members;
    v[2] = h->notify;
    v[3] = h->ops;
    v[4] = ttl; l[4] = strlen(ttl);
    v[TG_BATCH_RESEND] = ""; l[TG_BATCH_RESEND] = 0;
    v[6] = bid; l[6] = blen;
    l[7] = (size_t)snprintf(h->nt, sizeof h->nt, "%d", nt); v[7] = h->nt;
    l[8] = (size_t)snprintf(h->ne, sizeof h->ne, "%d", ne); v[8] = h->ne;
    v[9] = waits ? "1" : ""; l[9] = waits ? 1 : 0;
    if (lo <= hi) {
        l[10] = (size_t)snprintf(h->lo, sizeof h->lo, "%lld", lo);
        l[11] = (size_t)snprintf(h->hi, sizeof h->hi, "%lld", hi);
    } else {
        h->lo[0] = h->hi[0] = '\0';
        l[10] = l[11] = 0;
    }
    v[10] = h->lo;
    v[11] = h->hi;
    return 0;
}

int tg_await_args(tg_await_args_t *a, const char *P, size_t plen, const char *name, size_t nlen,
                  long long target, const char *ttl) {
    size_t *l = a->lens;
    l[0] = KEY(a->state, TG_KEY_STATE, name, nlen);
    l[1] = KEY(a->members, TG_KEY_MEMBERS, name, nlen);
    if (l[0] >= TG_KEY_MAX || l[1] >= TG_KEY_MAX) return -1;
    a->argv[0] = a->state;
    a->argv[1] = a->members;
    l[2] = (size_t)snprintf(a->target, sizeof a->target, "%lld", target);
    a->argv[2] = a->target;
    a->argv[3] = ttl; l[3] = strlen(ttl);
    return 0;
}

int tg_publish_args(tg_publish_args_t *p, const char *P, size_t plen, const char *key, size_t klen,
                    const char *value, size_t vlen, const char *ttl, const char *op) {
    size_t *l = p->lens;
    if (klen >= TG_KEY_MAX) return -1;
    memcpy(p->topic, key, klen);
    p->topic[klen] = '\0';
    l[0] = klen;
    l[1] = KEY(p->op, TG_KEY_OP, op, strlen(op));
    if (l[1] >= TG_KEY_MAX) return -1;
    p->argv[0] = p->topic;
    p->argv[1] = p->op;
    p->argv[2] = value; l[2] = vlen;
    p->argv[3] = ttl; l[3] = strlen(ttl);
    p->argv[TG_PUBLISH_RESEND] = ""; l[TG_PUBLISH_RESEND] = 0;
    return 0;
}
