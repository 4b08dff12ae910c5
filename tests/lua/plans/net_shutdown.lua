-- net_shutdown.lua -- a case that ends while tasks wait in every tg.net call
-- and nothing was closed (used by net_spec.lua): shutdown must abort the
-- waits and close every handle, so that tgrun exits cleanly (and, built
-- with ASan, without leaks).
local tg = require "tg"
local net = require "tg.net"
local log = require "tg.log"

return function()
  local l = net.listen("0.0.0.0:0")
  local l2 = net.listen("127.0.0.1:0")
  tg.spawn(function() l:accept() end)                        -- waits in accept
  local c1 = net.connect(l2.address, { timeout = 5 })
  local c2 = net.connect(l2.address, { timeout = 5 })         -- stays in l2's queue
  local s1 = l2:accept({ timeout = 5 })                       -- c1's other end
  tg.spawn(function() c1:read(10) end)                        -- waits in read
  tg.spawn(function() s1:read_line() end)                     -- waits in read_line
  tg.spawn(function() c2:write(("x"):rep(32 * 1024 * 1024)) end)   -- more than the buffers hold
  tg.spawn(function() pcall(net.connect, "localhost:1") end)  -- resolving, or refused already
  tg.sleep(0.2)
  log.info("leaving with everything open")
end
