-- idle.lua -- the smallest useful plan, for memory per in-proc instance: one
-- barrier after start-up; then the first instance (global_seq 1) measures
-- the process -- VmHWM and VmRSS, and the Lua heap of the process (every
-- in-process instance shares one Lua state) divided by the instance count,
-- before and after a full collection -- and writes to its
-- <outputs_path>/bench.out "mem <VmHWM kB> <VmRSS kB> <Lua KB> <live Lua KB>";
-- then a last barrier so that every instance is alive while it measures.
-- (One collection, not one per instance: with a shared heap that would be
-- N full collections of the whole process.)
local sync = require "tg.sync"

return function(env)
  local seq = sync.signal_and_wait("r0", env.instance_count)
  if seq == 1 then
    local f = io.open("/proc/self/status")
    local s = f and f:read("a") or ""
    if f then f:close() end
    local n = env.instance_count
    local heap = collectgarbage("count") / n
    collectgarbage("collect")
    local line = ("mem %s %s %.1f %.1f\n"):format(s:match("VmHWM:%s*(%d+)") or 0, s:match("VmRSS:%s*(%d+)") or 0,
      heap, collectgarbage("count") / n)
    f = assert(io.open(env.outputs_path .. "/bench.out", "w"))
    f:write(line)
    f:close()
  end
  sync.signal_and_wait("end", env.instance_count)
end
