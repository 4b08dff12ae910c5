-- snippets_spec.lua -- the choreography snippets tg.phases, tg.rounds,
-- tg.exchange and tg.broadcast: in-process (tasks of this instance acting as
-- participants through opts.seq / opts.count) and in real local runs
-- (tgrun -n 4 with its own Redis, plans/snippets.lua); and plans that
-- require snippets of their own from the plan's folder and from TG_LUA_PATH.
--
-- In-process waits with several participants pass tolerate_failures: the
-- barriers' peer_failed check counts the spec run's single instance, so once
-- any death is announced in this run (another spec may cause one) a target
-- above 1 would look impossible.  The snippets' own failure records do not
-- depend on that check; they are what these tests exercise.
local tg = require "tg"
local core = require "tg.core"
local redis = require "tg.redis"
local phases = require "tg.phases"
local rounds = require "tg.rounds"
local exchange = require "tg.exchange"
local broadcast = require "tg.broadcast"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/snippets.lua"

-- Run fn(i) in n tasks at once; returns {{ok, result-or-error}, ...} in i order.
local function each(n, fn)
  local ts = {}
  for i = 1, n do ts[i] = tg.spawn(fn, i) end
  local out = {}
  for i = 1, n do out[i] = table.pack(pcall(ts[i].join, ts[i], { timeout = 30 })) end
  return out
end

local function assert_ok(results)
  for i, r in ipairs(results) do
    assert(r[1], ("participant %d failed: %s"):format(i, tostring(r[2])))
  end
end

local function assert_invalid(fn, pattern)
  local t0 = tg.now()
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an invalid-argument error")
  assert.is_true(core.is_error(err), "not an error value: " .. tostring(err))
  assert.equal("invalid", err.code, tostring(err))
  if pattern then assert.matches(pattern, err.message) end
  assert.is_true(tg.now() - t0 < 0.5, "an argument check waited")
end

local function noop() end

