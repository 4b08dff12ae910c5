/* tg_params.c -- see tg_params.h. */
#define _POSIX_C_SOURCE 200809L

#include "tg_params.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_scalar.h"
#include "tg_text.h"


/* Release every key, value and the item array of l, and leave l as an
 * empty list that can be reused.  l may be NULL.  Returns nothing. */
void tg_kvlist_free(tg_kvlist_t *l) {
    size_t i;
    if (!l) return;
    for (i = 0; i < l->len; i++) {
        free(l->items[i].key);
        free(l->items[i].value);
    }
    free(l->items);
    l->items = NULL;
    l->len = l->cap = 0;
}

static tg_kv_t *kv_find(const tg_kvlist_t *l, const char *key, size_t klen) {
    size_t i;
    for (i = 0; i < l->len; i++)
        if (strncmp(l->items[i].key, key, klen) == 0 &&
            l->items[i].key[klen] == '\0')
            return &l->items[i];
    return NULL;
}

/* Set key[0..klen) to val[0..vlen); copies both. 0 or -1 (ENOMEM). */
static int kv_setn(tg_kvlist_t *l, const char *key, size_t klen,
                   const char *val, size_t vlen) {
    tg_kv_t *kv = kv_find(l, key, klen);
    char *v = tg_text_dupn(val, vlen), *k;
    if (!v) return -1;
    if (kv) {
        free(kv->value);
        kv->value = v;
        return 0;
    }
    if (l->len == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        tg_kv_t *ni;
        if (ncap > SIZE_MAX / sizeof(tg_kv_t)) { free(v); return -1; }
        ni = realloc(l->items, ncap * sizeof(tg_kv_t));
        if (!ni) { free(v); return -1; }
        l->items = ni;
        l->cap = ncap;
    }
    if (!(k = tg_text_dupn(key, klen))) { free(v); return -1; }
    l->items[l->len].key = k;
    l->items[l->len].value = v;
    l->len++;
    return 0;
}

/* Set key to value in l: replaces the value of an existing key in place,
 * otherwise appends.  Both strings are copied; l owns the copies.
 * Returns 0, or -1 with errno ENOMEM (l is then unchanged). */
