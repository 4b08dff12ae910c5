/* tg_proc.c -- processes for plans (stub, being written). */
#include <lauxlib.h>
#include "tg_rt.h"

int luaopen_tg_proc_c(lua_State *L) {
    lua_newtable(L);
    return 1;
}
