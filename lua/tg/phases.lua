-- tg.phases -- named phases in lockstep: every instance runs phase k, then
-- waits until all have finished it, then all start phase k + 1.
--
--   local phases = require "tg.phases"
--   local r = phases.run({
--     { "setup",  function() return open_db() end },
--     { "load",   function() load(env.global_seq) end },
--     { "verify", function() return check_all() end },
--   }, { timeout = 60 })
--   -- r.setup, r.verify: what those phases returned (their first result)
--
-- Each phase function is called as fn(name, index) in the calling task.
-- After it returns, the instance enters the barrier state
-- "<prefix>:<name>" (prefix "phase" unless opts.prefix says otherwise;
-- with opts.group = true "<prefix>:<group_id>:<name>") and waits there for
-- every participant: instance_count instances, or group_instance_count
-- with opts.group, or opts.count.  opts.timeout bounds each of those waits
-- (not the phase functions: their own calls take their own bounds); without
-- it the run's deadline does.  Testground stage_start/stage_end events mark
-- each phase ("<prefix>:<name>").
--
-- Failure.  A phase function that raises makes this instance publish a
-- failure record (on the topic "<prefix>:[<group_id>:]failures") and
-- re-raise the error unchanged (its traceback is logged first, since the
-- outcome's traceback then points here).  Every other participant fails
-- with code "peer_failed" at its next barrier, at once, naming the instance,
-- the phase and the error -- including with opts.group, where the sync
-- barrier's own peer_failed check does not help (it counts the whole run).
-- An instance that dies without raising (killed, crashed runtime) is caught
-- by the barrier's own check for whole-run phases; for group phases the
-- others wait until opts.timeout.  opts.fail_fast = false turns the failure
-- records off; opts.tolerate_failures is passed to the barriers.
--
-- A phase name can be run once per prefix and instance: running the same
-- phases again needs another opts.prefix (a barrier state that is entered
-- again would let everybody through at once).  Errors: "invalid" (bad
-- arguments, a reused phase), "timeout", "peer_failed", "closed" (Redis
-- lost), "cancelled".
local tg = require "tg"
local core = require "tg.core"
local sync = require "tg.sync"
local check = require "tg.check"
local events = require "tg.events"
local log = require "tg.log"
local participants = require "tg.participants"

local phases = {}

local OPTIONS = { timeout = true, group = true, count = true, seq = true, prefix = true,
  tolerate_failures = true, fail_fast = true }

local function peer_failed(call, state, rec, where)
  error(core.error("peer_failed", ("%s: %s cannot complete: instance %s of %s failed in '%s': %s"):format(
    call, state, tostring(rec.seq), where, tostring(rec.phase), tostring(rec.error))), 0)
end

-- Watch the failure topic; on a peer's record remember it and cancel the
-- barrier wait in progress.  Returns the shared state and a stop function.
local function watch(topic, seq)
  local st = {}
  local sub = sync.subscribe(topic)
  local task = tg.spawn(function()
    while true do
      -- unbounded here means the run's deadline; stop() closes sub first
      local ok, rec = pcall(sub.next, sub)
      if not ok then return end
      if type(rec) == "table" and rec.seq ~= seq then
        st.failed = rec
        if st.waiting then st.waiting:cancel() end
        return
      end
    end
  end)
  return st, function()
    sub:close()
    task:cancel()
  end
end

local function handler(e)
  return { e = e, tb = debug.traceback(check.first_line(e), 2) }
end

-- phases.steps(call, list, opts, default_prefix, stages) -> {result, ...}:
-- the engine behind phases.run and rounds.run.  list = { {name, fn}, ... };
-- stages: write stage_start/stage_end events.
function phases.steps(call, list, opts, default_prefix, stages)
  opts = participants.options(call, opts, OPTIONS)
  if opts.fail_fast ~= nil and type(opts.fail_fast) ~= "boolean" then
    check.fail("%s: opts.fail_fast must be true or false, got %s", call, check.describe(opts.fail_fast))
  end
  if type(list) ~= "table" then
    check.fail("%s: phases must be a list of {name, function} entries, got %s", call, check.describe(list))
  end
  local sc = participants.resolve(call, opts)
  local base = (opts.prefix or default_prefix) .. ":" .. sc.ns
  local seen = {}
  for i = 1, #list do
    local p = list[i]
    if type(p) ~= "table" then
      check.fail("%s: entry %d must be a {name, function} table, got %s", call, i, check.describe(p))
    end
    if type(p[1]) ~= "string" or p[1] == "" then
      check.fail("%s: entry %d: the name must be a non-empty string, got %s", call, i, check.describe(p[1]))
    end
    if type(p[2]) ~= "function" then
      check.fail("%s: entry %d ('%s'): the phase must be a function, got %s", call, i, p[1], check.describe(p[2]))
    end
    if seen[p[1]] then
      check.fail("%s: '%s' appears twice (entries %d and %d)", call, p[1], seen[p[1]], i)
    end
    seen[p[1]] = i
  end
  for i = 1, #list do
    participants.claim(call, "barrier state", base .. list[i][1], sc.seq,
      "pass another opts.prefix to run these phases again")
  end

  local st, stop = {}, function() end
  if opts.fail_fast ~= false then st, stop = watch(base .. "failures", sc.seq) end
  local bopts = participants.wait_opts(opts)
  local results = {}
  for i = 1, #list do
    local name, fn = list[i][1], list[i][2]
    local state = base .. name
    if st.failed then stop(); peer_failed(call, "'" .. state .. "'", st.failed, sc.where) end
    if stages then events.stage("stage_start", state) end
    local r = table.pack(xpcall(fn, handler, name, i))
    if not r[1] then
      local e = r[2]
      log.error("%s failed: %s", state, e.tb)
      if opts.fail_fast ~= false then
        pcall(sync.publish, base .. "failures", { seq = sc.seq, phase = name, error = check.first_line(e.e) })
      end
      stop()
      error(e.e, 0)
    end
    results[i] = r[2]
    if st.failed then stop(); peer_failed(call, "barrier '" .. state .. "'", st.failed, sc.where) end
    local waiter = tg.spawn(sync.signal_and_wait, state, sc.count, bopts)
    st.waiting = waiter
    local ok, err = pcall(waiter.join, waiter)
    st.waiting = nil
    if not ok then
      waiter:cancel()   -- when join itself ended (this task was cancelled)
      stop()
      if st.failed then peer_failed(call, "barrier '" .. state .. "'", st.failed, sc.where) end
      error(err, 0)
    end
    if stages then events.stage("stage_end", state) end
  end
  stop()
  return results
end

-- phases.run(list [, opts]) -> {name = first result, ...}.  Yields.
function phases.run(list, opts)
  local r = phases.steps("phases.run", list, opts, "phase", true)
  local out = {}
  for i = 1, #list do out[list[i][1]] = r[i] end
  return out
end

return phases
