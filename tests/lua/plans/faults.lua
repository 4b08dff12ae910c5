-- plans for faults_spec.lua: instances that keep working while Redis drops,
-- stalls and restarts, and while their peers are killed or stopped.
--
-- Everything an instance observes goes to plain Redis keys under the
-- parameter `k` (outside the run's prefix), so the spec can count it: what
-- was popped, what was read from a topic, what each instance ended with.
-- Every wait has a bound.
local tg = require "tg"
local sync = require "tg.sync"
local redis = require "tg.redis"
local json = require "tg.json"

local function call(...)
  return redis.call({ ... }, 20, "plan " .. tostring((...)))
end

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("*l")
  f:close()
  return tonumber(s:match("^(%d+)"))
end

local cases = {}

-- Barriers, a topic, a lock and a queue, with a pause in the middle for the
-- spec to hit Redis: rounds of signal_and_wait, every instance publishes
-- and reads every value, increments under a mutex, and pops its share of
-- the queue (instance 1 pushes it).  Everything seen is recorded.
function cases.work(env)
  local k, rounds, values = env:string("k"), env:int("rounds", 20), env:int("values", 60)
  local n = env.instance_count
  call("RPUSH", k .. ":pids", pid())
  local sub = sync.subscribe("t")
  local q, m = sync.queue("q"), sync.mutex("m")
  if env.global_seq == 1 then for i = 1, values do q:push(i) end end
  for r = 1, rounds do
    sync.publish("t", { seq = env.global_seq, r = r })
    sync.signal_and_wait("round" .. r, n, { timeout = 30 })
    m:with(function()
      local v = tonumber(call("GET", k .. ":value") or "0")
      tg.sleep(0.001)
      call("SET", k .. ":value", v + 1)
    end)
    for _ = 1, values // (n * rounds) do
      call("RPUSH", k .. ":popped", q:pop({ timeout = 30 }))
    end
    tg.sleep(env:number("pause", 0.05))
  end
  local got = sub:take(n * rounds, { timeout = 30 })
  local seen = {}
  for _, v in ipairs(got) do seen[#seen + 1] = v.seq .. "." .. v.r end
  call("RPUSH", k .. ":read", table.concat(seen, " "))
  sync.signal_and_wait("end", n, { timeout = 30 })
end

-- Consumers that pop until the queue stays empty for `idle` seconds;
-- every value taken is recorded at once.  Instance 1 is the producer: it
-- waits for the spec's go (state "go"), then pushes `values` values.
function cases.consume(env)
  local k, values = env:string("k"), env:int("values")
  local q = sync.queue("q")
  if env.global_seq == 1 then
    sync.barrier("go", 1, { timeout = 30 })
    for i = 1, values do q:push(i) end
    call("SET", k .. ":pushed", values)
    return
  end
  call("RPUSH", k .. ":pids", pid())
  while true do
    local ok, v = pcall(q.pop, q, { timeout = env:number("idle", 3) })
    if not ok then
      if v.code ~= "timeout" then error(v, 0) end
      break
    end
    call("RPUSH", k .. ":popped", v)
  end
end

-- Instances that meet at a barrier twice; the spec stalls Redis, or stops
-- or busies one instance (param `victim`, a global_seq) between the two.
function cases.meet(env)
  local k = env:string("k")
  call("HSET", k .. ":pids", env.global_seq, pid())
  sync.signal_and_wait("first", env.instance_count, { timeout = 30 })
  call("INCR", k .. ":first")
  if env.global_seq == env:int("victim", 0) then
    tg.sleep(env:number("delay", 0))             -- time for the spec to stop it
    local busy = env:number("busy", 0)
    if busy > 0 then
      local t0 = tg.now()
      while tg.now() - t0 < busy do end           -- plan code that never yields
      local _, by_thread = require("tg.session.c").beats()
      call("SET", k .. ":thread_beats", by_thread)
    end
  end
  local ok, err = pcall(sync.signal_and_wait, "second", env.instance_count,
    { timeout = env:number("timeout", 30) })
  call("HSET", k .. ":result", env.global_seq, json.encode({ ok = ok, code = not ok and err.code or nil,
    message = not ok and tostring(err) or nil }))
  if not ok then error(err, 0) end
end

return cases
