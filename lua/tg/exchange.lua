-- tg.exchange -- all-to-all: every participant contributes one value and
-- gets everybody's.
--
--   local exchange = require "tg.exchange"
--   local l = net.listen("0.0.0.0:0")
--   local addrs, by_seq = exchange.all("addresses", l.address, { timeout = 30 })
--   -- addrs: every instance's address, in publish order (own included);
--   -- by_seq[3]: the address of the instance whose global_seq is 3
--
-- exchange.all(topic, value [, opts]) -> values, by_seq.  Yields.
--   * value: any JSON-encodable value except nil.  Everybody gets the JSON
--     round trip, the caller too (so all see the same thing).
--   * values: count values in the order they were published (the topic's
--     order, the same in every instance).
--   * by_seq: the same values keyed by the sender's seq: its global_seq, or
--     its group_seq with opts.group, or opts.seq when given.
--   * participants: instance_count; with opts.group = true the instance's
--     group (group_instance_count, and the topic is per group); opts.count
--     overrides the count (e.g. only the seeds exchange).
--   * opts.timeout bounds the wait for the others (without it the run's
--     deadline does); reading the values after it does not wait.
--
-- How: publish {s = seq, v = value} on the topic "exchange:[<group_id>:]<topic>",
-- enter the barrier state of the same name and wait for count entries,
-- then read count values (all there by then).  The barrier is what gives
-- fail-fast: when an instance of the run fails before it contributed, the
-- others raise "peer_failed" at once instead of waiting for the timeout
-- (for whole-run exchanges; with opts.group or a smaller opts.count the
-- barrier's check counts the whole run and cannot tell, so they time out).
-- opts.tolerate_failures is passed to that barrier.
--
-- A topic can be exchanged once per instance (a second exchange.all would
-- read the first round's values): use a new topic name per exchange, e.g.
-- "addresses:" .. round.  Errors: "invalid" (bad arguments, a value that is
-- not JSON, a reused topic, two values from one seq), "timeout",
-- "peer_failed", "closed" (Redis lost), "cancelled".
local sync = require "tg.sync"
local check = require "tg.check"
local core = require "tg.core"
local participants = require "tg.participants"

local exchange = {}

local OPTIONS = { timeout = true, group = true, count = true, seq = true, tolerate_failures = true }

function exchange.all(topic, value, opts)
  local call = "exchange.all"
  check.name(call, "topic", topic)
  opts = participants.options(call, opts, OPTIONS)
  if value == nil then
    check.fail("%s('%s'): value must not be nil (every participant contributes one value)", call, topic)
  end
  local sc = participants.resolve(call, opts)
  local name = "exchange:" .. sc.ns .. topic
  participants.claim(call, "topic", name, sc.seq, "use a new topic name for each exchange")

  sync.publish(name, { s = sc.seq, v = value })
  local ok, got = pcall(sync.signal_and_wait, name, sc.count, participants.wait_opts(opts))
  if ok then
    local sub = sync.subscribe(name)
    ok, got = pcall(sub.take, sub, sc.count, participants.wait_opts(opts))
    sub:close()
  end
  if not ok then
    -- say which call waited; keep the code
    if core.is_error(got) then got = core.error(got.code, ("%s('%s'): %s"):format(call, topic, got.message)) end
    error(got, 0)
  end

  local values, by_seq = {}, {}
  for i, rec in ipairs(got) do
    local s = type(rec) == "table" and math.tointeger(rec.s)
    if not s then
      error(core.error("invalid", ("%s('%s'): value %d on the topic is not an exchange record"):format(
        call, topic, i)), 0)
    end
    if by_seq[s] ~= nil then
      error(core.error("invalid", ("%s('%s'): two values came from seq %d (is opts.seq or opts.count wrong?)")
        :format(call, topic, s)), 0)
    end
    values[i] = rec.v
    by_seq[s] = rec.v
  end
  return values, by_seq
end

return exchange
