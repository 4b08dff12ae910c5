/* test_json.c -- tg_json encode/decode: round trips, every error, edges. */
#include "tg_json.h"
#include "tg_test.h"

#include <lauxlib.h>
#include <lualib.h>

#include <stdlib.h>

static lua_State *new_state(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "json", luaopen_tg_json, 1);
    lua_pop(L, 1);
    return L;
}

/* Run a Lua chunk that returns one value; leaves it on the stack. */
static int eval(lua_State *L, const char *code) {
    if (luaL_loadstring(L, code) || lua_pcall(L, 0, 1, 0)) {
        fprintf(stderr, "lua error: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* decode(in) then encode; returns the text (static copy) or NULL. */
static const char *roundtrip(lua_State *L, const char *in, size_t n) {
    static char out[4096];
    int top = lua_gettop(L), rc;
    if (tg_json_decode(L, in, n) != 0) {
        fprintf(stderr, "decode %s: %s\n", in, lua_tostring(L, -1));
        lua_settop(L, top);
        return NULL;
    }
    rc = tg_json_encode(L, -1);
    snprintf(out, sizeof out, "%s", lua_tostring(L, -1));
    if (lua_gettop(L) != top + 2) rc = -1;
    lua_settop(L, top);
    return rc ? NULL : out;
}

/* ------------------------------------------------------------ round trips */

static const struct { const char *in, *out; } rt_cases[] = {
    {"null", "null"},
    {"true", "true"},
    {"false", "false"},
    {"0", "0"},
    {"-1", "-1"},
    {"  42 \n", "42"},
    {"1.5", "1.5"},
    {"-0.25e2", "-25"},
    {"1E3", "1000"},
    {"1e-7", "1e-07"},
    {"0.1", "0.1"},
    {"3.0", "3"},
    {"-0", "-0"},
    {"-0.0", "-0"},
    {"1.7976931348623157e308", "1.7976931348623157e+308"},
    {"5e-324", "4.9406564584125e-324"},
    {"0.30000000000000004", "0.30000000000000004"},
    {"9223372036854775807", "9223372036854775807"},
    {"-9223372036854775808", "-9223372036854775808"},
    {"9223372036854775808", "9.2233720368547758e+18"},
    {"-9223372036854775809", "-9.2233720368547758e+18"},
    {"\"\"", "\"\""},
    {"\"abc\"", "\"abc\""},
    {"\"a\\\"b\\\\c\\/d\"", "\"a\\\"b\\\\c/d\""},
    {"\"\\b\\f\\n\\r\\t\"", "\"\\b\\f\\n\\r\\t\""},
    {"\"\\u0000\\u001F\\u007f\"", "\"\\u0000\\u001f\x7f\""},
    {"\"\\u00e9\\u20AC\"", "\"\xc3\xa9\xe2\x82\xac\""},
    {"\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\""},
    {"\"\\uDBFF\\uDFFF\"", "\"\xf4\x8f\xbf\xbf\""},
    {"\"\xc3\xa9 raw \xff\"", "\"\xc3\xa9 raw \xff\""},
    {"[]", "[]"},
    {"{}", "{}"},
    {"[ ]", "[]"},
    {"{ }", "{}"},
    {"[[]]", "[[]]"},
    {"[{}]", "[{}]"},
    {"[1,2,3]", "[1,2,3]"},
    {"[null]", "[null]"},
    {"[null,null]", "[null,null]"},
    {"[1,null,3]", "[1,null,3]"},
    {"[1,2,null]", "[1,2,null]"},
    {"{\"a\":null}", "{\"a\":null}"},
    {"{\"b\":1,\"a\":2,\"c\":3}", "{\"a\":2,\"b\":1,\"c\":3}"},
    {"{\"ab\":1,\"a\":2,\"b\":3,\"\":4}", "{\"\":4,\"a\":2,\"ab\":1,\"b\":3}"},
    {"{\"1\":true}", "{\"1\":true}"},
    {"{\"a\":1,\"a\":2}", "{\"a\":2}"},
    {" { \"x\" : [ 1 , { \"y\" : [ ] } ] } ",
     "{\"x\":[1,{\"y\":[]}]}"},
    {"\t\r\n[\t\r\n1\t\r\n]\t\r\n", "[1]"},
};

TG_TEST(roundtrips) {
    lua_State *L = new_state();
    for (size_t i = 0; i < sizeof rt_cases / sizeof *rt_cases; i++) {
        const char *got = roundtrip(L, rt_cases[i].in, strlen(rt_cases[i].in));
        if (!got || strcmp(got, rt_cases[i].out) != 0)
            fprintf(stderr, "case %zu: %s\n", i, rt_cases[i].in);
        TG_CHECK_STR(got, rt_cases[i].out);
    }
    TG_CHECK_INT(lua_gettop(L), 0);
    lua_close(L);
}

TG_TEST(embedded_nul) {
    lua_State *L = new_state();
    const char in[] = "\"a\\u0000b\"";
    size_t n;
    const char *s;
    TG_CHECK_INT(tg_json_decode(L, in, sizeof in - 1), 0);
    s = lua_tolstring(L, -1, &n);
    TG_CHECK_INT(n, 3);
    TG_CHECK(memcmp(s, "a\0b", 3) == 0);
    TG_CHECK_INT(tg_json_encode(L, -1), 0);
    TG_CHECK_STR(lua_tostring(L, -1), "\"a\\u0000b\"");
    /* a raw NUL outside a string is an error, not end of input */
    lua_settop(L, 0);
    TG_CHECK_INT(tg_json_decode(L, "[1]\0", 4), -1);
    TG_CHECK_STR(lua_tostring(L, -1),
                 "invalid JSON at byte 3: trailing garbage after value");
    lua_close(L);
}

/* --------------------------------------------------------- decode values */

TG_TEST(decode_types) {
    lua_State *L = new_state();
    TG_CHECK_INT(tg_json_decode(L, "9223372036854775807", 19), 0);
    TG_CHECK(lua_isinteger(L, -1));
    TG_CHECK(lua_tointeger(L, -1) == LUA_MAXINTEGER);
    TG_CHECK_INT(tg_json_decode(L, "-9223372036854775808", 20), 0);
    TG_CHECK(lua_isinteger(L, -1));
    TG_CHECK(lua_tointeger(L, -1) == LUA_MININTEGER);
    TG_CHECK_INT(tg_json_decode(L, "9223372036854775808", 19), 0);
    TG_CHECK(!lua_isinteger(L, -1) && lua_type(L, -1) == LUA_TNUMBER);
    TG_CHECK(lua_tonumber(L, -1) == 9223372036854775808.0);
    TG_CHECK_INT(tg_json_decode(L, "1.0", 3), 0);
    TG_CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 1.0);
    TG_CHECK_INT(tg_json_decode(L, "-0", 2), 0);
    TG_CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 0.0);
    TG_CHECK_INT(tg_json_decode(L, "null", 4), 0);
    tg_json_push_null(L);
    TG_CHECK(lua_rawequal(L, -1, -2));
    TG_CHECK_INT(lua_gettop(L), 7);
    lua_close(L);
}

TG_TEST(null_keeps_length) {
    lua_State *L = new_state();
    TG_CHECK_INT(eval(L, "local t = json.decode('[null,1,null]')\n"
                         "return #t == 3 and t[1] == json.null and t[3] == json.null\n"
                         "  and getmetatable(t) ~= nil"), 0);
    TG_CHECK(lua_toboolean(L, -1));
    lua_close(L);
}

TG_TEST(null_shared_between_states) {
    lua_State *A = new_state(), *B = new_state();
    tg_json_push_null(A);
    tg_json_push_null(B);
    TG_CHECK(lua_touserdata(A, -1) == lua_touserdata(B, -1));
    TG_CHECK(lua_touserdata(A, -1) != NULL);
    lua_close(A);
    lua_close(B);
}

/* ------------------------------------------------------------ encode */

static const struct { const char *code, *out; } enc_cases[] = {
    {"return nil", "null"},
    {"return json.null", "null"},
    {"return true", "true"},
    {"return 7", "7"},
    {"return math.maxinteger", "9223372036854775807"},
    {"return math.mininteger", "-9223372036854775808"},
    {"return 3.0", "3"},
    {"return 0.1", "0.1"},
    {"return 1/3", "0.33333333333333331"},
    {"return 1e100", "1e+100"},
    {"return -0.0", "-0"},
    {"return 2^63", "9.2233720368547758e+18"},
    {"return 'a\\0b\\1\\31 \\127'", "\"a\\u0000b\\u0001\\u001f \x7f\""},
    {"return {}", "{}"},
    {"return json.array({})", "[]"},
    {"return json.array({1, 2})", "[1,2]"},
    {"return {1, 'two', {x=false}}", "[1,\"two\",{\"x\":false}]"},
    {"return {[1.0]=1, [2]=2}", "[1,2]"},
    {"return {z=1, y=2, x=3, [\"\"]=0}", "{\"\":0,\"x\":3,\"y\":2,\"z\":1}"},
    {"return {b={d=1,c=2}, a={2,1}}", "{\"a\":[2,1],\"b\":{\"c\":2,\"d\":1}}"},
    {"return setmetatable({k=1}, {__index=function() return 1 end,"
     " __pairs=function() error('no') end})", "{\"k\":1}"},
    {"return {json.null, json.null}", "[null,null]"},
    {"return {'\"\\\\/'}", "[\"\\\"\\\\/\"]"},
};

TG_TEST(encodes) {
    lua_State *L = new_state();
    for (size_t i = 0; i < sizeof enc_cases / sizeof *enc_cases; i++) {
        int top = lua_gettop(L);
        TG_CHECK_INT(eval(L, enc_cases[i].code), 0);
        TG_CHECK_INT(tg_json_encode(L, -1), 0);
        if (strcmp(lua_tostring(L, -1), enc_cases[i].out) != 0)
            fprintf(stderr, "case %zu: %s\n", i, enc_cases[i].code);
        TG_CHECK_STR(lua_tostring(L, -1), enc_cases[i].out);
        TG_CHECK_INT(lua_gettop(L), top + 2);
        lua_settop(L, top);
    }
    lua_close(L);
}

TG_TEST(deterministic_order) {
    lua_State *L = new_state();
    /* Same keys inserted in opposite orders encode identically. */
    TG_CHECK_INT(eval(L, "local a, b = {}, {}\n"
                         "for i = 1, 200 do a['k'..i] = i end\n"
                         "for i = 200, 1, -1 do b['k'..i] = i end\n"
                         "return json.encode(a) == json.encode(b)"), 0);
    TG_CHECK(lua_toboolean(L, -1));
    lua_close(L);
}

static const struct { const char *code, *msg; } enc_errs[] = {
    {"return print", "cannot encode a function"},
    {"return coroutine.create(print)", "cannot encode a thread"},
    {"return io.stdout", "cannot encode a userdata"},
    {"return {f = print}", "cannot encode a function"},
    {"return 0/0", "cannot encode NaN"},
    {"return 1/0", "cannot encode inf"},
    {"return -1/0", "cannot encode -inf"},
    {"return {1/0}", "cannot encode inf"},
    {"return {1, 2, x = 3}", "table has mixed keys (integer and string)"},
    {"return {[1] = 1, [3] = 3}", "table has sparse keys (not exactly 1..n)"},
    {"return {[2] = 1}", "table has sparse keys (not exactly 1..n)"},
    {"return {[0] = 1}", "table has sparse keys (not exactly 1..n)"},
    {"return {[-1] = 1, [1] = 1}", "table has sparse keys (not exactly 1..n)"},
    {"return json.array({[2] = 1})", "table has sparse keys (not exactly 1..n)"},
    {"return json.array({x = 1})", "array-marked table has string keys"},
    {"return {[1.5] = 1}", "table has a float key"},
    {"return {[true] = 1}", "table has a boolean key"},
    {"return {[{}] = 1}", "table has a table key"},
    {"return {[json.null] = 1}", "table has a userdata key"},
    {"local t = {} t.self = t return t", "nesting deeper than 128 (cycle?)"},
    {"local t = {} t[1] = t return t", "nesting deeper than 128 (cycle?)"},
    {"local t = {} for i = 1, 128 do t = {t} end return t",
     "nesting deeper than 128 (cycle?)"},
};

TG_TEST(encode_errors) {
    lua_State *L = new_state();
    for (size_t i = 0; i < sizeof enc_errs / sizeof *enc_errs; i++) {
        int top = lua_gettop(L);
        TG_CHECK_INT(eval(L, enc_errs[i].code), 0);
        TG_CHECK_INT(tg_json_encode(L, -1), -1);
        TG_CHECK_STR(lua_tostring(L, -1), enc_errs[i].msg);
        TG_CHECK_INT(lua_gettop(L), top + 2);
        lua_settop(L, top);
    }
    lua_close(L);
}

TG_TEST(encode_depth_limit) {
    lua_State *L = new_state();
    /* 128 nested tables are fine, 129 are not. */
    TG_CHECK_INT(eval(L, "local t = {} for i = 1, 127 do t = {t} end return t"), 0);
    TG_CHECK_INT(tg_json_encode(L, -1), 0);
    TG_CHECK_INT(lua_rawlen(L, -1), 2 * 128);
    lua_close(L);
}

/* ------------------------------------------------------------ decode errors */

static const struct { const char *in; size_t len; const char *msg; } dec_errs[] = {
#define E(s, m) {s, sizeof s - 1, m}
    E("", "byte 0: unexpected end of input"),
    E("   ", "byte 3: unexpected end of input"),
    E("nul", "byte 3: unexpected end of input"),
    E("nulL", "byte 3: invalid literal"),
    E("True", "byte 0: unexpected character 'T'"),
    E("[tru]", "byte 4: invalid literal"),
    E("falsey", "byte 5: trailing garbage after value"),
    E("1 2", "byte 2: trailing garbage after value"),
    E("{} x", "byte 3: trailing garbage after value"),
    E("+1", "byte 0: unexpected character '+'"),
    E(".5", "byte 0: unexpected character '.'"),
    E("-", "byte 1: unexpected end of input"),
    E("-x", "byte 1: expected digit after '-'"),
    E("--1", "byte 1: expected digit after '-'"),
    E("01", "byte 0: leading zero in number"),
    E("-012", "byte 1: leading zero in number"),
    E("1.", "byte 2: expected digit after '.'"),
    E("1.e5", "byte 2: expected digit after '.'"),
    E("1e", "byte 2: expected digit in exponent"),
    E("1e+", "byte 3: expected digit in exponent"),
    E("[1E-]", "byte 4: expected digit in exponent"),
    E("0x10", "byte 1: trailing garbage after value"),
    E("1e400", "byte 0: number out of range"),
    E("[-1e999]", "byte 1: number out of range"),
    E("NaN", "byte 0: unexpected character 'N'"),
    E("Infinity", "byte 0: unexpected character 'I'"),
    E("\"abc", "byte 4: unterminated string"),
    E("\"abc\\", "byte 5: unterminated string"),
    E("\"abc\\\"", "byte 6: unterminated string"),
    E("\"a\nb\"", "byte 2: control character in string"),
    E("\"a\tb\"", "byte 2: control character in string"),
    E("\"\x1f\"", "byte 1: control character in string"),
    E("\"\\x\"", "byte 1: invalid escape"),
    E("\"\\'\"", "byte 1: invalid escape"),
    E("\"ab\\\x01\"", "byte 3: invalid escape"),
    E("\"\\u12\"", "byte 1: invalid \\u escape"),
    E("\"\\u12g4\"", "byte 1: invalid \\u escape"),
    E("\"\\U1234\"", "byte 1: invalid escape"),
    E("\"\\ud800\"", "byte 1: unpaired surrogate"),
    E("\"x\\ud800y\"", "byte 2: unpaired surrogate"),
    E("\"\\ud800\\u0041\"", "byte 1: unpaired surrogate"),
    E("\"\\ud800\\ud800\"", "byte 1: unpaired surrogate"),
    E("\"\\udc00\"", "byte 1: unpaired surrogate"),
    E("\"\\ud800\\n\"", "byte 1: unpaired surrogate"),
    E("[", "byte 1: unexpected end of input"),
    E("[1", "byte 2: unexpected end of input"),
    E("[1,", "byte 3: unexpected end of input"),
    E("[1,]", "byte 3: unexpected character ']'"),
    E("[,1]", "byte 1: unexpected character ','"),
    E("[1 2]", "byte 3: expected ',' or ']'"),
    E("[1}", "byte 2: expected ',' or ']'"),
    E("{", "byte 1: unexpected end of input"),
    E("{\"a\"", "byte 4: unexpected end of input"),
    E("{\"a\":", "byte 5: unexpected end of input"),
    E("{\"a\":1", "byte 6: unexpected end of input"),
    E("{\"a\" 1}", "byte 5: expected ':'"),
    E("{a:1}", "byte 1: expected string key"),
    E("{1:1}", "byte 1: expected string key"),
    E("{\"a\":1,}", "byte 7: expected string key"),
    E("{\"a\":1 \"b\":2}", "byte 7: expected ',' or '}'"),
    E("{\"a\":1]", "byte 6: expected ',' or '}'"),
    E("\x01", "byte 0: unexpected byte 0x01"),
    E("\xef\xbb\xbf{}", "byte 0: unexpected byte 0xef"),
    E("[1]\x0b", "byte 3: trailing garbage after value"),
    E("\f1", "byte 0: unexpected byte 0x0c"),
#undef E
};

TG_TEST(decode_errors) {
    lua_State *L = new_state();
    lua_pushstring(L, "sentinel");
    for (size_t i = 0; i < sizeof dec_errs / sizeof *dec_errs; i++) {
        char want[128];
        int top = lua_gettop(L);
        snprintf(want, sizeof want, "invalid JSON at %s", dec_errs[i].msg);
        TG_CHECK_INT(tg_json_decode(L, dec_errs[i].in, dec_errs[i].len), -1);
        if (!lua_isstring(L, -1) || strcmp(lua_tostring(L, -1), want) != 0)
            fprintf(stderr, "case %zu: input \"%s\"\n", i, dec_errs[i].in);
        TG_CHECK_STR(lua_tostring(L, -1), want);
        TG_CHECK_INT(lua_gettop(L), top + 1);
        lua_settop(L, top);
    }
    TG_CHECK_STR(lua_tostring(L, 1), "sentinel");
    lua_close(L);
}

/* Build depth copies of open, then close. */
static char *nest(int depth, char open, char close) {
    char *s = malloc((size_t)depth * 2 + 1);
    for (int i = 0; i < depth; i++) {
        s[i] = open;
        s[depth * 2 - 1 - i] = close;
    }
    s[depth * 2] = '\0';
    return s;
}

TG_TEST(decode_depth_limit) {
    lua_State *L = new_state();
    char *ok = nest(128, '[', ']'), *bad = nest(129, '[', ']');
    char *deep = nest(100000, '[', ']');
    const char *got = roundtrip(L, ok, strlen(ok));
    TG_CHECK(got && strcmp(got, ok) == 0);
    TG_CHECK_INT(tg_json_decode(L, bad, strlen(bad)), -1);
    TG_CHECK_STR(lua_tostring(L, -1),
                 "invalid JSON at byte 128: nesting deeper than 128");
    TG_CHECK_INT(tg_json_decode(L, deep, strlen(deep)), -1);
    TG_CHECK_STR(lua_tostring(L, -1),
                 "invalid JSON at byte 128: nesting deeper than 128");
    TG_CHECK_INT(lua_gettop(L), 2);
    lua_settop(L, 0);
    /* objects count too */
    TG_CHECK_INT(eval(L, "local s = string.rep('{\"a\":', 128) .. '1' .. "
                         "string.rep('}', 128)\n"
                         "local ok = pcall(json.decode, s)\n"
                         "local ok2, e = pcall(json.decode, '[' .. s .. ']')\n"
                         "return ok and not ok2 and e:find('nesting', 1, true) ~= nil"), 0);
    TG_CHECK(lua_toboolean(L, -1));
    free(ok);
    free(bad);
    free(deep);
    lua_close(L);
}

/* ------------------------------------------------------- the Lua module */

TG_TEST(module) {
    lua_State *L = new_state();
    static const char *const chunks[] = {
        "return type(json.encode) == 'function' and type(json.decode) == 'function'"
        " and type(json.array) == 'function' and type(json.null) == 'userdata'",
        "return json.encode(json.decode('[]')) == '[]'",
        "return json.encode(json.decode('{}')) == '{}'",
        "local t = {} return json.array(t) == t",
        "local ok, e = pcall(json.encode, print)\n"
        "return not ok and e == 'json.encode: cannot encode a function'",
        "local ok, e = pcall(json.decode, '[1,')\n"
        "return not ok and e == 'json.decode: invalid JSON at byte 3: "
        "unexpected end of input'",
        "local ok, e = pcall(json.encode)\n"
        "return not ok and e:find('bad argument', 1, true) ~= nil",
        "local ok, e = pcall(json.decode, {})\n"
        "return not ok and e:find('bad argument', 1, true) ~= nil",
        "local ok = pcall(json.array, 1) return not ok",
        "local v = json.decode('{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}')\n"
        "return v.a[3].b == json.null and v.c == 'd' and #v.a == 3",
        "return json.decode(' 12 ') == 12 and math.type(json.decode('12')) == 'integer'",
        "return math.type(json.decode('12.0')) == 'float'",
        /* a table modified by its own metamethods is never consulted */
        "local t = setmetatable({}, {__index = function() error('x') end})\n"
        "t[1] = 1 t[2] = 2 return json.encode(t) == '[1,2]'",
    };
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
        int ok = eval(L, chunks[i]) == 0 && lua_toboolean(L, -1);
        if (!ok) fprintf(stderr, "module chunk %zu failed\n", i);
        TG_CHECK(ok);
        lua_settop(L, 0);
    }
    lua_close(L);
}

