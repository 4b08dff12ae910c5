/*
 * tg_space.h -- the Lua space of a process: one lua_State that every
 * instance of the process shares, and what each instance keeps to itself.
 *
 * Ownership and invariants:
 *  - The runtime (tg_rt_t.L) owns the one lua_State, made by the first
 *    tg_space_open and closed by tg_rt_close after every instance is gone.
 *    What is immutable or the runtime's own lives there once: the standard
 *    libraries, every tg module (compiled once, loaded once), interned
 *    strings, and the compiled code of the plan and of the modules it
 *    requires.
 *  - An instance (tg_space_enter) owns, anchored in one table of the
 *    registry (its "self" table, inst->self_ref): its thread (inst->L, whose
 *    extra space points at inst->ctx), its globals (a table of its own that
 *    starts as a copy of the shared globals: a plan's globals never reach
 *    another instance), its configuration, the per-instance state of the tg
 *    modules (tg_space_state), the modules the plan required from its own
 *    folders (each instance runs their code afresh, so their module-level
 *    locals are its own), and its random number generator.  tg_space_leave
 *    drops the anchor; the objects go with the next collection.
 *  - Shared tables are read-only to plans: the standard library tables and
 *    the tg modules reach a plan as proxies whose writes fail with a message
 *    (writing the value a field already has is accepted, and package.path
 *    and package.cpath may be set: their entries are kept once each).
 *  - load, loadfile and dofile without an explicit environment, require,
 *    coroutine.create/wrap and math.random/randomseed act for the calling
 *    instance (found through the extra space of the running thread).
 *
 * What is still shared, and said so in docs/api.md: the process's heap and
 * its collector (collectgarbage), io's default input and output files,
 * os.setlocale, and anything reached through the debug library.
 */
#ifndef TG_SPACE_H
#define TG_SPACE_H

#include <lua.h>
#include <lauxlib.h>

#include "tg_rt.h"

/* Make rt's lua_State if it has none: standard libraries, the hook, the
 * runtime's metatables, the C modules in preload (a NULL-terminated list),
 * the searcher for the modules built into the binary, and the
 * per-instance versions of require, load, loadfile, dofile,
 * coroutine.create/wrap, math.random/randomseed and os.exit (exit_fn).
 * 0, or -1 when memory ran out. */
int tg_space_open(tg_rt_t *rt, const luaL_Reg *preload, lua_CFunction exit_fn);

/* Give inst its thread and its own tables (see above).  0 or -1. */
int tg_space_enter(tg_inst_t *inst);
/* Drop what tg_space_enter anchored. */
void tg_space_leave(tg_inst_t *inst);

/* Push inst's self table, its configuration table, or its globals. */
void tg_space_push_self(lua_State *L, const tg_inst_t *inst);
void tg_space_push_config(lua_State *L, const tg_inst_t *inst);
void tg_space_push_globals(lua_State *L, const tg_inst_t *inst);

/* Push the per-instance state table named `name` of the running instance
 * (made empty on first use): where a tg module keeps what belongs to one
 * instance (open files, totals, rules in force). */
void tg_space_state(lua_State *L, const char *name);

/* Run the Lua file path for inst, in inst's globals: compiled once per
 * process (a second instance shares the compiled code), run afresh for
 * each instance.  Pushes its first result on inst->L and returns LUA_OK,
 * or pushes a message and returns LUA_ERRSYNTAX (does not compile,
 * cannot be read) or LUA_ERRRUN (failed while running: with a traceback). */
int tg_space_run_file(tg_inst_t *inst, const char *path);

#endif
