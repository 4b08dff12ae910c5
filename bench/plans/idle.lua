-- idle.lua -- the smallest useful plan, for memory per in-proc instance: one
-- barrier after start-up, then the process's VmHWM/VmRSS and this instance's
-- Lua heap (collectgarbage "count", then after a full collection) go to
-- <outputs_path>/bench.out as "mem <VmHWM kB> <VmRSS kB> <Lua KB> <live Lua KB>",
-- then a last barrier so that every instance is alive when the others measure.
local sync = require "tg.sync"

return function(env)
  sync.signal_and_wait("r0", env.instance_count)
  local f = io.open("/proc/self/status")
  local s = f and f:read("a") or ""
  if f then f:close() end
  local heap = collectgarbage("count")
  collectgarbage("collect")
  local line = ("mem %s %s %.1f %.1f\n"):format(s:match("VmHWM:%s*(%d+)") or 0, s:match("VmRSS:%s*(%d+)") or 0,
    heap, collectgarbage("count"))
  sync.signal_and_wait("end", env.instance_count)
  f = assert(io.open(env.outputs_path .. "/bench.out", "w"))
  f:write(line)
  f:close()
end
