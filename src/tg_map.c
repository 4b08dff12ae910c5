/* tg_map.c -- see tg_map.h. */
#include "tg_map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;           /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static tg_map_ent_t **slot(const tg_map_t *m, const char *key, size_t klen) {
    if (!m->nbuckets) return NULL;
    tg_map_ent_t **p = &m->buckets[hash(key, klen) & (m->nbuckets - 1)];
    while (*p && ((*p)->klen != klen || memcmp((*p)->key, key, klen) != 0))
        p = &(*p)->next;
    return p;
}

void *tg_map_get(const tg_map_t *m, const char *key, size_t klen) {
    tg_map_ent_t **p = slot(m, key, klen);
    return p && *p ? (*p)->value : NULL;
}

static int grow(tg_map_t *m) {
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    tg_map_ent_t **b = calloc(n, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < m->nbuckets; i++) {
        tg_map_ent_t *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t j = hash(e->key, e->klen) & (n - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

int tg_map_set(tg_map_t *m, const char *key, size_t klen, void *value) {
    if (m->len + 1 > m->nbuckets && grow(m) < 0) return -1;
    tg_map_ent_t **p = slot(m, key, klen);
    if (*p) { (*p)->value = value; return 0; }
    tg_map_ent_t *e = malloc(sizeof *e + klen + 1);
    if (!e) return -1;
    e->next = NULL;
    e->value = value;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->key[klen] = '\0';
    *p = e;
    m->len++;
    return 0;
}

void *tg_map_del(tg_map_t *m, const char *key, size_t klen) {
    tg_map_ent_t **p = slot(m, key, klen);
    if (!p || !*p) return NULL;
    tg_map_ent_t *e = *p;
    void *v = e->value;
    *p = e->next;
    free(e);
    m->len--;
    return v;
}

tg_map_ent_t *tg_map_next(const tg_map_t *m, tg_map_ent_t *e, size_t *bucket) {
    if (e && e->next) return e->next;
    size_t i = e ? *bucket + 1 : 0;
    for (; i < m->nbuckets; i++)
        if (m->buckets[i]) { *bucket = i; return m->buckets[i]; }
    return NULL;
}

void tg_map_free(tg_map_t *m) {
    for (size_t i = 0; i < m->nbuckets; i++) {
        tg_map_ent_t *e = m->buckets[i], *next;
        for (; e; e = next) { next = e->next; free(e); }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->len = 0;
}
