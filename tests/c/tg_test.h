/*
 * tg_test.h -- the smallest unit-test harness that does the job.
 *
 * Each test file defines its cases with TG_TEST(name) and lists them in
 * main() with TG_RUN(name).  A failed check prints file:line and the
 * expression, marks the case failed and carries on with the next case.
 * main() returns tg_test_report(), which prints "N passed, N failed" and
 * returns non-zero when anything failed, so ctest sees the result.
 */
#ifndef TG_TEST_H
#define TG_TEST_H

#include <stdio.h>
#include <string.h>

static int tg_test_failed_cases, tg_test_passed_cases, tg_test_cur_failed;

#define TG_TEST(name) static void test_##name(void)

#define TG_RUN(name) do {                                              \
    tg_test_cur_failed = 0;                                            \
    test_##name();                                                     \
    if (tg_test_cur_failed) tg_test_failed_cases++;                    \
    else tg_test_passed_cases++;                                       \
} while (0)

#define TG_CHECK(expr) do {                                            \
    if (!(expr)) {                                                     \
        fprintf(stderr, "%s:%d: check failed: %s\n",                   \
                __FILE__, __LINE__, #expr);                            \
        tg_test_cur_failed = 1;                                        \
    }                                                                  \
} while (0)

#define TG_CHECK_INT(a, b) do {                                        \
    long long tg_a_ = (long long)(a), tg_b_ = (long long)(b);          \
    if (tg_a_ != tg_b_) {                                              \
        fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n",      \
                __FILE__, __LINE__, #a, #b, tg_a_, tg_b_);             \
        tg_test_cur_failed = 1;                                        \
    }                                                                  \
} while (0)

#define TG_CHECK_STR(a, b) do {                                        \
    const char *tg_a_ = (a), *tg_b_ = (b);                             \
    if (!tg_a_ || !tg_b_ || strcmp(tg_a_, tg_b_) != 0) {               \
        fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n",  \
                __FILE__, __LINE__, #a, #b,                            \
                tg_a_ ? tg_a_ : "(null)", tg_b_ ? tg_b_ : "(null)");   \
        tg_test_cur_failed = 1;                                        \
    }                                                                  \
} while (0)

static inline int tg_test_report(void) {
    printf("%d passed, %d failed\n", tg_test_passed_cases,
           tg_test_failed_cases);
    return tg_test_failed_cases ? 1 : 0;
}

#endif
