-- tg.keys -- the Redis key layout of a run (API.md section 7).
--
-- P = run:<run>:plan:<plan>:case:<case>
--   P:states:<state>       counter (INCR), Go SDK compatible
--   P:topics:<topic>       stream, field p = JSON value, Go SDK compatible
--   P:run_events           stream, field p = JSON event, Go SDK compatible
--   P:tg:waits:<state>     zset of targets that waiters registered (tgrun)
--   P:tg:notify            stream of barrier releases: s = state key, n = count (tgrun)
--
-- The prefix is read from the instance's configuration on first use: a plan
-- requires its modules before the runner knows which case runs.
local core = require "tg.core"

local keys = {}
local P

local function prefix()
  if not P then
    local cfg = core.config()
    if not cfg.run_id or not cfg.case then
      error(core.error("invalid", "the run's keys are not known yet: sync calls must run in a case"), 3)
    end
    P = ("run:%s:plan:%s:case:%s"):format(cfg.run_id, cfg.plan, cfg.case)
    keys.prefix = P
    keys.notify = P .. ":tg:notify"
    keys.run_events = P .. ":run_events"
    -- seconds: every key a run creates expires, so nothing stays forever
    keys.ttl = tostring(math.max(86400, math.ceil((cfg.timeout or 600) * 2)))
  end
  return P
end

setmetatable(keys, { __index = function(_, k)
  if k == "prefix" or k == "notify" or k == "run_events" or k == "ttl" then
    prefix()
    return rawget(keys, k)
  end
end })

function keys.state(s) return prefix() .. ":states:" .. s end
function keys.waits(s) return prefix() .. ":tg:waits:" .. s end
function keys.topic(t) return prefix() .. ":topics:" .. t end
function keys.tg(name) return prefix() .. ":tg:" .. name end
function keys.members(s) return prefix() .. ":tg:members:" .. s end

return keys
