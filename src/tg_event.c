/* tg_event.c -- see tg_event.h. */
#include "tg_event.h"

#include <string.h>
#include <lauxlib.h>

static const char *const names[] = {
    [TG_EV_START] = "start_event", [TG_EV_MESSAGE] = "message_event",
    [TG_EV_SUCCESS] = "success_event", [TG_EV_FAILURE] = "failure_event",
    [TG_EV_CRASH] = "crash_event", [TG_EV_STAGE_START] = "stage_start_event",
    [TG_EV_STAGE_END] = "stage_end_event",
};
#define NKINDS ((int)(sizeof names / sizeof names[0]))

tg_ev_kind_t tg_event_kind(lua_State *L, int idx) {
    if (!lua_istable(L, idx)) return TG_EV_NONE;
    idx = lua_absindex(L, idx);
    for (int k = 1; k < NKINDS; k++) {
        int t = lua_getfield(L, idx, names[k]);
        lua_pop(L, 1);
        if (t == LUA_TTABLE) return (tg_ev_kind_t)k;
    }
    return TG_EV_NONE;
}

/* Push field f of the kind's body as a string (nil when absent). */
static const char *body_field(lua_State *L, int idx, tg_ev_kind_t k, const char *f, size_t *len) {
    lua_getfield(L, idx, names[k]);
    lua_getfield(L, -1, f);
    lua_remove(L, -2);
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushnil(L);
        *len = 0;
        return NULL;
    }
    return lua_tolstring(L, -1, len);
}

void tg_event_push_error(lua_State *L, int idx, tg_ev_kind_t k) {
    idx = lua_absindex(L, idx);
    if (k != TG_EV_FAILURE && k != TG_EV_CRASH) { lua_pushnil(L); return; }
    size_t len;
    const char *e = body_field(L, idx, k, "error", &len);
    if (!e) return;                             /* nil pushed */
    const char *nl = memchr(e, '\n', len);
    if (nl) {
        lua_pushlstring(L, e, (size_t)(nl - e));
        lua_remove(L, -2);
    }
}

int tg_event_push_text(lua_State *L, int idx, tg_ev_kind_t k) {
    idx = lua_absindex(L, idx);
    size_t len;
    switch (k) {
    case TG_EV_START: lua_pushliteral(L, "start"); return 0;
    case TG_EV_SUCCESS: lua_pushliteral(L, "success"); return 0;
    case TG_EV_MESSAGE:
        if (!body_field(L, idx, k, "message", &len)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "");
        }
        return 0;
    case TG_EV_FAILURE:
    case TG_EV_CRASH:
        lua_pushstring(L, k == TG_EV_FAILURE ? "FAILED: " : "CRASHED: ");
        tg_event_push_error(L, idx, k);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "(no message)");
        }
        lua_concat(L, 2);
        return 1;
    case TG_EV_STAGE_START:
    case TG_EV_STAGE_END:
        lua_pushstring(L, k == TG_EV_STAGE_START ? "stage start " : "stage end ");
        if (!body_field(L, idx, k, "name", &len)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "?");
        }
        lua_concat(L, 2);
        return 0;
    default:
        lua_pushnil(L);
        return 0;
    }
}

int tg_event_l_describe(lua_State *L) {
    tg_ev_kind_t k = tg_event_kind(L, 1);
    if (k == TG_EV_NONE) {
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushboolean(L, 0);
        return 3;
    }
    const char *n = names[k];
    lua_pushlstring(L, n, strlen(n) - 6);       /* "failure_event" -> "failure" */
    int important = tg_event_push_text(L, 1, k);
    lua_pushboolean(L, important);
    return 3;
}
