/*
 * fuzz_params.c -- libFuzzer target for src/tg_params.c.
 *
 * Feeds one NUL-terminated copy of the input to every parser (parameters,
 * typed values, durations, sizes, groups, addresses, times) and aborts
 * when an invariant breaks: a success must produce values that format
 * and re-parse to the same thing, a failure must explain itself in err.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       src/tg_params.c src/tg_scalar.c src/tg_text.c src/tg_addr.c \
 *       src/tg_rfc3339.c tests/fuzz/fuzz_params.c -o fuzz_params
 *   ./fuzz_params -max_total_time=60 corpus/ tests/fuzz/seeds/params/
 *
 * Linked with tests/fuzz/replay.c it is a plain program (any compiler) that
 * runs each file named on its command line once: ctest replays the seeds
 * (and any crash file) that way.
 */
#define _POSIX_C_SOURCE 200809L

#include "tg_params.h"
#include "tg_scalar.h"
#include "tg_addr.h"
#include "tg_rfc3339.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MUST(c) do {                                                   \
    if (!(c)) {                                                        \
        fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__,     \
                __LINE__, #c);                                         \
        abort();                                                       \
    }                                                                  \
} while (0)

/* err must have been written: non-empty and NUL-terminated. */
static void check_err(const char *err, size_t len) {
    MUST(err[0] != '\0');
    MUST(memchr(err, '\0', len) != NULL);
}

static int same_list(const tg_kvlist_t *a, const tg_kvlist_t *b) {
    size_t i;
    if (a->len != b->len) return 0;
    for (i = 0; i < a->len; i++)
        if (strcmp(a->items[i].key, b->items[i].key) ||
            strcmp(a->items[i].value, b->items[i].value))
            return 0;
    return 1;
}

static void fuzz_params(const char *s) {
    tg_kvlist_t l = {0}, l2 = {0};
    char err[256];
    char *f;
    size_t i;

    err[0] = 0;
    if (tg_params_parse(&l, s, err, sizeof(err)) == 0) {
        for (i = 0; i < l.len; i++) {
            MUST(l.items[i].key[0] != '\0');
            MUST(!strpbrk(l.items[i].key, "=|"));
            MUST(!strchr(l.items[i].value, '|'));
            MUST(tg_kvlist_get(&l, l.items[i].key) == l.items[i].value);
        }
        MUST((f = tg_params_format(&l)) != NULL);
        MUST(tg_params_parse(&l2, f, err, sizeof(err)) == 0);
        MUST(same_list(&l, &l2));
        free(f);
    } else {
        check_err(err, sizeof(err));
        MUST(l.len == 0);               /* failure leaves l unchanged */
    }
    tg_kvlist_free(&l2);

    err[0] = 0;
    if (tg_param_parse_one(&l, s, err, sizeof(err)) == 0) {
        const char *eq = strchr(s, '=');
        char *key;
        MUST(eq && eq > s);
        MUST((key = malloc((size_t)(eq - s) + 1)) != NULL);
        memcpy(key, s, (size_t)(eq - s));
        key[eq - s] = '\0';
        MUST(tg_kvlist_get(&l, key) != NULL);
        MUST(strcmp(tg_kvlist_get(&l, key), eq + 1) == 0);
        free(key);
        MUST((f = tg_params_format(&l)) != NULL);
        free(f);
    } else {
        check_err(err, sizeof(err));
    }
    tg_kvlist_free(&l);
}

static void fuzz_typed(const char *s) {
    long long v, v2;
    double d;
    int b = 7;
    char buf[32];

    if (tg_parse_int(s, &v) == 0) {
        snprintf(buf, sizeof(buf), "%lld", v);
        MUST(tg_parse_int(buf, &v2) == 0 && v2 == v);
    }
    if (tg_parse_number(s, &d) == 0) MUST(isfinite(d));
    if (tg_parse_bool(s, &b) == 0) MUST(b == 0 || b == 1);
    else MUST(b == 7);
}

/* A duration that parses formats (Go's String() form) and parses back to
 * the same nanoseconds; so does any int64 made of the input's bytes.  A
 * size that parses is >= 0, and so is its whole part with "B" (the
 * fraction only ever adds). */
static void fuzz_units(const char *s, const uint8_t *data, size_t size) {
    int64_t ns = 7, ns2, bytes = -7;
    char buf[48];

    if (tg_parse_duration(s, &ns) == 0) {
        tg_format_duration(ns, buf, sizeof(buf));
        MUST(tg_parse_duration(buf, &ns2) == 0 && ns2 == ns);
    } else {
        MUST(ns == 7);
    }
    if (size >= 8) {
        uint64_t u = 0;
        size_t i;
        for (i = 0; i < 8; i++) u = u << 8 | data[i];
        memcpy(&ns, &u, sizeof(ns));
        tg_format_duration(ns, buf, sizeof(buf));
        MUST(tg_parse_duration(buf, &ns2) == 0 && ns2 == ns);
    }
    if (tg_parse_size(s, &bytes) == 0) MUST(bytes >= 0);
    else MUST(bytes == -7);
}

