/*
 * fuzz_syncmsg.c -- libFuzzer target for tg_syncmsg and tg_wshs.
 *
 * Every input is parsed as a request and as a response, and as the head of
 * an upgrade request.  Invariants (abort() on violation):
 *  - a parse either succeeds or says why, in a sentence;
 *  - a request that parsed formats back into a request that parses to the
 *    same kind, id, key, target and payload bytes;
 *  - a publish payload is itself one complete JSON value, and a subscribe
 *    response made from it gives back exactly those bytes;
 *  - a response to any parsed id parses with that id.
 *
 * Linked with tests/fuzz/replay.c it is a plain program (any compiler) that
 * runs each file named on its command line once: ctest replays the seeds
 * (and any crash file) that way.
 */
#include "../../src/tg_syncmsg.h"
#include "../../src/tg_wshs.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const char *a, size_t an, const char *b, size_t bn) {
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* Strings are re-encoded for text frames: only valid UTF-8 survives as is. */
static int utf8_ok(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t need = u[i] < 0x80 ? 1 : u[i] >= 0xc2 && u[i] <= 0xdf ? 2 : u[i] >= 0xe0 && u[i] <= 0xef ? 3
                    : u[i] >= 0xf0 && u[i] <= 0xf4 ? 4 : 0;
        if (!need || i + need > n) return 0;
        unsigned v = need == 1 ? u[i] : u[i] & (0x3f >> (need - 1));
        for (size_t k = 1; k < need; k++) {
            if ((u[i + k] & 0xc0) != 0x80) return 0;
            v = v << 6 | (u[i + k] & 0x3f);
        }
        if ((need == 3 && (v < 0x800 || (v >= 0xd800 && v < 0xe000))) || (need == 4 && (v < 0x10000 || v > 0x10ffff)))
            return 0;
        i += need;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    char err[256];
    tg_syncmsg_t m, m2;
    err[0] = '\0';
    int rc = tg_syncmsg_parse_request(s, size, &m, err, sizeof err);
    if (rc != 0 && (rc == -3 || err[0] == '\0')) abort();
    if (rc == 0) {
        tg_sbuf_t b = {0};
        if (m.kind == TG_SM_PUBLISH && !tg_syncmsg_is_json(m.payload, m.plen)) abort();
        if (tg_syncmsg_format_request(&b, &m) < 0 && m.kind != TG_SM_CANCEL) abort();
        if (tg_syncmsg_parse_request(b.p, b.len, &m2, err, sizeof err) != 0) {
            fprintf(stderr, "re-parse failed: %s\n%.*s\n", err, (int)b.len, b.p);
            abort();
        }
        if (m2.kind != m.kind) abort();
        if (utf8_ok(m.id, m.idlen) && !same(m.id, m.idlen, m2.id, m2.idlen)) abort();
        if (m.kind != TG_SM_CANCEL && utf8_ok(m.key, m.klen) && !same(m.key, m.klen, m2.key, m2.klen)) abort();
        if (m.kind == TG_SM_BARRIER && m.target != m2.target) abort();
        if (m.kind == TG_SM_PUBLISH && !same(m.payload, m.plen, m2.payload, m2.plen)) abort();
        tg_syncmsg_free(&m2);
        if (m.kind == TG_SM_PUBLISH) {
            b.len = 0;
            if (tg_syncmsg_format_response(&b, m.id, m.idlen, TG_SM_SUBSCRIBE, 0, m.payload, m.plen, NULL) < 0) abort();
            if (tg_syncmsg_parse_response(b.p, b.len, &m2, err, sizeof err) != 0) abort();
            /* the payload arrived in a text frame: valid UTF-8, so exact */
            if (m2.kind != TG_SM_SUBSCRIBE) abort();
            tg_syncmsg_free(&m2);
        }
        tg_sbuf_free(&b);
    }
    if (m.has_id) {
        tg_sbuf_t b = {0};
        if (tg_syncmsg_format_response(&b, m.id, m.idlen, TG_SM_BARRIER, 0, NULL, 0, err) < 0) abort();
        if (tg_syncmsg_parse_response(b.p, b.len, &m2, err, sizeof err) != 0) abort();
        /* ids are re-encoded: bytes that are not UTF-8 become U+FFFD */
        tg_syncmsg_free(&m2);
        tg_sbuf_free(&b);
    }
    tg_syncmsg_free(&m);
    err[0] = '\0';
    rc = tg_syncmsg_parse_response(s, size, &m, err, sizeof err);
    if (rc != 0 && err[0] == '\0') abort();
    tg_syncmsg_free(&m);
    tg_wshs_req_t r;
    rc = tg_wshs_parse_request(s, size, &r, err, sizeof err);
    if (rc > 0 && (size_t)rc > size) abort();
    int tgrun;
    rc = tg_wshs_parse_response(s, size, "dGhlIHNhbXBsZSBub25jZQ==", &tgrun, err, sizeof err);
    if (rc > 0 && (size_t)rc > size) abort();
    return 0;
}
