/* test_event.c -- the one classifier of Testground event lines (src/tg_event.c). */
#include "tg_event.h"

#include <lauxlib.h>
#include <lualib.h>

#include "tg_json.h"
#include "tg_test.h"

/* Decode line, classify its event; the text and error are left in buffers. */
static tg_ev_kind_t classify(lua_State *L, const char *line, char *text, size_t tlen, char *err,
                             size_t elen, int *important) {
    lua_settop(L, 0);
    if (tg_json_decode(L, line, strlen(line)) < 0) return (tg_ev_kind_t)-1;
    lua_getfield(L, 1, "event");
    tg_ev_kind_t k = tg_event_kind(L, 2);
    *important = tg_event_push_text(L, 2, k);
    snprintf(text, tlen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(nil)");
    tg_event_push_error(L, 2, k);
    snprintf(err, elen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(nil)");
    return k;
}

TG_TEST(kinds) {
    lua_State *L = luaL_newstate();
    char text[200], err[200];
    int imp;
    TG_CHECK_INT(classify(L, "{\"event\":{\"success_event\":{\"group\":\"g\"}}}", text, sizeof text, err, sizeof err, &imp), TG_EV_SUCCESS);
    TG_CHECK_STR(text, "success");
    TG_CHECK_STR(err, "(nil)");
    TG_CHECK_INT(imp, 0);
    TG_CHECK_INT(classify(L, "{\"event\":{\"failure_event\":{\"error\":\"boom\\nstack\"}}}", text, sizeof text, err, sizeof err, &imp), TG_EV_FAILURE);
    TG_CHECK_STR(text, "FAILED: boom");
    TG_CHECK_STR(err, "boom");
    TG_CHECK_INT(imp, 1);
    TG_CHECK_INT(classify(L, "{\"event\":{\"crash_event\":{\"error\":\"x\",\"stacktrace\":\"t\"}}}", text, sizeof text, err, sizeof err, &imp), TG_EV_CRASH);
    TG_CHECK_STR(text, "CRASHED: x");
    TG_CHECK_INT(classify(L, "{\"event\":{\"crash_event\":{}}}", text, sizeof text, err, sizeof err, &imp), TG_EV_CRASH);
    TG_CHECK_STR(text, "CRASHED: (no message)");
    TG_CHECK_INT(classify(L, "{\"event\":{\"message_event\":{\"message\":\"hi there\"}}}", text, sizeof text, err, sizeof err, &imp), TG_EV_MESSAGE);
    TG_CHECK_STR(text, "hi there");
    TG_CHECK_INT(classify(L, "{\"event\":{\"start_event\":{\"runenv\":{}}}}", text, sizeof text, err, sizeof err, &imp), TG_EV_START);
    TG_CHECK_STR(text, "start");
    TG_CHECK_INT(classify(L, "{\"event\":{\"stage_end_event\":{\"name\":\"net\"}}}", text, sizeof text, err, sizeof err, &imp), TG_EV_STAGE_END);
    TG_CHECK_STR(text, "stage end net");
    TG_CHECK_INT(classify(L, "{\"event\":{\"other\":{}}}", text, sizeof text, err, sizeof err, &imp), TG_EV_NONE);
    TG_CHECK_STR(text, "(nil)");
    TG_CHECK_INT(classify(L, "{\"event\":3}", text, sizeof text, err, sizeof err, &imp), TG_EV_NONE);
    lua_close(L);
}

int main(void) {
    TG_RUN(kinds);
    return tg_test_report();
}
