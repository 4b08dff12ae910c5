-- tg.broadcast -- one-to-all: the leader computes a value, everybody gets it.
--
--   local broadcast = require "tg.broadcast"
--   local net_id = broadcast.from_leader("network-id", function()
--     return ("net-%08x"):format(math.random(0, 0x7fffffff))
--   end, { timeout = 30 })
--   -- every instance: the same net_id
--
-- broadcast.from_leader(topic, fn [, opts]) -> value, leader.  Yields.
--
-- The leader is the instance whose global_seq is 1 -- with opts.group = true
-- the one whose group_seq is 1, within each group -- or, with opts.leader =
-- k, the one whose seq is k.  Not an election: global_seq is fixed at
-- start-up, so every instance knows at once, without a Redis round trip,
-- whether it leads (the same convention as tg.roles' first role).  Use
-- sync.election when leadership must move to another instance if the
-- leader dies.
--
-- The leader calls fn() and publishes its first result on the topic
-- "broadcast:[<group_id>:]<topic>"; the others wait for it, bounded by
-- opts.timeout (else the run's deadline).  Everybody, the leader too,
-- returns the JSON round trip of the value (so all see the same thing; fn
-- may return nil) and the leader's seq.
--
-- Failure.  When fn raises (or returns something that is not JSON), the
-- leader publishes a failure record and re-raises; the others raise
-- "peer_failed" at once, with the leader's error.  A leader that dies
-- without raising publishes nothing: the others raise "timeout" naming the
-- leader.  A topic can be broadcast once per instance: use a new topic for
-- each broadcast.  Errors: "invalid", "timeout", "peer_failed", "closed",
-- "cancelled".
local sync = require "tg.sync"
local check = require "tg.check"
local core = require "tg.core"
local json = require "tg.json"
local log = require "tg.log"
local participants = require "tg.participants"

local broadcast = {}

local OPTIONS = { timeout = true, group = true, count = true, seq = true, leader = true }

local function handler(e)
  return { e = e, tb = debug.traceback(check.first_line(e), 2) }
end

function broadcast.from_leader(topic, fn, opts)
  local call = "broadcast.from_leader"
  check.name(call, "topic", topic)
  if type(fn) ~= "function" then
    check.fail("%s('%s'): fn must be a function that computes the value, got %s", call, topic, check.describe(fn))
  end
  opts = participants.options(call, opts, OPTIONS)
  local sc = participants.resolve(call, opts)
  local leader = opts.leader == nil and 1 or check.count(call, "opts.leader", opts.leader, 1)
  if leader > sc.count then
    check.fail("%s('%s'): opts.leader %d is out of range 1..%d", call, topic, leader, sc.count)
  end
  local name = "broadcast:" .. sc.ns .. topic
  participants.claim(call, "topic", name, sc.seq, "use a new topic name for each broadcast")

  if sc.seq == leader then
    local r = table.pack(xpcall(function()
      local rec = { ok = true, v = (fn()) }
      local ok, text = pcall(json.encode, rec)
      if not ok then
        error(core.error("invalid", ("%s('%s'): the leader's value cannot be sent as JSON: %s"):format(
          call, topic, tostring(text):gsub("^json%.encode: ", ""))), 0)
      end
      sync.publish(name, rec)
      return json.decode(text).v      -- what the others decode
    end, handler))
    if not r[1] then
      log.error("%s('%s'): the leader failed: %s", call, topic, r[2].tb)
      pcall(sync.publish, name, { ok = false, error = check.first_line(r[2].e) })
      error(r[2].e, 0)
    end
    return r[2], leader
  end

  local sub = sync.subscribe(name)
  local ok, rec = pcall(sub.next, sub, { timeout = opts.timeout })
  sub:close()
  if not ok then
    if core.is_error(rec) and rec.code == "timeout" then
      error(core.error("timeout", ("%s('%s'): no value from the leader (seq %d of %s) %s"):format(
        call, topic, leader, sc.where, opts.timeout and ("after %g s"):format(opts.timeout)
          or "by the run's deadline")), 0)
    end
    error(rec, 0)
  end
  if type(rec) ~= "table" or rec.ok == nil then
    error(core.error("invalid", ("%s('%s'): the topic holds something that is not a broadcast record"):format(
      call, topic)), 0)
  end
  if not rec.ok then
    error(core.error("peer_failed", ("%s('%s'): the leader (seq %d of %s) failed: %s"):format(
      call, topic, leader, sc.where, tostring(rec.error))), 0)
  end
  return rec.v, leader
end

return broadcast
