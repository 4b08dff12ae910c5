-- tg.session -- this instance's session in Redis: a member of P:tg:sessions
-- whose expiry the runtime pushes forward every ttl/3 seconds (src/tg_session.c).  When it
-- lapses (the instance was killed, or lost the network) any instance's next
-- heartbeat declares it dead: its locks, permits and leadership come back and
-- the run hears of it (barriers that can no longer complete fail with
-- "peer_failed").  A failure recorded by the instance itself declares it dead
-- at once; a clean exit ends the session and gives everything back.
local core = require "tg.core"
local keys = require "tg.keys"

local session = {}

-- seconds; TG_SESSION_TTL overrides
session.ttl = tonumber(os.getenv("TG_SESSION_TTL") or "") or 3

local function coord(op, sid, value, lease_ms, timeout)
  return core.script("coord", { keys.tg("sessions") },
    { op, "", "", value or "", keys.prefix, "", tostring(sid), "1", tostring(lease_ms or 0), "1", keys.ttl },
    timeout or 5, "session " .. op)
end

-- Start keeping instance sid alive: the process's one heartbeat (in C)
-- covers every instance it runs.  Returns a handle with :cancel().
function session.start(sid)
  core.session_add(tostring(sid), session.ttl)
  return { cancel = function() core.session_remove(tostring(sid)) end }
end

-- The instance failed: tell the run now, not when the session lapses.
function session.die(sid, why)
  return pcall(coord, "die", sid, why)
end

-- The instance ended cleanly: give back what it holds.
function session.bye(sid)
  return pcall(coord, "bye", sid)
end

return session