int tg_kvlist_set(tg_kvlist_t *l, const char *key, const char *value) {
    if (kv_setn(l, key, strlen(key), value, strlen(value)) < 0) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

/* Look key up in l.  Returns the value (owned by l, valid until the key
 * is set again or l is freed) or NULL if absent. */
const char *tg_kvlist_get(const tg_kvlist_t *l, const char *key) {
    tg_kv_t *kv = kv_find(l, key, strlen(key));
    return kv ? kv->value : NULL;
}

/* Parse Testground's TEST_INSTANCE_PARAMS "k1=v1|k2=v2" into l: split on
 * '|', each pair on the first '=' (values may hold '='), empty segments
 * skipped, later keys override earlier ones and existing entries of l.
 * s == NULL is treated as "".  A segment without '=' or with an empty
 * key is an error, and then l is left unchanged.  Returns 0 or -1 (err
 * set); on ENOMEM l may hold part of the new pairs.  l owns what it
 * gained and is freed by the caller with tg_kvlist_free(). */
int tg_params_parse(tg_kvlist_t *l, const char *s, char *err, size_t errlen) {
    tg_kvlist_t tmp = {0};
    const char *p = s ? s : "", *end, *eq;
    char qb[TG_QBUF];
    size_t i;

    for (;;) {
        end = strchr(p, '|');
        if (!end) end = p + strlen(p);
        if (end > p) {
            eq = memchr(p, '=', (size_t)(end - p));
            if (!eq || eq == p) {
                tg_text_seterr(err, errlen, "TEST_INSTANCE_PARAMS entry %s %s; "
                       "write each entry as KEY=VALUE, separated by '|'",
                       tg_text_qn(qb, p, (size_t)(end - p)),
                       eq ? "has an empty key" : "has no '='");
                tg_kvlist_free(&tmp);
                return -1;
            }
            if (kv_setn(&tmp, p, (size_t)(eq - p), eq + 1,
                        (size_t)(end - eq - 1)) < 0)
                goto oom;
        }
        if (!*end) break;
        p = end + 1;
    }
    for (i = 0; i < tmp.len; i++)
        if (tg_kvlist_set(l, tmp.items[i].key, tmp.items[i].value) < 0)
            goto oom;
    tg_kvlist_free(&tmp);
    return 0;
oom:
    tg_text_seterr(err, errlen, "out of memory while parsing "
           "TEST_INSTANCE_PARAMS");
    tg_kvlist_free(&tmp);
    return -1;
}

/* Parse one "--param KEY=VALUE" (split on the first '=') and set it in l,
 * overriding an existing KEY.  The key must be non-empty; neither key nor
 * value may contain '|', because TEST_INSTANCE_PARAMS could not carry it
 * to child processes.  Returns 0 or -1 (err set, l unchanged). */
int tg_param_parse_one(tg_kvlist_t *l, const char *kv, char *err,
                       size_t errlen) {
    const char *eq = kv ? strchr(kv, '=') : NULL;
    char qb[TG_QBUF];

    if (!eq) {
        tg_text_seterr(err, errlen, "--param %s needs KEY=VALUE", tg_text_q(qb, kv));
        return -1;
    }
    if (eq == kv) {
        tg_text_seterr(err, errlen, "--param %s has an empty key; write it as "
               "KEY=VALUE", tg_text_q(qb, kv));
        return -1;
    }
    if (strchr(kv, '|')) {
        tg_text_seterr(err, errlen, "--param %s contains '|', which cannot be "
               "passed on in TEST_INSTANCE_PARAMS; remove it", tg_text_q(qb, kv));
        return -1;
    }
    if (kv_setn(l, kv, (size_t)(eq - kv), eq + 1, strlen(eq + 1)) < 0) {
        tg_text_seterr(err, errlen, "out of memory while storing --param %s",
               tg_text_q(qb, kv));
        return -1;
    }
    return 0;
}

/* Render l as "k1=v1|k2=v2" (insertion order) for a child's
 * TEST_INSTANCE_PARAMS; an empty list gives "".  Returns a malloc'd string
 * the caller frees, or NULL on ENOMEM or when an entry cannot be
 * represented (empty key, '=' or '|' in a key, '|' in a value). */
char *tg_params_format(const tg_kvlist_t *l) {
    size_t i, n = 1, o = 0, kl, vl;
    char *s;

    for (i = 0; i < l->len; i++) {
        const char *k = l->items[i].key, *v = l->items[i].value;
        if (!*k || strpbrk(k, "=|") || strchr(v, '|')) return NULL;
        n += strlen(k) + strlen(v) + 2;
    }
    if (!(s = malloc(n))) return NULL;
    for (i = 0; i < l->len; i++) {
        if (i) s[o++] = '|';
        kl = strlen(l->items[i].key);
        vl = strlen(l->items[i].value);
        memcpy(s + o, l->items[i].key, kl); o += kl;
        s[o++] = '=';
        memcpy(s + o, l->items[i].value, vl); o += vl;
    }
    s[o] = '\0';
    return s;
}

/* ================================================= --group NAME=COUNT */


/* Parse "NAME=COUNT" (split on the first '=').  NAME is non-empty, made of
 * [A-Za-z0-9_.-] and shorter than namelen; COUNT is an integer >= 1.
 * Returns 0 and fills name and *count, or -1 (err set, outputs untouched). */
int tg_group_spec_parse(const char *spec, char *name, size_t namelen,
                        long *count, char *err, size_t errlen) {
    const char *eq = spec ? strchr(spec, '=') : NULL, *p;
    char qb[TG_QBUF], qb2[TG_QBUF];
    long long c;
    size_t n;

    if (!eq) {
        tg_text_seterr(err, errlen, "--group %s needs NAME=COUNT", tg_text_q(qb, spec));
        return -1;
    }
    n = (size_t)(eq - spec);
    if (n == 0) {
        tg_text_seterr(err, errlen, "--group %s has an empty NAME; write it as "
               "NAME=COUNT", tg_text_q(qb, spec));
        return -1;
    }
    for (p = spec; p < eq; p++) {
        if (!tg_is_name_char((unsigned char)*p)) {
            tg_text_seterr(err, errlen, "--group %s: name %s may only contain "
                   "letters, digits, '_', '.' and '-'", tg_text_q(qb, spec),
                   tg_text_qn(qb2, spec, n));
            return -1;
        }
    }
    if (!name || n >= namelen) {
        tg_text_seterr(err, errlen, "--group %s: name is longer than %zu characters",
               tg_text_q(qb, spec), namelen ? namelen - 1 : 0);
        return -1;
    }
    if (tg_parse_int(eq + 1, &c) < 0 || c < 1 || c > LONG_MAX) {
        tg_text_seterr(err, errlen, "--group %s: COUNT %s must be a whole number "
               ">= 1", tg_text_q(qb, spec), tg_text_q(qb2, eq + 1));
        return -1;
    }
    memcpy(name, spec, n);
    name[n] = '\0';
    *count = (long)c;
    return 0;
}
