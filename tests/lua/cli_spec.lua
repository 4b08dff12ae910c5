-- cli_spec.lua -- tgrun as a real process: exit status, one-line errors,
-- event lines, the Redis wire layout, and a Redis that goes away.
local tg = require "tg"
local core = require "tg.core"
local redis = require "tg.redis"
local json = require "tg.json"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local plans = h.src .. "/tests/lua/plans"
local CASES = plans .. "/cases.lua"

local function redis_env(extra)
  local e = { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port) }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local function one_line(s)
  local n = select(2, (s or ""):gsub("\n", ""))
  return n == 1
end

describe("bad input", function()
  it("a missing plan file: exit 2, one line naming the file", function()
    local r = h.run({ "/nonexistent/plan.lua" }, redis_env())
    assert.equal(2, r.code)
    assert.is_true(one_line(r.stderr), r.stderr)
    assert.matches('cannot read plan "/nonexistent/plan.lua": No such file', r.stderr)
  end)

  it("a plan with a syntax error: exit 2, one line with file and line", function()
    local r = h.run({ plans .. "/syntax_error.lua" }, redis_env())
    assert.equal(2, r.code)
    assert.is_true(one_line(r.stderr), r.stderr)
    assert.matches("plan does not compile: .*syntax_error.lua:3:", r.stderr)
    assert.equal("", r.stdout)
  end)

  it("an unknown case: exit 2, listing the cases", function()
    local r = h.run({ "--case", "nope", CASES }, redis_env())
    assert.equal(2, r.code)
    assert.is_true(one_line(r.stderr), r.stderr)
    assert.matches("unknown case 'nope'; the plan has: crash, env, fail, ok", r.stderr)
  end)

  it("several cases and none chosen: exit 2, saying how to choose", function()
    local r = h.run({ CASES }, redis_env())
    assert.equal(2, r.code)
    assert.matches("choose one with %-%-case NAME or TEST_CASE", r.stderr)
  end)

  it("a malformed --param: exit 2", function()
    local r = h.run({ "-c", "ok", "-p", "novalue", CASES }, redis_env())
    assert.equal(2, r.code)
    assert.is_true(one_line(r.stderr), r.stderr)
    assert.matches("novalue", r.stderr)
  end)

  it("a parameter that does not parse: exit 2, one line naming it", function()
    local r = h.run({ "-c", "params", "-p", "peers=12x", CASES }, redis_env())
    assert.equal(2, r.code)
    assert.is_true(one_line(r.stderr), r.stderr)
    assert.matches('parameter "peers" is not an integer: "12x"', r.stderr)
    local fails = h.events_of(h.json_lines(r.stdout), "failure_event")
    assert.equal(1, #fails)
  end)

  it("a missing parameter without default: exit 2", function()
    local r = h.run({ "-c", "params", CASES }, redis_env())
    assert.equal(2, r.code)
    assert.matches('parameter "peers" is missing', r.stderr)
  end)

  it("an unreachable Redis: exit 2 within seconds, naming the address", function()
    local r = h.run({ "-c", "ok", "--redis", "redis://127.0.0.1:1", CASES }, {})
    assert.equal(2, r.code)
    assert.is_true(r.secs < 5, "took " .. r.secs)
    assert.is_true(one_line(r.stderr), r.stderr)
    assert.matches("cannot connect to Redis at 127.0.0.1:1: Connection refused", r.stderr)
  end)

  it("--docker with a docker CLI that fails and leaves a process holding its output: exit 2 within seconds", function()
    -- the CLI's output ends when it exits, or 2 s later: a process it
    -- started (here a 20 s sleep, of a length nothing else uses) does not
    -- keep tgrun waiting
    local bin = h.tmpdir()
    h.write(bin .. "/docker", "#!/bin/sh\nsleep 20.0417 &\necho 'fake docker: no engine' >&2\nexit 1\n")
    os.execute("chmod +x " .. h.shq(bin .. "/docker"))
    local r = h.run({ "-n", "1", "--docker", "-c", "ok", CASES }, { PATH = bin .. ":" .. os.getenv("PATH") },
      { unset = { "REDIS_HOST", "REDIS_PORT" } })
    assert.equal(2, r.code)
    assert.is_true(r.secs < 10, "took " .. r.secs)
    assert.is_true(one_line(r.stderr), r.stderr)
    assert.matches("no Docker engine answers %(fake docker: no engine%)", r.stderr)
    os.execute("pkill -f '^sleep 20.0417$' 2>/dev/null")
  end)

  it("a bad --redis URL: exit 2", function()
    local r = h.run({ "-c", "ok", "--redis", "http://x", CASES }, {})
    assert.equal(2, r.code)
    assert.is_true(one_line(r.stderr), r.stderr)
  end)

  it("no plan, unknown option: exit 2 with usage hint", function()
    assert.equal(2, h.run({}, {}).code)
    local r = h.run({ "--frobnicate", CASES }, {})
    assert.equal(2, r.code)
    assert.matches("see tgrun %-%-help", r.stderr)
  end)
end)

describe("outcome and event lines", function()
  it("success: exit 0; run.out equals stdout; every line has the schema", function()
    local out = h.tmpdir()
    local r = h.run({ "-c", "ok", "--outputs", out, CASES }, redis_env({ TEST_GROUP_ID = "g1" }))
    assert.equal(0, r.code, r.stderr)
    assert.equal(r.stdout, h.read(out .. "/run.out"))
    local lines = h.json_lines(r.stdout)
    assert.is_true(#lines >= 3)
    local kinds = { start_event = 1, message_event = 1, success_event = 1, failure_event = 1,
      crash_event = 1, stage_start_event = 1, stage_end_event = 1 }
    for _, l in ipairs(lines) do
      assert.equal("number", math.type(l.ts) and "number")
      assert.equal("integer", math.type(l.ts))
      assert.is_true(l.ts > 1.6e18)
      assert.equal("", l.msg)
      assert.equal("g1", l.group_id)
      assert.is_string(l.run_id)
      local n = 0
      for k in pairs(l.event) do n = n + 1; assert.truthy(kinds[k], k) end
      assert.equal(1, n)
    end
    assert.is_table(lines[1].event.start_event.runenv)
    assert.equal("ok", lines[1].event.start_event.runenv.case)
    assert.same({ group = "g1" }, lines[#lines].event.success_event)
  end)

  it("an uncaught error: exit 1, failure_event with message and traceback", function()
    local r = h.run({ "-c", "fail", CASES }, redis_env())
    assert.equal(1, r.code)
    local f = h.events_of(h.json_lines(r.stdout), "failure_event")
    assert.equal(1, #f)
    assert.matches("cases.lua:13: deliberate failure", f[1].error)
    assert.matches("stack traceback:", f[1].error)
  end)

  it("error(nil) and error({}): exit 1, crash_event with a stacktrace", function()
    for _, c in ipairs({ "crash", "table_error" }) do
      local r = h.run({ "-c", c, CASES }, redis_env())
      assert.equal(1, r.code)
      local cr = h.events_of(h.json_lines(r.stdout), "crash_event")
      assert.equal(1, #cr, r.stdout)
      assert.matches("error object is a", cr[1].error)
      assert.matches("cases.lua", cr[1].stacktrace)
    end
  end)

  it("parameters: TEST_INSTANCE_PARAMS split on the first '=', --param overrides", function()
    local r = h.run({ "-c", "params", "-p", "flag=on", CASES },
      redis_env({ TEST_INSTANCE_PARAMS = "peers=3|url=http://x/?a=b|flag=off" }))
    assert.equal(0, r.code, r.stderr)
    assert.matches('"url":"http://x/?a=b"', r.stdout, 1, true)
    assert.matches("peers 3 ratio 0.5 flag true", r.stdout)
  end)

  it("env carries the runner's variables and the start-up sequence numbers", function()
    local run = h.uniq("envrun")
    local e = redis_env({ TEST_RUN = run, TEST_PLAN = "pl", TEST_CASE = "env",
      TEST_INSTANCE_COUNT = "3", TEST_GROUP_ID = "seeds", TEST_GROUP_INSTANCE_COUNT = "2",
      TEST_START_TIME = "2024-02-29T10:00:00Z", TEST_SUBNET = "16.0.0.0/16" })
    local r1 = h.run({ CASES }, e)
    local r2 = h.run({ CASES }, e)
    e.TEST_GROUP_ID = "leech"
    local r3 = h.run({ CASES }, e)
    local function env_of(r)
      assert.equal(0, r.code, r.stderr)
      for _, l in ipairs(h.json_lines(r.stdout)) do
        local m = l.event.message_event and l.event.message_event.message
        if m and m:match("^env ") then return require("tg.json").decode(m:sub(5)) end
      end
    end
    local a, b, c = env_of(r1), env_of(r2), env_of(r3)
    assert.same({ 1, 2, 3 }, { a.global_seq, b.global_seq, c.global_seq })
    assert.same({ 1, 2, 1 }, { a.group_seq, b.group_seq, c.group_seq })
    assert.equal(run, a.run_id)
    assert.equal("pl", a.plan)
    assert.equal("env", a.case)
    assert.equal(3, a.instance_count)
    assert.equal(2, a.group_instance_count)
    assert.equal("2024-02-29T10:00:00Z", a.start_time)
    assert.equal("16.0.0.0/16", a.subnet)
    assert.equal(false, a.sidecar)
  end)

  it("with TEST_SIDECAR=true waits for network-initialized first", function()
    local run = h.uniq("sidecar")
    local p = h.spawn({ CASES }, redis_env({ TEST_RUN = run, TEST_PLAN = "pl", TEST_CASE = "ok",
      TEST_SIDECAR = "true", TEST_INSTANCE_COUNT = "1" }))
    -- the waiter registered its target (1) in the state's slots
    local key = ("run:%s:plan:pl:case:ok:tg:members:network-initialized"):format(run)
    assert.truthy(h.wait_until(function() return redis.call({ "GETBIT", key, 32 * 1 }) == 1 end, 10))
    assert.is_nil(h.read(p.dir .. "/rc"))           -- still waiting
    redis.call({ "INCR", ("run:%s:plan:pl:case:ok:states:network-initialized"):format(run) })
    local r = assert(p:wait(10))
    assert.equal(0, r.code, r.stderr)
    local lines = h.json_lines(r.stdout)
    assert.equal(1, #h.events_of(lines, "stage_start_event"))
    assert.equal(1, #h.events_of(lines, "stage_end_event"))
    assert.matches("network initialisation successful", r.stdout)
  end)

  it("a plan requires snippets from its own folder", function()
    local r = h.run({ plans .. "/uses_snippet.lua" }, redis_env())
    assert.equal(0, r.code, r.stderr)
    assert.matches("snippet says hi", r.stdout)
  end)
end)

describe("the Redis wire layout", function()
  it("uses the Go SDK keys: INCR states, streams with field p, run_events", function()
    local run = h.uniq("wire")
    local r = h.run({ CASES }, redis_env({ TEST_RUN = run, TEST_PLAN = "pl", TEST_CASE = "wire" }))
    assert.equal(0, r.code, r.stderr)
    local P = ("run:%s:plan:pl:case:wire"):format(run)
    assert.equal("string", redis.call({ "TYPE", P .. ":states:s" }))
    assert.equal("1", redis.call({ "GET", P .. ":states:s" }))
    assert.equal("1", redis.call({ "GET", P .. ":states:initialized_global" }))
    assert.equal("1", redis.call({ "GET", P .. ":states:initialized_group_single" }))
    assert.equal("stream", redis.call({ "TYPE", P .. ":topics:t" }))
    local e = redis.call({ "XRANGE", P .. ":topics:t", "-", "+" })
    assert.same({ "p", '{"a":1,"b":"x"}' }, e[1][2])
    -- run_events, as sdk-go signals them: the network-initialized stage (sent
    -- before the instance has its seqs), the start (once it has them) and
    -- the outcome; field p is the Testground event, field tg says which
    -- instance it was
    local ev = redis.call({ "XRANGE", P .. ":run_events", "-", "+" })
    assert.equal(4, #ev)
    local host = h.read("/proc/sys/kernel/hostname"):match("^%s*(.-)%s*$")
    local early = ('{"host":%s}'):format(json.encode(host))
    local who = ('{"group_seq":1,"host":%s,"seq":1}'):format(json.encode(host))
    assert.same({ "p", '{"stage_start_event":{"group":"single","name":"network-initialized"}}', "tg", early },
      ev[1][2])
    assert.same({ "p", '{"stage_end_event":{"group":"single","name":"network-initialized"}}', "tg", early },
      ev[2][2])
    assert.equal("p", ev[3][2][1])
    local start = json.decode(ev[3][2][2]).start_event
    assert.same({ 1, 1, "single", "pl", "wire", run },
      { start.runenv.instances, start.runenv.group_instances, start.runenv.group, start.runenv.plan,
        start.runenv.case, start.runenv.run })
    assert.same({ "tg", who }, { ev[3][2][3], ev[3][2][4] })
    assert.same({ "p", '{"success_event":{"group":"single"}}', "tg", who }, ev[4][2])
    local ttl = redis.call({ "TTL", P .. ":states:s" })
    assert.is_true(ttl > 0, "keys of a run expire")
  end)
end)

describe("Redis goes away", function()
  -- retry: --redis-retry seconds; the server is gone for good, so the
  -- instance tries that long, then every wait fails with closed
  for _, retry in ipairs({ 0, 1 }) do
    it(("pending waits fail with closed after --redis-retry %g, the instance records a failure and exits"):format(retry), function()
      local srv = h.redis_server()
      local run = h.uniq("gone")
      local p = h.spawn({ "-c", "wait_forever", "--redis-retry", tostring(retry), CASES },
        { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(srv.port), TEST_RUN = run, TEST_PLAN = "pl" })
      local key = ("run:%s:plan:pl:case:wait_forever:states:waiting"):format(run)
      local up = h.wait_until(function() return srv.cli("GET " .. key):match("1") end, 10)
      assert.truthy(up)
      tg.sleep(0.1)
      local t0 = tg.now()
      srv.kill()
      local r = p:wait(10)
      assert.truthy(r, "tgrun did not exit after Redis died")
      local took = tg.now() - t0
      assert.is_true(took >= retry * 0.9 and took < retry + 3, ("exited %.2f s after the kill"):format(took))
      assert.equal(1, r.code)
      local f = h.events_of(h.json_lines(r.stdout), "failure_event")
      assert.equal(1, #f)
      assert.matches("barrier 'never%-b': lost the connection to Redis at 127.0.0.1:" .. srv.port, f[1].error)
      if retry > 0 then assert.matches("could not reconnect within 1 s", f[1].error) end
      assert.matches("0 of 5 had entered", f[1].error)
    end)
  end
end)
