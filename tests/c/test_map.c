/* test_map.c -- the string-keyed map against a plain model. */
#include <stdio.h>
#include <stdlib.h>

#include "tg_map.h"
#include "tg_test.h"

TG_TEST(set_get_del_grow) {
    tg_map_t m = {0};
    static int vals[5000];
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        TG_CHECK_INT(tg_map_set(&m, k, strlen(k), &vals[i]), 0);
    }
    TG_CHECK_INT(m.len, 5000);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(k, sizeof k, "key:%d", i);
        TG_CHECK(tg_map_del(&m, k, strlen(k)) == &vals[i]);
    }
    TG_CHECK_INT(m.len, 2500);
    int bad = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        void *v = tg_map_get(&m, k, strlen(k));
        if ((i % 2 == 0 && v) || (i % 2 == 1 && v != &vals[i])) bad++;
    }
    TG_CHECK_INT(bad, 0);
    size_t b, seen = 0;
    for (tg_map_ent_t *e = tg_map_next(&m, NULL, &b); e; e = tg_map_next(&m, e, &b)) seen++;
    TG_CHECK_INT(seen, 2500);
    TG_CHECK(tg_map_del(&m, "nope", 4) == NULL);
    tg_map_set(&m, "key:1", 5, &vals[0]);        /* replace keeps one entry */
    TG_CHECK(tg_map_get(&m, "key:1", 5) == &vals[0]);
    TG_CHECK_INT(m.len, 2500);
    tg_map_free(&m);
    TG_CHECK(tg_map_get(&m, "key:1", 5) == NULL);
}

TG_TEST(binary_keys) {
    tg_map_t m = {0};
    int a, b2;
    tg_map_set(&m, "a\0b", 3, &a);
    tg_map_set(&m, "a\0c", 3, &b2);
    TG_CHECK(tg_map_get(&m, "a\0b", 3) == &a);
    TG_CHECK(tg_map_get(&m, "a\0c", 3) == &b2);
    TG_CHECK(tg_map_get(&m, "a", 1) == NULL);
    tg_map_free(&m);
}

int main(void) {
    TG_RUN(set_get_del_grow);
    TG_RUN(binary_keys);
    return tg_test_report();
}
