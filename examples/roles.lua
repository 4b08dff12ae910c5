-- roles.lua -- a bootstrapper, seeds and leeches, each doing its own part.
--
--   tgrun -n 10 examples/roles.lua
--
-- tg.roles.assign gives instance 1 the bootstrapper, 20 % of the others the
-- seeds, the rest the leeches (10 instances: 1, 2, 7).  Every instance can
-- compute the whole assignment (roles.plan), so it knows how many of each
-- there are without asking anybody.
--   bootstrapper  makes up a network id and publishes it on "network"
--   seeds         make `chunks` chunks (a parameter, default 4: -p chunks=8)
--                 tagged with the network id, serve them
--                 over TCP and publish their address on "seeds"
--   leeches       fetch every chunk from every seed, check each one, and
--                 record metrics (bytes, seconds)
-- Barriers order the steps: "network-ready" (the bootstrapper), then
-- "seeds-ready" (every seed), then "done" (everybody).  The bootstrapper
-- finally checks the total the leeches counted.
local tg = require "tg"
local sync = require "tg.sync"
local roles = require "tg.roles"
local net = require "tg.net"
local log = require "tg.log"
local metrics = require "tg.metrics"

local SPEC = { { "bootstrapper", 1 }, { "seed", 0.2 }, { "leech", "rest" } }
local CHUNKS   -- the chunks parameter
local T = { timeout = 30 }

local function chunk(net_id, seed, c)
  return (("%s/seed-%d/chunk-%d;"):format(net_id, seed, c)):rep(50)
end

local function network_id()
  local sub = sync.subscribe("network")
  local id = sub:next(T)
  sub:close()
  return id
end

local act = {}

function act.bootstrapper(env, plan)
  local id = ("net-%08x"):format(math.random(0, 0x7fffffff))
  sync.publish("network", id)
  sync.signal_entry("network-ready")
  log.info("bootstrapper: network id %s for %d seeds and %d leeches", id, plan.seed.count, plan.leech.count)
  sync.signal_and_wait("done", env.instance_count, T)
  local fetched = sync.counter("chunks-fetched"):get()
  local want = plan.leech.count * plan.seed.count * CHUNKS
  assert(fetched == want, ("leeches fetched %d chunks, expected %d"):format(fetched, want))
  log.info("bootstrapper: leeches fetched all %d chunks", fetched)
  metrics.point("chunks_fetched", fetched)
end

function act.seed(env, plan, index)
  sync.barrier("network-ready", 1, T)
  local id = network_id()
  local listener = net.listen("0.0.0.0:0")
  sync.publish("seeds", { index = index, address = listener.address })
  sync.signal_entry("seeds-ready")
  log.info("seed %d: holding %d chunks of %s at %s", index, CHUNKS, id, listener.address)
  -- every leech connects once and asks for chunks by number until "bye"
  local served = {}
  for _ = 1, plan.leech.count do
    local conn = listener:accept(T)
    served[#served + 1] = tg.spawn(function()
      local n = 0
      while true do
        local line = conn:read_line(T)
        local c = tonumber(line:match("^get (%d+)$"))
        if not c then break end
        local data = chunk(id, index, c)
        conn:write(#data .. "\n" .. data)
        n = n + 1
      end
      conn:close()
      return n
    end)
  end
  local total = 0
  for _, t in ipairs(served) do total = total + t:join(T) end
  log.info("seed %d: served %d chunks", index, total)
  metrics.point("chunks_served", total)
  sync.signal_and_wait("done", env.instance_count, T)
  listener:close()
end

function act.leech(env, plan, index)
  sync.barrier("network-ready", 1, T)
  local id = network_id()
  sync.barrier("seeds-ready", plan.seed.count, T)
  local sub = sync.subscribe("seeds")
  local seeds = sub:take(plan.seed.count, T)
  sub:close()
  local stop = metrics.timer("fetch_all")
  local bytes = 0
  for _, s in ipairs(seeds) do
    local conn = net.connect(s.address, T)
    for c = 1, CHUNKS do
      conn:write(("get %d\n"):format(c))
      local len = tonumber(conn:read_line(T))
      local data = conn:read(len, T)
      assert(data == chunk(id, s.index, c), ("chunk %d of seed %d is wrong"):format(c, s.index))
      bytes = bytes + len
      sync.counter("chunks-fetched"):add(1)
    end
    conn:write("bye\n")
    conn:close()
  end
  local secs = stop()
  metrics.point("bytes_fetched", bytes, "bytes")
  log.info("leech %d: fetched %d chunks (%d bytes) from %d seeds in %.3f s", index, #seeds * CHUNKS, bytes,
    #seeds, secs)
  sync.signal_and_wait("done", env.instance_count, T)
end

return function(env)
  CHUNKS = env:int("chunks", 4)
  local role, index = roles.assign(SPEC)
  local plan = {}
  for _, r in ipairs(roles.plan(SPEC, env.instance_count)) do plan[r.name] = r end
  log.info("instance %d is %s %d", env.global_seq, role, index)
  act[role](env, plan, index)
end
