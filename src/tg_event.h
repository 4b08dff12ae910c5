/*
 * tg_event.h -- what a Testground event line means: the one classifier of
 * events, used by the local runner (which reads its instances' stdout) and
 * by tg.events (which prints in-process instances' lines).
 *
 * An event line is {"ts":..,"msg":"","group_id":..,"run_id":..,"event":{K:{..}}}
 * with K one of the kinds below.  Both functions work on the decoded "event"
 * object (a Lua table) and never raise except on memory errors.  No uv.h,
 * no hiredis: the unit is pure.
 */
#ifndef TG_EVENT_H
#define TG_EVENT_H

#include <lua.h>

typedef enum tg_ev_kind {
    TG_EV_NONE = 0,             /* not an event we know */
    TG_EV_START, TG_EV_MESSAGE, TG_EV_SUCCESS, TG_EV_FAILURE, TG_EV_CRASH,
    TG_EV_STAGE_START, TG_EV_STAGE_END
} tg_ev_kind_t;

/* The kind of the event object at idx. */
tg_ev_kind_t tg_event_kind(lua_State *L, int idx);

/* Push how a runner shows the event at idx of kind k on one line:
 * "start", the message, "success", "FAILED: <first line of the error>",
 * "CRASHED: ...", "stage start <name>", "stage end <name>"; nil for
 * TG_EV_NONE.  Returns 1 when the line matters even on a quiet terminal
 * (failures and crashes), else 0. */
int tg_event_push_text(lua_State *L, int idx, tg_ev_kind_t k);

/* Push the first line of a failure's or crash's error (nil otherwise). */
void tg_event_push_error(lua_State *L, int idx, tg_ev_kind_t k);

/* events.describe(ev) -> kind name | nil, text, important: the Lua face of
 * the two functions above ("success", "failure", ...). */
int tg_event_l_describe(lua_State *L);

#endif
