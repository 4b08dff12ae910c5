-- bench.lua -- the plans that bench/run times.  Every instance records wall
-- clock nanoseconds (tg.core.time_ns) around what is measured and writes
-- them, after the measured part, as plain lines to <outputs_path>/bench.out:
--
--   case <name> <instance_count> <global_seq>
--   first <ns>                     the case function began (after start-up)
--   r <round> <entry_ns> <resume_ns>   just before signal_and_wait / just after
--   a2a <start_ns> <end_ns> <taken>    publish_subscribe .. sub:take(N) returned
--   mem <VmHWM kB> <VmRSS kB> <Lua KB> <live Lua KB>   this process
--                                  (/proc/self/status); the process's Lua heap
--                                  (collectgarbage "count"), then after a full GC
--                                  (in-proc, instance 1 only: the instances share
--                                  one heap, and a full collection per instance
--                                  would be N of them, inside the measured round)
--   clients <connected_clients> <name>=<count> ...   (instance 1 only)
--   cpu <ns> <ns>                  this process's CPU time after round 0 and after round R
--   rcpu <ns> <ns>                 redis-server's, likewise (instance 1, param redis_pid)
--
-- Round 0 ("r0") lines up the instances after start-up; rounds 1..R are the
-- measured ones; a last barrier ("end") keeps every instance connected while
-- instance 1 counts the Redis clients.
local core = require "tg.core"
local redis = require "tg.redis"
local sync = require "tg.sync"
local keys = require "tg.keys"
local tg = require "tg"

local cases = {}

local function proc_mem()
  local f = io.open("/proc/self/status")
  local s = f and f:read("a") or ""
  if f then f:close() end
  local heap = collectgarbage("count")
  collectgarbage("collect")
  return ("mem %d %d %.1f %.1f"):format(tonumber(s:match("VmHWM:%s*(%d+)")) or 0,
    tonumber(s:match("VmRSS:%s*(%d+)")) or 0, heap, collectgarbage("count"))
end

-- one CLIENT LIST, grouped by client name, and INFO clients
local function census()
  local list = redis.call({ "CLIENT", "LIST" }, 10) or ""
  local by = {}
  for name in tostring(list):gmatch("name=(%S*)") do
    if name == "" then name = "(none)" end
    by[name] = (by[name] or 0) + 1
  end
  local info = redis.call({ "INFO", "clients" }, 10) or ""
  local cc = tonumber(tostring(info):match("connected_clients:(%d+)")) or -1
  local parts = { "clients", tostring(cc) }
  local names = {}
  for k in pairs(by) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. by[k] end
  return table.concat(parts, " ")
end

local function save(env, lines)
  local f = assert(io.open(env.outputs_path .. "/bench.out", "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end

-- CPU time of a process in ns: /proc/<pid>/schedstat (main thread, ns), else
-- utime + stime from /proc/<pid>/stat (clock ticks, assumed 100 per second)
local function cpu_ns(pid)
  local f = io.open(("/proc/%s/schedstat"):format(pid or "self"))
  if f then
    local v = tonumber(f:read("l"):match("^(%d+)"))
    f:close()
    if v then return v end
  end
  f = io.open(("/proc/%s/stat"):format(pid or "self"))
  if not f then return 0 end
  local s = f:read("a"):gsub("^.*%) ", "")
  f:close()
  local fields = {}
  for w in s:gmatch("%S+") do fields[#fields + 1] = w end
  return ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) * 10000000
end

-- Rounds 0..R of `wait(round)`, then instance 1 counts clients, then "end".
-- CPU is read after round 0 and after round R: by every instance when each
-- runs in its own process (probe=all), by instance 1 only in-proc
-- (probe=one); instance 1 also reads redis-server's (param redis_pid).
local function rounds(env, name, wait)
  local first = core.time_ns()
  local R = env:int("rounds", 10)
  local probe = env:string("probe", "all") == "all" or env.global_seq == 1
  local redis_pid = env.global_seq == 1 and env:int("redis_pid", 0) or 0
  local e, x = {}, {}
  local c0, c1, rc0, rc1
  for r = 0, R do
    e[r] = core.time_ns()
    wait(r)
    x[r] = core.time_ns()
    if r == 0 then
      if probe then c0 = cpu_ns() end
      if redis_pid > 0 then rc0 = cpu_ns(redis_pid) end
    end
  end
  if probe then c1 = cpu_ns() end
  if redis_pid > 0 then rc1 = cpu_ns(redis_pid) end
  local lines = { ("case %s %d %d"):format(name, env.instance_count, env.global_seq), "first " .. first }
  for r = 0, R do lines[#lines + 1] = ("r %d %d %d"):format(r, e[r], x[r]) end
  if probe then lines[#lines + 1] = ("cpu %d %d"):format(c0, c1) end
  if rc0 then lines[#lines + 1] = ("rcpu %d %d"):format(rc0, rc1) end
  if probe then lines[#lines + 1] = proc_mem() end
  if env.global_seq == 1 and env:bool("census", true) then lines[#lines + 1] = census() end
  sync.signal_and_wait("end", env.instance_count)
  save(env, lines)
end

-- tgrun's barrier: N instances each do R successive signal_and_wait.
function cases.barrier(env)
  local n = env.instance_count
  rounds(env, "barrier", function(r) sync.signal_and_wait("b" .. r, n) end)
end

-- The Go SDK v0.2 way (testground-sync.md 2.3): INCR the state counter, then
-- check it at once and once a second until it reaches the target.
function cases.poller(env)
  local n = env.instance_count
  rounds(env, "poller", function(r)
    local key = keys.state("p" .. r)
    redis.call({ "INCR", key })
    while (tonumber(redis.call({ "GET", key })) or 0) < n do tg.sleep(1) end
  end)
end

-- Every instance publishes one value and takes all N values of the topic.
function cases.all_to_all(env)
  local n = env.instance_count
  local first = core.time_ns()
  sync.signal_and_wait("a0", n)
  local t0 = core.time_ns()
  local _, sub = sync.publish_subscribe("all", env.global_seq)
  local got = sub:take(n)
  local t1 = core.time_ns()
  local lines = { ("case all_to_all %d %d"):format(n, env.global_seq), "first " .. first,
    ("a2a %d %d %d"):format(t0, t1, #got) }
  got = nil
  sub:close()
  sync.signal_and_wait("a-end", n)     -- every take is done before anybody measures
  if env:string("probe", "all") == "all" or env.global_seq == 1 then lines[#lines + 1] = proc_mem() end
  save(env, lines)
end

return cases
