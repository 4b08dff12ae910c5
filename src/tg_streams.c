/*
 * tg_streams.c -- the transport's blocking stream reader: one XREAD BLOCK
 * at a time on the "blk" connection over every watched stream, each entry
 * handed to the handler its owner registered (tg_redis_watch).
 *
 * Watching a new stream makes the pending read start over: CLIENT UNBLOCK
 * on the command connection (retried every 2 ms while the read has not
 * blocked yet; the read's own BLOCK timeout bounds that anyway).  Each read
 * carries the watch generation it was sent with, so a stream dropped and
 * watched anew while a read was in flight is not fed that read's entries.
 */
#include <stdlib.h>
#include <string.h>

#include "tg_redis_int.h"

#define XREAD_BLOCK_MS "1000"
#define XREAD_COUNT "1000"

static void issue_xread(tg_redis_t *r);

void tg_streams_init(tg_redis_t *r) {
    uv_timer_init(r->loop, &r->retry);
    uv_timer_init(r->loop, &r->reissue);
    r->retry.data = r->reissue.data = r;
}

void tg_streams_stop(tg_redis_t *r) {
    uv_timer_stop(&r->retry);
    uv_timer_stop(&r->reissue);
}

static void stream_free(tg_redis_t *r, stream_t *s) {
    tg_map_del(&r->streams, s->key, s->klen);
    free(s->key);
    free(s);
}

void tg_streams_free(tg_redis_t *r) {
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&r->streams, NULL, &b))) stream_free(r, e->value);
    tg_map_free(&r->streams);
    uv_close((uv_handle_t *)&r->retry, NULL);
    uv_close((uv_handle_t *)&r->reissue, NULL);
}

const char *tg_stream_field(const redisReply *f, char c, size_t *len) {
    for (size_t k = 0; f && f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements; k += 2) {
        const redisReply *fk = f->element[k], *fv = f->element[k + 1];
        if (fk->type == REDIS_REPLY_STRING && fk->len == 1 && fk->str[0] == c
            && fv->type == REDIS_REPLY_STRING) {
            if (len) *len = fv->len;
            return fv->str;
        }
    }
    if (len) *len = 0;
    return NULL;
}

/* ---- unblocking --------------------------------------------------------- */

static void on_unblock(redisAsyncContext *ac, void *reply, void *priv);

static void on_retry(uv_timer_t *h) {
    tg_redis_t *r = h->data;
    if (r->state != TG_REDIS_UP || !r->cmd.ac || !r->xread_inflight || r->xread_gen == r->watch_gen) return;
    r->unblock_pending = 1;
    char id[32];
    snprintf(id, sizeof id, "%lld", r->blk_id);
    r->stats.unblocks++;
    if (redisAsyncCommandArgv(r->cmd.ac, on_unblock, r, 3,
                              (const char *[]){"CLIENT", "UNBLOCK", id}, NULL) != REDIS_OK)
        r->unblock_pending = 0;
}

static void on_unblock(redisAsyncContext *ac, void *reply, void *priv) {
    (void)ac;
    tg_redis_t *r = priv;
    redisReply *rep = reply;
    if (!rep || r->closing) return;
    r->unblock_pending = 0;
    if (r->state != TG_REDIS_UP) return;
    /* 0: the read was not blocked yet (it is still on its way) -- try again
     * shortly. */
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0 && r->xread_inflight
        && r->xread_gen != r->watch_gen && r->unblock_retries++ < 200)
        uv_timer_start(&r->retry, on_retry, 2, 0);
}

/* The watch set changed: make the blocked read start over with it. */
static void watch_changed(tg_redis_t *r) {
    if (!r->reading) return;
    if (!r->xread_inflight) { issue_xread(r); return; }
    if (r->unblock_pending) return;
    r->unblock_retries = 0;
    on_retry(&r->retry);
}

/* ---- watching ----------------------------------------------------------- */

int tg_redis_watch(tg_redis_t *r, const char *key, size_t klen, const char *from,
                   const tg_stream_ops_t *ops, void *data) {
    if (tg_map_get(&r->streams, key, klen)) return -2;
    stream_t *s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->key = malloc(klen + 1);
    if (!s->key || tg_map_set(&r->streams, key, klen, s) < 0) {
        free(s->key);
        free(s);
        return -1;
    }
    memcpy(s->key, key, klen);
    s->key[klen] = '\0';
    s->klen = klen;
    snprintf(s->last_id, sizeof s->last_id, "%s", from);
    s->ops = ops;
    s->data = data;
    s->gen = ++r->watch_gen;
    watch_changed(r);
    return 0;
}

