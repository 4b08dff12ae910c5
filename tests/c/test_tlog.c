/* test_tlog.c -- a topic's log: order, positions, copies, binary values. */
#include <stdio.h>
#include <string.h>

#include "tg_test.h"
#include "tg_tlog.h"

TG_TEST(appends_in_order_and_grows) {
    tg_tlog_t l = {0};
    char buf[32];
    tg_tmsg_t *first = NULL;
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(buf, sizeof buf, "v%d", i);
        tg_tmsg_t *m = tg_tlog_append(&l, buf, (size_t)n);
        TG_CHECK(m != NULL);
        if (i == 0) first = m;
        buf[0] = 'X';                           /* the log holds a copy */
    }
    TG_CHECK_INT(l.n, 1000);
    TG_CHECK(l.v[0] == first);                  /* values do not move when the log grows */
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(buf, sizeof buf, "v%d", i);
        if (l.v[i]->seq != i + 1 || l.v[i]->len != strlen(buf) || strcmp(l.v[i]->data, buf) != 0) bad++;
    }
    TG_CHECK_INT(bad, 0);
    tg_tlog_free(&l);
    TG_CHECK_INT(l.n, 0);
    TG_CHECK(l.v == NULL);
}

TG_TEST(binary_and_empty_values) {
    tg_tlog_t l = {0};
    tg_tmsg_t *a = tg_tlog_append(&l, "a\0b", 3);
    tg_tmsg_t *e = tg_tlog_append(&l, NULL, 0);
    TG_CHECK(a && e);
    TG_CHECK_INT(a->len, 3);
    TG_CHECK(memcmp(a->data, "a\0b", 4) == 0);  /* NUL-terminated after its bytes */
    TG_CHECK_INT(e->len, 0);
    TG_CHECK_INT(e->data[0], 0);
    TG_CHECK_INT(e->seq, 2);
    tg_tlog_free(&l);
}

int main(void) {
    TG_RUN(appends_in_order_and_grows);
    TG_RUN(binary_and_empty_values);
    return tg_test_report();
}
