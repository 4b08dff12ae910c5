-- params_spec.lua -- parameters as Go plans have them: typed getters for
-- durations, sizes and Go's booleans; env.start_time as a time value.
local core = require "tg.core"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local function env_with(params)
  return require("tg.env").new({ params = params, start_time = "2024-02-29T10:00:00Z",
    start_time_ns = 1709200800000000000 })
end

-- fn(...) must raise an error value with code `code` whose message matches
local function fails(code, pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_true(core.is_error(err), tostring(err))
  assert.equal(code, err.code)
  assert.matches(pattern, err.message)
end

describe("typed parameters", function()
  it("env:duration reads Go's duration syntax, in seconds", function()
    local env = env_with({ a = "10s", b = "1m30s", c = "250ms", d = "1.5h", e = "-2m", f = "0",
      g = "1h2m3.5s", u = "3us", mu = "3\u{b5}s" })
    assert.equal(10, env:duration("a"))
    assert.equal(90, env:duration("b"))
    assert.equal(0.25, env:duration("c"))
    assert.equal(5400, env:duration("d"))
    assert.equal(-120, env:duration("e"))
    assert.equal(0, env:duration("f"))
    assert.equal(3723.5, env:duration("g"))
    assert.equal(3e-6, env:duration("u"))
    assert.equal(3e-6, env:duration("mu"))
    assert.equal("float", math.type(env:duration("a")))
    -- defaults: seconds, or a duration string
    assert.equal(2.5, env:duration("missing", 2.5))
    assert.equal(90, env:duration("missing", "1m30s"))
  end)

  it("env:duration rejects what Go rejects, naming the parameter", function()
    for _, v in ipairs({ "10", "1sec", "1 s", "1S", "s", "1d", "", "1e3s", "1s2" }) do
      fails("bad_param", 'parameter "t" is not a duration: "' .. v:gsub("%p", "%%%0") .. '" %(write it as Go',
        env_with({ t = v }).duration, env_with({ t = v }), "t")
    end
    fails("bad_param", 'parameter "t" is missing', env_with({}).duration, env_with({}), "t")
    fails("invalid", 'the default of "t" must be seconds or a duration', env_with({}).duration, env_with({}), "t", "soon")
  end)

  it("env:size: SI for K/KB, IEC for Ki/KiB, as go-humanize reads them", function()
    local env = env_with({ a = "10KB", b = "10K", c = "1MiB", d = "1Mi", e = "512", f = "512B",
      g = "1.5KiB", i = "2 gb", j = "1,000", k = "4.1KB" })
    assert.equal(10000, env:size("a"))
    assert.equal(10000, env:size("b"))
    assert.equal(1048576, env:size("c"))
    assert.equal(1048576, env:size("d"))
    assert.equal(512, env:size("e"))
    assert.equal(512, env:size("f"))
    assert.equal(1536, env:size("g"))
    assert.equal(2000000000, env:size("i"))
    assert.equal(1000, env:size("j"))
    assert.equal(4100, env:size("k"))       -- exact: Go's float arithmetic says 4099
    assert.equal("integer", math.type(env:size("a")))
    assert.equal(4096, env:size("missing", 4096))
    assert.equal(1024, env:size("missing", "1KiB"))
    for _, v in ipairs({ "-1", "1XB", "KB", "1e3", "8EiB", "" }) do
      fails("bad_param", 'parameter "s" is not a size: "' .. v:gsub("%p", "%%%0") .. '" %(bytes, or with a unit',
        env_with({ s = v }).size, env_with({ s = v }), "s")
    end
    fails("invalid", 'the default of "s" must be a whole number of bytes or a size', env_with({}).size,
      env_with({}), "s", 1.5)
  end)

  it("env:bool takes Go's spellings as well as tgrun's", function()
    local yes = { "1", "t", "T", "TRUE", "true", "True", "yes", "on", "ON" }
    local no = { "0", "f", "F", "FALSE", "false", "False", "no", "off" }
    for _, v in ipairs(yes) do assert.is_true(env_with({ b = v }):bool("b"), v) end
    for _, v in ipairs(no) do assert.is_false(env_with({ b = v }):bool("b"), v) end
    fails("bad_param", 'parameter "b" is not true or false: "maybe"', env_with({ b = "maybe" }).bool,
      env_with({ b = "maybe" }), "b")
  end)

  it("env.start_time stays the RFC 3339 string; env.start_time_ns is the time", function()
    local env = env_with({})
    assert.equal("2024-02-29T10:00:00Z", env.start_time)
    assert.equal(1709200800000000000, env.start_time_ns)
    -- this instance's own: an integer, close to now
    local mine = core.config().start_time_ns
    assert.equal("integer", math.type(mine))
    assert.is_true(math.abs(core.time_ns() - mine) < 3600e9)
  end)

  it("a process: TEST_START_TIME gives start_time_ns; a bad duration is one line and exit 2", function()
    local plan = h.write(h.tmpdir() .. "/p.lua", [[
return function(env)
  require("tg.log").info("ns %d secs %s", env.start_time_ns, env:duration("t", "1s"))
end]])
    local r = h.run({ "-p", "t=1m", plan }, { TEST_START_TIME = "2024-02-29T10:00:00.5Z" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("ns 1709200800500000000 secs 60.0", r.stdout)
    r = h.run({ "-p", "t=60", plan }, {})
    assert.equal(2, r.code)
    assert.equal('tgrun: parameter "t" is not a duration: "60" (write it as Go does: 10s, 1m30s, 250ms, 1.5h)\n',
      r.stderr)
  end)
end)

describe("declared parameters", function()
  local PLAN = h.src .. "/tests/lua/plans/declared.lua"

  local function values_of(r)
    for _, l in ipairs(h.json_lines(r.stdout)) do
      local m = l.event.message_event and l.event.message_event.message
      if m and m:match("^values ") then return require("tg.json").decode(m:sub(8)), l end
    end
  end

  it("defaults apply when a parameter is not given; env:param reads the declared type", function()
    local r = h.run({ "-c", "show", "-p", "label=x", "-p", "peers=9", PLAN }, {})
    assert.equal(0, r.code, r.stderr)
    local v = values_of(r)
    assert.same({ peers = 9, timeout = 90, mode = "tcp", ratio = 0.1, verbose = false,
      layout = { rows = 2, names = { "a", "b" } }, label = "x" }, { peers = v.peers, timeout = v.timeout,
      mode = v.mode, ratio = v.ratio, verbose = v.verbose, layout = v.layout, label = v.label })
    -- as Testground passes a manifest's defaults: strings, non-strings as JSON
    assert.same({ peers = "9", timeout = "1m30s", mode = "tcp", ratio = "0.1", verbose = "false",
      layout = '{"names":["a","b"],"rows":2}', label = "x", ["odd name"] = "1" }, v.params)
    -- and the start event shows them
    local start = h.json_lines(r.stdout)[1].event.start_event.runenv
    assert.equal("1m30s", start.params.timeout)
    local said
    for _, l in ipairs(h.json_lines(r.stdout)) do
      local m = l.event.message_event and l.event.message_event.message
      if m and m:match("^chunk ") then said = m end
    end
    assert.equal('chunk invalid: env:param: "chunk" is not a parameter the plan declares for case show (read an '
      .. 'undeclared one with env:string, env:int, ...)', said)
  end)

  it("a value of the wrong type, one not allowed, a missing one: one line, exit 2, nothing runs", function()
    local bad = {
      { { "-p", "label=x", "-p", "peers=four" }, 'tgrun: parameter "peers" is not an integer: "four" (the plan declares it int)\n' },
      { { "-p", "label=x", "-p", "mode=udp" }, 'tgrun: parameter "mode" must be one of tcp, quic; got "udp"\n' },
      { { "-p", "label=x", "-p", "timeout=90" }, 'tgrun: parameter "timeout" is not a duration such as 10s, 1m30s, '
        .. '250ms: "90" (the plan declares it duration)\n' },
      { { "-p", "label=x", "-p", "verbose=maybe" }, 'tgrun: parameter "verbose" is not true or false: "maybe" (the '
        .. 'plan declares it bool)\n' },
      { { "-p", "label=x", "-p", "layout={" }, 'tgrun: parameter "layout" is not JSON: "{" (the plan declares it json)\n' },
      { {}, 'tgrun: parameter "label" is missing: the plan declares it without a default (pass --param label=<string>)\n' },
    }
    for _, b in ipairs(bad) do
      for _, mode in ipairs({ {}, { "-n", "2" }, { "-n", "2", "--inproc" } }) do
        local args = { "-c", "show" }
        for _, a in ipairs(mode) do args[#args + 1] = a end
        for _, a in ipairs(b[1]) do args[#args + 1] = a end
        args[#args + 1] = PLAN
        local r = h.run(args, {})
        assert.equal(2, r.code, table.concat(args, " "))
        assert.equal(b[2], r.stderr)
        assert.equal("", r.stdout)
      end
    end
    -- allowed values compare as their type: " quic" is not "quic", but 1e0 is 1 for a number
    assert.equal(0, h.run({ "-c", "show", "-p", "label=x", "-p", "ratio=1e-1", PLAN }, {}).code)
  end)

  it("checks the instance count against the declared bounds", function()
    local r = h.run({ "-n", "51", "-c", "show", "-p", "label=x", PLAN }, {})
    assert.equal(2, r.code)
    assert.equal("tgrun: case show runs with 1 to 50 instances (the plan declares), not 51\n", r.stderr)
    r = h.run({ "-n", "3", "-c", "transfer", "-p", "label=x", PLAN }, {})
    assert.equal("tgrun: case transfer runs with exactly 2 instances (the plan declares), not 3\n", r.stderr)
    r = h.run({ "-c", "transfer", "-p", "label=x", PLAN }, { TEST_INSTANCE_COUNT = "1" })
    assert.equal(2, r.code)
    r = h.run({ "-n", "2", "-c", "transfer", "-p", "label=x", PLAN }, {})
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("chunk 1048576", r.stdout)
  end)

  it("warns once about a parameter the plan does not declare, and passes it on", function()
    local r = h.run({ "-n", "2", "-c", "show", "-p", "label=x", "-p", "peer=3", PLAN }, {})
    assert.equal(0, r.code, r.stderr)
    local _, n = r.stderr:gsub('tgrun: warning: parameter "peer" is not declared by the plan for case show %(it '
      .. 'declares: label, layout, mode, odd name, peers, ratio, timeout, verbose%)\n', "")
    assert.equal(1, n, r.stderr)
    assert.matches('"peer":"3"', r.stdout)
  end)

  it("a bad declaration is one line and exit 2", function()
    local dir = h.tmpdir()
    local cases = {
      { 'params = { n = { type = "integer" } }', 'the plan declares parameter "n" of type "integer": one of int, number, bool, string, duration, size, json' },
      { 'params = { n = { type = "int", default = 1.5 } }', 'the plan declares parameter "n" with a default that is not an integer: 1.5' },
      { 'params = { n = { type = "duration", default = "soon" } }', 'the plan declares parameter "n" with a default that is not a duration such as 10s, 1m30s, 250ms: "soon"' },
      { 'params = { n = { type = "int", defualt = 1 } }', 'the plan declares parameter "n" with an unknown field "defualt" (type, default, allowed, desc, unit, cases)' },
      { 'params = { n = { type = "string", default = "c", allowed = { "a", "b" } } }', 'the plan declares parameter "n" with a default (c) that is not among its allowed values' },
      { 'params = { ["a=b"] = "int" }', [[the plan declares a parameter named "a=b": a name is a non-empty string without '=' or '|']] },
      { 'params = { n = { type = "int", cases = { "nope" } } }', 'the plan declares parameter "n" for a case the plan does not have: "nope"' },
      { 'instances = { min = 5, max = 2 }', 'the plan declares instances with min 5 above max 2' },
      { 'instances = { nope = { min = 1 } }', 'the plan declares instances for "nope", which is not a case of the plan (min, max, default, or a case name with its own { min =, max =, default = })' },
    }
    for i, c in ipairs(cases) do
      local plan = h.write(("%s/bad%d.lua"):format(dir, i), "return { " .. c[1] .. ", main = function() end }")
      for _, args in ipairs({ { plan }, { "-n", "1", plan }, { "manifest", plan }, { "--help-params", plan } }) do
        local r = h.run(args, {})
        assert.equal(2, r.code, c[1])
        assert.equal("tgrun: " .. c[2], r.stderr:match("^[^\n]*"))
        assert.equal(1, select(2, r.stderr:gsub("\n", "")), r.stderr)
      end
    end
  end)
end)

describe("tgrun manifest and --help-params", function()
  local PLAN = h.src .. "/tests/lua/plans/declared.lua"

  it("prints the Testground manifest.toml: builders, runners, a test case each, params with type/desc/unit/default", function()
    local r = h.run({ "manifest", PLAN }, {})
    assert.equal(0, r.code, r.stderr)
    assert.equal("", r.stderr)
    local m = r.stdout
    for _, want in ipairs({
      '\nname = "declared-example"\n',
      '\n[defaults]\nbuilder = "docker:generic"\nrunner = "local:docker"\n',
      '\n[builders."docker:generic"]\nenabled = true\n',
      '\n[runners."local:docker"]\nenabled = true\n',
      '\n[runners."cluster:k8s"]\nenabled = true\n',
      '\n[[testcases]]\nname = "show"\ninstances = { min = 1, max = 50, default = 3 }\n\n  [testcases.params]\n',
      '\n  peers = { type = "int", desc = "peers each instance dials", unit = "peers", default = 4 }\n',
      '\n  timeout = { type = "duration", desc = "how long a \\"ping\\" may take", default = "1m30s" }\n',
      '\n  mode = { type = "string", desc = "transport (one of: tcp, quic)", default = "tcp" }\n',
      '\n  ratio = { type = "float", default = 0.1 }\n',
      '\n  verbose = { type = "bool", default = false }\n',
      '\n  layout = { type = "json", default = "{\\"names\\":[\\"a\\",\\"b\\"],\\"rows\\":2}" }\n',
      '\n  label = { type = "string" }\n',
      '\n  "odd name" = { type = "int", desc = "tab\\there, ünïcode", default = 1 }\n',
      '\n[[testcases]]\nname = "transfer"\ninstances = { min = 2, max = 2, default = 2 }\n',
      '\n  chunk = { type = "size", default = "1MiB" }\n',
    }) do
      assert.is_truthy(m:find(want, 1, true), "missing: " .. want .. "\nin:\n" .. m)
    end
    -- chunk is the transfer case's only
    assert.is_nil(m:match('name = "show".-chunk = .-name = "transfer"'))
  end)

  it("is valid TOML that reads back to the declaration (Python's tomllib)", function()
    if os.execute("python3 -c 'import tomllib' 2>/dev/null") ~= true then
      pending("python3 with tomllib (3.11+) is not installed")
      return
    end
    local dir = h.tmpdir()
    local r = h.run({ "manifest", PLAN }, {})
    h.write(dir .. "/manifest.toml", r.stdout)
    local p = io.popen("python3 -c 'import tomllib,json,sys; print(json.dumps(tomllib.load(open(sys.argv[1],\"rb\"))))' "
      .. dir .. "/manifest.toml 2>&1")
    local out = p:read("*a")
    p:close()
    local t = require("tg.json").decode(out)
    assert.equal("declared-example", t.name)
    assert.same({ builder = "docker:generic", runner = "local:docker" }, t.defaults)
    assert.same({ enabled = true }, t.runners["cluster:k8s"])
    assert.equal(2, #t.testcases)
    local show = t.testcases[1]
    assert.equal("show", show.name)
    assert.same({ min = 1, max = 50, default = 3 }, show.instances)
    assert.same({ type = "int", desc = "peers each instance dials", unit = "peers", default = 4 }, show.params.peers)
    assert.equal(0.1, show.params.ratio.default)
    assert.equal(false, show.params.verbose.default)
    assert.equal("tab\there, ünïcode", show.params["odd name"].desc)
    assert.equal('{"names":["a","b"],"rows":2}', show.params.layout.default)
    assert.is_nil(show.params.chunk)
    assert.equal("1MiB", t.testcases[2].params.chunk.default)
  end)

  it("of a one-case plan without declarations: the case, default bounds; bad input is one line", function()
    local dir = h.tmpdir()
    local plan = h.write(dir .. "/solo.lua", "return function() end")
    local r = h.run({ "manifest", plan }, {})
    assert.equal(0, r.code)
    assert.matches('\nname = "solo"\n', r.stdout)
    assert.matches('\n%[%[testcases%]%]\nname = "default"\ninstances = { min = 1, max = 1000, default = 1 }\n$', r.stdout)
    r = h.run({ "manifest", plan }, { TEST_PLAN = "named" })
    assert.matches('\nname = "named"\n', r.stdout)
    r = h.run({ "manifest", dir .. "/missing.lua" }, {})
    assert.equal(2, r.code)
    assert.matches('^tgrun: cannot read plan "[^"]*missing.lua"', r.stderr)
    r = h.run({ "manifest" }, {})
    assert.equal(2, r.code)
    assert.equal("tgrun: manifest: no plan given; usage: tgrun manifest PLAN.lua\n", r.stderr)
    r = h.run({ "--help-params", plan }, {})
    assert.equal(0, r.code)
    assert.matches("solo.lua declares no parameters", r.stdout)
  end)

  it("of examples/testground/plan.lua: the test cases of the manifest.toml committed beside it", function()
    if os.execute("python3 -c 'import tomllib' 2>/dev/null") ~= true then
      pending("python3 with tomllib (3.11+) is not installed")
      return
    end
    local dir = h.tmpdir()
    local r = h.run({ "manifest", h.src .. "/examples/testground/plan.lua" }, { TG_LUA_PATH = h.src .. "/examples" })
    assert.equal(0, r.code, r.stderr)
    h.write(dir .. "/generated.toml", r.stdout)
    local py = [==[import tomllib,json,sys
a = tomllib.load(open(sys.argv[1], "rb")); b = tomllib.load(open(sys.argv[2], "rb"))
k = lambda t: t["name"]
print(json.dumps([a["name"] == b["name"], sorted(a["testcases"], key=k) == sorted(b["testcases"], key=k),
  a["defaults"] == b["defaults"]]))]==]
    local p = io.popen(("python3 -c %s %s %s 2>&1"):format(h.shq(py), dir .. "/generated.toml",
      h.src .. "/examples/testground/manifest.toml"))
    local out = p:read("*a")
    p:close()
    assert.equal("[true, true, true]\n", out)
  end)

  it("--help-params lists each case's parameters; -c one case", function()
    local r = h.run({ "--help-params", "-c", "show", PLAN }, {})
    assert.equal(0, r.code, r.stderr)
    local want = table.concat({
      "parameters of " .. PLAN .. " (plan declared-example), by case (pass one with -p NAME=VALUE):",
      "case show:",
      "  label     string    (required)",
      '  layout    json      (default {"names":["a","b"],"rows":2})',
      "  mode      string    transport (default tcp; one of: tcp, quic)",
      "  odd name  int       tab\there, ünïcode (default 1)",
      "  peers     int       peers each instance dials (default 4; unit: peers)",
      "  ratio     number    (default 0.1)",
      '  timeout   duration  how long a "ping" may take (default 1m30s)',
      "  verbose   bool      (default false)",
      "  instances: 1 to 50, default 3",
    }, "\n") .. "\n"
    assert.equal(want, r.stdout)
    r = h.run({ "--help-params", PLAN }, {})
    assert.matches("\ncase transfer:\n  chunk ", r.stdout)
    r = h.run({ "--help-params", "-c", "nope", PLAN }, {})
    assert.equal(2, r.code)
    assert.equal("tgrun: unknown case 'nope'; the plan has: show, transfer\n", r.stderr)
  end)
end)
