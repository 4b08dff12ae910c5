-- tg.session -- this instance's session in Redis: a member of P:tg:sessions
-- whose expiry the process's one heartbeat pushes forward every ttl/3
-- seconds (src/tg_session.c).  When it lapses (the instance was killed, or
-- lost the network) any instance's next heartbeat declares it dead: its
-- locks, permits and leadership come back and the run hears of it (barriers
-- that can no longer complete fail with "peer_failed").  A failure recorded
-- by the instance itself declares it dead at once; a clean exit ends the
-- session and gives everything back.
local c = require "tg.session.c"

local session = {}

-- seconds; TG_SESSION_TTL overrides
session.ttl = tonumber(os.getenv("TG_SESSION_TTL") or "") or 3

-- Start keeping instance sid alive.  Returns a handle with :cancel().
function session.start(sid)
  c.start(tostring(sid), session.ttl)
  return { cancel = function() c.stop(tostring(sid)) end }
end

-- The instance failed: tell the run now, not when the session lapses.
function session.die(sid, why)
  return pcall(c.die, tostring(sid), why)
end

-- The instance ended cleanly: give back what it holds.
function session.bye(sid)
  return pcall(c.bye, tostring(sid))
end

return session
