/* test_wshs.c -- the websocket opening handshake: RFC 6455's example key,
 * base64 vectors, requests from real clients, refusals, answers. */
#include "tg_wshs.h"
#include "tg_test.h"

TG_TEST(base64) {
    char out[32];
    TG_CHECK_INT(tg_b64_encode("", 0, out, sizeof out), 0);
    TG_CHECK_STR(out, "");
    tg_b64_encode("f", 1, out, sizeof out); TG_CHECK_STR(out, "Zg==");
    tg_b64_encode("fo", 2, out, sizeof out); TG_CHECK_STR(out, "Zm8=");
    tg_b64_encode("foo", 3, out, sizeof out); TG_CHECK_STR(out, "Zm9v");
    tg_b64_encode("foobar", 6, out, sizeof out); TG_CHECK_STR(out, "Zm9vYmFy");
    TG_CHECK_INT(tg_b64_encode("foobar", 6, out, 8), 0);
}

TG_TEST(accept_key_of_the_rfc) {
    char out[29];
    tg_wshs_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    TG_CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TG_TEST(request_of_the_js_sdk) {
    /* what Node's ws 8 sends: it offers permessage-deflate */
    const char *s = "GET / HTTP/1.1\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: Upgrade\r\n"
                    "Upgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                    "Host: 127.0.0.1:5050\r\n\r\n\x81";
    tg_wshs_req_t r;
    char err[200];
    TG_CHECK_INT(tg_wshs_parse_request(s, 10, &r, err, sizeof err), TG_WSHS_MORE);
    int n = tg_wshs_parse_request(s, strlen(s), &r, err, sizeof err);
    TG_CHECK_INT(n, (int)strlen(s) - 1);
    TG_CHECK_STR(r.key, "dGhlIHNhbXBsZSBub25jZQ==");
    TG_CHECK_STR(r.path, "/");
    char out[512];
    size_t len = tg_wshs_response(out, sizeof out, r.key);
    TG_CHECK(len > 0);
    TG_CHECK(strstr(out, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    TG_CHECK(strstr(out, "Extensions") == NULL);            /* deflate declined */
    int tgrun;
    TG_CHECK_INT(tg_wshs_parse_response(out, len, r.key, &tgrun, err, sizeof err), (int)len);
    TG_CHECK_INT(tgrun, 1);
}

TG_TEST(refusals) {
    tg_wshs_req_t r;
    char err[200];
    TG_CHECK_INT(tg_wshs_parse_request("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, &r, err, sizeof err), -426);
    TG_CHECK_INT(tg_wshs_parse_request("POST / HTTP/1.1\r\n\r\n", 19, &r, err, sizeof err), -405);
    TG_CHECK_INT(tg_wshs_parse_request("hello\r\n\r\n", 9, &r, err, sizeof err), -400);
    const char *nokey = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    TG_CHECK_INT(tg_wshs_parse_request(nokey, strlen(nokey), &r, err, sizeof err), -400);
    const char *v8 = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Version: 8\r\n\r\n";
    TG_CHECK_INT(tg_wshs_parse_request(v8, strlen(v8), &r, err, sizeof err), -426);
    static char big[TG_WSHS_MAX_HEAD + 10];
    memset(big, 'a', sizeof big);
    TG_CHECK_INT(tg_wshs_parse_request(big, sizeof big, &r, err, sizeof err), -431);
    char out[300];
    TG_CHECK(tg_wshs_refusal(out, sizeof out, 426, "no") > 0);
    TG_CHECK(strncmp(out, "HTTP/1.1 426 Upgrade Required\r\n", 31) == 0);
}

TG_TEST(answers_a_client_refuses) {
    char err[200];
    int tgrun;
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char *ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    TG_CHECK_INT(tg_wshs_parse_response(ok, strlen(ok), key, &tgrun, err, sizeof err), (int)strlen(ok));
    TG_CHECK_INT(tgrun, 0);
    const char *wrong = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: AAAALMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    TG_CHECK_INT(tg_wshs_parse_response(wrong, strlen(wrong), key, &tgrun, err, sizeof err), -1);
    const char *ext = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
    TG_CHECK_INT(tg_wshs_parse_response(ext, strlen(ext), key, &tgrun, err, sizeof err), -1);
    TG_CHECK(strstr(err, "extension") != NULL);
    const char *no = "HTTP/1.1 404 Not Found\r\n\r\n";
    TG_CHECK_INT(tg_wshs_parse_response(no, strlen(no), key, &tgrun, err, sizeof err), -1);
    TG_CHECK(strstr(err, "404") != NULL);
    char req[400];
    TG_CHECK(tg_wshs_request(req, sizeof req, "127.0.0.1", 5050, "/", key) > 0);
    TG_CHECK(strstr(req, "Host: 127.0.0.1:5050\r\n") != NULL);
    TG_CHECK(strstr(req, "Extensions") == NULL);             /* never offered */
}

int main(void) {
    TG_RUN(base64);
    TG_RUN(accept_key_of_the_rfc);
    TG_RUN(request_of_the_js_sdk);
    TG_RUN(refusals);
    TG_RUN(answers_a_client_refuses);
    return tg_test_report();
}
