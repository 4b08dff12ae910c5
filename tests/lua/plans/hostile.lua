-- plans for hostile_spec.lua: what a careless or hostile user does --
-- names made of spaces, colons, braces, NUL, 10 KB and unicode; timeouts
-- of zero and of math.huge; os.exit; instances that crash holding a lock.
-- Everything observed goes to plain Redis keys under the parameter `k`.
local tg = require "tg"
local sync = require "tg.sync"
local redis = require "tg.redis"

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

-- contended lock and queue hand-over between instances, under names given
-- by the parameters `lock` and `queue` (any bytes)
cases["a case with spaces"] = function(env)
  local k, n = env:string("k"), env.instance_count
  local m = sync.mutex(env:string("lock"), { lease = 30 })
  local q = sync.queue(env:string("queue"))
  sync.signal_and_wait("go", n, { timeout = 20 })
  for _ = 1, 10 do
    m:with(function()
      local v = tonumber(call("GET", k .. ":v") or "0")
      tg.sleep(0.001)
      call("SET", k .. ":v", v + 1)
    end)
  end
  if env.global_seq == 1 then
    tg.sleep(0.2)                               -- the others wait in pop first: a hand-over
    for i = 1, (n - 1) * 5 do q:push(i) end
  else
    for _ = 1, 5 do call("RPUSH", k .. ":popped", q:pop({ timeout = 20 })) end
  end
  sync.signal_and_wait("done", n, { timeout = 20 })
end

-- role=holder takes lock `lock` and waits to be killed; role=taker asks
-- for it after the holder has it, and records how long it waited
function cases.locker(env)
  local k = env:string("k")
  local m = sync.mutex(env:string("lock"))
  if env:string("role") == "holder" then
    m:lock({ timeout = 10 })
    call("SET", k .. ":pid", pid())
    tg.sleep(60)
  else
    local t0 = tg.now()
    m:lock({ timeout = 20 })
    call("SET", k .. ":took", tg.now() - t0)
  end
end

-- one barrier each with a timeout of 0, 0.001 and after the deadline
function cases.zero(env)
  local what = env:string("what", "zero")
  if what == "zero" then sync.barrier("z", 2, { timeout = 0 })
  elseif what == "tiny" then sync.signal_and_wait("t", 2, { timeout = 0.001 })
  else
    pcall(tg.sleep, 60)                          -- cut short by the deadline
    sync.barrier("late", 2)
  end
end

-- waits that only the run's deadline can end
function cases.huge(env)
  if env:string("what") == "sleep" then tg.sleep(math.huge)
  else sync.barrier("h", 2, { timeout = math.huge }) end
end

-- os.exit in its forms, by instance 2 (the others succeed)
function cases.exits(env)
  local how = env:string("how")
  if env.global_seq == 2 and how ~= "none" then
    if how == "true" then os.exit(true) elseif how == "false" then os.exit(false) else os.exit(tonumber(how)) end
  end
  tg.sleep(0.2)
end

-- plan code that does not yield, where the tasks' coroutines run without
-- the count hook until the watch gives it (src/tg_rt.c): instance 2 catches
-- os.exit's error and goes on, yielding a few instructions later each time
-- (how=exit_yield), or loops in a spawned task (spawn) or in a coroutine of
-- its own (coroutine)
function cases.busy(env)
  local how = env:string("how")
  if env.global_seq == 2 then
    if how == "exit_yield" then
      pcall(os.exit, 1)
      while true do pcall(tg.sleep, 0) end
    elseif how == "spawn" then
      tg.spawn(function() while true do end end):join()
    elseif how == "coroutine" then
      coroutine.wrap(function() while true do end end)()
    end
  end
  tg.sleep(0.2)
end

-- lost wake-ups: instance 1 waits with target 2; instance 2 enters with
-- another target (5), then with no target at all (signal_entry): each
-- entry that reaches 2 must release instance 1 at once, not at the next
-- once-a-second re-check.  Wall-clock times go to k for the spec.
function cases.wakeups(env)
  local k = env:string("k")
  if env.global_seq == 1 then
    sync.signal_and_wait("diff", 2, { timeout = 10 })
    call("SET", k .. ":diff_released", tg.time())
    sync.signal_and_wait("plain", 2, { timeout = 10 })
    call("SET", k .. ":plain_released", tg.time())
  else
    tg.sleep(0.3)
    call("SET", k .. ":diff_entered", tg.time())
    pcall(sync.signal_and_wait, "diff", 5, { timeout = 0.5, tolerate_failures = true })
    tg.sleep(0.3)
    call("SET", k .. ":plain_entered", tg.time())
    sync.signal_entry("plain")
  end
end

-- runs under the spec's eye for ps: sleeps until told to finish
function cases.idle(env)
  sync.barrier("finish", 1, { timeout = 30 })
end

return cases
