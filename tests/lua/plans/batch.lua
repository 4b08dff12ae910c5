-- plans for batch_spec.lua: barrier rounds whose entries go to Redis in
-- batches (one script call per state per turn of a process's loop), in
-- processes and in-process, and a batch whose connection is killed
-- between its send and its reply.
--
-- What an instance observes goes to plain Redis keys under the parameter
-- `k` (outside the run's prefix), so the spec can check it.
local tg = require "tg"
local sync = require "tg.sync"
local redis = require "tg.redis"

local function call(...)
  return redis.call({ ... }, 20, "plan " .. tostring((...)))
end

local cases = {}

-- R rounds of signal_and_wait; in every third round the odd instances
-- signal_entry and then barrier() instead.  Each instance records its seq
-- per round (HSET k:r<i> <global_seq> <seq>); instance 1 records how many
-- batches its process sent for rounds 1..R (k:batches).
function cases.rounds(env)
  local k, R, n = env:string("k"), env:int("rounds", 10), env.instance_count
  local bc = require "tg.barrier.c"
  local me = env.global_seq
  sync.signal_and_wait("r0", n, { timeout = 30 })
  local b0 = bc.stats().batches
  local seqs = {}
  for r = 1, R do
    if r % 3 == 0 and me % 2 == 1 then
      seqs[r] = sync.signal_entry("r" .. r)
      sync.barrier("r" .. r, n, { timeout = 30 })
    else
      seqs[r] = sync.signal_and_wait("r" .. r, n, { timeout = 30 })
    end
  end
  local batches = bc.stats().batches - b0
  for r = 1, R do call("HSET", k .. ":r" .. r, me, seqs[r]) end
  if me == 1 then call("SET", k .. ":batches", batches) end
  sync.signal_and_wait("end", n, { timeout = 30 })
end

-- Redis asleep (DEBUG SLEEP) while this process's batch is sent and a
-- CLIENT KILL waits behind it: the batch runs, then the connection is
-- killed before the reply goes out.  After the reconnect the resent batch
-- must count each entry once.  Instance 1 enters from `tasks` tasks in one
-- turn (one instance number several times in one batch), the others from
-- one.  Every seq goes to k:seqs; each process's replays and reconnects to
-- k:replays and k:reconnects.
function cases.kill(env)
  local k, port, n = env:string("k"), env:int("port"), env.instance_count
  local ntasks = env.global_seq == 1 and env:int("tasks", 3) or 1
  local total = n - 1 + env:int("tasks", 3)
  sync.signal_and_wait("ready", n, { timeout = 10 })
  if env.global_seq == 1 then
    -- a connection made now, that sends the kill in 0.3 s (while Redis sleeps)
    tg.spawn(function()
      tg.exec({ "sh", "-c", ("(sleep 0.3; echo CLIENT KILL TYPE normal) | redis-cli -p %d >/dev/null 2>&1"):format(port) },
        { timeout = 10 })
    end)
    tg.spawn(function()
      tg.sleep(0.05)
      tg.exec({ "redis-cli", "-p", tostring(port), "DEBUG", "SLEEP", "0.8" }, { timeout = 10 })
    end)
  end
  tg.sleep(0.2)
  local tasks = {}
  for i = 1, ntasks do
    tasks[i] = tg.spawn(function() return sync.signal_and_wait("s", total, { timeout = 20 }) end)
  end
  local seqs = {}
  for i = 1, ntasks do seqs[i] = tasks[i]:join() end
  for _, s in ipairs(seqs) do call("RPUSH", k .. ":seqs", s) end
  local st = require("tg.barrier.c").stats()
  call("INCRBY", k .. ":replays", st.replays)
  call("INCRBY", k .. ":reconnects", redis.stats().reconnects or 0)
  sync.signal_and_wait("end", n, { timeout = 20 })
end

return cases
