-- plans for local_spec.lua: runs of many instances started by tgrun -n
local sync = require "tg.sync"
local log = require "tg.log"
local cases = {}

function cases.all(env)
  local seq = sync.signal_entry("bootstrapped")
  log.info("entered as %d of %d (group %s, %d)", seq, env.instance_count, env.group_id, env.group_seq)
  sync.barrier("bootstrapped", env.instance_count)
end

function cases.one_fails(env)
  sync.signal_and_wait("start", env.instance_count)
  if env.global_seq == 2 then error("instance two gives up") end
end

function cases.hang(env)
  if env.global_seq ~= 1 then sync.signal_entry("done") end
  sync.barrier("done", env.instance_count)
end

-- waits with a timeout of its own, longer than the run's deadline
function cases.hang_long(env)
  if env.global_seq ~= 1 then sync.signal_entry("done") end
  sync.barrier("done", env.instance_count, { timeout = 60 })
end

-- plan code that never yields: the Lua hook ends it at the deadline
function cases.busy()
  local x = 0
  while true do x = x + 1 end
end

-- blocked in a C call (os.execute) past the deadline, deaf to SIGTERM:
-- only the runner's SIGKILL ends it
function cases.blocked(env)
  if env.global_seq == 1 then os.execute("trap '' TERM; sleep 30") end
  sync.signal_entry("done")
  sync.barrier("done", env.instance_count, { timeout = 60 })
end

-- every instance publishes one value and takes them all, in the same order
function cases.all_to_all(env)
  local seq, sub = sync.publish_subscribe("peers", { from = env.global_seq })
  local got = sub:take(env.instance_count, { timeout = 30 })
  local order = {}
  for i, v in ipairs(got) do order[i] = v.from end
  log.info("order %s", table.concat(order, ","))
  sync.signal_and_wait("done", env.instance_count)
end

function cases.bad_param(env)
  env:int("rounds")
end

return cases