void tg_redis_unwatch(tg_redis_t *r, const char *key, size_t klen) {
    stream_t *s = tg_map_get(&r->streams, key, klen);
    if (s) stream_free(r, s);   /* the next read leaves it out */
}

void tg_streams_resume(tg_redis_t *r) {
    r->xread_inflight = 0;
    r->unblock_pending = 0;
    issue_xread(r);
}

void tg_redis_start_reading(tg_redis_t *r) {
    r->reading = 1;
    issue_xread(r);
}

/* ---- reading -------------------------------------------------------------- */

static void on_reissue(uv_timer_t *h) {
    issue_xread(h->data);
}

static void on_xread(redisAsyncContext *ac, void *reply, void *priv) {
    uint64_t gen = (uint64_t)(uintptr_t)priv;
    tg_redis_t *r = ac->data ? ((conn_t *)ac->data)->r : NULL;
    redisReply *rep = reply;
    if (!r) return;
    r->xread_inflight = 0;
    if (!rep || r->state != TG_REDIS_UP) return;
    if (rep->type == REDIS_REPLY_ERROR) {
        /* Tell every owner, then go on with the rest after a pause. */
        size_t b;
        for (tg_map_ent_t *e = tg_map_next(&r->streams, NULL, &b), *next; e; e = next) {
            next = tg_map_next(&r->streams, e, &b);     /* a handler may unwatch */
            stream_t *s = e->value;
            if (s->ops->error) s->ops->error(s->data, rep->str);
        }
        uv_timer_start(&r->reissue, on_reissue, 100, 0);
        return;
    }
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        redisReply *sr = rep->element[i];
        if (sr->type != REDIS_REPLY_ARRAY || sr->elements != 2) continue;
        stream_t *s = tg_map_get(&r->streams, sr->element[0]->str, sr->element[0]->len);
        redisReply *ents = sr->element[1];
        /* A stream dropped and watched anew since this read was sent starts
         * over from its first entry: skip this read's part. */
        if (!s || s->gen > gen || ents->type != REDIS_REPLY_ARRAY) continue;
        for (size_t j = 0; j < ents->elements && s; j++) {
            redisReply *ent = ents->element[j];
            if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2) continue;
            snprintf(s->last_id, sizeof s->last_id, "%s", ent->element[0]->str);
            s->ops->entry(s->data, ent->element[0]->str, ent->element[1]);
            /* the handler may have unwatched the stream */
            s = tg_map_get(&r->streams, sr->element[0]->str, sr->element[0]->len);
            if (s && s->gen > gen) s = NULL;
        }
        if (s && s->ops->batch) s->ops->batch(s->data);
    }
    issue_xread(r);
}

static void issue_xread(tg_redis_t *r) {
    if (!r->reading || r->state != TG_REDIS_UP || !r->blk.ac || r->xread_inflight || r->streams.len == 0) return;
    size_t n = r->streams.len;
    const char **argv = malloc((6 + 2 * n) * sizeof *argv);
    size_t *lens = malloc((6 + 2 * n) * sizeof *lens);
    if (!argv || !lens) {
        free(argv);
        free(lens);
        uv_timer_start(&r->reissue, on_reissue, 100, 0);
        return;
    }
    int argc = 0;
    const char *head[6] = {"XREAD", "COUNT", XREAD_COUNT, "BLOCK", XREAD_BLOCK_MS, "STREAMS"};
    for (; argc < 6; argc++) {
        argv[argc] = head[argc];
        lens[argc] = strlen(head[argc]);
    }
    size_t b, i = 0;
    for (tg_map_ent_t *e = tg_map_next(&r->streams, NULL, &b); e; e = tg_map_next(&r->streams, e, &b), i++) {
        stream_t *s = e->value;
        argv[argc + i] = s->key;
        lens[argc + i] = s->klen;
        argv[argc + n + i] = s->last_id;
        lens[argc + n + i] = strlen(s->last_id);
    }
    argc += 2 * (int)n;
    if (redisAsyncCommandArgv(r->blk.ac, on_xread, (void *)(uintptr_t)r->watch_gen,
                              argc, argv, lens) == REDIS_OK) {
        r->xread_inflight = 1;
        r->xread_gen = r->watch_gen;
        r->stats.xreads++;
    }
    free(argv);
    free(lens);
}
