-- faults_spec.lua -- a real redis-server dropped, stalled and restarted
-- under running instances, and instances killed, stopped or busy under
-- their peers: every case asserts the exact outcome -- who succeeded, who
-- failed with which code, counts exact, nothing lost, nothing doubled.
-- bench/faults repeats these many times for the table in BENCHMARKS.md.
local tg = require "tg"
local sync = require "tg.sync"
local json = require "tg.json"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/faults.lua"
local N, ROUNDS, VALUES = 3, 20, 60
-- bench/faults sets TG_FAULT_REPEAT to try every fault many times and
-- prints the table that TG_FAULT_TABLE names
local REPEAT = tonumber(os.getenv("TG_FAULT_REPEAT") or "") or 1
local tally = {}        -- fault -> {runs, as_expected, lost, doubled}
local order = {}

local function record(fault, ok, lost, doubled)
  local t = tally[fault]
  if not t then
    t = { runs = 0, ok = 0, lost = 0, doubled = 0 }
    tally[fault] = t
    order[#order + 1] = fault
  end
  t.runs = t.runs + 1
  t.ok = t.ok + (ok and 1 or 0)
  t.lost = t.lost + (lost or 0)
  t.doubled = t.doubled + (doubled or 0)
end

-- start `tgrun -n N` of case against srv in the background
local function start(srv, case, params, extra_args, env)
  local run = h.uniq("frun")
  local args = { "-n", tostring(params.n or N), "--redis", srv.url, "--run-id", run, "-c", case, "--timeout", "60" }
  for _, a in ipairs(extra_args or {}) do args[#args + 1] = a end
  for kk, v in pairs(params) do
    if kk ~= "n" then
      args[#args + 1] = "-p"
      args[#args + 1] = kk .. "=" .. tostring(v)
    end
  end
  args[#args + 1] = PLAN
  local p = h.spawn(args, env or {})
  p.run = run
  p.P = ("run:%s:plan:faults:case:%s"):format(run, case)
  return p
end

local function finish(p, bound)
  local r, why = p:wait(bound or 60)
  assert.truthy(r, "tgrun -n did not end: " .. tostring(why))
  return r
end

-- a number from redis-cli's answer
local function num(s) return tonumber((s or ""):match("%-?%d+")) end

local function list(srv, key)
  local out = {}
  for line in srv.cli("LRANGE " .. key .. " 0 -1"):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

-- values popped: every one of 1..values exactly once
local function exactly_once(popped, values)
  local seen, doubled = {}, 0
  for _, v in ipairs(popped) do
    local n = tonumber(v)
    if seen[n] then doubled = doubled + 1 end
    seen[n] = true
  end
  local lost = 0
  for i = 1, values do if not seen[i] then lost = lost + 1 end end
  return lost, doubled
end

-- the work case's outcome: every count exact, nothing lost or doubled
local function check_work(srv, p, r, fault)
  local k = p.k
  local lost0, doubled0 = exactly_once(list(srv, k .. ":popped"), VALUES)
  record(fault, r.code == 0 and lost0 == 0 and doubled0 == 0
    and num(srv.cli("GET " .. k .. ":value")) == N * ROUNDS, lost0, doubled0)
  assert.equal(0, r.code, r.stdout .. r.stderr)
  assert.matches(N .. " instances, " .. N .. " succeeded, 0 failed", r.stdout)
  assert.equal(N * ROUNDS, num(srv.cli("GET " .. k .. ":value")), "increments under the mutex")
  local lost, doubled = exactly_once(list(srv, k .. ":popped"), VALUES)
  assert.equal(0, lost, "queue values lost")
  assert.equal(0, doubled, "queue values popped twice")
  local reads = list(srv, k .. ":read")
  assert.equal(N, #reads)
  for i = 2, N do assert.equal(reads[1], reads[i], "every instance read the topic in one order") end
  local each = {}
  for w in reads[1]:gmatch("%S+") do
    assert.is_nil(each[w], "topic value " .. w .. " delivered twice")
    each[w] = true
  end
  local count = 0
  for _ in pairs(each) do count = count + 1 end
  assert.equal(N * ROUNDS, count, "topic values")
  assert.equal(0, num(srv.cli("SCARD " .. p.P .. ":tg:dead")), "an instance was declared dead")
end

-- run the work case, hit Redis with fault() when it is under way
local function work_under(srv, fault)
  local k = "faults:" .. h.uniq("w")
  local p = start(srv, "work", { k = k, rounds = ROUNDS, values = VALUES, pause = 0.05 })
  p.k = k
  assert.truthy(h.wait_until(function() return num(srv.cli("LLEN " .. k .. ":popped")) >= 6 end, 20),
    "the run did not get under way")
  fault()
  return p, finish(p)
end

describe("Redis drops, stalls and restarts under a running run", function()
  it("CLIENT KILL TYPE normal (every connection of every instance): reconnected, nothing lost or doubled", function()
    local srv = h.redis_server()
    for _ = 1, REPEAT do
      local p, r = work_under(srv, function()
        assert.is_true(num(srv.cli("CLIENT KILL TYPE normal")) >= 2 * N)   -- commands and reads, per process
      end)
      check_work(srv, p, r, "CLIENT KILL TYPE normal during barriers, topic, lock, queue")
    end
    srv.kill()
  end)

  it("SIGKILL and restart with AOF within the retry bound: survived, nothing lost or doubled", function()
    local srv = h.redis_server({ aof = true })
    for _ = 1, REPEAT do
      local p, r = work_under(srv, function()
        srv.kill()
        tg.sleep(0.5)
        srv.restart()
      end)
      check_work(srv, p, r, "SIGKILL + restart with AOF (0.5 s down)")
    end
    srv.kill()
  end)

  it("DEBUG SLEEP 4 (a store that stalls longer than the session TTL): nobody declared dead", function()
    local srv = h.redis_server({ debug = true })
    for _ = 1, REPEAT do
      local p, r = work_under(srv, function() srv.cli("DEBUG SLEEP 4") end)
      check_work(srv, p, r, "DEBUG SLEEP 4 (stall > session TTL)")
    end
    srv.kill()
  end)

  it("CLIENT PAUSE 3000: nobody declared dead, nothing lost", function()
    local srv = h.redis_server()
    for _ = 1, REPEAT do
      local p, r = work_under(srv, function() srv.cli("CLIENT PAUSE 3000") end)
      check_work(srv, p, r, "CLIENT PAUSE 3000")
    end
    srv.kill()
  end)

  it("SIGKILL and restart without persistence: every wait fails at once, saying the store lost the run", function()
    local srv = h.redis_server()
    local t0
    local p, r = work_under(srv, function()
      srv.kill()
      srv.restart()
      t0 = tg.now()
    end)
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches(N .. " instances, 0 succeeded, " .. N .. " failed", r.stdout)
    assert.is_true(tg.now() - t0 < 5, "took " .. (tg.now() - t0))
    local _, lines = r.stdout:gsub("failed: [^\n]*the store lost the run's state: Redis at 127%.0%.0%.1:" .. srv.port
      .. " came back without it", "")
    assert.equal(N, lines, r.stdout)
    record("SIGKILL + restart without persistence", r.code == 1 and lines == N)
    srv.kill()
  end)

  it("Redis gone for longer than --redis-retry: every wait fails with closed after the bound", function()
    local srv = h.redis_server()
    local k = "faults:" .. h.uniq("g")
    local p = start(srv, "work", { k = k, rounds = ROUNDS, values = VALUES, pause = 0.05 }, { "--redis-retry", "1" })
    assert.truthy(h.wait_until(function() return num(srv.cli("LLEN " .. k .. ":popped")) >= 6 end, 20))
    srv.kill()
    local t0 = tg.now()
    local r = finish(p)
    assert.is_true(tg.now() - t0 < 1 + 4, "took " .. (tg.now() - t0))
    assert.equal(1, r.code)
    local _, lines = r.stdout:gsub("failed: [^\n]*could not reconnect within 1 s", "")
    assert.equal(N, lines, r.stdout)
  end)
end)

describe("instances killed, stopped or busy", function()
  it("queue consumers SIGKILLed while waiting in pop: every value popped exactly once", function()
   for _ = 1, REPEAT do
    local srv = h.redis_server()
    local k = "faults:" .. h.uniq("c")
    local values = 100
    local p = start(srv, "consume", { n = 4, k = k, values = values, idle = 4 }, {}, { TG_SESSION_TTL = "1" })
    local Pq = p.P .. ":tg:queue:q:q"
    assert.truthy(h.wait_until(function() return num(srv.cli("LLEN " .. Pq)) == 3 end, 20),
      "the consumers did not queue up")
    local pids = list(srv, k .. ":pids")
    os.execute("kill -9 " .. pids[math.random(#pids)])
    srv.cli("INCR " .. p.P .. ":states:go")                -- the producer pushes now
    local r = finish(p, 40)
    local lost, doubled = exactly_once(list(srv, k .. ":popped"), values)
    record("queue consumer SIGKILLed while waiting in pop", r.code == 1 and lost == 0 and doubled == 0, lost, doubled)
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("4 instances, 3 succeeded, 1 failed", r.stdout)
    assert.matches("killed by signal 9", r.stdout)
    assert.equal(0, lost, "values lost")
    assert.equal(0, doubled, "values popped twice")
    assert.equal(values, #list(srv, k .. ":popped"))
    srv.kill()
   end
  end)

  it("an instance stopped (SIGSTOP) past the session TTL is declared dead, fails, and its peers fail fast", function()
    local srv = h.redis_server()
    local k = "faults:" .. h.uniq("s")
    local p = start(srv, "meet", { k = k, victim = 2, delay = 1.5, timeout = 20 }, {}, { TG_SESSION_TTL = "1" })
    assert.truthy(h.wait_until(function() return num(srv.cli("GET " .. k .. ":first")) == N end, 20))
    local victim = num(srv.cli("HGET " .. k .. ":pids 2"))
    -- stop it before it can enter "second" (the others are already waiting)
    os.execute("kill -STOP " .. victim)
    local t0 = tg.now()
    assert.truthy(h.wait_until(function() return num(srv.cli("SISMEMBER " .. p.P .. ":tg:dead 2")) == 1 end, 10),
      "the stopped instance was not declared dead")
    local died = tg.now() - t0
    tg.sleep(0.5)
    os.execute("kill -CONT " .. victim)
    local r = finish(p, 30)
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("3 instances, 0 succeeded, 3 failed", r.stdout)
    assert.matches("single%[%d%] failed: [^\n]*this instance was declared dead by the run", r.stdout)
    -- the peer whose check runs after the other peer failed (and so died)
    -- names both: "instances 2, 3 failed or died"
    local fast = 0
    for line in r.stdout:gmatch("[^\n]+") do
      local who = line:match("^  single%[%d%] failed: barrier 'second' can no longer complete: instances? ([%d, ]+) failed or died")
      if who and (", " .. who .. ","):find(", 2,", 1, true) then fast = fast + 1 end
    end
    assert.equal(2, fast, r.stdout)
    print(("\n  declared dead %.2f s after SIGSTOP (session TTL 1 s)"):format(died))
  end)

  it("an instance whose plan code runs 3 s without yielding is not declared dead (TTL 1 s)", function()
    local srv = h.redis_server()
    local k = "faults:" .. h.uniq("b")
    local p = start(srv, "meet", { k = k, victim = 2, busy = 3 }, {}, { TG_SESSION_TTL = "1" })
    local r = finish(p, 30)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("3 instances, 3 succeeded", r.stdout)
    assert.equal(0, num(srv.cli("SCARD " .. p.P .. ":tg:dead")))
    -- the loop could not beat: the heartbeat thread did, on its own connection
    assert.is_true(num(srv.cli("GET " .. k .. ":thread_beats")) >= 1)
  end)

  it("replies that came while plan code kept the loop past their calls' timeout are replies, not timeouts", function()
    -- libuv runs timers before it reads sockets, and hiredis reads 16 KB
    -- at a time: without reading all that had arrived, the calls below
    -- "timed out" with their answers in the socket (at the end of 20,000
    -- in-process instances most outcomes were lost so).  Redis answers
    -- 2,000 GETs (~220 KB) after 0.1 s, the calls' bound is 0.5 s, and
    -- plan code keeps the loop for 1.5 s; a call that got no answer still
    -- times out.
    local srv = h.redis_server({ debug = true })
    local plan = h.tmpdir() .. "/busy.lua"
    h.write(plan, [[
local tg, redis = require "tg", require "tg.redis"
return function(env)
  redis.call({ "SET", "busy:v", string.rep("v", 100) }, 5)
  local tasks = { tg.spawn(function() return redis.call({ "DEBUG", "SLEEP", "0.1" }, 0.5, "DEBUG SLEEP") end) }
  for i = 1, 2000 do
    tasks[#tasks + 1] = tg.spawn(function() return redis.call({ "GET", "busy:v" }, 0.5, "GET") end)
  end
  tg.sleep(0.02)                              -- all sent; Redis is sleeping
  local t0 = os.clock()
  while os.clock() - t0 < 1.5 do end          -- a busy 1.5 s, no yield
  local bad = 0
  for _, t in ipairs(tasks) do
    local ok, r = pcall(t.join, t)
    if not ok then bad = bad + 1; print("lost: " .. tostring(r)) end
  end
  assert(bad == 0, bad .. " of " .. #tasks .. " calls timed out with their reply in the socket")
  local ok2, e = pcall(redis.call, { "DEBUG", "SLEEP", "0.5" }, 0.2, "DEBUG SLEEP")
  assert(not ok2 and tostring(e):find("timed out after 0.2 s", 1, true), tostring(e))
end
]])
    local r = h.run({ plan }, { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(srv.port) })
    assert.equal(0, r.code, r.stdout:sub(-2000) .. r.stderr)
    assert.matches('"success_event"', r.stdout)
  end)
end)

describe("many waiters in one process", function()
  it("3,001 tasks waiting on one queue get 3,000 values, each exactly once; the last one times out", function()
    local q = sync.queue(h.uniq("bigq"))
    local got, errs = {}, {}
    local tasks = {}
    for i = 1, 3001 do
      tasks[i] = tg.spawn(function()
        local ok, v = pcall(q.pop, q, { timeout = 20 })
        if ok then got[#got + 1] = v else errs[#errs + 1] = v end
      end)
    end
    tg.sleep(0.2)
    for i = 1, 3000 do q:push(i) end
    for i = 1, 3001 do tasks[i]:join({ timeout = 30 }) end
    assert.equal(3000, #got)
    local seen = {}
    for _, v in ipairs(got) do
      assert.is_nil(seen[v], "value " .. tostring(v) .. " twice")
      seen[v] = true
    end
    assert.equal(1, #errs)
    assert.equal("timeout", errs[1].code)
  end)

  it("3,001 tasks each take and give back a one-permit semaphore: all 3,001 granted, never two at once", function()
    local s = sync.semaphore(h.uniq("bigsem"), 1)
    local inside, most, granted = 0, 0, 0
    local tasks = {}
    for i = 1, 3001 do
      tasks[i] = tg.spawn(function()
        s:acquire({ timeout = 60 })
        inside = inside + 1
        if inside > most then most = inside end
        granted = granted + 1
        tg.sleep(0)
        inside = inside - 1
        s:release()
      end)
    end
    for i = 1, 3001 do tasks[i]:join({ timeout = 90 }) end
    assert.equal(3001, granted)
    assert.equal(1, most)
  end)
end)

describe("the table", function()
  it("is written where TG_FAULT_TABLE says (bench/faults)", function()
    local path = os.getenv("TG_FAULT_TABLE")
    if not path then return end
    local f = assert(io.open(path, "w"))
    f:write("| fault | runs | as expected | values lost | values doubled |\n|---|---|---|---|---|\n")
    for _, fault in ipairs(order) do
      local t = tally[fault]
      f:write(("| %s | %d | %d | %d | %d |\n"):format(fault, t.runs, t.ok, t.lost, t.doubled))
    end
    f:close()
  end)
end)
