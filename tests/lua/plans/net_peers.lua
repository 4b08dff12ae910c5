-- net_peers.lua -- two instances talk over TCP (used by net_spec.lua): the
-- first listens on every interface and publishes listener.address on a
-- topic, the second dials that address; one line each way.
local net = require "tg.net"
local sync = require "tg.sync"
local log = require "tg.log"

return function(env)
  if env.global_seq == 1 then
    local l = net.listen("0.0.0.0:0")
    sync.publish("listener", l.address)
    local c = l:accept({ timeout = 30 })
    local line = c:read_line({ timeout = 30 })
    log.info("server got: %s", line)
    c:write("pong to " .. line .. "\n")
    -- the client closes after the reply: then a read ends with "closed"
    local ok, err = pcall(c.read, c, nil, { timeout = 30 })
    assert(not ok and err.code == "closed", "expected closed, got " .. tostring(err))
    c:close()
    l:close()
  else
    local sub = sync.subscribe("listener")
    local addr = sub:next({ timeout = 30 })
    local c = net.connect(addr, { timeout = 10 })
    c:write(("ping from %d\r\n"):format(env.global_seq))
    log.info("client got: %s", c:read_line({ timeout = 30 }))
    c:close()
    sub:close()
  end
end
