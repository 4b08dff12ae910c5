/* test_syncmsg.c -- the sync-service messages: requests as the JS SDK and
 * sdk-go send them, hostile inputs, responses both ways, byte-exact
 * payloads, key splitting. */
#include "tg_syncmsg.h"
#include "tg_test.h"

#include <stdlib.h>

static tg_syncmsg_t m;
static char err[256];

static int req(const char *s) {
    tg_syncmsg_free(&m);
    err[0] = '\0';
    return tg_syncmsg_parse_request(s, strlen(s), &m, err, sizeof err);
}

static int resp(const char *s) {
    tg_syncmsg_free(&m);
    err[0] = '\0';
    return tg_syncmsg_parse_response(s, strlen(s), &m, err, sizeof err);
}

static int span_is(const char *p, size_t n, const char *want) {
    return p && n == strlen(want) && memcmp(p, want, n) == 0;
}

TG_TEST(requests_as_sdks_send_them) {
    /* sdk-go: id first, is_cancel always */
    TG_CHECK_INT(req("{\"id\":\"0\",\"is_cancel\":false,\"signal_entry\":{\"state\":\"run:r:plan:p:case:c:states:s\"}}"), 0);
    TG_CHECK_INT(m.kind, TG_SM_SIGNAL_ENTRY);
    TG_CHECK(span_is(m.id, m.idlen, "0"));
    TG_CHECK(span_is(m.key, m.klen, "run:r:plan:p:case:c:states:s"));
    /* JS: the id comes last */
    TG_CHECK_INT(req("{\"barrier\":{\"state\":\"K\",\"target\":3},\"id\":\"12\"}"), 0);
    TG_CHECK_INT(m.kind, TG_SM_BARRIER);
    TG_CHECK_INT(m.target, 3);
    TG_CHECK(span_is(m.id, m.idlen, "12"));
    TG_CHECK_INT(req("{\"subscribe\":{\"topic\":\"T\"},\"id\":\"4\"}"), 0);
    TG_CHECK_INT(m.kind, TG_SM_SUBSCRIBE);
    TG_CHECK(span_is(m.key, m.klen, "T"));
    /* null bodies are absent */
    TG_CHECK_INT(req("{\"id\":\"1\",\"barrier\":null,\"publish\":{\"topic\":\"T\",\"payload\":1}}"), 0);
    TG_CHECK_INT(m.kind, TG_SM_PUBLISH);
    TG_CHECK(span_is(m.payload, m.plen, "1"));
    /* negative and zero targets parse (they release at once) */
    TG_CHECK_INT(req("{\"id\":\"1\",\"barrier\":{\"state\":\"K\",\"target\":-1}}"), 0);
    TG_CHECK_INT(m.target, -1);
    /* a cancel */
    TG_CHECK_INT(req("{\"id\":\"4\",\"is_cancel\":true}"), 0);
    TG_CHECK_INT(m.kind, TG_SM_CANCEL);
    /* escaped keys decode */
    TG_CHECK_INT(req("{\"id\":\"a\\u00e9\",\"signal_entry\":{\"state\":\"x\\\"y\\\\z\\ud83d\\ude00\"}}"), 0);
    TG_CHECK(span_is(m.id, m.idlen, "a\xc3\xa9"));
    TG_CHECK(span_is(m.key, m.klen, "x\"y\\z\xf0\x9f\x98\x80"));
}

TG_TEST(payload_is_byte_exact) {
    const char *s = "{\"id\":\"9\",\"publish\":{\"payload\": {\"z\":1, \"a\" : [1.50, 12345678901234567890,\"<>&\"]} ,\"topic\":\"T\"}}";
    TG_CHECK_INT(req(s), 0);
    TG_CHECK(span_is(m.payload, m.plen, "{\"z\":1, \"a\" : [1.50, 12345678901234567890,\"<>&\"]}"));
    /* and it comes back out of a subscribe response unchanged */
    tg_sbuf_t b = {0};
    TG_CHECK_INT(tg_syncmsg_format_response(&b, "9", 1, TG_SM_SUBSCRIBE, 0, m.payload, m.plen, NULL), 0);
    char *copy = malloc(m.plen + 1);
    memcpy(copy, m.payload, m.plen);
    copy[m.plen] = '\0';
    TG_CHECK_INT(resp(b.p), 0);
    TG_CHECK_INT(m.kind, TG_SM_SUBSCRIBE);
    TG_CHECK(span_is(m.payload, m.plen, copy));
    free(copy);
    tg_sbuf_free(&b);
}

TG_TEST(not_json_is_told_apart) {
    TG_CHECK_INT(req("{"), TG_SM_ENOTJSON);
    TG_CHECK(strstr(err, "invalid JSON at byte") != NULL);
    TG_CHECK_INT(req("{\"id\":\"1\"} x"), TG_SM_ENOTJSON);
    TG_CHECK_INT(req(""), TG_SM_ENOTJSON);
    TG_CHECK_INT(req("{\"id\":\"\x01\"}"), TG_SM_ENOTJSON);
    TG_CHECK_INT(req("[1,]"), TG_SM_ENOTJSON);
    TG_CHECK_INT(req("01"), TG_SM_ENOTJSON);
}

