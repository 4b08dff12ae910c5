/* tg_tlog.c -- see tg_tlog.h. */
#include "tg_tlog.h"

#include <stdlib.h>
#include <string.h>

tg_tmsg_t *tg_tlog_append(tg_tlog_t *l, const char *p, size_t len) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        tg_tmsg_t **v = realloc(l->v, cap * sizeof *v);
        if (!v) return NULL;
        l->v = v;
        l->cap = cap;
    }
    tg_tmsg_t *m = malloc(sizeof *m + len + 1);
    if (!m) return NULL;
    m->seq = (long long)l->n + 1;
    m->len = len;
    if (len) memcpy(m->data, p, len);
    m->data[len] = '\0';
    l->v[l->n++] = m;
    return m;
}

void tg_tlog_free(tg_tlog_t *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}
