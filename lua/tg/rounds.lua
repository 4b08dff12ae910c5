-- tg.rounds -- n rounds in lockstep: every instance runs round r, then waits
-- at a barrier until all have finished it, then all start round r + 1.
--
--   local rounds = require "tg.rounds"
--   local got = rounds.run(5, function(r)
--     sync.publish("gossip:" .. r, env.global_seq)
--     return r * 10
--   end, { timeout = 30 })
--   -- got = {10, 20, 30, 40, 50}
--
-- rounds.run(n, fn [, opts]) -> {first result of fn(1), ..., of fn(n)}.
-- Yields.  n is a whole number >= 0 (0 runs nothing).  The barrier after
-- round r is the state "<prefix>:<r>" (prefix "round", or opts.prefix; with
-- opts.group = true "<prefix>:<group_id>:<r>").  A round is a tg.phases
-- phase named "<r>" (minus the stage events: there may be many rounds),
-- so the options and the failure behaviour are
-- tg.phases.run's: opts.timeout bounds each barrier wait; opts.group,
-- opts.count, opts.seq choose the participants; a round that raises in one
-- instance makes the others fail with "peer_failed" at their next barrier;
-- running rounds again needs another opts.prefix.
local check = require "tg.check"
local phases = require "tg.phases"

local rounds = {}

function rounds.run(n, fn, opts)
  n = check.count("rounds.run", "n", n, 0)
  if type(fn) ~= "function" then
    check.fail("rounds.run: fn must be a function, got %s", fn == nil and "nothing" or "a " .. type(fn))
  end
  local list = {}
  local function round(_, r) return fn(r) end
  for r = 1, n do list[r] = { tostring(r), round } end
  return phases.steps("rounds.run", list, opts, "round")
end

return rounds
