-- plans for coord_spec.lua: instances that contend for locks, permits,
-- leadership and queue values, and wait at barriers whose peers die.
--
-- One function for every case; the parameter `role` says what this instance
-- does.  Everything an instance observes goes to plain Redis keys under the
-- parameter `k` (outside the run's prefix), so the spec can check and time it.
-- Every wait has a bound.
local tg = require "tg"
local sync = require "tg.sync"
local core = require "tg.core"
local redis = require "tg.redis"
local json = require "tg.json"

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("*l")
  f:close()
  return tonumber(s:match("^(%d+)"))
end

local function call(...)
  return redis.call({ ... }, 10, "plan " .. tostring((...)))
end

-- one critical section: a non-atomic read-sleep-write of k:value, with a
-- count of concurrent holders and the fencing token in grant order
local function critical(k, token)
  if call("INCR", k .. ":inside") > 1 then call("INCR", k .. ":overlap") end
  call("RPUSH", k .. ":tokens", token)
  local v = tonumber(call("GET", k .. ":value") or "0")
  tg.sleep(0.002)
  call("SET", k .. ":value", v + 1)
  call("DECR", k .. ":inside")
end

-- the largest number of holders at once, kept on the server
local MAXINC = [[
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], v) end
return v]]

local roles = {}

-- tasks x rounds increments of k:value under mutex `name`, started together
-- once the spec enters state `go`.
function roles.mutex_incr(env)
  local k, name = env:string("k"), env:string("name")
  local tasks, rounds = env:int("tasks"), env:int("rounds")
  sync.signal_entry(env:string("go") .. ":ready")
  sync.barrier(env:string("go"), 1, { timeout = 20 })
  local ts = {}
  for i = 1, tasks do
    ts[i] = tg.spawn(function()
      local m = sync.mutex(name)
      for r = 1, rounds do
        if (i + r) % 2 == 0 then
          m:with(function(token) critical(k, token) end)
        else
          local token = m:lock({ timeout = 20 })
          critical(k, token)
          m:unlock()
        end
      end
    end)
  end
  for _, t in ipairs(ts) do t:join({ timeout = 30 }) end
end

-- tasks x rounds acquisitions of 1 or 2 permits of semaphore `name`
function roles.sem_use(env)
  local k, name = env:string("k"), env:string("name")
  local permits, tasks, rounds = env:int("permits"), env:int("tasks"), env:int("rounds")
  sync.signal_entry(env:string("go") .. ":ready")
  sync.barrier(env:string("go"), 1, { timeout = 20 })
  local ts = {}
  for i = 1, tasks do
    ts[i] = tg.spawn(function()
      local s = sync.semaphore(name, permits)
      for r = 1, rounds do
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
  for _, t in ipairs(ts) do t:join({ timeout = 30 }) end
end

-- tasks x count values "<tag>:<task>:<i>" pushed to queue `name`
function roles.produce(env)
  local name, tag = env:string("name"), env:string("tag")
  local tasks, count = env:int("tasks"), env:int("count")
  sync.barrier(env:string("go"), 1, { timeout = 20 })
  local ts = {}
  for i = 1, tasks do
    ts[i] = tg.spawn(function()
      local q = sync.queue(name)
      for j = 1, count do
        q:push(("%s:%d:%d"):format(tag, i, j))
        if j % 7 == 0 then tg.sleep(0.005) end
      end
    end)
  end
  for _, t in ipairs(ts) do t:join({ timeout = 30 }) end
end

-- tasks that pop from queue `name` with short timeouts (so that hand-overs
-- race with give-ups) into list k:got until each pops "stop"
function roles.consume(env)
  local k, name = env:string("k"), env:string("name")
  local tasks = env:int("tasks")
  sync.signal_entry(env:string("go") .. ":ready")
  local ts = {}
  for i = 1, tasks do
    ts[i] = tg.spawn(function()
      local q = sync.queue(name)
      local t0 = tg.now()
      while tg.now() - t0 < 30 do
        local ok, v = pcall(q.pop, q, { timeout = 0.01 * (1 + i % 5) })
        if ok then
          if v == "stop" then return end
          call("RPUSH", k .. ":got", v)
        elseif v.code == "timeout" then
          call("INCR", k .. ":timeouts")
        else
          error(v, 0)
        end
      end
      error("consumer did not get its stop value within 30 s")
    end)
  end
  for _, t in ipairs(ts) do t:join({ timeout = 40 }) end
end

-- takes mutex `name` (lease param, seconds, optional), says so, and holds it
-- until killed (30 s at most)
function roles.lock_hold(env)
  local k = env:string("k")
  local lease = env:number("lease", 0)
  local m = sync.mutex(env:string("name"), lease > 0 and { lease = lease } or nil)
  local token = m:lock({ timeout = 10 })
  call("SET", k .. ":holder", json.encode({ pid = pid(), token = token, t = tg.time(),
    seq = env.global_seq }))
  tg.sleep(30)
end

-- waits for mutex `name` once the holder has it; records when it got it
function roles.lock_wait(env)
  local k = env:string("k")
  local m = sync.mutex(env:string("name"))
  local t0 = tg.now()
  while not call("GET", k .. ":holder") do
    if tg.now() - t0 > 10 then error("no holder within 10 s") end
    tg.sleep(0.01)
  end
  local token = m:lock({ timeout = 20 })
  call("SET", k .. ":granted", json.encode({ token = token, t = tg.time(), seq = env.global_seq }))
  m:unlock()
end

-- campaigns in election `name`; the leader records itself and leads until
-- k:stop is set (20 s at most), then ends cleanly (which resigns)
function roles.elect(env)
  local k = env:string("k")
  local e = sync.election(env:string("name"))
  local term = e:campaign({ timeout = 20 })
  call("RPUSH", k .. ":leaders", json.encode({ seq = env.global_seq, leader = e:leader(),
    term = term, pid = pid(), t = tg.time() }))
  local t0 = tg.now()
  while not call("GET", k .. ":stop") do
    if tg.now() - t0 > 20 then error("not stopped within 20 s") end
    tg.sleep(0.02)
  end
end

-- barrier roles: instance_count instances, state "all"
-- waits at "all" for every instance and records how that ended
function roles.bar_wait(env)
  local k = env:string("k")
  local t0 = tg.now()
  local ok, err = pcall(sync.signal_and_wait, "all", env.instance_count,
    { timeout = env:number("timeout"), tolerate_failures = env:bool("tolerant", false) })
  call("RPUSH", k .. ":results", json.encode({ seq = env.global_seq, ok = ok,
    tolerant = env:bool("tolerant", false),
    code = not ok and (type(err) == "table" and err.code or "?") or nil,
    message = not ok and tostring(err) or nil, waited = tg.now() - t0, t = tg.time() }))
end

-- waits until `waiters` instances entered "all", then records a failure
function roles.bar_fail(env)
  local k = env:string("k")
  sync.barrier("all", env:int("waiters"), { timeout = 20 })
  tg.sleep(0.1)
  call("SET", k .. ":failed_at", tg.time())
  error("deliberate failure in the case")
end

-- never enters; says its pid and sleeps until killed (30 s at most)
function roles.bar_victim(env)
  call("SET", env:string("k") .. ":victim", pid())
  tg.sleep(30)
end

return function(env)
  local role = env:string("role")
  local fn = roles[role]
  if not fn then error("unknown role " .. role) end
  return fn(env)
end
