/* test_sha1.c -- FIPS 180 test vectors for tg_sha1_hex. */
#include "tg_sha1.h"
#include "tg_test.h"

#include <stdlib.h>

static const char *sha1(const char *s, size_t n) {
    static char out[41];
    tg_sha1_hex(s, n, out);
    return out;
}

TG_TEST(empty) {
    TG_CHECK_STR(sha1("", 0), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    TG_CHECK_STR(sha1(NULL, 0), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

TG_TEST(abc) {
    TG_CHECK_STR(sha1("abc", 3), "a9993e364706816aba3e25717850c26c9cd0d89d");
}

TG_TEST(two_blocks_448) {
    const char *s = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    TG_CHECK_STR(sha1(s, strlen(s)), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
}

TG_TEST(two_blocks_896) {
    const char *s = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                    "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    TG_CHECK_STR(sha1(s, strlen(s)), "a49b2446a02c645bf419f995b67091253a04a259");
}

TG_TEST(million_a) {
    size_t n = 1000000;
    char *s = malloc(n);
    TG_CHECK(s != NULL);
    if (!s) return;
    memset(s, 'a', n);
    TG_CHECK_STR(sha1(s, n), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(s);
}

TG_TEST(padding_boundaries) {
    /* 55, 56, 63, 64 bytes straddle the one/two padding block boundary. */
    char s[64];
    memset(s, 'a', sizeof s);
    TG_CHECK_STR(sha1(s, 55), "c1c8bbdc22796e28c0e15163d20899b65621d65a");
    TG_CHECK_STR(sha1(s, 56), "c2db330f6083854c99d4b5bfb6e8f29f201be699");
    TG_CHECK_STR(sha1(s, 63), "03f09f5b158a7a8cdad920bddc29b81c18a551f5");
    TG_CHECK_STR(sha1(s, 64), "0098ba824b5c16427bd7a1122a5a442a25ec644d");
}

TG_TEST(redis_script) {
    /* Digest Redis reports for SCRIPT LOAD "return 1". */
    TG_CHECK_STR(sha1("return 1", 8), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
}

int main(void) {
    TG_RUN(empty);
    TG_RUN(abc);
    TG_RUN(two_blocks_448);
    TG_RUN(two_blocks_896);
    TG_RUN(million_a);
    TG_RUN(padding_boundaries);
    TG_RUN(redis_script);
    return tg_test_report();
}
