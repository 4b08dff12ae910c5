/*
 * tg_map.h -- a small string-keyed hash map (chained, power-of-two buckets).
 *
 * The map copies keys and owns those copies; values are opaque pointers that
 * the caller owns.  Used by the runtime for per-key registries (watched
 * streams, barrier waiters) where the number of keys is small but lookups
 * happen on every Redis notification.
 */
#ifndef TG_MAP_H
#define TG_MAP_H

#include <stddef.h>

typedef struct tg_map_ent {
    struct tg_map_ent *next;
    void *value;
    size_t klen;
    char key[];
} tg_map_ent_t;

typedef struct tg_map {
    tg_map_ent_t **buckets;
    size_t nbuckets, len;
} tg_map_t;

/* Value for key, or NULL. */
void *tg_map_get(const tg_map_t *m, const char *key, size_t klen);
/* Set key to value (value must not be NULL).  0, or -1 on ENOMEM. */
int tg_map_set(tg_map_t *m, const char *key, size_t klen, void *value);
/* Remove key; returns its old value or NULL. */
void *tg_map_del(tg_map_t *m, const char *key, size_t klen);
/* Free the map's own memory (not the values). */
void tg_map_free(tg_map_t *m);

/* Iterate: for (tg_map_ent_t *e = tg_map_next(m, NULL, &i); e; e = tg_map_next(m, e, &i)).
 * The current entry must not be deleted during iteration. */
tg_map_ent_t *tg_map_next(const tg_map_t *m, tg_map_ent_t *e, size_t *bucket);

#endif
