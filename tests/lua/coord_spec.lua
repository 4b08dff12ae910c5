-- coord_spec.lua -- further coordination (API.md section 5): mutex,
-- semaphore, election, double barrier, counter, queue, and the liveness of
-- barriers (peer_failed), against the harness's redis-server and real tgrun
-- processes.
--
-- Children that share the spec's own run (same TEST_RUN/PLAN/CASE) contend
-- with the spec's tasks for the same locks; they always end cleanly, because
-- a death in this run would make every later barrier of the spec process
-- check feasibility.  Children that are killed or fail run in runs of their
-- own, with TG_SESSION_TTL=1.
local tg = require "tg"
local sync = require "tg.sync"
local core = require "tg.core"
local redis = require "tg.redis"
local keys = require "tg.keys"
local json = require "tg.json"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/coord.lua"
local TTL = 1              -- TG_SESSION_TTL of the children whose death is tested
local BEAT = TTL / 3       -- their heartbeat period

local function call(...) return redis.call({ ... }, 10, "spec " .. tostring((...))) end

local function env_with(base, extra)
  local e = { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port) }
  for k, v in pairs(base) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- a child in the spec's own run
local function host_env(extra)
  local cfg = core.config()
  return env_with({ TEST_RUN = cfg.run_id, TEST_PLAN = cfg.plan, TEST_CASE = cfg.case }, extra)
end

-- a run of its own: {id =, P = key prefix, env(extra) -> child env}
local function new_run(instances)
  local id = h.uniq("coordrun")
  return {
    id = id,
    P = ("run:%s:plan:coord:case:coord"):format(id),
    env = function(extra)
      return env_with({ TEST_RUN = id, TEST_PLAN = "coord", TEST_CASE = "coord",
        TEST_INSTANCE_COUNT = tostring(instances), TG_SESSION_TTL = tostring(TTL) }, extra)
    end,
  }
end