TG_TEST(marker_per_state) {
    /* Decoded arrays carry the marker of their own state; encode without
     * luaopen_tg_json having run still works (marker made lazily). */
    lua_State *L = luaL_newstate();
    TG_CHECK_INT(tg_json_decode(L, "[]", 2), 0);
    TG_CHECK_INT(tg_json_encode(L, -1), 0);
    TG_CHECK_STR(lua_tostring(L, -1), "[]");
    lua_newtable(L);
    TG_CHECK_INT(tg_json_encode(L, -1), 0);
    TG_CHECK_STR(lua_tostring(L, -1), "{}");
    TG_CHECK_INT(lua_gettop(L), 4);
    lua_close(L);
}

TG_TEST(stack_balance_and_index) {
    lua_State *L = new_state();
    lua_pushinteger(L, 5);
    lua_pushstring(L, "x");
    lua_pushboolean(L, 1);
    TG_CHECK_INT(tg_json_encode(L, 1), 0);          /* absolute index */
    TG_CHECK_STR(lua_tostring(L, -1), "5");
    TG_CHECK_INT(tg_json_encode(L, -3), 0);         /* relative: "x" */
    TG_CHECK_STR(lua_tostring(L, -1), "\"x\"");
    TG_CHECK_INT(lua_gettop(L), 5);
    TG_CHECK_INT(tg_json_decode(L, "[1,2,{\"a\":\"\\n\"}]", 16), 0);
    TG_CHECK_INT(lua_gettop(L), 6);
    TG_CHECK_INT(tg_json_decode(L, "[1,2,{\"a\":\"\\q\"}]", 16), -1);
    TG_CHECK_STR(lua_tostring(L, -1), "invalid JSON at byte 11: invalid escape");
    TG_CHECK_INT(lua_gettop(L), 7);
    TG_CHECK_STR(lua_tostring(L, 2), "x");
    lua_close(L);
}

