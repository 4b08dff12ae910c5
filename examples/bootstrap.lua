-- bootstrap.lua -- Testground's first choreography: every instance enters
-- the state "bootstrapped", then waits until all instances have.
--
--   tgrun -n 5 examples/bootstrap.lua
--
-- signal_entry returns this instance's arrival order (1..N); the barrier
-- returns once N instances entered, or fails: "timeout" after 30 s, or
-- "peer_failed" at once if an instance fails before it enters.
local sync = require "tg.sync"
local log = require "tg.log"

return function(env)
  local seq = sync.signal_entry("bootstrapped")
  log.info("I am instance number %d entering the 'bootstrapped' state", seq)
  sync.barrier("bootstrapped", env.instance_count, { timeout = 30 })
  log.info("All %d instances have entered the 'bootstrapped' state", env.instance_count)
end
