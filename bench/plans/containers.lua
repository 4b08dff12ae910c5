-- containers.lua -- bench/containers' plan: the same run as processes and as
-- containers.  Every instance enters "up" (so the last one's release is the
-- moment the whole run has started), then does R barrier rounds, then reports
-- its memory: its cgroup's memory.current when it has a cgroup of its own (a
-- container), and its RSS; then it holds for a while, so that the script can
-- sample the docker clients and shims around it.
local tg = require "tg"
local sync = require "tg.sync"
local log = require "tg.log"

local function read_number(path, pattern)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(pattern))
end

return function(env)
  local n, rounds = env.instance_count, env:int("rounds", 20)
  sync.signal_and_wait("up", n, { timeout = 600 })
  local up = tg.time()
  local t0 = tg.now()
  for i = 1, rounds do sync.signal_and_wait("round" .. i, n) end
  local round = (tg.now() - t0) / rounds
  local rss = read_number("/proc/self/status", "VmRSS:%s*(%d+)") or 0
  -- a container sees its own cgroup at /sys/fs/cgroup (v2: memory.current;
  -- v1: the memory controller's usage, page cache included)
  local cg = env.params.cgroup == "1" and (read_number("/sys/fs/cgroup/memory.current", "(%d+)")
    or read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes", "(%d+)"))
  log.info("bench up=%.6f round=%.6f rss_kb=%d cgroup_bytes=%s", up, round, rss, cg and ("%d"):format(cg) or "-")
  sync.signal_and_wait("measured", n)
  tg.sleep(env:number("hold", 0))
end
