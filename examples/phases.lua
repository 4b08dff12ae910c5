-- phases.lua -- a run in lockstep phases, with the choreography snippets.
--
--   tgrun -n 4 examples/phases.lua
--
-- Phases (tg.phases: nobody starts a phase before all finished the last):
--   setup     the leader broadcasts the run's shard size (tg.broadcast);
--             every instance builds its shard of a key-value table
--   exchange  every instance gets every shard (tg.exchange) and merges them
--   gossip    three rounds in lockstep (tg.rounds): each round, every
--             instance bumps a shared counter; the next round checks that
--             all did
--   verify    every instance digests the merged table; all digests must agree
-- A phase that raises in one instance makes the others fail at once with
-- "peer_failed".  Every wait is bounded by the parameter phase_timeout
-- (seconds, default 30: -p phase_timeout=10).
local sync = require "tg.sync"
local log = require "tg.log"
local json = require "tg.json"
local phases = require "tg.phases"
local exchange = require "tg.exchange"
local broadcast = require "tg.broadcast"
local rounds = require "tg.rounds"


-- 32-bit FNV-1a of s, as 8 hex digits: a digest small enough to compare
local function fnv1a(s)
  local h = 0x811c9dc5
  for i = 1, #s do h = ((h ~ s:byte(i)) * 0x01000193) & 0xffffffff end
  return ("%08x"):format(h)
end

return function(env)
  local n, me = env.instance_count, env.global_seq
  local T = { timeout = env:int("phase_timeout", 30) }
  local size, shard, merged

  local r = phases.run({
    { "setup", function()
      size = broadcast.from_leader("shard-size", function() return 5 + n end, T)
      shard = {}
      for i = 1, size do shard[("k%02d-%02d"):format(me, i)] = me * 1000 + i end
    end },
    { "exchange", function()
      local shards, by_seq = exchange.all("shards", shard, T)
      assert(#shards == n and by_seq[me][("k%02d-01"):format(me)] == me * 1000 + 1, "shards")
      merged = {}
      for _, s in ipairs(shards) do
        for k, v in pairs(s) do
          assert(merged[k] == nil, "key " .. k .. " twice")
          merged[k] = v
        end
      end
    end },
    { "gossip", function()
      rounds.run(3, function(round)
        if round > 1 then
          local seen = sync.counter("gossip-" .. (round - 1)):get()
          assert(seen == n, ("round %d: only %d of %d finished round %d"):format(round, seen, n, round - 1))
        end
        sync.counter("gossip-" .. round):add(1)
      end, T)
    end },
    { "verify", function()
      local keys = {}
      for k in pairs(merged) do keys[#keys + 1] = k end
      table.sort(keys)
      assert(#keys == n * size, ("%d keys, expected %d"):format(#keys, n * size))
      local parts = {}
      for i, k in ipairs(keys) do parts[i] = k .. "=" .. merged[k] end
      local digest = fnv1a(table.concat(parts, ","))
      local all = exchange.all("digests", digest, T)
      for _, d in ipairs(all) do assert(d == digest, "digests differ: " .. json.encode(all)) end
      return digest
    end },
  }, T)
  log.info("instance %d: %d keys merged, all agree on %s", me, n * size, r.verify)
end
