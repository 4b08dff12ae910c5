/* tg_keys.c -- see tg_keys.h. */
#include "tg_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *lua;            /* the name tg.keys gives it */
    const char *part;           /* what follows P */
    int named;                  /* 1: the user's name as is; 2: escaped */
} kinds[TG_KEY_NKINDS] = {
    [TG_KEY_STATE] = {"state", ":states:", 1},
    [TG_KEY_TOPIC] = {"topic", ":topics:", 1},
    [TG_KEY_RUN_EVENTS] = {"run_events", ":run_events", 0},
    [TG_KEY_MEMBERS] = {"members", ":tg:members:", 2},
    [TG_KEY_NOTIFY] = {"notify", ":tg:notify", 0},
    [TG_KEY_DEAD] = {"dead", ":tg:dead", 0},
    [TG_KEY_SESSIONS] = {"sessions", ":tg:sessions", 0},
    [TG_KEY_INBOX] = {"inbox", ":tg:inbox:", 2},
    [TG_KEY_SEM] = {"sem", ":tg:sem:", 2},
    [TG_KEY_MUTEX] = {"mutex", ":tg:mutex:", 2},
    [TG_KEY_ELECTION] = {"election", ":tg:election:", 2},
    [TG_KEY_QUEUE] = {"queue", ":tg:queue:", 2},
    [TG_KEY_COUNTER] = {"counter", ":tg:counter:", 2},
    [TG_KEY_OPS] = {"ops", ":tg:ops:", 2},
    [TG_KEY_OP] = {"op", ":tg:op:", 2},
    [TG_KEY_RUN] = {"run", ":tg:run", 0},
    [TG_KEY_TG] = {"tg", ":tg:", 2},
};

size_t tg_keys_prefix(char *buf, size_t cap, const char *run, const char *plan, const char *case_name) {
    int n = snprintf(buf, cap, "run:%s:plan:%s:case:%s", run, plan, case_name);
    return n < 0 ? 0 : (size_t)n;
}

int tg_key_named(tg_key_kind_t kind) {
    return kind >= 0 && kind < TG_KEY_NKINDS && kinds[kind].named;
}

int tg_key_kind_of(const char *s) {
    for (int i = 0; i < TG_KEY_NKINDS; i++)
        if (strcmp(kinds[i].lua, s) == 0) return i;
    return -1;
}

const char *tg_key_lua_name(tg_key_kind_t kind) {
    return kind >= 0 && kind < TG_KEY_NKINDS ? kinds[kind].lua : "?";
}

/* Append src[0..n) at *o if it fits; *o always advances (the full length). */
static void put(char *buf, size_t cap, size_t *o, const char *src, size_t n) {
    if (*o < cap) memcpy(buf + *o, src, *o + n <= cap ? n : cap - *o);
    *o += n;
}

/* Append name escaped. */
static void put_escaped(char *buf, size_t cap, size_t *o, const char *name, size_t nlen) {
    size_t from = 0;
    for (size_t i = 0; i < nlen; i++) {
        const char *esc = name[i] == ':' ? "%3A" : name[i] == '%' ? "%25" : NULL;
        if (!esc) continue;
        put(buf, cap, o, name + from, i - from);
        put(buf, cap, o, esc, 3);
        from = i + 1;
    }
    put(buf, cap, o, name + from, nlen - from);
}

size_t tg_key_escape(char *buf, size_t cap, const char *name, size_t nlen) {
    size_t o = 0;
    put_escaped(buf, cap, &o, name, nlen);
    if (cap) buf[o < cap ? o : cap - 1] = '\0';
    return o;
}

size_t tg_key(char *buf, size_t cap, const char *P, size_t plen, tg_key_kind_t kind,
              const char *name, size_t nlen) {
    size_t o = 0;
    if (kind < 0 || kind >= TG_KEY_NKINDS) kind = TG_KEY_TG;
    put(buf, cap, &o, P, plen);
    put(buf, cap, &o, kinds[kind].part, strlen(kinds[kind].part));
    if (kinds[kind].named == 1 && name) put(buf, cap, &o, name, nlen);
    if (kinds[kind].named == 2 && name) put_escaped(buf, cap, &o, name, nlen);
    if (cap) buf[o < cap ? o : cap - 1] = '\0';
    return o;
}

char *tg_key_new(const char *P, size_t plen, tg_key_kind_t kind, const char *name, size_t nlen,
                 size_t *len) {
    size_t n = tg_key(NULL, 0, P, plen, kind, name, nlen);
    char *k = malloc(n + 1);
    if (!k) return NULL;
    tg_key(k, n + 1, P, plen, kind, name, nlen);
    if (len) *len = n;
    return k;
}
