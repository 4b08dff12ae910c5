-- snippets.lua -- cases for snippets_spec.lua: tg.phases, tg.exchange,
-- tg.broadcast and tg.rounds across real instances (tgrun -n 4, some with
-- groups).  Each case checks its own invariants and raises when one breaks;
-- the spec reads the outcome and the logged lines.
local tg = require "tg"
local sync = require "tg.sync"
local log = require "tg.log"
local json = require "tg.json"
local phases = require "tg.phases"
local exchange = require "tg.exchange"
local broadcast = require "tg.broadcast"
local rounds = require "tg.rounds"

local cases = {}
local T = { timeout = 20 }

-- Lockstep: a phase may start only once every participant finished the
-- previous one; counters in Redis count the finished phases.
local function lockstep(names, count, opts, scope)
  local list = {}
  for i, name in ipairs(names) do
    list[i] = { name, function()
      if i > 1 then
        local done = sync.counter(scope .. ":" .. names[i - 1]):get()
        assert(done == count, ("phase %s started when only %d of %d finished %s"):format(
          name, done, count, names[i - 1]))
      end
      tg.sleep(math.random() * 0.1)
      sync.counter(scope .. ":" .. name):add(1)
      return name .. "-done"
    end }
  end
  return phases.run(list, opts)
end

function cases.phases_ok(env)
  local r = lockstep({ "setup", "load", "verify" }, env.instance_count, T, "all")
  assert(r.setup == "setup-done" and r.verify == "verify-done", "phase results")
  log.info("phases ok %d", env.global_seq)
end

-- -g fast=2 -g slow=2: each group goes in lockstep on its own; the fast
-- group does not wait for the slow one.
function cases.phases_group(env)
  local opts = { timeout = 20, group = true }
  if env.group_id == "slow" then
    tg.sleep(1.5)
    lockstep({ "one", "two" }, env.group_instance_count, opts, "slow")
  else
    lockstep({ "one", "two" }, env.group_instance_count, opts, "fast")
    local slow = sync.counter("slow:one"):get()
    assert(slow == 0, "the fast group waited for the slow one: " .. slow)
    log.info("fast group finished before the slow one started")
  end
end

-- global_seq 2 raises in "load"; the others sleep in "load" and must fail
-- at the "load" barrier at once, naming instance 2.
function cases.phases_fail(env)
  phases.run({
    { "setup", function() end },
    { "load", function()
      if env.global_seq == 2 then error("instance two gives up") end
      tg.sleep(0.3)
    end },
    { "verify", function() error("verify must not run") end },
  }, { timeout = 30, group = env:bool("group", false) })
end

-- -g a=2 -g b=2: b[2] fails in a group phase; group a is untouched.
function cases.phases_group_fail(env)
  phases.run({
    { "one", function()
      if env.group_id == "b" and env.group_seq == 2 then error("b2 gives up") end
    end },
    { "two", function() end },
  }, { timeout = 30, group = true })
  log.info("group %s done", env.group_id)
end

-- seq 1 is slow: the others' barrier times out after 0.5 s.
function cases.phases_timeout(env)
  phases.run({ { "slow", function() if env.global_seq == 1 then tg.sleep(2) end end } }, { timeout = 0.5 })
end

function cases.exchange_ok(env)
  local vals, by_seq = exchange.all("ids", { seq = env.global_seq, group = env.group_id }, T)
  assert(#vals == env.instance_count, "got " .. #vals .. " values")
  for s = 1, env.instance_count do
    assert(by_seq[s] and by_seq[s].seq == s, "by_seq[" .. s .. "]")
  end
  -- everybody saw the same order: exchange the order itself and compare
  local order = {}
  for i, v in ipairs(vals) do order[i] = v.seq end
  local orders = exchange.all("orders", table.concat(order, ","), T)
  for _, o in ipairs(orders) do assert(o == orders[1], "orders differ: " .. json.encode(orders)) end
  -- per group: only the group's values
  local mine = exchange.all("group-ids", env.group_seq, { timeout = 20, group = true })
  assert(#mine == env.group_instance_count, "group values")
  table.sort(mine)
  for i, v in ipairs(mine) do assert(v == i, "group seqs " .. json.encode(mine)) end
  log.info("exchange ok %s", orders[1])
end

-- global_seq 3 fails before it contributes; the others fail fast.  All
-- start first: an instance that connects after a peer died does not learn
-- of that death (reported; the runtime reads the notify stream from the
-- moment it connects), so its barrier would wait for the timeout.
function cases.exchange_fail(env)
  sync.signal_and_wait("all-started", env.instance_count, T)
  if env.global_seq == 3 then error("three never publishes") end
  exchange.all("never-complete", env.global_seq, { timeout = 30 })
end

function cases.broadcast_ok(env)
  local v, leader = broadcast.from_leader("secret", function()
    return { token = ("%08x"):format(math.random(0, 0x7fffffff)), by = env.global_seq }
  end, T)
  assert(leader == 1 and v.by == 1, "leader " .. json.encode(v))
  local all = exchange.all("tokens", v.token, T)
  for _, t in ipairs(all) do assert(t == all[1], "tokens differ: " .. json.encode(all)) end
  -- per group, the group's first arrival leads
  local g = broadcast.from_leader("group-secret", function() return env.group_id .. ":" .. env.global_seq end,
    { timeout = 20, group = true })
  assert(g:match("^" .. env.group_id .. ":"), "group broadcast " .. g)
  log.info("broadcast ok %s %s", v.token, g)
end

function cases.broadcast_fail(env)
  broadcast.from_leader("doomed", function() error("the leader cannot compute") end, { timeout = 30 })
end

function cases.rounds_ok(env)
  local n = env:int("rounds", 5)
  local got = rounds.run(n, function(r)
    if r > 1 then
      local prev = sync.counter("round-" .. (r - 1)):get()
      assert(prev == env.instance_count, ("round %d began when %d finished round %d"):format(r, prev, r - 1))
    end
    tg.sleep(math.random() * 0.05)
    sync.counter("round-" .. r):add(1)
    return r * r
  end, T)
  assert(#got == n and got[n] == n * n, "rounds results")
  log.info("rounds ok %d", n)
end

return cases