static void fuzz_group(const char *s) {
    char name[16], err[256];
    long count = -5;
    size_t i;

    err[0] = 0;
    if (tg_group_spec_parse(s, name, sizeof(name), &count, err,
                            sizeof(err)) == 0) {
        MUST(count >= 1);
        MUST(name[0] != '\0' && strlen(name) < sizeof(name));
        for (i = 0; name[i]; i++)
            MUST(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789_.-", name[i]) != NULL);
        MUST(strncmp(s, name, strlen(name)) == 0 && s[strlen(name)] == '=');
    } else {
        check_err(err, sizeof(err));
        MUST(count == -5);
    }
}

static void check_addr(const tg_redis_addr_t *a) {
    tg_redis_addr_t b;
    char buf[400], err[512];

    MUST(memchr(a->host, '\0', sizeof(a->host)));
    MUST(memchr(a->path, '\0', sizeof(a->path)));
    MUST(memchr(a->user, '\0', sizeof(a->user)));
    MUST(memchr(a->password, '\0', sizeof(a->password)));
    MUST(a->db >= 0);
    if (a->is_unix) {
        MUST(a->path[0] == '/');
        MUST(!strchr(a->path, '?'));
    } else {
        MUST(a->host[0] != '\0');
        MUST(a->port >= 1 && a->port <= 65535);
    }
    /* the message form parses back to the same place; "unix:" + "//p"
     * reads as unix:///p, i.e. "/p", the same file on Linux */
    if (a->is_unix && a->path[1] == '/') return;
    tg_redis_addr_str(a, buf, sizeof(buf));
    MUST(tg_redis_addr_parse(buf, &b, err, sizeof(err)) == 0);
    MUST(b.is_unix == a->is_unix);
    if (a->is_unix) MUST(strcmp(a->path, b.path) == 0);
    else MUST(strcmp(a->host, b.host) == 0 && a->port == b.port);
}

static size_t count_in(const char *s, const char *w) {
    size_t n = 0;
    for (; (s = strstr(s, w)) != NULL; s++) n++;
    return n;
}

/* Whether a leaked password could be told apart in a message: it has a
 * byte >= 0x80 (no message text or escape has one) and occurs nowhere in
 * the input but in its own place. */
static int leak_checkable(const char *s, const tg_redis_addr_t *a) {
    const unsigned char *p;
    if (!a->password[0] || strlen(s) > 600) return 0;
    for (p = (const unsigned char *)a->password; *p && *p < 0x80; p++) {}
    return *p && count_in(s, a->password) <= 1 &&
           !strstr(a->user, a->password);
}

static void fuzz_addr(const char *s) {
    tg_redis_addr_t a;
    char err[512], *nl, *host;

    err[0] = 0;
    memset(&a, 0xa5, sizeof(a));
    if (tg_redis_addr_parse(s, &a, err, sizeof(err)) == 0) {
        check_addr(&a);
        /* the password must never leak into a message */
        if (leak_checkable(s, &a)) {
            char bad[700];
            tg_redis_addr_t c;
            snprintf(bad, sizeof(bad), "%s%s", s, a.is_unix ? "&x=1" : "#");
            MUST(tg_redis_addr_parse(bad, &c, err, sizeof(err)) == -1);
            MUST(!strstr(err, a.password));
        }
    } else {
        check_err(err, sizeof(err));
    }

    /* "HOST\nPORT" for the environment variant */
    if (!(host = strdup(s))) return;
    nl = strchr(host, '\n');
    if (nl) *nl = '\0';
    err[0] = 0;
    if (tg_redis_addr_from_env(host, nl ? nl + 1 : NULL, &a, err,
                               sizeof(err)) == 0)
        check_addr(&a);
    else
        check_err(err, sizeof(err));
    free(host);
}

static void fuzz_time(const char *s, const uint8_t *data, size_t size) {
    int64_t ns, ns2;
    char buf[40];

    if (tg_rfc3339_parse(s, &ns) == 0) {
        tg_rfc3339_format(ns, buf, sizeof(buf));
        MUST(tg_rfc3339_parse(buf, &ns2) == 0 && ns2 == ns);
    }
    if (size >= 8) {            /* any int64 formats and parses back */
        uint64_t u = 0;
        size_t i;
        for (i = 0; i < 8; i++) u = u << 8 | data[i];
        memcpy(&ns, &u, sizeof(ns));
        tg_rfc3339_format(ns, buf, sizeof(buf));
        MUST(strlen(buf) == 30);
        MUST(tg_rfc3339_parse(buf, &ns2) == 0 && ns2 == ns);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* libFuzzer entry point: runs every parser on one input.  Returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);

    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    fuzz_params(s);
    fuzz_typed(s);
    fuzz_units(s, data, size);
    fuzz_group(s);
    fuzz_addr(s);
    fuzz_time(s, data, size);
    free(s);
    return 0;
}
