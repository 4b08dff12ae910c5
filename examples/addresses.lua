-- addresses.lua -- instances find each other and talk over TCP.
--
--   tgrun -n 5 examples/addresses.lua
--
-- Every instance listens on a free port, publishes {seq, address} on the
-- topic "addresses" and collects every peer's entry.  Then, in a ring, each
-- instance dials the next one (seq 1 -> 2 -> ... -> N -> 1) and sends
-- "hello from <seq>"; the accepting side reads the line and replies.  So
-- every instance accepts exactly one connection and makes exactly one.
-- Every wait is bounded (T seconds); a final barrier keeps the listeners
-- open until everybody is done.
local tg = require "tg"
local sync = require "tg.sync"
local net = require "tg.net"
local log = require "tg.log"

local T = { timeout = 30 }

return function(env)
  local n, me = env.instance_count, env.global_seq
  local listener = net.listen("0.0.0.0:0")
  log.info("instance %d listens on %s", me, listener.address)

  sync.publish("addresses", { seq = me, address = listener.address })
  local sub = sync.subscribe("addresses")
  local peers = {}
  for _, p in ipairs(sub:take(n, T)) do peers[p.seq] = p.address end
  sub:close()

  -- the accept side runs as its own task while this one dials the next peer
  local server = tg.spawn(function()
    local conn = listener:accept(T)
    local line = conn:read_line(T)
    conn:write(("hi, this is %d; you said: %s\n"):format(me, line))
    conn:close()
    return line
  end)

  local next_seq = me % n + 1
  local conn = net.connect(peers[next_seq], T)
  conn:write(("hello from %d\n"):format(me))
  local reply = conn:read_line(T)
  conn:close()
  local heard = server:join(T)

  local prev_seq = (me - 2) % n + 1
  assert(heard == ("hello from %d"):format(prev_seq), "unexpected greeting: " .. tostring(heard))
  assert(reply:find(("this is %d;"):format(next_seq), 1, true), "unexpected reply: " .. reply)
  log.info("instance %d heard '%s' and got back '%s'", me, heard, reply)

  sync.signal_and_wait("ring-done", n, T)
  listener:close()
end
