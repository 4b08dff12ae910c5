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
