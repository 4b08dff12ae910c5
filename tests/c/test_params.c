/*
 * test_params.c -- table-driven tests for src/tg_params.c.
 *
 * Every error case also checks that the message quotes the offending
 * input (or the part of it at fault), and that redis passwords never
 * appear in messages.
 */
#define _POSIX_C_SOURCE 200809L

#include "tg_params.h"
#include "tg_scalar.h"
#include "tg_addr.h"
#include "tg_rfc3339.h"
#include "tg_test.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------ kvlist */

TG_TEST(kvlist_set_get) {
    tg_kvlist_t l = {0};
    int i;
    char k[16], v[16];

    TG_CHECK(tg_kvlist_get(&l, "a") == NULL);
    TG_CHECK_INT(tg_kvlist_set(&l, "a", "1"), 0);
    TG_CHECK_INT(tg_kvlist_set(&l, "b", "2"), 0);
    TG_CHECK_INT(tg_kvlist_set(&l, "a", "3"), 0);   /* replace in place */
    TG_CHECK_INT(l.len, 2);
    TG_CHECK_STR(l.items[0].key, "a");
    TG_CHECK_STR(tg_kvlist_get(&l, "a"), "3");
    TG_CHECK_STR(tg_kvlist_get(&l, "b"), "2");
    TG_CHECK(tg_kvlist_get(&l, "ab") == NULL);      /* no prefix match */
    TG_CHECK(tg_kvlist_get(&l, "") == NULL);
    for (i = 0; i < 100; i++) {                     /* force growth */
        snprintf(k, sizeof(k), "k%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        TG_CHECK_INT(tg_kvlist_set(&l, k, v), 0);
    }
    TG_CHECK_INT(l.len, 102);
    TG_CHECK_STR(tg_kvlist_get(&l, "k57"), "v57");
    tg_kvlist_free(&l);
    TG_CHECK(l.items == NULL && l.len == 0 && l.cap == 0);
    tg_kvlist_free(&l);                             /* idempotent */
    tg_kvlist_free(NULL);
}

static const struct {
    const char *in;
    size_t n;
    const char *keys[4], *vals[4];
} params_good[] = {
    {"", 0, {0}, {0}},
    {"a=1", 1, {"a"}, {"1"}},
    {"a=1|b=2", 2, {"a", "b"}, {"1", "2"}},
    {"a=x=y|b==", 2, {"a", "b"}, {"x=y", "="}},     /* '=' in values */
    {"|a=1||b=|", 2, {"a", "b"}, {"1", ""}},        /* empty segments */
    {"a=1|a=2", 1, {"a"}, {"2"}},                   /* later wins */
    {"a b= c ", 1, {"a b"}, {" c "}},               /* no trimming */
    {"url=redis://h:1/0?x=y&z=w", 1, {"url"}, {"redis://h:1/0?x=y&z=w"}},
};

static const struct { const char *in, *quote; } params_bad[] = {
    {"a", "\"a\""},
    {"a=1|b|c=3", "\"b\""},
    {"=1", "\"=1\""},
    {"a=1|=x", "\"=x\""},
    {"a=1|\t", "\"\\x09\""},
};

TG_TEST(params_parse) {
    char err[256];
    size_t i, j;

    for (i = 0; i < N(params_good); i++) {
        tg_kvlist_t l = {0};
        err[0] = 0;
        TG_CHECK_INT(tg_params_parse(&l, params_good[i].in, err,
                                     sizeof(err)), 0);
        TG_CHECK_STR(err, "");
        TG_CHECK_INT(l.len, params_good[i].n);
        for (j = 0; j < params_good[i].n && j < l.len; j++) {
            TG_CHECK_STR(l.items[j].key, params_good[i].keys[j]);
            TG_CHECK_STR(l.items[j].value, params_good[i].vals[j]);
        }
        tg_kvlist_free(&l);
    }
    for (i = 0; i < N(params_bad); i++) {
        tg_kvlist_t l = {0};
        TG_CHECK_INT(tg_kvlist_set(&l, "keep", "me"), 0);
        err[0] = 0;
        TG_CHECK_INT(tg_params_parse(&l, params_bad[i].in, err, sizeof(err)),
                     -1);
        TG_CHECK(strstr(err, params_bad[i].quote) != NULL);
        TG_CHECK(strstr(err, "TEST_INSTANCE_PARAMS") != NULL);
        /* failure leaves the list as it was */
        TG_CHECK_INT(l.len, 1);
        TG_CHECK_STR(tg_kvlist_get(&l, "keep"), "me");
        tg_kvlist_free(&l);
    }
    {   /* NULL is "", NULL err is fine */
        tg_kvlist_t l = {0};
        TG_CHECK_INT(tg_params_parse(&l, NULL, NULL, 0), 0);
        TG_CHECK_INT(l.len, 0);
        TG_CHECK_INT(tg_params_parse(&l, "x", NULL, 0), -1);
        tg_kvlist_free(&l);
    }
}

TG_TEST(params_override) {
    tg_kvlist_t l = {0};
    char err[256];

    /* env first, then --param overrides, then env again overrides */
    TG_CHECK_INT(tg_params_parse(&l, "peers=10|mode=fast", err, sizeof(err)),
                 0);
    TG_CHECK_INT(tg_param_parse_one(&l, "peers=20", err, sizeof(err)), 0);
    TG_CHECK_INT(tg_param_parse_one(&l, "extra=a=b", err, sizeof(err)), 0);
    TG_CHECK_STR(tg_kvlist_get(&l, "peers"), "20");
    TG_CHECK_STR(tg_kvlist_get(&l, "extra"), "a=b");
    TG_CHECK_INT(tg_params_parse(&l, "mode=slow", err, sizeof(err)), 0);
    TG_CHECK_STR(tg_kvlist_get(&l, "mode"), "slow");
    TG_CHECK_INT(l.len, 3);
    tg_kvlist_free(&l);
}

static const struct { const char *in, *key, *val; } one_good[] = {
    {"a=1", "a", "1"},
    {"a=", "a", ""},
    {"a==", "a", "="},
    {"k=v=w", "k", "v=w"},
    {"sp ace=x y", "sp ace", "x y"},
};

static const struct { const char *in, *quote, *hint; } one_bad[] = {
    {"peers", "\"peers\"", "KEY=VALUE"},
    {"", "\"\"", "KEY=VALUE"},
    {"=5", "\"=5\"", "empty key"},
    {"a=1|b=2", "\"a=1|b=2\"", "'|'"},
    {"a|b=2", "\"a|b=2\"", "'|'"},
    {"say\"hi\\", "\"say\\\"hi\\\\\"", "KEY=VALUE"},   /* escaped */
};

TG_TEST(param_parse_one) {
    char err[256];
    size_t i;

    for (i = 0; i < N(one_good); i++) {
        tg_kvlist_t l = {0};
        TG_CHECK_INT(tg_param_parse_one(&l, one_good[i].in, err, sizeof(err)),
                     0);
        TG_CHECK_INT(l.len, 1);
        TG_CHECK_STR(tg_kvlist_get(&l, one_good[i].key), one_good[i].val);
        tg_kvlist_free(&l);
    }
    for (i = 0; i < N(one_bad); i++) {
        tg_kvlist_t l = {0};
        err[0] = 0;
        TG_CHECK_INT(tg_param_parse_one(&l, one_bad[i].in, err, sizeof(err)),
                     -1);
        TG_CHECK(strstr(err, "--param") != NULL);
        TG_CHECK(strstr(err, one_bad[i].quote) != NULL);
        TG_CHECK(strstr(err, one_bad[i].hint) != NULL);
        TG_CHECK_INT(l.len, 0);
        tg_kvlist_free(&l);
    }
}

TG_TEST(params_format) {
    static const char *const rt[] = {
        "", "a=1", "a=1|b=2", "a=x=y|b=|c==", "z=1|a=2|m=3",
        "k=\xc3\xa9t\xc3\xa9 =x",
    };
    tg_kvlist_t l = {0};
    char err[256], *s;
    size_t i;

    for (i = 0; i < N(rt); i++) {
        TG_CHECK_INT(tg_params_parse(&l, rt[i], err, sizeof(err)), 0);
        s = tg_params_format(&l);
        TG_CHECK_STR(s, rt[i]);                     /* order preserved */
        free(s);
        tg_kvlist_free(&l);
    }
    /* normalising forms: empty segments and duplicates disappear */
    TG_CHECK_INT(tg_params_parse(&l, "|a=1||a=2|b=3|", err, sizeof(err)), 0);
    s = tg_params_format(&l);
    TG_CHECK_STR(s, "a=2|b=3");
    free(s);
    tg_kvlist_free(&l);
    /* entries TEST_INSTANCE_PARAMS cannot carry */
    TG_CHECK_INT(tg_kvlist_set(&l, "a", "x|y"), 0);
    TG_CHECK(tg_params_format(&l) == NULL);
    tg_kvlist_free(&l);
    TG_CHECK_INT(tg_kvlist_set(&l, "a=b", "x"), 0);
    TG_CHECK(tg_params_format(&l) == NULL);
    tg_kvlist_free(&l);
    TG_CHECK_INT(tg_kvlist_set(&l, "", "x"), 0);
    TG_CHECK(tg_params_format(&l) == NULL);
    tg_kvlist_free(&l);
}

/* ------------------------------------------------------- typed values */

static const struct { const char *in; long long v; } int_good[] = {
    {"0", 0}, {"-0", 0}, {"+7", 7}, {"42", 42}, {"-42", -42},
    {"  12\t\n", 12}, {"007", 7},
    {"9223372036854775807", LLONG_MAX},
    {"-9223372036854775808", LLONG_MIN},
    {"+9223372036854775807", LLONG_MAX},
};
static const char *const int_bad[] = {
    "", " ", "-", "+", "12x", "x12", "1 2", "1.0", "0x10", "1e3", "--1",
    "+-1", "9223372036854775808", "-9223372036854775809",
    "99999999999999999999999", "\xef\xbc\x91", "1\v2",
};

TG_TEST(parse_int) {
    size_t i;
    long long v;

    for (i = 0; i < N(int_good); i++) {
        v = 12345;
        TG_CHECK_INT(tg_parse_int(int_good[i].in, &v), 0);
        TG_CHECK_INT(v, int_good[i].v);
    }
    for (i = 0; i < N(int_bad); i++) {
        v = 12345;
        if (tg_parse_int(int_bad[i], &v) != -1)
            fprintf(stderr, "accepted bad int \"%s\"\n", int_bad[i]);
        TG_CHECK_INT(tg_parse_int(int_bad[i], &v), -1);
        TG_CHECK_INT(v, 12345);                     /* untouched */
    }
    TG_CHECK_INT(tg_parse_int(NULL, &v), -1);
}

static const struct { const char *in; double v; } num_good[] = {
    {"0", 0}, {"1.5", 1.5}, {"-2.25", -2.25}, {" 1e3 ", 1000},
    {".5", 0.5}, {"5.", 5}, {"+3", 3}, {"0x10", 16}, {"1e-400", 0},
    {"1.7976931348623157e308", 1.7976931348623157e308},
};
static const char *const num_bad[] = {
    "", "  ", "nan", "NaN", "inf", "-inf", "infinity", "1e400", "-1e400",
    "1.5x", "x", "1 2", "1,5", "--1", "e5",
};

TG_TEST(parse_number) {
    size_t i;
    double v;

    for (i = 0; i < N(num_good); i++) {
        v = -1;
        TG_CHECK_INT(tg_parse_number(num_good[i].in, &v), 0);
        TG_CHECK(v == num_good[i].v);
    }
    for (i = 0; i < N(num_bad); i++) {
        v = -1;
        TG_CHECK_INT(tg_parse_number(num_bad[i], &v), -1);
        TG_CHECK(v == -1);
    }
    TG_CHECK_INT(tg_parse_number(NULL, &v), -1);
}

static const struct { const char *in; int v; } bool_good[] = {
    {"true", 1}, {"TRUE", 1}, {"True", 1}, {"1", 1}, {"yes", 1},
    {"YeS", 1}, {"on", 1}, {"ON", 1}, {" true\n", 1},
    {"false", 0}, {"False", 0}, {"0", 0}, {"no", 0}, {"NO", 0},
    {"off", 0}, {"Off", 0}, {"\tno ", 0},
    /* everything Go's strconv.ParseBool takes */
    {"t", 1}, {"T", 1}, {"f", 0}, {"F", 0}, {"FALSE", 0},
};
static const char *const bool_bad[] = {
    "", " ", "y", "n", "2", "-1", "truex", "tru", "yes!", "o",
    "of", "00", "01", "true false", "enable", "tt", "ft", "t f",
};

TG_TEST(parse_bool) {
    size_t i;
    int v;

    for (i = 0; i < N(bool_good); i++) {
        v = 7;
        TG_CHECK_INT(tg_parse_bool(bool_good[i].in, &v), 0);
        TG_CHECK_INT(v, bool_good[i].v);
    }
    for (i = 0; i < N(bool_bad); i++) {
        v = 7;
        TG_CHECK_INT(tg_parse_bool(bool_bad[i], &v), -1);
        TG_CHECK_INT(v, 7);
    }
    TG_CHECK_INT(tg_parse_bool(NULL, &v), -1);
}

/* Go's time.ParseDuration: the same strings, the same nanoseconds. */
static const struct { const char *in; int64_t ns; } dur_good[] = {
    {"0", 0}, {"+0", 0}, {"-0", 0}, {"0s", 0}, {" 10s\n", 10000000000LL},
    {"1m30s", 90000000000LL}, {"1h", 3600000000000LL}, {"1.5s", 1500000000LL},
    {"-1.5h", -5400000000000LL}, {"+2m", 120000000000LL}, {"300ms", 300000000LL},
    {"1us", 1000}, {"1\xc2\xb5s", 1000}, {"1\xce\xbcs", 1000}, {"7ns", 7},
    {"1h2m3s4ms5us6ns", 3723004005006LL}, {".5s", 500000000LL}, {"5.s", 5000000000LL},
    {"1.0000000001s", 1000000000LL}, {"0.3333333333333333333h", 1200000000000LL},
    {"2562047h47m16.854775807s", INT64_MAX}, {"-2562047h47m16.854775808s", INT64_MIN},
    {"9223372036854775807ns", INT64_MAX}, {"-9223372036854775808ns", INT64_MIN},
    {"1s1s", 2000000000LL},
};
static const char *const dur_bad[] = {
    "", " ", "-", "+", "s", "10", "1", "00", "-1", ".", ".s", "-.s", "1.s.", "1x",
    "1 s", "1S", "1Ms", "1sec", "1s2", "s1", "1h-1m", "--1s", "1e3s", "0x1s",
    "2562047h47m16.854775808s", "9223372036854775808ns", "-9223372036854775809ns",
    "99999999999999999999h", "1\xc2s", "\xc2\xb5s", "1,5s", "1.5.5s", "1d",
    "100000000000000000000000000000000.5ns",
};

TG_TEST(parse_duration) {
    size_t i;
    int64_t v;
    char buf[48];

    for (i = 0; i < N(dur_good); i++) {
        v = 12345;
        if (tg_parse_duration(dur_good[i].in, &v) != 0)
            fprintf(stderr, "rejected good duration \"%s\"\n", dur_good[i].in);
        TG_CHECK_INT(v, dur_good[i].ns);
    }
    for (i = 0; i < N(dur_bad); i++) {
        v = 12345;
        if (tg_parse_duration(dur_bad[i], &v) != -1)
            fprintf(stderr, "accepted bad duration \"%s\"\n", dur_bad[i]);
        TG_CHECK_INT(v, 12345);
    }
    TG_CHECK_INT(tg_parse_duration(NULL, &v), -1);
    /* Go's String() forms, read back to the same value */
    static const struct { int64_t ns; const char *out; } fmt[] = {
        {0, "0s"}, {1, "1ns"}, {999, "999ns"}, {1000, "1us"}, {1500, "1.5us"},
        {1000000, "1ms"}, {1234567, "1.234567ms"}, {1000000000, "1s"},
        {90000000000LL, "1m30s"}, {3723004005006LL, "1h2m3.004005006s"},
        {-1500000000LL, "-1.5s"}, {3600000000000LL, "1h0m0s"},
        {INT64_MAX, "2562047h47m16.854775807s"}, {INT64_MIN, "-2562047h47m16.854775808s"},
    };
    for (i = 0; i < N(fmt); i++) {
        TG_CHECK_STR(tg_format_duration(fmt[i].ns, buf, sizeof buf), fmt[i].out);
        TG_CHECK_INT(tg_parse_duration(buf, &v), 0);
        TG_CHECK_INT(v, fmt[i].ns);
    }
}

/* go-humanize's ParseBytes (sdk-go's SizeParam): SI for K/KB, IEC for
 * Ki/KiB, any case, exact arithmetic truncated to whole bytes. */
static const struct { const char *in; int64_t v; } size_good[] = {
    {"0", 0}, {"1", 1}, {"42B", 42}, {"42 b", 42}, {" 10KB ", 10000}, {"10kb", 10000},
    {"10K", 10000}, {"1KiB", 1024}, {"1kib", 1024}, {"1Ki", 1024}, {"1MiB", 1048576},
    {"1MB", 1000000}, {"1.5KiB", 1536}, {"1.5KB", 1500}, {"4.1KB", 4100},
    {"0.5B", 0}, {"0.5", 0}, {".5K", 500}, {"5.K", 5000}, {"1,000", 1000},
    {"1,000.5 KB", 1000500}, {"2GiB", 2147483648LL}, {"2 GB", 2000000000LL},
    {"1TiB", 1099511627776LL}, {"1PB", 1000000000000000LL}, {"1PiB", 1125899906842624LL},
    {"7EiB", 8070450532247928832LL}, {"9EB", 9000000000000000000LL},
    {"9223372036854775807", INT64_MAX}, {"0.000000000000000001EB", 1},
    {"0.0000000000000000019EB", 1}, {"1.0000000000000000000009KiB", 1024},
    {"0.1MiB", 104857}, {"0.3GiB", 322122547},
};
static const char *const size_bad[] = {
    "", " ", "-1", "+1", "KB", "1XB", "1 K B", "1KBB", "1kibb", "1e3", "0x10",
    ",1", "1,", "1,,000", "1.2.3", ".", "1 .5", "8EiB", "10EB", "9223372036854775808",
    "99999999999999999999", "1\xc2\xb5" "B", "1k1",
};

TG_TEST(parse_size) {
    size_t i;
    int64_t v;

    for (i = 0; i < N(size_good); i++) {
        v = 12345;
        if (tg_parse_size(size_good[i].in, &v) != 0)
            fprintf(stderr, "rejected good size \"%s\"\n", size_good[i].in);
        TG_CHECK_INT(v, size_good[i].v);
    }
    for (i = 0; i < N(size_bad); i++) {
        v = 12345;
        if (tg_parse_size(size_bad[i], &v) != -1)
            fprintf(stderr, "accepted bad size \"%s\"\n", size_bad[i]);
        TG_CHECK_INT(v, 12345);
    }
    TG_CHECK_INT(tg_parse_size(NULL, &v), -1);
}

/* ------------------------------------------------------------- groups */

static const struct { const char *in, *name; long count; } grp_good[] = {
    {"seeds=3", "seeds", 3},
    {"a=1", "a", 1},
    {"Peers_v1.2-x=1000", "Peers_v1.2-x", 1000},
    {"g= 4 ", "g", 4},                              /* COUNT is trimmed */
    {"g=+2", "g", 2},
};

static const struct { const char *in, *quote, *hint; } grp_bad[] = {
    {"seeds", "\"seeds\"", "NAME=COUNT"},
    {"", "\"\"", "NAME=COUNT"},
    {"=3", "\"=3\"", "empty NAME"},
    {"se eds=3", "\"se eds\"", "letters, digits"},
    {"a/b=3", "\"a/b\"", "letters, digits"},
    {"seeds=0", "\"0\"", ">= 1"},
    {"seeds=-1", "\"-1\"", ">= 1"},
    {"seeds=", "\"\"", ">= 1"},
    {"seeds=x", "\"x\"", ">= 1"},
    {"seeds=3=4", "\"3=4\"", ">= 1"},
    {"seeds=1.5", "\"1.5\"", ">= 1"},
    {"seeds=99999999999999999999", "\"99999999999999999999\"", ">= 1"},
};

TG_TEST(group_spec) {
    char name[32], err[256];
    long count;
    size_t i;

    for (i = 0; i < N(grp_good); i++) {
        count = 0;
        TG_CHECK_INT(tg_group_spec_parse(grp_good[i].in, name, sizeof(name),
                                         &count, err, sizeof(err)), 0);
        TG_CHECK_STR(name, grp_good[i].name);
        TG_CHECK_INT(count, grp_good[i].count);
    }
    for (i = 0; i < N(grp_bad); i++) {
        strcpy(name, "untouched");
        count = -7;
        err[0] = 0;
        TG_CHECK_INT(tg_group_spec_parse(grp_bad[i].in, name, sizeof(name),
                                         &count, err, sizeof(err)), -1);
        TG_CHECK(strstr(err, "--group") != NULL);
        TG_CHECK(strstr(err, grp_bad[i].quote) != NULL);
        TG_CHECK(strstr(err, grp_bad[i].hint) != NULL);
        TG_CHECK_STR(name, "untouched");
        TG_CHECK_INT(count, -7);
    }
    /* the exact wording promised in the brief */
    tg_group_spec_parse("seeds", name, sizeof(name), &count, err, sizeof(err));
    TG_CHECK_STR(err, "--group \"seeds\" needs NAME=COUNT");
    /* name must fit: 5 chars need 6 bytes */
    TG_CHECK_INT(tg_group_spec_parse("abcde=1", name, 5, &count, err,
                                     sizeof(err)), -1);
    TG_CHECK(strstr(err, "longer than 4") != NULL);
    TG_CHECK_INT(tg_group_spec_parse("abcde=1", name, 6, &count, err,
                                     sizeof(err)), 0);
    TG_CHECK_STR(name, "abcde");
    /* a tiny err buffer is truncated, not overrun */
    TG_CHECK_INT(tg_group_spec_parse("x", name, 6, &count, err, 4), -1);
    TG_CHECK_STR(err, "--g");
    TG_CHECK_INT(tg_group_spec_parse(NULL, name, 6, &count, NULL, 0), -1);
}

/* ------------------------------------------------------ redis address */

static const struct {
    const char *in;
    int is_unix;
    const char *host;
    int port;
    const char *path, *user, *password;
    int db;
    const char *str;
} addr_good[] = {
    {"localhost", 0, "localhost", 6379, "", "", "", 0, "localhost:6379"},
    {"127.0.0.1:6380", 0, "127.0.0.1", 6380, "", "", "", 0,
     "127.0.0.1:6380"},
    {"[::1]:6379", 0, "::1", 6379, "", "", "", 0, "[::1]:6379"},
    {"[::1]", 0, "::1", 6379, "", "", "", 0, "[::1]:6379"},
    {"testground-redis", 0, "testground-redis", 6379, "", "", "", 0,
     "testground-redis:6379"},
    {"redis://h", 0, "h", 6379, "", "", "", 0, "h:6379"},
    {"redis://h:1", 0, "h", 1, "", "", "", 0, "h:1"},
    {"redis://h:65535/", 0, "h", 65535, "", "", "", 0, "h:65535"},
    {"redis://h/15", 0, "h", 6379, "", "", "", 15, "h:6379"},
    {"REDIS://H:7000/2", 0, "H", 7000, "", "", "", 2, "H:7000"},
    {"redis://[::1]:6380/2", 0, "::1", 6380, "", "", "", 2, "[::1]:6380"},
    {"redis://[fe80::1%eth0]:7/1", 0, "fe80::1%eth0", 7, "", "", "", 1,
     "[fe80::1%eth0]:7"},
    {"redis://:secret@h:6379/0", 0, "h", 6379, "", "", "secret", 0,
     "h:6379"},
    {"redis://alice:secret@h", 0, "h", 6379, "", "alice", "secret", 0,
     "h:6379"},
    {"redis://al%69ce:p%40ss%3Aw%2fd%25@h", 0, "h", 6379, "", "alice",
     "p@ss:w/d%", 0, "h:6379"},
    {"redis://:p@ss@h:1", 0, "h", 1, "", "", "p@ss", 0, "h:1"}, /* last @ */
    {"redis://:pa/ss@h", 0, "h", 6379, "", "", "pa/ss", 0, "h:6379"},
    {"redis://u:@h", 0, "h", 6379, "", "u", "", 0, "h:6379"},
    {"redis://:@h", 0, "h", 6379, "", "", "", 0, "h:6379"},
    {"redis://alice:pw@[::1]:6380/3", 0, "::1", 6380, "", "alice", "pw", 3,
     "[::1]:6380"},
    {"unix:///tmp/redis.sock", 1, "", 6379, "/tmp/redis.sock", "", "", 0,
     "unix:/tmp/redis.sock"},
    {"unix:///path?db=3", 1, "", 6379, "/path", "", "", 3, "unix:/path"},
    {"unix:///p?password=s%26x&db=1&user=bob", 1, "", 6379, "/p", "bob",
     "s&x", 1, "unix:/p"},
    {"unix:///p?&db=4&", 1, "", 6379, "/p", "", "", 4, "unix:/p"},
    {"unix:/var/run/r.sock", 1, "", 6379, "/var/run/r.sock", "", "", 0,
     "unix:/var/run/r.sock"},
    {"UNIX:///s", 1, "", 6379, "/s", "", "", 0, "unix:/s"},
    {"unix:6379", 0, "unix", 6379, "", "", "", 0, "unix:6379"}, /* a host */
};

static const struct { const char *in, *quote, *hint; } addr_bad[] = {
    {"", "", "empty"},
    {"redis://", "\"redis://\"", "host is empty"},
    {"redis://:6379", "\"redis://:6379\"", "host is empty"},
    {"redis:///0", "\"redis:///0\"", "host is empty"},
    {":6379", "\":6379\"", "host is empty"},
    {"redis://h:99999", "\"redis://h:99999\"", "port must be 1-65535"},
    {"redis://h:0", "\"0\"", "port must be 1-65535"},
    {"redis://h:", "\"redis://h:\"", "port must be 1-65535"},
    {"redis://h:-1", "\"-1\"", "port must be 1-65535"},
    {"redis://h:12ab", "\"12ab\"", "port must be 1-65535"},
    {"h:99999999999999999999", "\"99999999999999999999\"", "1-65535"},
    {"redis://h/x", "\"x\"", "db must be a non-negative integer"},
    {"redis://h/-1", "\"-1\"", "db must be a non-negative integer"},
    {"redis://h/99999999999", "\"99999999999\"", "non-negative integer"},
    {"redis://h/1/2", "\"1/2\"", "non-negative integer"},
    {"unix:///p?db=x", "\"x\"", "db must be a non-negative integer"},
    {"http://h:80", "\"http\"", "not supported"},
    {"rediss://h", "\"rediss\"", "not supported"},
    {"://h", "\"\"", "not supported"},
    {"redis://h:1?x", "\"?x\"", "unexpected"},
    {"redis://h#f", "\"#f\"", "unexpected"},
    {"redis://[::1]x", "\"x\"", "unexpected"},
    {"h:1/2", "\"/2\"", "unexpected"},
    {"h:1 ", "\"1 \"", "port"},
    {" h", "\" h\"", "may only contain"},
    {"redis://h_ost!:1", "\"h_ost!\"", "may only contain"},
    {"redis://[::1", "\"redis://[::1\"", "missing ']'"},
    {"redis://[]:1", "\"redis://[]:1\"", "host is empty"},
    {"redis://[abc]", "\"abc\"", "not an IPv6"},
    {"::1", "\"::1\"", "brackets"},
    {"redis://::1:6379", "\"redis://::1:6379\"", "brackets"},
    {"unix://", "\"unix://\"", "absolute"},
    {"unix://host/p", "\"unix://host/p\"", "absolute"},
    {"unix:///p?foo=1", "\"foo\"", "unknown option"},
    {"unix:///p?db", "\"db\"", "NAME=VALUE"},
    {"user:pw@h", "\"user:***@h\"", "redis://user:password@host"},
    {"redis://secret@h", "\"redis://***@h\"", "user:password@"},
    {"redis://:a%zz@h", "\"redis://:***@h\"", "hex digits"},
    {"redis://:a%2@h", "\"redis://:***@h\"", "hex digits"},
    {"redis://:a%00b@h", "\"redis://:***@h\"", "%00"},
    {"redis://u%:x@h", "\"redis://u%:***@h\"", "user name"},
};

TG_TEST(redis_addr_good) {
    tg_redis_addr_t a;
    char err[512], buf[300];
    size_t i;

    for (i = 0; i < N(addr_good); i++) {
        memset(&a, 0x55, sizeof(a));
        err[0] = 0;
        if (tg_redis_addr_parse(addr_good[i].in, &a, err, sizeof(err)) < 0) {
            fprintf(stderr, "rejected %s: %s\n", addr_good[i].in, err);
            TG_CHECK(0);
            continue;
        }
        TG_CHECK_INT(a.is_unix, addr_good[i].is_unix);
        TG_CHECK_STR(a.host, addr_good[i].host);
        TG_CHECK_INT(a.port, addr_good[i].port);
        TG_CHECK_STR(a.path, addr_good[i].path);
        TG_CHECK_STR(a.user, addr_good[i].user);
        TG_CHECK_STR(a.password, addr_good[i].password);
        TG_CHECK_INT(a.db, addr_good[i].db);
        TG_CHECK_STR(tg_redis_addr_str(&a, buf, sizeof(buf)),
                     addr_good[i].str);
    }
}

TG_TEST(redis_addr_bad) {
    tg_redis_addr_t a;
    char err[512];
    size_t i;

    for (i = 0; i < N(addr_bad); i++) {
        memset(&a, 0x55, sizeof(a));
        err[0] = 0;
        TG_CHECK_INT(tg_redis_addr_parse(addr_bad[i].in, &a, err,
                                         sizeof(err)), -1);
        if (!strstr(err, addr_bad[i].quote) ||
            !strstr(err, addr_bad[i].hint))
            fprintf(stderr, "for %s got: %s\n", addr_bad[i].in, err);
        TG_CHECK(strstr(err, addr_bad[i].quote) != NULL);
        TG_CHECK(strstr(err, addr_bad[i].hint) != NULL);
        TG_CHECK(strstr(err, "redis") != NULL);
        TG_CHECK(strstr(err, "secret") == NULL);    /* never shown */
        TG_CHECK(a.port == 0x55555555);             /* untouched */
    }
    /* the exact wording promised in the brief, first part */
    tg_redis_addr_parse("redis://h:99999", &a, err, sizeof(err));
    {
        static const char want[] =
            "redis URL \"redis://h:99999\": port must be 1-65535";
        TG_CHECK(strncmp(err, want, sizeof(want) - 1) == 0);
    }
    TG_CHECK_INT(tg_redis_addr_parse(NULL, &a, NULL, 0), -1);
}

TG_TEST(redis_addr_limits) {
    tg_redis_addr_t a;
    char url[700], err[512], big[400];

    /* 107-byte socket path fits, 108 does not */
    memset(big, 'p', sizeof(big));
    big[0] = '/';
    snprintf(url, sizeof(url), "unix://%.*s", 107, big);
    TG_CHECK_INT(tg_redis_addr_parse(url, &a, err, sizeof(err)), 0);
    TG_CHECK_INT(strlen(a.path), 107);
    snprintf(url, sizeof(url), "unix://%.*s?db=1", 108, big);
    TG_CHECK_INT(tg_redis_addr_parse(url, &a, err, sizeof(err)), -1);
    TG_CHECK(strstr(err, "path is longer than 107") != NULL);
    TG_CHECK(strstr(err, "\"...") != NULL);         /* long input cut */

    /* 255-byte host fits, 256 does not */
    memset(big, 'h', sizeof(big));
    snprintf(url, sizeof(url), "redis://%.*s:1", 255, big);
    TG_CHECK_INT(tg_redis_addr_parse(url, &a, err, sizeof(err)), 0);
    TG_CHECK_INT(strlen(a.host), 255);
    snprintf(url, sizeof(url), "%.*s", 256, big);
    TG_CHECK_INT(tg_redis_addr_parse(url, &a, err, sizeof(err)), -1);
    TG_CHECK(strstr(err, "host is longer than 255") != NULL);

    /* 255-byte password fits (after decoding), 256 does not */
    memset(big, 's', sizeof(big));
    snprintf(url, sizeof(url), "redis://:%.*s@h", 255, big);
    TG_CHECK_INT(tg_redis_addr_parse(url, &a, err, sizeof(err)), 0);
    TG_CHECK_INT(strlen(a.password), 255);
    snprintf(url, sizeof(url), "redis://:%.*s@h", 256, big);
    TG_CHECK_INT(tg_redis_addr_parse(url, &a, err, sizeof(err)), -1);
    TG_CHECK(strstr(err, "password is longer than 255") != NULL);
    TG_CHECK(strstr(err, "sss") == NULL);
    snprintf(url, sizeof(url), "redis://%.*s:x@h", 128, big);
    TG_CHECK_INT(tg_redis_addr_parse(url, &a, err, sizeof(err)), -1);
    TG_CHECK(strstr(err, "user name is longer than 127") != NULL);

    /* query passwords are redacted, even repeated ones */
    TG_CHECK_INT(tg_redis_addr_parse("unix:///p?password=secret&password="
                                     "secret&db=z", &a, err, sizeof(err)),
                 -1);
    TG_CHECK(strstr(err, "secret") == NULL);
    TG_CHECK(strstr(err, "password=***&password=***&db=z") != NULL);

    /* control bytes are escaped in messages */
    TG_CHECK_INT(tg_redis_addr_parse("h\n", &a, err, sizeof(err)), -1);
    TG_CHECK(strstr(err, "\"h\\x0a\"") != NULL);
}

TG_TEST(redis_addr_from_env) {
    static const struct {
        const char *host, *port, *want;
    } good[] = {
        {NULL, NULL, "localhost:6379"},
        {"", "", "localhost:6379"},
        {"testground-redis", NULL, "testground-redis:6379"},
        {"10.0.0.1", "6380", "10.0.0.1:6380"},
        {"::1", " 7000\n", "[::1]:7000"},
        {"[fe80::1]", "1", "[fe80::1]:1"},
        {NULL, "65535", "localhost:65535"},
    };
    static const struct {
        const char *host, *port, *quote, *hint;
    } bad[] = {
        {"h", "abc", "\"abc\"", "REDIS_PORT"},
        {"h", "0", "\"0\"", "1-65535"},
        {"h", "65536", "\"65536\"", "1-65535"},
        {"h", "63 79", "\"63 79\"", "REDIS_PORT"},
        {"h:6379", NULL, "\"h:6379\"", "REDIS_PORT"},
        {"bad host", NULL, "\"bad host\"", "may only contain"},
        {"[]", NULL, "\"[]\"", "host is empty"},
    };
    tg_redis_addr_t a;
    char err[512], buf[300];
    size_t i;

    for (i = 0; i < N(good); i++) {
        TG_CHECK_INT(tg_redis_addr_from_env(good[i].host, good[i].port, &a,
                                            err, sizeof(err)), 0);
        TG_CHECK_STR(tg_redis_addr_str(&a, buf, sizeof(buf)), good[i].want);
        TG_CHECK_INT(a.db, 0);
        TG_CHECK_INT(a.is_unix, 0);
        TG_CHECK_STR(a.password, "");
    }
    for (i = 0; i < N(bad); i++) {
        a.port = 42;
        err[0] = 0;
        TG_CHECK_INT(tg_redis_addr_from_env(bad[i].host, bad[i].port, &a,
                                            err, sizeof(err)), -1);
        if (!strstr(err, bad[i].quote) || !strstr(err, bad[i].hint))
            fprintf(stderr, "got: %s\n", err);
        TG_CHECK(strstr(err, bad[i].quote) != NULL);
        TG_CHECK(strstr(err, bad[i].hint) != NULL);
        TG_CHECK_INT(a.port, 42);
    }
}

TG_TEST(redis_addr_str) {
    tg_redis_addr_t a;
    char buf[8];

    memset(&a, 0, sizeof(a));
    strcpy(a.host, "127.0.0.1");
    a.port = 6379;
    strcpy(a.password, "secret");
    TG_CHECK_STR(tg_redis_addr_str(&a, buf, sizeof(buf)), "127.0.0");
    TG_CHECK(tg_redis_addr_str(&a, buf, 0) == buf);
}

/* ------------------------------------------------------------- time */

static const struct { const char *in; int64_t ns; } time_good[] = {
    {"1970-01-01T00:00:00Z", 0},
    {"1970-01-01T00:00:00.000000001Z", 1},
    {"1969-12-31T23:59:59Z", -1000000000LL},
    {"1969-12-31T23:59:59.999999999Z", -1},
    {"2020-10-01T12:00:00.5+02:00", 1601546400500000000LL},
    {"2020-10-01t10:00:00.5z", 1601546400500000000LL},
    {"2020-10-01 10:00:00.500Z", 1601546400500000000LL},
    {"2006-01-02T15:04:05-07:00", 1136239445000000000LL},
    {"2024-02-29T00:00:00Z", 1709164800000000000LL},
    {"2000-02-29T23:59:59Z", 951868799000000000LL},
    {"2038-01-19T03:14:08Z", 2147483648000000000LL},
    {"1900-01-01T00:00:00Z", -2208988800000000000LL},
    {"1970-01-01T00:00:00-00:00", 0},
    {"1970-01-01T00:00:00.1234567891234Z", 123456789},  /* truncated */
    {"2016-12-31T23:59:60Z", 1483228800000000000LL},    /* leap second */
    {"2262-04-11T23:47:16.854775807Z", INT64_MAX},
    {"1677-09-21T00:12:43.145224192Z", INT64_MIN},
    {"2262-04-12T01:47:16.854775807+02:00", INT64_MAX},
};
static const char *const time_bad[] = {
    "", "1970-01-01", "1970-01-01T00:00:00", "1970-01-01T00:00Z",
    "1970-01-01X00:00:00Z", "1970-1-01T00:00:00Z", "70-01-01T00:00:00Z",
    "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-04-31T00:00:00Z",
    "2024-00-10T00:00:00Z", "2024-13-10T00:00:00Z", "2024-01-00T00:00:00Z",
    "2024-01-32T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z",
    "2024-01-01T00:00:61Z", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00Zx",
    "2024-01-01T00:00:00+0200", "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00:00+02:60", "2024-01-01T00:00:00+2:00",
    " 2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z ",
    "2024-01-01T00:00:00,5Z", "+2024-01-01T00:00:00Z",
    "2262-04-11T23:47:16.854775808Z", "1677-09-21T00:12:43.145224191Z",
    "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z",
    "2024-01-01T00:00:00.5",
};

TG_TEST(rfc3339_parse) {
    size_t i;
    int64_t ns;

    for (i = 0; i < N(time_good); i++) {
        ns = 42;
        if (tg_rfc3339_parse(time_good[i].in, &ns) != 0)
            fprintf(stderr, "rejected %s\n", time_good[i].in);
        TG_CHECK_INT(tg_rfc3339_parse(time_good[i].in, &ns), 0);
        TG_CHECK_INT(ns, time_good[i].ns);
    }
    for (i = 0; i < N(time_bad); i++) {
        ns = 42;
        if (tg_rfc3339_parse(time_bad[i], &ns) != -1)
            fprintf(stderr, "accepted %s\n", time_bad[i]);
        TG_CHECK_INT(tg_rfc3339_parse(time_bad[i], &ns), -1);
        TG_CHECK_INT(ns, 42);
    }
    TG_CHECK_INT(tg_rfc3339_parse(NULL, &ns), -1);
}

TG_TEST(rfc3339_format) {
    static const struct { int64_t ns; const char *out; } cases[] = {
        {0, "1970-01-01T00:00:00.000000000Z"},
        {1, "1970-01-01T00:00:00.000000001Z"},
        {-1, "1969-12-31T23:59:59.999999999Z"},
        {1601546400500000000LL, "2020-10-01T10:00:00.500000000Z"},
        {1709164800000000000LL, "2024-02-29T00:00:00.000000000Z"},
        {INT64_MAX, "2262-04-11T23:47:16.854775807Z"},
        {INT64_MIN, "1677-09-21T00:12:43.145224192Z"},
        {-2208988800000000000LL, "1900-01-01T00:00:00.000000000Z"},
    };
    char buf[40];
    size_t i;
    int64_t ns, t;
    uint64_t x = 88172645463325252ULL;

    for (i = 0; i < N(cases); i++) {
        tg_rfc3339_format(cases[i].ns, buf, sizeof(buf));
        TG_CHECK_STR(buf, cases[i].out);
    }
    /* round trip: edges, every day boundary near the epoch, random */
    for (t = -3 * 86400; t <= 3 * 86400; t += 3599) {
        ns = 7;
        tg_rfc3339_format(t * 1000000000LL, buf, sizeof(buf));
        TG_CHECK_INT(tg_rfc3339_parse(buf, &ns), 0);
        TG_CHECK_INT(ns, t * 1000000000LL);
    }
    for (i = 0; i < 20000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;   /* xorshift64 */
        t = (int64_t)x;
        tg_rfc3339_format(t, buf, sizeof(buf));
        TG_CHECK_INT(strlen(buf), 30);
        TG_CHECK_INT(tg_rfc3339_parse(buf, &ns), 0);
        TG_CHECK_INT(ns, t);
    }
    tg_rfc3339_format(0, buf, 11);
    TG_CHECK_STR(buf, "1970-01-01");
}

int main(void) {
    TG_RUN(kvlist_set_get);
    TG_RUN(params_parse);
    TG_RUN(params_override);
    TG_RUN(param_parse_one);
    TG_RUN(params_format);
    TG_RUN(parse_int);
    TG_RUN(parse_number);
    TG_RUN(parse_bool);
    TG_RUN(parse_duration);
    TG_RUN(parse_size);
    TG_RUN(group_spec);
    TG_RUN(redis_addr_good);
    TG_RUN(redis_addr_bad);
    TG_RUN(redis_addr_limits);
    TG_RUN(redis_addr_from_env);
    TG_RUN(redis_addr_str);
    TG_RUN(rfc3339_parse);
    TG_RUN(rfc3339_format);
    return tg_test_report();
}
