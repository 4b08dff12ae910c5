-- svc_spec.lua -- tgrun's sync-service client against a real `tgrun serve`:
-- runs of real processes (and of one process with --inproc) that meet at
-- barriers and read topics through it, with and without Redis beside it,
-- together with instances that talk to Redis directly; timeouts that say
-- how far a barrier got; the socket dropped mid-wait; what the service
-- does not have; outcome events; start-up errors.
local h = require "helpers"
local W = require "ws_helpers"
local redis = require "tg.redis"

after_each(h.check_clean)

local plan = h.src .. "/tests/lua/plans/svc.lua"
local no_redis = { unset = { "REDIS_HOST", "REDIS_PORT" } }

-- The outcome events of run `id` (plan svc) as the harness's Redis holds them.
local function run_events(id, case)
  local out = {}
  local key = ("run:%s:plan:svc:case:%s:run_events"):format(id, case)
  for _, e in ipairs(redis.call({ "XRANGE", key, "-", "+" })) do
    out[#out + 1] = require("tg.json").decode(e[2][2])
  end
  return out
end

local function count(events, kind)
  local n = 0
  for _, e in ipairs(events) do if e[kind] then n = n + 1 end end
  return n
end

-- The body of the first event of that kind (stage events come first).
local function first_of(events, kind)
  for _, e in ipairs(events) do if e[kind] then return e[kind] end end
end

describe("tgrun through a sync service", function()
  local srv
  before_each(function() srv = W.serve() end)
  after_each(function() if srv then srv.stop() end srv = nil end)

  it("runs instances that meet at barriers and read each other's values, without Redis", function()
    local id = h.uniq("meet")
    local r = h.run({ "-n", "4", "--sync", srv.url, "--run-id", id, "-c", "meet", plan }, nil, no_redis)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("4 succeeded, 0 failed", r.stdout .. r.stderr)
    -- the outcomes went to run_events through the service, as Testground's SDKs send them
    local ev = run_events(id, "meet")
    assert.equal(4, count(ev, "success_event"))
    assert.same({ group = "single" }, first_of(ev, "success_event"))
    -- and the network-initialized stage of each, as sdk-go signals it
    assert.equal(4, count(ev, "stage_start_event"))
    assert.same({ group = "single", name = "network-initialized" }, first_of(ev, "stage_end_event"))
  end)

  it("shares one websocket among all instances of an --inproc run", function()
    local r = h.run({ "-n", "300", "--inproc", "--sync", srv.url, "-c", "one_socket", "-p", "port=" .. srv.port,
      plan }, nil, no_redis)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("300 succeeded, 0 failed", r.stdout .. r.stderr)
  end)

  it("meets instances that talk to Redis directly at the same barriers and topics", function()
    local id = h.uniq("mixed")
    local common = { "--run-id", id, "-c", "meet", "-p", "total=6", "--timeout", "60" }
    local a_args = { "-n", "3", "--sync", srv.url, "-p", "who=svc" }
    local b_args = { "-n", "3", "--redis", "redis://127.0.0.1:" .. h.redis_port, "-p", "who=redis" }
    for _, x in ipairs(common) do a_args[#a_args + 1] = x; b_args[#b_args + 1] = x end
    a_args[#a_args + 1] = plan
    b_args[#b_args + 1] = plan
    local a = h.spawn(a_args, nil, no_redis)
    local b = h.run(b_args)
    local ra = assert(a:wait(60))
    assert.equal(0, b.code, b.stdout .. b.stderr)
    assert.equal(0, ra.code, ra.stdout .. ra.stderr)
    assert.equal(6, count(run_events(id, "meet"), "success_event"))
  end)

  it("says how many entered when a barrier times out", function()
    local r = h.run({ "-n", "2", "--sync", srv.url, "-c", "late", plan }, nil, no_redis)
    assert.equal(1, r.code)
    assert.matches("barrier 'late' timed out after 1 s: 2 of 3 entered", r.stdout .. r.stderr)
  end)

  it("fails a wait with 'closed' and one message when the socket drops", function()
    local p = h.spawn({ "--sync", srv.url, "-c", "wait_forever", plan }, { TEST_INSTANCE_COUNT = "1" }, no_redis)
    assert.truthy(h.wait_until(function() return (h.read(p.dir .. "/out") or ""):match("waiting") end, 10))
    require("tg").sleep(0.2)
    srv.stop("KILL")
    srv = nil
    local r = assert(p:wait(10))
    assert.equal(1, r.code)
    local fails = h.events_of(h.json_lines(r.stdout), "failure_event")
    assert.equal(1, #fails)
    assert.matches("^barrier 'stuck': lost the sync service at ws://127%.0%.0%.1:%d+ %(1006", fails[1].error)
    assert.matches("could not record the outcome in run_events", r.stderr)
  end)

  it("fails what the service does not have with 'unsupported', naming what to set", function()
    local r = h.run({ "-n", "1", "--sync", srv.url, "-c", "unsupported", plan }, nil, no_redis)
    assert.equal(0, r.code, r.stdout .. r.stderr)
  end)

  it("takes locks and counters from Redis when Redis is given as well", function()
    local r = h.run({ "-n", "2", "--sync", srv.url, "--redis", "redis://127.0.0.1:" .. h.redis_port, "-c", "both",
      plan })
    assert.equal(0, r.code, r.stdout .. r.stderr)
  end)

  it("serves subscriptions: replay, several readers, close, publish_subscribe", function()
    local r = h.run({ "-n", "1", "--sync", srv.url, "-c", "subs", plan }, nil, no_redis)
    assert.equal(0, r.code, r.stdout .. r.stderr)
  end)

  it("records failures in run_events too", function()
    local id = h.uniq("fail")
    local r = h.run({ "-n", "2", "--sync", srv.url, "--run-id", id, "-c", "fail", plan }, nil, no_redis)
    assert.equal(1, r.code)
    local ev = run_events(id, "fail")
    assert.equal(2, count(ev, "failure_event"))
    assert.matches("deliberate failure", first_of(ev, "failure_event").error)
  end)

  it("reads SYNC_SERVICE_HOST and SYNC_SERVICE_PORT as Testground's runners set them", function()
    local r = h.run({ "-c", "subs", plan }, { SYNC_SERVICE_HOST = "127.0.0.1", SYNC_SERVICE_PORT = tostring(srv.port),
      TEST_INSTANCE_COUNT = "1" }, no_redis)
    assert.equal(0, r.code, r.stdout .. r.stderr)
  end)
end)

describe("tgrun's sync-service start-up errors", function()
  it("are one line and exit 2", function()
    for _, case in ipairs({
      { { "--sync", "ws://127.0.0.1:1", plan }, {}, "^tgrun: cannot reach the sync service at ws://127%.0%.0%.1:1: .*refused.*tgrun serve" },
      { { "--sync", "http://x", plan }, {}, 'is not a sync service address: use ws://HOST:PORT' },
      { { plan }, { SYNC_SERVICE_HOST = "127.0.0.1", SYNC_SERVICE_PORT = "abc" }, "SYNC_SERVICE_PORT is not a port number" },
      { { "-n", "2", "--sync", "ws://127.0.0.1:1", plan }, {}, "cannot reach the sync service" },
    }) do
      local args = { "-c", "subs" }
      for _, a in ipairs(case[1]) do args[#args + 1] = a end
      local r = h.run(args, case[2], no_redis)
      assert.equal(2, r.code, r.stderr)
      assert.matches(case[3], r.stderr)
      local _, lines = r.stderr:gsub("\n", "")
      assert.equal(1, lines, r.stderr)
    end
  end)
end)