describe("tg.phases in-process", function()
  it("runs phases in lockstep: no participant starts a phase before all finished the last", function()
    local prefix, trace = h.uniq("ph"), {}
    local res = each(4, function(i)
      return phases.run({
        { "setup", function() tg.sleep(0.02 * i); trace[#trace + 1] = "setup" end },
        { "load", function(name, k) trace[#trace + 1] = name; return k end },
        { "verify", function() tg.sleep(0.01 * (5 - i)); trace[#trace + 1] = "verify"; return i end },
      }, { count = 4, seq = i, prefix = prefix, timeout = 10, tolerate_failures = true })
    end)
    assert_ok(res)
    local expect = {}
    for _, p in ipairs({ "setup", "load", "verify" }) do
      for _ = 1, 4 do expect[#expect + 1] = p end
    end
    assert.same(expect, trace)
    for i = 1, 4 do assert.same({ setup = nil, load = 2, verify = i }, res[i][2]) end
  end)

  it("a phase that raises in one participant fails the others at their next barrier, at once", function()
    local prefix, ran_verify = h.uniq("phfail"), 0
    local t0 = tg.now()
    local res = each(4, function(i)
      return phases.run({
        { "setup", noop },
        { "load", function() if i == 2 then error("two gives up") end tg.sleep(0.1) end },
        { "verify", function() ran_verify = ran_verify + 1 end },
      }, { count = 4, seq = i, prefix = prefix, timeout = 10, tolerate_failures = true })
    end)
    assert.is_true(tg.now() - t0 < 3, "took " .. (tg.now() - t0))
    assert.equal(0, ran_verify)
    assert.is_false(res[2][1])
    assert.matches("snippets_spec.lua:%d+: two gives up$", res[2][2])   -- re-raised unchanged
    for _, i in ipairs({ 1, 3, 4 }) do
      local ok, err = res[i][1], res[i][2]
      assert.is_false(ok)
      assert.equal("peer_failed", err.code, tostring(err))
      assert.matches(("[barie ]*'%s:load' cannot complete: instance 2 of the run failed in 'load': .*two gives up")
        :format(prefix:gsub("%-", "%%-")), err.message)
    end
  end)

  it("without fail_fast the others wait for their own bound", function()
    local prefix = h.uniq("phslow")
    local t0 = tg.now()
    local res = each(3, function(i)
      return phases.run({ { "only", function() if i == 1 then error("one gives up") end end } },
        { count = 3, seq = i, prefix = prefix, timeout = 0.4, tolerate_failures = true, fail_fast = false })
    end)
    for i = 2, 3 do
      assert.equal("timeout", res[i][2].code)
      assert.matches("timed out after 0.4 s: 2 of 3 entered", res[i][2].message)
    end
    assert.is_true(tg.now() - t0 < 3)
  end)

  it("bounds every barrier wait by opts.timeout", function()
    local prefix = h.uniq("phto")
    local t0 = tg.now()
    local ok, err = pcall(phases.run, { { "alone", noop } },
      { count = 2, seq = 1, prefix = prefix, timeout = 0.3, tolerate_failures = true })
    local took = tg.now() - t0
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    assert.equal(("barrier '%s:alone' timed out after 0.3 s: 1 of 2 entered"):format(prefix), err.message)
    assert.is_true(took >= 0.29 and took < 2, "took " .. took)
  end)

  it("a cancelled phases.run ends with cancelled and leaves no task behind", function()
    tg.sleep(0.05)   -- let tasks of earlier tests finish ending
    local before = core.stats().tasks
    local t = tg.spawn(phases.run, { { "x", noop } },
      { count = 2, seq = 1, prefix = h.uniq("phcancel"), timeout = 10, tolerate_failures = true })
    tg.sleep(0.1)
    t:cancel()
    local ok, err = pcall(t.join, t, { timeout = 5 })
    assert.is_false(ok)
    assert.equal("cancelled", err.code)
    assert.truthy(h.wait_until(function() return core.stats().tasks == before end, 2),
      ("tasks: %d before, %d after"):format(before, core.stats().tasks))
  end)

  it("refuses to run a phase twice under one prefix, and allows it under another", function()
    local prefix = h.uniq("phtwice")
    phases.run({ { "a", noop } }, { count = 1, seq = 1, prefix = prefix })
    assert_invalid(function() phases.run({ { "a", noop } }, { count = 1, seq = 1, prefix = prefix }) end,
      "already used by this instance; pass another opts%.prefix")
    phases.run({ { "a", noop } }, { count = 1, seq = 1, prefix = prefix .. "-again" })
  end)

  it("with opts.group names the states after the group", function()
    local prefix = h.uniq("phg")
    local gid = core.config().group_id
    phases.run({ { "g", noop } }, { group = true, count = 1, seq = 1, prefix = prefix })
    local n = redis.call({ "GET", require("tg.keys").state(prefix .. ":" .. gid .. ":g") })
    assert.equal("1", n)
  end)

  it("checks its arguments at once with code invalid", function()
    local cases = {
      { nil, nil, "phases must be a list" },
      { { { "a" } }, nil, "the phase must be a function" },
      { { { "", noop } }, nil, "the name must be a non%-empty string" },
      { { "a" }, nil, "entry 1 must be a {name, function} table" },
      { { { "a", noop }, { "a", noop } }, nil, "'a' appears twice" },
      { { { "a", noop } }, 5, "options must be a table" },
      { { { "a", noop } }, { timout = 1 }, "unknown option \"timout\"" },
      { { { "a", noop } }, { timeout = -1 }, "timeout must be" },
      { { { "a", noop } }, { group = "yes" }, "opts.group must be true or false" },
      { { { "a", noop } }, { count = 0 }, "opts.count must be a whole number >= 1" },
      { { { "a", noop } }, { count = 4, seq = 5 }, "seq 5 is out of range 1..4" },
      { { { "a", noop } }, { prefix = "" }, "opts.prefix must be a non%-empty string" },
      { { { "a", noop } }, { fail_fast = 1 }, "opts.fail_fast must be true or false" },
    }
    for _, c in ipairs(cases) do
      assert_invalid(function() phases.run(c[1], c[2]) end, "^phases%.run: .*" .. c[3])
    end
  end)
end)

describe("tg.rounds in-process", function()
  it("runs n rounds in lockstep and returns each round's result", function()
    local prefix, trace = h.uniq("rd"), {}
    local res = each(3, function(i)
      return rounds.run(4, function(r)
        tg.sleep(0.01 * ((i + r) % 3))
        trace[#trace + 1] = r
        return r * 10 + i
      end, { count = 3, seq = i, prefix = prefix, timeout = 10, tolerate_failures = true })
    end)
    assert_ok(res)
    assert.same({ 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4 }, trace)
    for i = 1, 3 do assert.same({ 10 + i, 20 + i, 30 + i, 40 + i }, res[i][2]) end
  end)

  it("runs nothing for n = 0", function()
    assert.same({}, rounds.run(0, function() error("no round") end, { count = 1, seq = 1, prefix = h.uniq("r0") }))
  end)

  it("a round that raises fails the others with peer_failed naming the round", function()
    local prefix = h.uniq("rdfail")
    local res = each(3, function(i)
      return rounds.run(5, function(r) if i == 3 and r == 2 then error("bad round") end end,
        { count = 3, seq = i, prefix = prefix, timeout = 10, tolerate_failures = true })
    end)
    for i = 1, 2 do
      assert.equal("peer_failed", res[i][2].code)
      -- the record may arrive before the round began (then the round, not
      -- yet its barrier, cannot complete) or while its barrier waits
      assert.matches("^rounds%.run: [barie ]*'.*:2' cannot complete: instance 3 of the run failed in '2'",
        res[i][2].message)
    end
  end)

  it("checks its arguments at once with code invalid", function()
    assert_invalid(function() rounds.run(-1, noop) end, "^rounds%.run: n must be a whole number >= 0")
    assert_invalid(function() rounds.run(1.5, noop) end, "^rounds%.run: n must be")
    assert_invalid(function() rounds.run(2) end, "^rounds%.run: fn must be a function, got nothing")
    assert_invalid(function() rounds.run(2, noop, { bogus = 1 }) end, "^rounds%.run: unknown option")
  end)
end)

describe("tg.exchange in-process", function()
  it("gives every participant every value, in one order, and a map by seq", function()
    local topic = h.uniq("ex")
    local res = each(5, function(i)
      tg.sleep(0.01 * (5 - i))
      return table.pack(exchange.all(topic, { from = i, pad = ("x"):rep(i) },
        { count = 5, seq = i, timeout = 10, tolerate_failures = true }))
    end)
    assert_ok(res)
    local first = res[1][2][1]
    assert.equal(5, #first)
    assert.same({ 5, 4, 3, 2, 1 }, { first[1].from, first[2].from, first[3].from, first[4].from, first[5].from })
    for i = 1, 5 do
      local values, by_seq = res[i][2][1], res[i][2][2]
      assert.same(first, values)
      for s = 1, 5 do assert.same({ from = s, pad = ("x"):rep(s) }, by_seq[s]) end
    end
  end)

  it("times out, bounded by opts.timeout, when a participant never contributes", function()
    local topic = h.uniq("exshort")
    local t0 = tg.now()
    local res = each(2, function(i)
      return exchange.all(topic, i, { count = 3, seq = i, timeout = 0.3, tolerate_failures = true })
    end)
    for i = 1, 2 do
      assert.equal("timeout", res[i][2].code)
      assert.equal(("exchange.all('%s'): barrier 'exchange:%s' timed out after 0.3 s: 2 of 3 entered")
        :format(topic, topic), res[i][2].message)
    end
    assert.is_true(tg.now() - t0 < 2)
  end)

  it("with opts.group keeps the group's values on a topic of its own", function()
    local topic = h.uniq("exg")
    local values, by_seq = exchange.all(topic, "mine", { group = true, count = 1, seq = 1 })
    assert.same({ "mine" }, values)
    assert.same({ "mine" }, by_seq)
    local len = redis.call({ "XLEN", require("tg.keys").topic("exchange:" .. core.config().group_id .. ":" .. topic) })
    assert.equal(1, len)
  end)

  it("checks its arguments at once with code invalid", function()
    local t = h.uniq("exbad")
    assert_invalid(function() exchange.all("", 1) end, "^exchange%.all: topic must be a non%-empty string")
    assert_invalid(function() exchange.all(7, 1) end, "topic must be a non%-empty string, got a number")
    assert_invalid(function() exchange.all(t, nil) end, "value must not be nil")
    assert_invalid(function() exchange.all(t .. "f", function() end) end, "cannot be sent as JSON")
    assert_invalid(function() exchange.all(t, 1, { timeout = "soon" }) end, "timeout must be")
    assert_invalid(function() exchange.all(t, 1, { leader = 1 }) end, "unknown option \"leader\"")
    assert_invalid(function() exchange.all(t, 1, { count = 2, seq = 3 }) end, "seq 3 is out of range 1..2")
  end)

  it("refuses a topic this instance already exchanged on", function()
    local t = h.uniq("extwice")
    exchange.all(t, 1, { count = 1, seq = 1 })
    assert_invalid(function() exchange.all(t, 1, { count = 1, seq = 1 }) end,
      "already used by this instance; use a new topic name")
  end)
end)

describe("tg.broadcast in-process", function()
  it("the leader computes once and everybody gets the same value", function()
    local topic, calls = h.uniq("bc"), 0
    local res = each(4, function(i)
      -- followers 1 and 2 wait before the value is published, follower 4 comes after
      if i == 3 then tg.sleep(0.05) elseif i == 4 then tg.sleep(0.15) end
      return table.pack(broadcast.from_leader(topic, function()
        calls = calls + 1
        return { leader = i, list = { 1, 2, 3 } }
      end, { count = 4, seq = i, leader = 3, timeout = 10 }))
    end)
    assert_ok(res)
    assert.equal(1, calls)
    for i = 1, 4 do
      assert.same({ leader = 3, list = { 1, 2, 3 } }, res[i][2][1])
      assert.equal(3, res[i][2][2])
    end
  end)

  it("a nil value reaches everybody as nil", function()
    local topic = h.uniq("bcnil")
    local res = each(2, function(i)
      return table.pack(broadcast.from_leader(topic, function() return nil end, { count = 2, seq = i, timeout = 5 }))
    end)
    assert_ok(res)
    for i = 1, 2 do
      assert.is_nil(res[i][2][1])
      assert.equal(1, res[i][2][2])
    end
  end)

  it("a leader that raises fails the others with peer_failed, at once", function()
    local topic = h.uniq("bcfail")
    local t0 = tg.now()
    local res = each(3, function(i)
      return broadcast.from_leader(topic, function() error("cannot compute") end, { count = 3, seq = i, timeout = 10 })
    end)
    assert.matches("cannot compute$", res[1][2])
    for i = 2, 3 do
      assert.equal("peer_failed", res[i][2].code)
      assert.matches(("broadcast%%.from_leader%%('%s'%%): the leader %%(seq 1 of the run%%) failed: .*cannot compute")
        :format(topic:gsub("%-", "%%-")), res[i][2].message)
    end
    assert.is_true(tg.now() - t0 < 3)
  end)

  it("a value that is not JSON fails the leader with invalid and the others with peer_failed", function()
    local topic = h.uniq("bcjson")
    local res = each(2, function(i)
      return broadcast.from_leader(topic, function() return { f = print } end, { count = 2, seq = i, timeout = 10 })
    end)
    assert.equal("invalid", res[1][2].code)
    assert.matches("the leader's value cannot be sent as JSON: .*function", res[1][2].message)
    assert.equal("peer_failed", res[2][2].code)
  end)

  it("a follower gives up after opts.timeout, naming the leader", function()
    local topic = h.uniq("bcnone")
    local ok, err = pcall(broadcast.from_leader, topic, noop, { count = 2, seq = 2, timeout = 0.2 })
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    assert.equal(("broadcast.from_leader('%s'): no value from the leader (seq 1 of the run) after 0.2 s"):format(topic),
      err.message)
  end)

  it("checks its arguments at once with code invalid", function()
    local t = h.uniq("bcbad")
    assert_invalid(function() broadcast.from_leader("", noop) end, "^broadcast%.from_leader: topic must be")
    assert_invalid(function() broadcast.from_leader(t, nil) end, "fn must be a function that computes the value, got nothing")
    assert_invalid(function() broadcast.from_leader(t, 5) end, "got 5")
    assert_invalid(function() broadcast.from_leader(t, noop, { leader = 0 }) end, "opts%.leader must be a whole number >= 1")
    assert_invalid(function() broadcast.from_leader(t, noop, { count = 4, leader = 5 }) end, "opts%.leader 5 is out of range 1..4")
    assert_invalid(function() broadcast.from_leader(t, noop, { tolerate_failures = true }) end, "unknown option")
  end)
end)

-- Real runs: tgrun -n 4 (or groups) starting its own Redis.
local function run(case, args, env)
  local a = { "--timeout", "60", "-c", case, "--outputs", h.tmpdir() }
  for _, x in ipairs(args or { "-n", "4" }) do a[#a + 1] = x end
  a[#a + 1] = PLAN
  local e = { REDIS_HOST = "", REDIS_PORT = "" }
  for k, v in pairs(env or {}) do e[k] = v end
  return h.run(a, e)
end

local function count(s, pat)
  return select(2, s:gsub(pat, ""))
end

describe("snippets in real runs (tgrun -n 4)", function()
  it("phases run in lockstep across processes", function()
    local r = run("phases_ok")
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(4, count(r.stdout, "phases ok %d"))
    assert.equal(4, count(r.stdout, "stage end phase:verify"))
  end)

  it("group phases: each group in lockstep on its own, not waiting for the other", function()
    local r = run("phases_group", { "-g", "fast=2", "-g", "slow=2" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(2, count(r.stdout, "fast group finished before the slow one started"))
  end)

  it("a phase failing in one instance fails the others fast with peer_failed", function()
    for _, args in ipairs({ { "-n", "4" }, { "-n", "4", "-p", "group=true" } }) do
      local r = run("phases_fail", args)
      assert.equal(1, r.code, r.stdout .. r.stderr)
      assert.is_true(r.secs < 10, "took " .. r.secs)
      assert.matches("4 instances, 0 succeeded, 4 failed", r.stdout)
      assert.equal(1, count(r.stdout, "%] failed: /[^\n]*snippets%.lua:%d+: instance two gives up\n"))
      -- whichever comes first: phases' own failure record, or the barrier's
      -- peer_failed (the failed instance declared itself dead)
      -- (the instance is named by global_seq, or by group_seq with group=true:
      -- the two arrival orders need not agree)
      -- (phases' record may also arrive before the instance began 'load':
      -- then the phase, not yet its barrier, is what cannot complete)
      local by_phases = count(r.stdout, "failed: phases%.run: [barie ]*'phase:[%w:]*load' cannot complete: instance %d+ of "
        .. "[^\n]* failed in 'load': [^\n]*instance two gives up")
      local by_barrier = count(r.stdout, "failed: barrier 'phase:[%w:]*load' can no longer complete: instance %d+ failed or died")
      assert.equal(3, by_phases + by_barrier, r.stdout)
      assert.not_matches("verify must not run", r.stdout)
    end
  end)

  it("a failure in one group's phase fails that group only", function()
    local r = run("phases_group_fail", { "-g", "a=2", "-g", "b=2" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("group a: 2 succeeded, 0 failed", r.stdout)
    assert.matches("group b: 0 succeeded, 2 failed", r.stdout)
    assert.matches("b%[%d%] failed: phases%.run: barrier 'phase:b:one' cannot complete: instance 2 of group 'b'",
      r.stdout)
    assert.is_true(r.secs < 10, "took " .. r.secs)
  end)

  it("a barrier wait ends at opts.timeout", function()
    local r = run("phases_timeout")
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("4 instances, 1 succeeded, 3 failed", r.stdout)
    assert.equal(3, count(r.stdout, "failed: barrier 'phase:slow' timed out after 0%.5 s: 3 of 4 entered"))
  end)

  it("exchange.all: everybody gets all values in the same order, per run and per group", function()
    local r = run("exchange_ok", { "-g", "x=2", "-g", "y=2" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(4, count(r.stdout, "exchange ok [%d,]+"))
  end)

  it("exchange.all fails fast when an instance dies before contributing", function()
    local r = run("exchange_fail")
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_true(r.secs < 10, "took " .. r.secs)
    assert.equal(3, count(r.stdout, "failed: exchange%.all%('never%-complete'%): barrier 'exchange:never%-complete' "
      .. "can no longer complete"))
  end)

  it("broadcast.from_leader: one value for all, per run and per group", function()
    local r = run("broadcast_ok", { "-g", "x=1", "-g", "y=3" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(1, count(r.stdout, "broadcast ok %x+ x:%d\n"))
    local y = r.stdout:match("broadcast ok %x+ (y:%d)")
    assert.truthy(y, r.stdout)
    assert.equal(3, count(r.stdout, "broadcast ok %x+ " .. y))
  end)

  it("broadcast.from_leader: a failing leader fails the others with its error", function()
    local r = run("broadcast_fail")
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.equal(3, count(r.stdout, "failed: broadcast%.from_leader%('doomed'%): the leader %(seq 1 of the run%) "
      .. "failed: [^\n]*the leader cannot compute"))
  end)

  it("rounds run in lockstep across processes", function()
    local r = run("rounds_ok", { "-n", "4", "-p", "rounds=8" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(4, count(r.stdout, "rounds ok 8"))
  end)

  it("runs the same plan with --inproc", function()
    local r = run("rounds_ok", { "-n", "4", "--inproc" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(4, count(r.stdout, "rounds ok 5"))
  end)
end)

describe("a plan's own snippets", function()
  -- plan dir: plan.lua and lockstep.lua (built on tg.phases); two shared
  -- dirs on TG_LUA_PATH: kit/init.lua and teamsync.lua (built on tg.exchange)
  local function layout()
    local plan_dir, shared1, shared2 = h.tmpdir(), h.tmpdir(), h.tmpdir()
    h.write(plan_dir .. "/lockstep.lua", [[
local phases = require "tg.phases"
return { run = function(list) return phases.run(list, { timeout = 20 }) end }
]])
    os.execute("mkdir -p " .. h.shq(shared1 .. "/kit"))
    h.write(shared1 .. "/kit/init.lua", [[return { name = "kit from TG_LUA_PATH" }]])
    h.write(shared2 .. "/teamsync.lua", [[
local exchange = require "tg.exchange"
return { everyone = function(v) return exchange.all("team", v, { timeout = 20 }) end }
]])
    h.write(plan_dir .. "/plan.lua", [[
local lockstep = require "lockstep"
local teamsync = require "teamsync"
local kit = require "kit"
local log = require "tg.log"
return function(env)
  local all
  lockstep.run({ { "meet", function() all = teamsync.everyone(env.global_seq) end } })
  assert(#all == env.instance_count)
  log.info("%s; %d peers", kit.name, #all)
end
]])
    return plan_dir, shared1 .. ":" .. shared2
  end

  it("requires snippets from the plan's folder and from every TG_LUA_PATH folder", function()
    local plan_dir, path = layout()
    local r = h.run({ "-n", "3", "--outputs", h.tmpdir(), plan_dir .. "/plan.lua" },
      { REDIS_HOST = "", REDIS_PORT = "", TG_LUA_PATH = path })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(3, count(r.stdout, "kit from TG_LUA_PATH; 3 peers"))
  end)

  it("without TG_LUA_PATH the shared snippet is not found: exit 2 naming it", function()
    local plan_dir = layout()
    local r = h.run({ "-n", "3", "--outputs", h.tmpdir(), plan_dir .. "/plan.lua" },
      { REDIS_HOST = "", REDIS_PORT = "", TG_LUA_PATH = "" })
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("module 'teamsync' not found", r.stderr)
  end)
end)
