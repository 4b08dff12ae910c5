/* test_keys.c -- the run's key layout (src/tg_keys.c). */
#include "tg_keys.h"

#include <stdlib.h>
#include <string.h>

#include "tg_test.h"

#define P "run:r1:plan:p:case:c"

TG_TEST(prefix) {
    char b[64];
    TG_CHECK_INT(tg_keys_prefix(b, sizeof b, "r1", "p", "c"), strlen(P));
    TG_CHECK_STR(b, P);
    char small[8];
    TG_CHECK_INT(tg_keys_prefix(small, sizeof small, "r1", "p", "c"), strlen(P));   /* did not fit */
    TG_CHECK_INT(strlen(small), 7);
}

TG_TEST(every_kind) {
    static const struct { tg_key_kind_t k; const char *name, *want; } cases[] = {
        {TG_KEY_STATE, "s", P ":states:s"},
        {TG_KEY_TOPIC, "t", P ":topics:t"},
        {TG_KEY_RUN_EVENTS, "ignored", P ":run_events"},
        {TG_KEY_MEMBERS, "s", P ":tg:members:s"},
        {TG_KEY_NOTIFY, NULL, P ":tg:notify"},
        {TG_KEY_DEAD, NULL, P ":tg:dead"},
        {TG_KEY_SESSIONS, NULL, P ":tg:sessions"},
        {TG_KEY_INBOX, "abc", P ":tg:inbox:abc"},
        {TG_KEY_SEM, "x", P ":tg:sem:x"},
        {TG_KEY_MUTEX, "x", P ":tg:mutex:x"},
        {TG_KEY_ELECTION, "x", P ":tg:election:x"},
        {TG_KEY_QUEUE, "x", P ":tg:queue:x"},
        {TG_KEY_COUNTER, "x", P ":tg:counter:x"},
        {TG_KEY_TG, "other", P ":tg:other"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char b[128];
        const char *n = cases[i].name;
        size_t len = tg_key(b, sizeof b, P, strlen(P), cases[i].k, n, n ? strlen(n) : 0);
        TG_CHECK_INT(len, strlen(cases[i].want));
        TG_CHECK_STR(b, cases[i].want);
    }
}

TG_TEST(binary_names_and_truncation) {
    char b[64];
    size_t len = tg_key(b, sizeof b, P, strlen(P), TG_KEY_STATE, "a\0b", 3);
    TG_CHECK_INT(len, strlen(P ":states:") + 3);
    TG_CHECK(memcmp(b + strlen(P ":states:"), "a\0b", 4) == 0);
    char small[10];
    len = tg_key(small, sizeof small, P, strlen(P), TG_KEY_TOPIC, "topic", 5);
    TG_CHECK_INT(len, strlen(P ":topics:topic"));
    TG_CHECK_INT(strlen(small), 9);
    TG_CHECK_INT(tg_key(NULL, 0, P, strlen(P), TG_KEY_DEAD, NULL, 0), strlen(P ":tg:dead"));
    size_t n = 0;
    char *k = tg_key_new(P, strlen(P), TG_KEY_QUEUE, "q 1", 3, &n);
    TG_CHECK_STR(k, P ":tg:queue:q 1");
    TG_CHECK_INT(n, strlen(P ":tg:queue:q 1"));
    free(k);
}

TG_TEST(escaped_names_cannot_collide) {
    char a[128], b[128];
    /* semaphore "s:q" is not semaphore "s"'s queue */
    tg_key(a, sizeof a, P, strlen(P), TG_KEY_SEM, "s:q", 3);
    TG_CHECK_STR(a, P ":tg:sem:s%3Aq");
    tg_key(b, sizeof b, P, strlen(P), TG_KEY_SEM, "s", 1);
    strcat(b, ":q");
    TG_CHECK(strcmp(a, b) != 0);
    /* a literal "%3A" in a name stays distinct from an escaped ':' */
    tg_key(a, sizeof a, P, strlen(P), TG_KEY_QUEUE, "%3A", 3);
    TG_CHECK_STR(a, P ":tg:queue:%253A");
    /* states and topics keep the user's bytes (Go SDK layout) */
    tg_key(a, sizeof a, P, strlen(P), TG_KEY_STATE, "x:op:y", 6);
    TG_CHECK_STR(a, P ":states:x:op:y");
    char e[32];
    TG_CHECK_INT(tg_key_escape(e, sizeof e, "a:b%c", 5), 9);
    TG_CHECK_STR(e, "a%3Ab%25c");
}

TG_TEST(lua_names) {
    TG_CHECK_INT(tg_key_kind_of("state"), TG_KEY_STATE);
    TG_CHECK_INT(tg_key_kind_of("run_events"), TG_KEY_RUN_EVENTS);
    TG_CHECK_INT(tg_key_kind_of("nope"), -1);
    TG_CHECK(tg_key_named(TG_KEY_STATE));
    TG_CHECK(!tg_key_named(TG_KEY_NOTIFY));
}

int main(void) {
    TG_RUN(prefix);
    TG_RUN(every_kind);
    TG_RUN(binary_names_and_truncation);
    TG_RUN(escaped_names_cannot_collide);
    TG_RUN(lua_names);
    return tg_test_report();
}