TG_TEST(big_values) {
    /* Strings and arrays big enough to grow the buffer many times. */
    lua_State *L = new_state();
    TG_CHECK_INT(eval(L, "local t = {} for i = 1, 20000 do t[i] = ('\\n\"x'):rep(i % 7) end\n"
                         "local s = json.encode(t)\n"
                         "local u = json.decode(s)\n"
                         "for i = 1, 20000 do if u[i] ~= t[i] then return false end end\n"
                         "return #u == 20000 and json.encode(u) == s"), 0);
    TG_CHECK(lua_toboolean(L, -1));
    lua_settop(L, 0);
    TG_CHECK_INT(eval(L, "local n = ('1'):rep(300) .. '.5'\n"
                         "return json.decode(n) == tonumber(n)"), 0);
    TG_CHECK(lua_toboolean(L, -1));
    lua_close(L);
}

/* ------------------------------------------------------- memory errors */

typedef struct { size_t used, limit; } budget_t;

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    budget_t *b = ud;
    if (!ptr) osize = 0;
    if (nsize == 0) {
        free(ptr);
        b->used -= osize;
        return NULL;
    }
    if (nsize > osize && b->used + (nsize - osize) > b->limit) return NULL;
    ptr = realloc(ptr, nsize);
    if (ptr) b->used = b->used - osize + nsize;
    return ptr;
}