TG_TEST(json_that_is_not_a_request) {
    TG_CHECK_INT(req("null"), TG_SM_EBAD);
    TG_CHECK(strstr(err, "not null") != NULL);
    TG_CHECK_INT(req("[]"), TG_SM_EBAD);
    TG_CHECK_INT(req("{}"), TG_SM_EBAD);
    TG_CHECK_INT(m.has_id, 0);
    TG_CHECK_INT(req("{\"id\":\"3\"}"), TG_SM_EBAD);
    TG_CHECK_INT(m.has_id, 1);
    TG_CHECK(strstr(err, "unknown request") != NULL);
    TG_CHECK_INT(req("{\"id\":\"3\",\"frobnicate\":{}}"), TG_SM_EBAD);
    TG_CHECK_INT(req("{\"id\":7,\"signal_entry\":{\"state\":\"K\"}}"), TG_SM_EBAD);
    TG_CHECK(strstr(err, "id must be a string") != NULL);
    /* wrong types inside the body: the id still reads, wherever it is */
    TG_CHECK_INT(req("{\"barrier\":{\"state\":\"K\",\"target\":\"2\"},\"id\":\"5\"}"), TG_SM_EBAD);
    TG_CHECK_INT(m.has_id, 1);
    TG_CHECK(span_is(m.id, m.idlen, "5"));
    TG_CHECK(strstr(err, "barrier.target must be a whole number") != NULL);
    TG_CHECK_INT(req("{\"id\":\"5\",\"barrier\":{\"state\":\"K\",\"target\":2.5}}"), TG_SM_EBAD);
    TG_CHECK_INT(req("{\"id\":\"5\",\"barrier\":{\"state\":\"K\",\"target\":99999999999999999999}}"), TG_SM_EBAD);
    TG_CHECK_INT(req("{\"id\":\"5\",\"barrier\":{\"state\":\"K\"}}"), TG_SM_EBAD);
    TG_CHECK_INT(req("{\"id\":\"5\",\"barrier\":3}"), TG_SM_EBAD);
    TG_CHECK(strstr(err, "barrier must be an object") != NULL);
    TG_CHECK_INT(req("{\"id\":\"5\",\"signal_entry\":{\"state\":\"\"}}"), TG_SM_EBAD);
    TG_CHECK_INT(req("{\"id\":\"5\",\"signal_entry\":{\"state\":1}}"), TG_SM_EBAD);
    TG_CHECK_INT(req("{\"id\":\"5\",\"publish\":{\"topic\":\"T\"}}"), TG_SM_EBAD);
    TG_CHECK(strstr(err, "payload is missing") != NULL);
    TG_CHECK_INT(req("{\"id\":\"5\",\"subscribe\":{\"topic\":\"T\"},\"barrier\":{\"state\":\"K\",\"target\":1}}"), TG_SM_EBAD);
    TG_CHECK(strstr(err, "exactly one") != NULL);
}

TG_TEST(responses) {
    tg_sbuf_t b = {0};
    TG_CHECK_INT(tg_syncmsg_format_response(&b, "1", 1, TG_SM_SIGNAL_ENTRY, 3, NULL, 0, NULL), 0);
    TG_CHECK_STR(b.p, "{\"id\":\"1\",\"error\":\"\",\"publish\":null,\"subscribe\":\"\",\"signal_entry\":{\"seq\":3}}");
    TG_CHECK_INT(resp(b.p), 0);
    TG_CHECK_INT(m.kind, TG_SM_SIGNAL_ENTRY);
    TG_CHECK_INT(m.seq, 3);
    b.len = 0;
    TG_CHECK_INT(tg_syncmsg_format_response(&b, "2", 1, TG_SM_BARRIER, 0, NULL, 0, NULL), 0);
    TG_CHECK_STR(b.p, "{\"id\":\"2\",\"error\":\"\",\"publish\":null,\"subscribe\":\"\",\"signal_entry\":null}");
    TG_CHECK_INT(resp(b.p), 0);
    TG_CHECK_INT(m.kind, TG_SM_BARRIER);
    b.len = 0;
    TG_CHECK_INT(tg_syncmsg_format_response(&b, "2", 1, TG_SM_PUBLISH, 7, NULL, 0, "no \"such\" thing"), 0);
    TG_CHECK_INT(resp(b.p), 0);
    TG_CHECK(span_is(m.error, m.elen, "no \"such\" thing"));
    b.len = 0;
    TG_CHECK_INT(tg_syncmsg_format_response(&b, "3", 1, TG_SM_COUNT, 4, NULL, 0, NULL), 0);
    TG_CHECK_INT(resp(b.p), 0);
    TG_CHECK_INT(m.kind, TG_SM_COUNT);
    TG_CHECK_INT(m.seq, 4);
    tg_sbuf_free(&b);
    /* the reference server's own spelling, with its trailing newline */
    TG_CHECK_INT(resp("{\"id\":\"4\",\"error\":\"\",\"publish\":null,\"subscribe\":\"{\\\"from\\\":\\\"js\\\",\\\"n\\\":1}\",\"signal_entry\":null}\n"), 0);
    TG_CHECK_INT(m.kind, TG_SM_SUBSCRIBE);
    TG_CHECK(span_is(m.payload, m.plen, "{\"from\":\"js\",\"n\":1}"));
    TG_CHECK_INT(resp("{\"id\":\"2\",\"error\":\"\",\"publish\":{\"seq\":1},\"subscribe\":\"\",\"signal_entry\":null}"), 0);
    TG_CHECK_INT(m.kind, TG_SM_PUBLISH);
    TG_CHECK_INT(m.seq, 1);
    TG_CHECK_INT(resp("{\"error\":\"\"}"), TG_SM_EBAD);
    TG_CHECK_INT(resp("null"), TG_SM_EBAD);
}

