/*
 * tg_json.h -- JSON text <-> Lua values, strict RFC 8259 on the way in.
 *
 * Mapping.  null <-> the null sentinel (one light userdata shared by every
 * lua_State; nil also encodes as null).  Booleans and strings map directly;
 * strings are byte strings both ways: bytes >= 0x80 are passed through
 * unchanged and are not checked for valid UTF-8, \uXXXX escapes (surrogate
 * pairs included) decode to UTF-8.  Integer text that fits int64 decodes to
 * a Lua integer, any other number to a float ("-0" decodes to the float
 * -0.0 so its sign survives).  Numbers that overflow a double are rejected.
 * Floats encode as the shortest of "%.14g"/"%.17g" that round-trips;
 * NaN and infinities cannot be encoded.
 *
 * Tables.  A table whose metatable is the array marker, or whose keys are
 * exactly the integers 1..n, encodes as an array; a table with only string
 * keys encodes as an object with keys sorted bytewise (output is
 * deterministic); an empty table is {} unless marked, then [].  Decoded
 * arrays, empty ones included, carry the marker, so encode(decode(s)) keeps
 * [] as [].  The marker is one metatable per lua_State, kept in the registry
 * under TG_JSON_ARRAY_MT and created on first use.  Metatables and
 * metamethods are otherwise ignored: all table access is raw.
 *
 * Limits and errors.  Nesting deeper than TG_JSON_MAXDEPTH containers is an
 * error both ways (on encode this is also how cycles are caught).  The C
 * functions report errors by pushing one message string and returning -1;
 * they raise only on memory errors.  All scratch memory lives in Lua
 * userdata on the stack, so nothing leaks if such an error unwinds.  There
 * is no mutable global state.
 */
#ifndef TG_JSON_H
#define TG_JSON_H

#include <lua.h>

#define TG_JSON_MAXDEPTH 128
#define TG_JSON_ARRAY_MT "tg.json.array"

/* Encode the value at idx.  Returns 0 with the JSON text pushed, or -1 with
 * an error message pushed (e.g. "cannot encode a function", "cannot encode
 * NaN", "table has mixed keys (integer and string)", "table has sparse keys
 * (not exactly 1..n)", "nesting deeper than 128 (cycle?)").  Exactly one
 * value is pushed either way; the caller owns it like any stack value.
 * Raises only on memory errors. */
int tg_json_encode(lua_State *L, int idx);

/* Decode len bytes at s (need not be NUL-terminated; s is only read during
 * the call).  Returns 0 with the value pushed, or -1 with the message
 * "invalid JSON at byte N: <reason>" pushed, N being the 0-based offset of
 * the offending byte (len when the input ends early).  Exactly one value is
 * pushed either way.  Raises only on memory errors. */
int tg_json_decode(lua_State *L, const char *s, size_t len);

/* Push the null sentinel, a light userdata equal in every lua_State. */
void tg_json_push_null(lua_State *L);

/* Module opener (for luaL_requiref / package.preload).  Pushes and returns
 * a table {encode=, decode=, null=, array=}: encode(v) and decode(s) raise
 * "json.encode: <msg>" / "json.decode: <msg>" on failure; array(t) sets the
 * array marker as t's metatable (replacing any other) and returns t. */
int luaopen_tg_json(lua_State *L);

#endif