static int do_encode(lua_State *L) {
    lua_pushinteger(L, tg_json_encode(L, 1));
    return 2;
}

static int do_decode(lua_State *L) {
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    lua_pushinteger(L, tg_json_decode(L, s, n));
    return 2;
}

/* Fail every allocation point in turn: the functions may only raise a
 * memory error, never crash or leak (ASan/LSan watch the latter). */
TG_TEST(out_of_memory) {
    static const char doc[] =
        "{\"k1\":[1,2.5,\"\\u00e9\\n\",null,{\"a\":[]}],\"k2\":\"x\",\"k3\":{}}";
    int finished = 0, raised = 0;
    for (size_t extra = 0; extra < 64 * 1024 && !finished; extra += 16) {
        budget_t b = {0, (size_t)-1};
        lua_State *L = lua_newstate(budget_alloc, &b);
        int rc;
        lua_pushcfunction(L, do_encode);       /* pushed before the limit: */
        lua_pushcfunction(L, do_decode);       /* outside pcall a memory   */
        lua_pushstring(L, doc);                /* error would panic        */
        b.limit = b.used + extra;
        rc = lua_pcall(L, 1, 2, 0);
        if (rc == LUA_OK) {
            TG_CHECK_INT(lua_tointeger(L, -1), 0);
            lua_pop(L, 1);
            rc = lua_pcall(L, 1, 2, 0);
            if (rc == LUA_OK) {
                TG_CHECK_INT(lua_tointeger(L, -1), 0);
                TG_CHECK_STR(lua_tostring(L, -2),
                             "{\"k1\":[1,2.5,\"\xc3\xa9\\n\",null,{\"a\":[]}],"
                             "\"k2\":\"x\",\"k3\":{}}");
                finished = 1;
            }
        }
        if (rc != LUA_OK) {
            TG_CHECK_INT(rc, LUA_ERRMEM);
            raised++;
        }
        lua_close(L);
        TG_CHECK_INT(b.used, 0);
    }
    TG_CHECK(finished);
    TG_CHECK(raised > 0);
}

int main(void) {
    TG_RUN(roundtrips);
    TG_RUN(embedded_nul);
    TG_RUN(decode_types);
    TG_RUN(null_keeps_length);
    TG_RUN(null_shared_between_states);
    TG_RUN(encodes);
    TG_RUN(deterministic_order);
    TG_RUN(encode_errors);
    TG_RUN(encode_depth_limit);
    TG_RUN(decode_errors);
    TG_RUN(decode_depth_limit);
    TG_RUN(module);
    TG_RUN(marker_per_state);
    TG_RUN(stack_balance_and_index);
    TG_RUN(big_values);
    TG_RUN(out_of_memory);
    return tg_test_report();
}