-- start a child of the plan with role and params {k = v}
local function child(role, params, env)
  local args = { "--timeout", "60", "-p", "role=" .. role }
  local names = {}
  for n in pairs(params) do names[#names + 1] = n end
  table.sort(names)
  for _, n in ipairs(names) do
    args[#args + 1] = "-p"
    args[#args + 1] = n .. "=" .. tostring(params[n])
  end
  args[#args + 1] = PLAN
  return h.spawn(args, env)
end

local function finish(p, want, timeout)
  local r, why = p:wait(timeout or 30)
  assert.truthy(r, "child did not exit: " .. tostring(why))
  if want then assert.equal(want, r.code, r.stdout .. r.stderr) end
  return r
end

-- poll fn for at most `bound` s; the failure message names the bound
local function wait_for(what, fn, bound)
  local v = h.wait_until(fn, bound)
  assert.truthy(v, ("%s: not within %g s"):format(what, bound))
  return v
end

local function kill9(pid)
  assert.truthy(tonumber(pid), "no pid to kill")
  os.execute("kill -9 " .. math.tointeger(tonumber(pid)) .. " 2>/dev/null")
end

-- list of numbers, strictly increasing?
local function increasing(list)
  for i = 2, #list do
    if tonumber(list[i]) <= tonumber(list[i - 1]) then
      return false, ("token %s after %s at position %d"):format(list[i], list[i - 1], i)
    end
  end
  return true
end

-- the spec's copy of the plan's critical section
local function critical(k, token)
  if call("INCR", k .. ":inside") > 1 then call("INCR", k .. ":overlap") end
  call("RPUSH", k .. ":tokens", token)
  local v = tonumber(call("GET", k .. ":value") or "0")
  tg.sleep(0.002)
  call("SET", k .. ":value", v + 1)
  call("DECR", k .. ":inside")
end

-- tgrun's own keys of a run (P:tg:*) that would stay in Redis forever
local function keys_without_ttl(P)
  local out, cursor = {}, "0"
  repeat
    local r = call("SCAN", cursor, "MATCH", P .. ":tg:*", "COUNT", 1000)
    cursor = r[1]
    for _, key in ipairs(r[2]) do
      if call("TTL", key) == -1 then out[#out + 1] = key:sub(#P + 2) end
    end
  until cursor == "0"
  table.sort(out)
  return out
end

local function expect_error(code, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error with code " .. code)
  assert.is_table(err, tostring(err))
  assert.equal(code, err.code, err.message)
  return err
end

describe("sync.mutex", function()
  it("excludes tasks and processes: a read-sleep-write counter ends exact, tokens grow", function()
    local name, k, go = h.uniq("mx"), "coordtest:" .. h.uniq("mx"), h.uniq("go")
    local PROCS, TASKS, ROUNDS = 3, 6, 4
    local ps = {}
    for i = 1, PROCS do
      ps[i] = child("mutex_incr", { k = k, name = name, go = go, tasks = TASKS, rounds = ROUNDS }, host_env())
    end
    sync.barrier(go .. ":ready", PROCS, { timeout = 15 })
    local ts = {}
    for i = 1, TASKS do
      ts[i] = tg.spawn(function()
        local m = sync.mutex(name)
        for _ = 1, ROUNDS do
          m:with(function(token) critical(k, token) end)
        end
      end)
    end
    local t0 = tg.now()
    sync.signal_entry(go)
    for _, t in ipairs(ts) do t:join({ timeout = 30 }) end
    for _, p in ipairs(ps) do finish(p, 0) end
    local total = (PROCS + 1) * TASKS * ROUNDS
    print(("\n  mutex: %d increments by %d tasks in %d processes in %.2f s"):format(total,
      (PROCS + 1) * TASKS, PROCS + 1, tg.now() - t0))
    assert.equal(tostring(total), call("GET", k .. ":value"))
    assert.is_nil(call("GET", k .. ":overlap"), "two holders at once")
    local tokens = call("LRANGE", k .. ":tokens", 0, -1)
    assert.equal(total, #tokens)
    assert.is_true(increasing(tokens))
  end)

  it("unlock of a lock not held is code invalid; m:with unlocks on error too", function()
    local name = h.uniq("mxu")
    local m, other = sync.mutex(name), sync.mutex(name)
    expect_error("invalid", m.unlock, m)
    local t1 = m:lock({ timeout = 2 })
    expect_error("invalid", other.unlock, other)     -- another handle does not hold it
    expect_error("invalid", m.lock, m)               -- nor can one handle lock twice
    m:unlock()
    expect_error("invalid", m.unlock, m)             -- no longer held
    local ok, err = pcall(m.with, m, function(token)
      assert.is_true(token > t1)
      error("inside the lock", 0)
    end)
    assert.is_false(ok)
    assert.equal("inside the lock", err)             -- the error passes through unchanged
    local t0 = tg.now()
    local t2 = other:lock({ timeout = 1 })           -- and the lock is free again
    assert.is_true(tg.now() - t0 < 0.5, "lock after a failed with() took longer than 0.5 s")
    other:unlock()
    assert.same({ "a", 2 }, { m:with(function(_, x) return "a", x end, 2) })
    assert.is_true(t2 > t1)
    expect_error("invalid", sync.mutex, name, { lease = 0 })
    expect_error("invalid", sync.mutex, "")
  end)

  it("a lock wait times out with code timeout and leaves nothing behind", function()
    local name = h.uniq("mxt")
    local m, other = sync.mutex(name), sync.mutex(name)
    m:lock({ timeout = 2 })
    local t0 = tg.now()
    local err = expect_error("timeout", other.lock, other, { timeout = 0.2 })
    assert.is_true(tg.now() - t0 < 1, "timeout 0.2 s took more than 1 s")
    assert.truthy(err.message:find("mutex '" .. name .. "' timed out after 0.2 s", 1, true), err.message)
    m:unlock()
    -- the waiter that gave up is not granted the lock: a new one gets it at once
    t0 = tg.now()
    other:lock({ timeout = 1 })
    assert.is_true(tg.now() - t0 < 0.5, "free lock took longer than 0.5 s")
    other:unlock()
  end)

  it("a cancelled lock wait leaves the queue; a lease ends a live holder's lock too", function()
    local name = h.uniq("mxc")
    local m, other = sync.mutex(name), sync.mutex(name)
    m:lock({ timeout = 1 })
    local t = tg.spawn(function() return other:lock({ timeout = 10 }) end)
    tg.sleep(0.05)
    t:cancel()
    expect_error("cancelled", t.join, t)
    m:unlock()
    local t0 = tg.now()
    other:lock({ timeout = 1 })
    assert.is_true(tg.now() - t0 < 0.5, ("lock after a cancelled wait took %.3f s; bound 0.5 s"):format(tg.now() - t0))
    other:unlock()
    -- a lease of 0.2 s: the next waiter gets the lock while the holder still
    -- thinks it holds it; the token tells them apart, the late unlock fails
    local leased = sync.mutex(name, { lease = 0.2 })
    local t1 = leased:lock({ timeout = 1 })
    t0 = tg.now()
    local t2 = other:lock({ timeout = 5 })
    local took = tg.now() - t0
    local ttl = require("tg.session").ttl
    print(("\n  mutex: lease 0.2 s of a live holder ended after %.3f s (heartbeat every %.2f s)"):format(took, ttl / 3))
    assert.is_true(took >= 0.15 and took < 0.2 + ttl / 3 + 0.5,
      ("lease of 0.2 s ended after %.3f s; bound: lease + heartbeat %.2f s + 0.5 s"):format(took, ttl / 3))
    assert.is_true(t2 > t1)
    local err = expect_error("invalid", leased.unlock, leased)
    assert.matches("no longer held", err.message)
    other:unlock()
  end)

  it("a lock granted just as its wait timed out is given back, not kept", function()
    -- timeout 0 ends the wait before the server's answer arrives: a grant
    -- that comes back then must be released, or nobody could lock again
    local name = h.uniq("mx0")
    local m, other = sync.mutex(name), sync.mutex(name)
    for _ = 1, 5 do
      local ok, err = pcall(m.lock, m, { timeout = 0 })
      if ok then m:unlock() else assert.equal("timeout", err.code) end
    end
    local t0 = tg.now()
    local ok, err = pcall(other.lock, other, { timeout = 2 })
    assert.is_true(ok, "a lock given up with timeout 0 was kept: " .. tostring(err))
    assert.is_true(tg.now() - t0 < 0.5, ("lock took %.3f s; bound 0.5 s"):format(tg.now() - t0))
    other:unlock()
    -- the same for permits
    local s = sync.semaphore(h.uniq("sem0"), 1)
    for _ = 1, 5 do
      local ok2 = pcall(s.acquire, s, 1, { timeout = 0 })
      if ok2 then s:release() end
    end
    s:acquire(1, { timeout = 2 })
    s:release()
  end)

  it("a holder killed with SIGKILL: the next waiter is granted within the session TTL", function()
    local run = new_run(2)
    local name, k = h.uniq("mxk"), "coordtest:" .. h.uniq("mxk")
    local holder = child("lock_hold", { k = k, name = name }, run.env())
    local waiter = child("lock_wait", { k = k, name = name }, run.env())
    local held = json.decode(wait_for("holder has the lock", function() return call("GET", k .. ":holder") end, 10))
    wait_for("waiter queued", function()
      return call("LLEN", run.P .. ":tg:mutex:" .. name .. ":q") == 1 end, 10)
    tg.sleep(0.2)
    assert.is_nil(call("GET", k .. ":granted"), "granted while the holder lives")
    kill9(held.pid)
    local t0 = tg.now()
    local got = json.decode(wait_for("grant after SIGKILL",
      function() return call("GET", k .. ":granted") end, 10))
    local took = tg.now() - t0
    local bound = TTL + BEAT + 0.5
    print(("\n  mutex: next waiter granted %.3f s after SIGKILL of the holder (session TTL %g s)"):format(took, TTL))
    assert.is_true(took < bound, ("granted %.3f s after SIGKILL; bound: session TTL %g s + heartbeat %.2f s + 0.5 s"):format(took, TTL, BEAT))
    assert.is_true(got.token > held.token, "fencing token did not grow")
    finish(waiter, 0)
    finish(holder, 137)
    assert.same({}, keys_without_ttl(run.P))          -- nothing of the run stays forever
  end)

  it("a holder killed with SIGKILL: its lease frees the lock even while its session lives", function()
    local run = new_run(2)
    local name, k = h.uniq("mxl"), "coordtest:" .. h.uniq("mxl")
    local LEASE = 1
    -- the holder's session outlives the test: only the lease can free the lock
    local holder = child("lock_hold", { k = k, name = name, lease = LEASE }, run.env({ TG_SESSION_TTL = "30" }))
    local waiter = child("lock_wait", { k = k, name = name }, run.env())
    local held = json.decode(wait_for("holder has the lock", function() return call("GET", k .. ":holder") end, 10))
    kill9(held.pid)
    local t0 = tg.now()
    local got = json.decode(wait_for("grant after the lease",
      function() return call("GET", k .. ":granted") end, 10))
    local after_kill, after_grant = tg.now() - t0, got.t - held.t
    print(("\n  mutex: lease %g s: next waiter granted %.3f s after SIGKILL, %.3f s after the holder's grant"):format(
      LEASE, after_kill, after_grant))
    assert.is_true(after_grant >= LEASE - 0.05, ("granted %.3f s after the holder's grant, before the lease of %g s"):format(after_grant, LEASE))
    assert.is_true(after_grant < LEASE + BEAT + 0.5, ("granted %.3f s after the holder's grant; bound: lease %g s + heartbeat %.2f s + 0.5 s"):format(after_grant, LEASE, BEAT))
    assert.is_true(got.token > held.token, "fencing token did not grow")
    finish(waiter, 0)
    finish(holder, 137)
  end)
end)

describe("sync.semaphore", function()
  it("is never over-granted under contention from tasks and processes", function()
    local name, k, go = h.uniq("sem"), "coordtest:" .. h.uniq("sem"), h.uniq("go")
    local PERMITS, PROCS, TASKS, ROUNDS = 3, 3, 5, 4
    local MAXINC = [[
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], v) end
return v]]
    local ps = {}
    for i = 1, PROCS do
      ps[i] = child("sem_use", { k = k, name = name, go = go, permits = PERMITS, tasks = TASKS, rounds = ROUNDS },
        host_env())
    end
    sync.barrier(go .. ":ready", PROCS, { timeout = 15 })
    local ts, want = {}, 0
    for i = 1, TASKS do
      for r = 1, ROUNDS do want = want + ((i + r) % 3 == 0 and 2 or 1) end
      ts[i] = tg.spawn(function()
        local s = sync.semaphore(name, PERMITS)
        for r = 1, ROUNDS do
          local n = (i + r) % 3 == 0 and 2 or 1
          s:acquire(n, { timeout = 20 })
          redis.call({ "EVAL", MAXINC, 2, k .. ":inside", k .. ":max", n })
          tg.sleep(0.003)
          call("DECRBY", k .. ":inside", n)
          call("INCRBY", k .. ":grants", n)
          s:release(n)
        end
      end)
    end
    sync.signal_entry(go)
    for _, t in ipairs(ts) do t:join({ timeout = 30 }) end
    for _, p in ipairs(ps) do finish(p, 0) end
    local max = tonumber(call("GET", k .. ":max"))
    print(("\n  semaphore: %d permits, at most %d held at once"):format(PERMITS, max))
    assert.is_true(max <= PERMITS, ("%d permits held at once, of %d"):format(max, PERMITS))
    assert.equal(PERMITS, max)                       -- the contention was real
    assert.equal(tostring(want * (PROCS + 1)), call("GET", k .. ":grants"))
    assert.equal("0", call("GET", k .. ":inside"))
  end)

  it("serves waiters in order as permits come back", function()
    local name = h.uniq("semw")
    local s = sync.semaphore(name, 2)
    s:acquire(2, { timeout = 1 })
    local order, ws = {}, {}
    for i = 1, 3 do
      ws[i] = tg.spawn(function()
        local mine = sync.semaphore(name, 2)
        mine:acquire(1, { timeout = 5 })
        order[#order + 1] = i
        return mine
      end)
      tg.sleep(0.02)                                  -- queue them in order 1, 2, 3
    end
    tg.sleep(0.1)
    assert.same({}, order)
    s:release(1)
    wait_for("one waiter served", function() return #order == 1 end, 2)
    tg.sleep(0.1)
    assert.same({ 1 }, order)                         -- one permit, one waiter
    s:release(1)
    wait_for("two waiters served", function() return #order == 2 end, 2)
    tg.sleep(0.1)
    assert.same({ 1, 2 }, order)
    ws[1]:join({ timeout = 1 }):release(1)
    wait_for("three waiters served", function() return #order == 3 end, 2)
    assert.same({ 1, 2, 3 }, order)
    ws[2]:join({ timeout = 1 }):release(1)
    ws[3]:join({ timeout = 1 }):release(1)
    expect_error("invalid", s.release, s, 1)          -- nothing held any more
    -- part of an acquisition can be given back
    s:acquire(2, { timeout = 1 })
    local waiter = tg.spawn(function() return sync.semaphore(name, 2):acquire(1, { timeout = 2 }) end)
    tg.sleep(0.05)
    s:release(1)
    local other = waiter:join({ timeout = 3 })
    assert.is_number(other)
    expect_error("timeout", s.acquire, s, 1, { timeout = 0.1 })   -- 1 + 1 of 2 held
    s:release(1)
    expect_error("invalid", s.release, s, 1)
    expect_error("invalid", s.acquire, s, 3)          -- more than it has
    expect_error("invalid", sync.semaphore, name, 0)
  end)
end)

describe("sync.election", function()
  it("replaces a leader killed with SIGKILL within the session TTL; leader() is its global_seq", function()
    local run = new_run(3)
    local name, k = h.uniq("el"), "coordtest:" .. h.uniq("el")
    local ps = {}
    for i = 1, 3 do ps[i] = child("elect", { k = k, name = name }, run.env()) end
    local first = json.decode(wait_for("a leader",
      function() return call("LINDEX", k .. ":leaders", 0) end, 10))
    wait_for("two candidates queued", function()
      return call("LLEN", run.P .. ":tg:election:" .. name .. ":q") == 2 end, 10)
    assert.equal(first.seq, first.leader)
    kill9(first.pid)
    local t0 = tg.now()
    local second = json.decode(wait_for("a new leader after SIGKILL",
      function() return call("LINDEX", k .. ":leaders", 1) end, 10))
    local took = tg.now() - t0
    print(("\n  election: new leader %.3f s after SIGKILL of the leader (session TTL %g s)"):format(took, TTL))
    assert.is_true(took < TTL + BEAT + 0.5, ("new leader %.3f s after SIGKILL; bound: session TTL %g s + heartbeat %.2f s + 0.5 s"):format(took, TTL, BEAT))
    assert.are_not.equal(first.seq, second.seq)
    assert.equal(second.seq, second.leader)
    assert.is_true(second.term > first.term)
    -- a clean end resigns at once: the third candidate leads without waiting for a TTL
    call("SET", k .. ":stop", "1")
    t0 = tg.now()
    local third = json.decode(wait_for("the third leader",
      function() return call("LINDEX", k .. ":leaders", 2) end, 5))
    print(("  election: third leader %.3f s after the second was told to end"):format(tg.now() - t0))
    assert.is_true(tg.now() - t0 < TTL, ("a clean end handed leadership over in %.3f s; bound: session TTL %g s"):format(tg.now() - t0, TTL))
    assert.equal(third.seq, third.leader)
    local seqs = { [first.seq] = 1, [second.seq] = 1, [third.seq] = 1 }
    assert.same({ 1, 1, 1 }, { seqs[1], seqs[2], seqs[3] })
    local codes = {}
    for i = 1, 3 do codes[i] = finish(ps[i], nil).code end
    table.sort(codes)
    assert.same({ 0, 0, 137 }, codes)
    assert.same({}, keys_without_ttl(run.P))          -- nothing of the run stays forever
  end)

  it("resign hands leadership to a waiting candidate; leader() is the leader's global_seq", function()
    local name = h.uniq("elr")
    local a, b = sync.election(name), sync.election(name)
    assert.is_nil(a:leader())
    local term = a:campaign({ timeout = 1 })
    assert.equal(core.config().global_seq, a:leader())
    assert.is_true(a:is_leader())
    assert.equal(term, a:campaign({ timeout = 1 }))   -- already leads
    local led_at
    local tb = tg.spawn(function()
      local t = b:campaign({ timeout = 5 })
      led_at = tg.now()
      return t
    end)
    tg.sleep(0.1)
    assert.is_nil(led_at, "two leaders at once")
    local t0 = tg.now()
    a:resign()
    local term2 = tb:join({ timeout = 5 })
    assert.is_true(led_at - t0 < 0.5, ("the waiting candidate led %.3f s after resign; bound 0.5 s"):format(led_at - t0))
    assert.is_true(term2 > term)
    assert.is_true(b:is_leader())
    assert.is_false(a:is_leader())
    assert.equal(core.config().global_seq, b:leader())
    expect_error("invalid", a.resign, a)
    b:resign()
    assert.is_nil(b:leader())
    expect_error("timeout", function()
      a:campaign({ timeout = 1 })
      b:campaign({ timeout = 0.1 })
    end)
    a:resign()
  end)
end)

describe("sync.double_barrier and sync.counter", function()
  it("double_barrier: nobody passes enter before all entered, nor leave before all left", function()
    local name = h.uniq("dbl")
    local log, ts = {}, {}
    for i = 1, 4 do
      ts[i] = tg.spawn(function()
        tg.sleep(0.03 * i)
        local d = sync.double_barrier(name, 4)
        log[#log + 1] = "enter"
        d:enter({ timeout = 5 })
        log[#log + 1] = "in"
        tg.sleep(0.03 * (5 - i))
        log[#log + 1] = "leave"
        d:leave({ timeout = 5 })
        log[#log + 1] = "out"
      end)
    end
    for _, t in ipairs(ts) do t:join({ timeout = 10 }) end
    assert.same({ "enter", "enter", "enter", "enter", "in", "in", "in", "in",
      "leave", "leave", "leave", "leave", "out", "out", "out", "out" }, log)
    local err = expect_error("timeout", function()
      sync.double_barrier(h.uniq("dbl"), 2):enter({ timeout = 0.2 })
    end)
    assert.matches("1 of 2 entered", err.message)
  end)

  it("counter: get is 0 at first, add returns the new value, concurrent adds are exact", function()
    local c = sync.counter(h.uniq("cnt"))
    assert.equal(0, c:get())
    assert.equal(5, c:add(5))
    assert.equal(3, c:add(-2))
    assert.equal(4, c:add())
    local ts = {}
    for i = 1, 20 do ts[i] = tg.spawn(function() for _ = 1, 5 do c:add(1) end end) end
    for _, t in ipairs(ts) do t:join({ timeout = 5 }) end
    assert.equal(104, c:get())
    assert.equal(104, sync.counter(c.name):get())
    assert.is_true(call("TTL", c.key) > 0, "the counter's key never expires")
    expect_error("invalid", c.add, c, 1.5)
  end)
end)

describe("sync.queue", function()
  it("delivers each value exactly once to many consumers across processes", function()
    local name, k, go = h.uniq("q"), "coordtest:" .. h.uniq("q"), h.uniq("go")
    local CONSUMERS, CTASKS, PRODUCERS, PTASKS, COUNT = 2, 4, 2, 4, 25
    local HOST_C = 3
    local ps = {}
    for i = 1, CONSUMERS do
      ps[#ps + 1] = child("consume", { k = k, name = name, go = go, tasks = CTASKS }, host_env())
    end
    for i = 1, PRODUCERS do
      ps[#ps + 1] = child("produce", { name = name, go = go, tasks = PTASKS, count = COUNT, tag = "p" .. i },
        host_env())
    end
    sync.barrier(go .. ":ready", CONSUMERS, { timeout = 15 })
    tg.sleep(0.2)                                     -- the consumers' pops time out meanwhile
    local ts = {}
    for i = 1, HOST_C do                              -- the spec consumes too
      ts[#ts + 1] = tg.spawn(function()
        local q = sync.queue(name)
        local t0 = tg.now()
        while tg.now() - t0 < 30 do
          local ok, v = pcall(q.pop, q, { timeout = 0.015 * i })
          if ok then
            if v == "stop" then return end
            call("RPUSH", k .. ":got", v)
          elseif v.code == "timeout" then
            call("INCR", k .. ":timeouts")
          else
            error(v, 0)
          end
        end
        error("no stop value within 30 s")
      end)
    end
    for i = 1, PTASKS do                              -- and produces
      ts[#ts + 1] = tg.spawn(function()
        local q = sync.queue(name)
        for j = 1, COUNT do q:push(("h:%d:%d"):format(i, j)) end
      end)
    end
    local t0 = tg.now()
    sync.signal_entry(go)
    local total = (PRODUCERS + 1) * PTASKS * COUNT
    wait_for("all values popped", function() return call("LLEN", k .. ":got") >= total end, 20)
    print(("\n  queue: %d values through %d consumer tasks in %.2f s, %s pops timed out"):format(total,
      CONSUMERS * CTASKS + HOST_C, tg.now() - t0, call("GET", k .. ":timeouts") or "0"))
    assert.is_true(tonumber(call("GET", k .. ":timeouts") or "0") > 0, "no pop timed out: the race was not run")
    local q = sync.queue(name)
    for _ = 1, CONSUMERS * CTASKS + HOST_C do q:push("stop") end
    for _, t in ipairs(ts) do t:join({ timeout = 30 }) end
    for _, p in ipairs(ps) do finish(p, 0) end
    local got, seen = call("LRANGE", k .. ":got", 0, -1), {}
    assert.equal(total, #got)
    for _, v in ipairs(got) do
      assert.is_nil(seen[v], "popped twice: " .. v)
      seen[v] = true
    end
    for _, tag in ipairs({ "h", "p1", "p2" }) do
      for i = 1, PTASKS do
        for j = 1, COUNT do
          local v = ("%s:%d:%d"):format(tag, i, j)
          assert.truthy(seen[v], "never popped: " .. v)
        end
      end
    end
    assert.equal(0, call("LLEN", keys.queue(name) .. ":items"))
  end)

  it("pop times out with code timeout; the value pushed afterwards is not lost", function()
    local q = sync.queue(h.uniq("qt"))
    local t0 = tg.now()
    local err = expect_error("timeout", q.pop, q, { timeout = 0.2 })
    local took = tg.now() - t0
    assert.is_true(took >= 0.19 and took < 1, ("pop with timeout 0.2 s took %.3f s; bound 0.19 - 1 s"):format(took))
    assert.matches("pop from queue", err.message)
    q:push({ n = 1 })
    assert.same({ n = 1 }, q:pop({ timeout = 1 }))
    -- pushes that race with pops giving up: nothing lost, nothing twice
    local got, pushed = {}, 0
    local popper = tg.spawn(function()
      local deadline = tg.now() + 10
      while #got < 50 and tg.now() < deadline do
        local ok, v = pcall(q.pop, q, { timeout = 0.001 })
        if ok then got[#got + 1] = v elseif v.code ~= "timeout" then error(v, 0) end
      end
    end)
    for i = 1, 50 do
      q:push(i)
      pushed = pushed + 1
      if i % 3 == 0 then tg.sleep(0.002) end
    end
    popper:join({ timeout = 15 })
    table.sort(got)
    local want = {}
    for i = 1, 50 do want[i] = i end
    assert.same(want, got)
    expect_error("invalid", q.push, q, function() end)
  end)
end)

describe("barrier liveness", function()
  it("fails fast with peer_failed when a peer records a failure", function()
    local run = new_run(3)
    local k = "coordtest:" .. h.uniq("pf")
    local TIMEOUT = 20
    local ws = {
      child("bar_wait", { k = k, timeout = TIMEOUT }, run.env()),
      child("bar_wait", { k = k, timeout = TIMEOUT }, run.env()),
    }
    local f = child("bar_fail", { k = k, waiters = 2 }, run.env())
    wait_for("both waiters done", function() return call("LLEN", k .. ":results") == 2 end, TIMEOUT / 2)
    local failed_at = tonumber(call("GET", k .. ":failed_at"))
    for _, raw in ipairs(call("LRANGE", k .. ":results", 0, -1)) do
      local r = json.decode(raw)
      assert.is_false(r.ok)
      assert.equal("peer_failed", r.code, r.message)
      assert.matches("barrier 'all' can no longer complete", r.message)
      local after = r.t - failed_at
      print(("\n  barrier: peer_failed %.3f s after the peer's failure (timeout %d s)"):format(after, TIMEOUT))
      assert.is_true(after < 1, ("peer_failed %.3f s after the failure; bound 1 s, timeout %d s"):format(after, TIMEOUT))
    end
    for _, p in ipairs(ws) do finish(p, 0) end
    local r = finish(f, 1)
    assert.matches("deliberate failure in the case", r.stdout)
  end)

  it("fails fast with peer_failed when a peer is SIGKILLed; tolerate_failures keeps waiting", function()
    local run = new_run(3)
    local k = "coordtest:" .. h.uniq("pk")
    local TIMEOUT = 20
    local victim = child("bar_victim", { k = k }, run.env())
    local strict = child("bar_wait", { k = k, timeout = TIMEOUT }, run.env())
    local tolerant = child("bar_wait", { k = k, timeout = TIMEOUT, tolerant = "true" }, run.env())
    local pid = wait_for("the victim's pid", function() return call("GET", k .. ":victim") end, 10)
    wait_for("both waiters entered", function() return call("GET", run.P .. ":states:all") == "2" end, 10)
    tg.sleep(0.1)
    kill9(pid)
    local t0 = tg.now()
    local raw = wait_for("peer_failed after SIGKILL",
      function() return call("LINDEX", k .. ":results", 0) end, TIMEOUT / 2)
    local took = tg.now() - t0
    local r = json.decode(raw)
    print(("\n  barrier: peer_failed %.3f s after SIGKILL of a peer (session TTL %g s, timeout %d s)"):format(took, TTL, TIMEOUT))
    assert.is_false(r.tolerant, "the tolerant waiter ended: " .. raw)
    assert.equal("peer_failed", r.code, r.message)
    assert.is_true(took < TTL + BEAT + 0.5, ("peer_failed %.3f s after SIGKILL; bound: session TTL %g s + heartbeat %.2f s + 0.5 s (timeout %d s)"):format(took, TTL, BEAT, TIMEOUT))
    tg.sleep(0.5)
    assert.equal(1, call("LLEN", k .. ":results"), "the tolerant waiter stopped waiting")
    -- a third entry (a Go SDK style INCR) completes the barrier it still waits at
    call("INCR", run.P .. ":states:all")
    local done = json.decode(wait_for("the tolerant waiter released",
      function() return call("LINDEX", k .. ":results", 1) end, 3))
    assert.is_true(done.tolerant)
    assert.is_true(done.ok, done.message)
    finish(strict, 0)
    finish(tolerant, 0)
    finish(victim, 137)
  end)
end)

describe("the session heartbeat", function()
  it("reports a failing beat in the instance's log, and its recovery", function()
    local run = new_run(2)
    local k = "coordtest:" .. h.uniq("hb")
    local p = child("bar_wait", { k = k, timeout = 3 }, run.env())
    wait_for("the waiter entered", function() return call("GET", run.P .. ":states:all") == "1" end, 10)
    wait_for("its session", function() return call("EXISTS", run.P .. ":tg:sessions") == 1 end, 5)
    call("DEL", run.P .. ":tg:sessions")
    call("SET", run.P .. ":tg:sessions", "not a sorted set")   -- every beat now fails: WRONGTYPE
    wait_for("the warning in its log", function()
      return (h.read(p.dir .. "/out") or ""):match("warning: the session heartbeat failed[^\n]*WRONGTYPE")
    end, 5)
    call("DEL", run.P .. ":tg:sessions")
    wait_for("the recovery in its log", function()
      return (h.read(p.dir .. "/out") or ""):match("warning: the session heartbeat works again")
    end, 5)
    local r = finish(p, 0, 20)
    assert.equal(1, select(2, r.stdout:gsub("heartbeat failed", "")), "reported once per run of failures")
  end)
end)

describe("barrier liveness, late", function()
  -- A process reads P:tg:dead at start-up, so a waiter that starts after
  -- its peer already failed checks feasibility at once.
  it("a waiter that starts after a peer already failed fails fast too", function()
    local dir = h.tmpdir()
    local plan = h.write(dir .. "/late.lua", [[
      local sync = require "tg.sync"
      return function(env)
        if env.params.role == "victim" then error("the victim gives up") end
        sync.signal_and_wait("all", env.instance_count, { timeout = 10 })
      end]])
    local e = { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port),
      TEST_RUN = h.uniq("late"), TEST_INSTANCE_COUNT = "3" }
    local victim = h.run({ "-p", "role=victim", plan }, e)
    assert.equal(1, victim.code, victim.stdout)
    local t0 = tg.now()
    local late = h.run({ plan }, e)
    local took = tg.now() - t0
    assert.equal(1, late.code, late.stdout)
    local f = h.events_of(h.json_lines(late.stdout), "failure_event")
    assert.equal(1, #f)
    assert.matches("barrier 'all' can no longer complete: instance 1 failed or died", f[1].error)
    assert.is_true(took < 3, ("the late waiter took %.2f s; bound 3 s (its timeout is 10 s)"):format(took))
  end)
end)

describe("idempotent retry", function()
  it("signal_entry with the same op_id counts once and returns the first seq", function()
    local state = h.uniq("opid")
    assert.equal(1, sync.signal_entry(state, { op_id = "a" }))
    assert.equal(1, sync.signal_entry(state, { op_id = "a" }))
    assert.equal("1", call("GET", keys.state(state)))
    assert.equal(2, sync.signal_entry(state, { op_id = "b" }))
    assert.equal(3, sync.signal_entry(state))
    assert.equal(2, sync.signal_entry(state, { op_id = "b" }))
    assert.equal("3", call("GET", keys.state(state)))
    expect_error("invalid", sync.signal_entry, state, { op_id = "" })
  end)

  it("signal_and_wait with the same op_id counts once", function()
    local state = h.uniq("opw")
    local a = tg.spawn(function() return sync.signal_and_wait(state, 2, { op_id = "x", timeout = 5 }) end)
    tg.sleep(0.05)
    local seq = sync.signal_and_wait(state, 2, { op_id = "y", timeout = 5 })
    assert.same({ 1, 2 }, { a:join({ timeout = 5 }), seq })
    local t0 = tg.now()
    assert.equal(1, sync.signal_and_wait(state, 2, { op_id = "x", timeout = 5 }))
    print(("\n  retry of a completed signal_and_wait returned in %.3f s"):format(tg.now() - t0))
    assert.equal(2, sync.signal_and_wait(state, 2, { op_id = "y", timeout = 5 }))
    assert.equal("2", call("GET", keys.state(state)))
  end)
end)