TG_TEST(requests_round_trip) {
    tg_sbuf_t b = {0};
    tg_syncmsg_t r = {0};
    r.kind = TG_SM_PUBLISH;
    r.id = "17"; r.idlen = 2;
    r.key = "run:a:plan:b:case:c:topics:t"; r.klen = strlen(r.key);
    r.payload = "[1,{\"x\":null}]"; r.plen = strlen(r.payload);
    TG_CHECK_INT(tg_syncmsg_format_request(&b, &r), 0);
    TG_CHECK_INT(req(b.p), 0);
    TG_CHECK_INT(m.kind, TG_SM_PUBLISH);
    TG_CHECK(span_is(m.payload, m.plen, "[1,{\"x\":null}]"));
    b.len = 0;
    r.kind = TG_SM_BARRIER;
    r.target = 1000;
    TG_CHECK_INT(tg_syncmsg_format_request(&b, &r), 0);
    TG_CHECK_INT(req(b.p), 0);
    TG_CHECK_INT(m.target, 1000);
    b.len = 0;
    r.kind = TG_SM_CANCEL;
    TG_CHECK_INT(tg_syncmsg_format_request(&b, &r), 0);
    TG_CHECK_STR(b.p, "{\"id\":\"17\",\"is_cancel\":true}");
    tg_sbuf_free(&b);
}

TG_TEST(strings_escape_for_text_frames) {
    tg_sbuf_t b = {0};
    TG_CHECK_INT(tg_syncmsg_add_string(&b, "a\x01\n\"\\\xc3\xa9\xff", 8), 0);
    TG_CHECK_STR(b.p, "\"a\\u0001\\n\\\"\\\\\xc3\xa9\\ufffd\"");
    tg_sbuf_free(&b);
}

TG_TEST(keys_split) {
    size_t plen, noff;
    int kind;
    const char *k = "run:r1:plan:p:case:c:states:ready";
    TG_CHECK_INT(tg_syncmsg_split_key(k, strlen(k), &plen, &kind, &noff), 0);
    TG_CHECK_INT(plen, strlen("run:r1:plan:p:case:c"));
    TG_CHECK_INT(kind, TG_SM_KEY_STATE);
    TG_CHECK_STR(k + noff, "ready");
    k = "run:r1:plan:p:case:c:topics:a:states:b";
    TG_CHECK_INT(tg_syncmsg_split_key(k, strlen(k), &plen, &kind, &noff), 0);
    TG_CHECK_INT(kind, TG_SM_KEY_TOPIC);
    TG_CHECK_STR(k + noff, "a:states:b");
    k = "run:r1:plan:p:case:c:run_events";
    TG_CHECK_INT(tg_syncmsg_split_key(k, strlen(k), &plen, &kind, &noff), 0);
    TG_CHECK_INT(kind, TG_SM_KEY_EVENTS);
    TG_CHECK_INT(plen, strlen("run:r1:plan:p:case:c"));
    TG_CHECK_INT(tg_syncmsg_split_key("states:x", 8, &plen, &kind, &noff), -1);
    k = "run:r1:plan:p:case:c:states:";
    TG_CHECK_INT(tg_syncmsg_split_key(k, strlen(k), &plen, &kind, &noff), -1);
    k = "run:r1:plan:p:case:c:other:x";
    TG_CHECK_INT(tg_syncmsg_split_key(k, strlen(k), &plen, &kind, &noff), -1);
}

int main(void) {
    TG_RUN(requests_as_sdks_send_them);
    TG_RUN(payload_is_byte_exact);
    TG_RUN(not_json_is_told_apart);
    TG_RUN(json_that_is_not_a_request);
    TG_RUN(responses);
    TG_RUN(requests_round_trip);
    TG_RUN(strings_escape_for_text_frames);
    TG_RUN(keys_split);
    tg_syncmsg_free(&m);
    return tg_test_report();
}
