-- plans for trace_spec.lua, report_spec.lua and timeline_spec.lua: runs
-- whose traces and reports are checked
local tg = require "tg"
local sync = require "tg.sync"
local net = require "tg.net"
local redis = require "tg.redis"
local log = require "tg.log"
local cases = {}

-- every kind of wait once (run with -n 2): instance 1 serves TCP, queue
-- values and the lock, instance 2 is the client
function cases.kinds(env)
  local n = env.instance_count
  local me = env.global_seq
  sync.signal_entry("kinds-entered")
  sync.barrier("kinds-entered", n)
  local _, sub = sync.publish_subscribe("kinds-topic", { from = me })
  sub:take(n)
  sub:close()
  local m = sync.mutex("kinds-lock")
  m:lock()
  tg.sleep(0.02)
  m:unlock()
  local s = sync.semaphore("kinds-sem", 1)
  s:acquire()
  s:release()
  local e = sync.election("kinds-election")
  if me == 1 then e:campaign() e:resign() end
  local q = sync.queue("kinds-queue")
  if me == 1 then
    q:push("v1")
    local l = net.listen("127.0.0.1:0")
    sync.publish("kinds-addr", l.address)
    local c = l:accept({ timeout = 10 })
    local line = c:read_line({ timeout = 10 })
    tg.sleep(0.05)                      -- so that the client's read waits
    c:write(line .. "!\n")
    c:close()
    l:close()
  else
    q:pop({ timeout = 10 })
    local addr = sync.subscribe("kinds-addr"):next({ timeout = 10 })
    tg.sleep(0.05)                      -- so that the server's accept waits
    local c = net.connect(addr, { timeout = 10 })
    tg.sleep(0.05)                      -- so that the server's read waits
    c:write("ping\n")
    c:read_line({ timeout = 10 })
    c:close()
  end
  tg.exec({ "sh", "-c", "exit 0" })
  local t = tg.spawn(function() tg.sleep(0.01) return 1 end)
  t:join()
  redis.call({ "PING" }, 5, "kinds ping")
  -- a wait that fails (its error, caught) and one that is cancelled
  pcall(sync.barrier, "kinds-nobody", n + 5, { timeout = 0.2 })
  local sleeper = tg.spawn(function() tg.sleep(30) end)
  tg.sleep(0.01)
  sleeper:cancel()
  sync.signal_and_wait("kinds-done", n)
end

-- rounds of barriers, a lock everyone takes once, results published and
-- read by five instances; the instance of param `fails` (a
-- global_seq, default 0: none) fails at the end, after the last barrier
-- everybody shares
function cases.one_fails(env)
  local n = env.instance_count
  local fails = env:int("fails", 0)
  local rounds = env:int("rounds", 3)
  sync.signal_and_wait("ready", n)
  for r = 1, rounds do
    tg.sleep(0.002 * ((env.global_seq * 7 + r * 3) % 11))
    sync.signal_and_wait("round-" .. r, n)
  end
  sync.mutex("ledger"):with(function() tg.sleep(0.001) end)
  local _, sub = sync.publish_subscribe("results", { from = env.global_seq })
  if env.global_seq <= 5 then sub:take(n, { timeout = 30 }) end
  sub:close()
  if env.global_seq == fails then
    tg.sleep(0.05)
    error("instance " .. fails .. " found a wrong checksum")
  end
  log.info("done")
end

-- the instances of group "late" arrive at 'gather' 0.3 s after the others
function cases.late(env)
  sync.signal_and_wait("ready", env.instance_count)
  if env.group_id == "late" then tg.sleep(0.3) end
  sync.signal_and_wait("gather", env.instance_count)
end

-- waits at a barrier nobody else reaches until it is killed (a single
-- instance, started by the spec)
function cases.stuck(env)
  sync.signal_entry("stuck-entered")
  sync.barrier("stuck", env.instance_count + 1)
end

-- many short waits: the trace's memory stays bounded (param waits)
function cases.many(env)
  for _ = 1, env:int("waits", 1000) do tg.sleep(0) end
  local core = require "tg.core"
  log.info("trace memory %d", core.stats().trace_memory)
end

return cases
