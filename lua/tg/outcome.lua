-- tg.outcome -- what an instance's case came to, decided the way sdk-go's
-- run.Invoke decides it (a returned error is a failure, a panic a crash),
-- and the record of it: event lines (tg.events) and the run's run_events
-- (Redis stream, or the sync service's topic, where Testground's daemon
-- counts outcomes).
--
-- The rules (docs/api.md, "Outcome"):
--   failure_event -- Go: a returned error, RecordFailure
--     * the case returned a failure value: false [, msg]; nil, err with err
--       not nil; or a tgrun error value (what core.error makes and tg calls
--       raise);
--     * the case raised, through error() or assert(), a string or number,
--       a tgrun error value (a timeout, peer_failed, ...), or a table with a
--       message (__tostring, or a string field message / msg / error);
--     * env:record_failure(err): one event per call, at once; the case goes
--       on, and the instance's outcome is failure however it ends;
--     * a task nobody joined ended with such an error.
--   crash_event -- Go: a panic; the message and a stack trace
--     * an error the Lua VM or a library function raised ("attempt to index
--       a nil value", "bad argument #1 to 'rep'", a stack overflow), also
--       when task:join() passed it on from the task that raised it;
--     * error() with a value that carries no message: nil, {}, true, ...
--   success_event -- anything else: the case returned nothing, true, or any
--     other value, and nothing recorded a failure.
-- A task's error becomes the instance's only when no join ever takes it:
-- the decision waits until the case has ended, so a task that fails before
-- the case joins it (and handles the error) does not fail the instance.
local core = require "tg.core"
local json = require "tg.json"
local check = require "tg.check"
local events = require "tg.events"

local M = {}

-- What is one instance's (every instance of a process shares this module),
-- in core.state("outcome"):
--   recorded   {kind, msg, ev, emitted, res}: record_failure calls (emitted
--              at once) and errors of tasks nobody joined (res: the task's
--              results; emitted at the end unless a join claimed them), in
--              the order they happened
--   concluded  the case ended: nothing more is recorded
--   queue, publisher   events waiting for run_events, and the task sending them
local function state()
  local st = core.state("outcome")
  if not st.recorded then
    st.recorded, st.queue, st.concluded = {}, {}, false
  end
  return st
end

local function group() return core.config().group_id or "" end

local function nomem()
  return core.error("nomem", "the case ran out of memory (not enough memory; core.memory_limit or the machine's)")
end

-- M.classify(e, explicit) -> "failure" | "crash", message.  explicit: the
-- error was raised by error() or assert() (a string from anywhere else came
-- from the VM or a library).
function M.classify(e, explicit)
  if core.is_error(e) then return "failure", e.message end
  if e == "not enough memory" and not explicit then return "failure", nomem().message end
  if type(e) == "string" or math.type(e) then return explicit and "failure" or "crash", tostring(e) end
  local m = check.message_of(e)
  if m then return "failure", m end
  return "crash", ("error object is a %s value"):format(type(e))
end

-- M.handler(e) -> {e, tb, explicit, handled}: the case's xpcall message
-- handler.  Level 2 is whatever raised: the base library's error/assert
-- (kept in the registry before any plan ran) mean the plan raised it; a
-- join passing on a task's error tells how that one began (tg_rt.c leaves
-- the task's results in registry "tg.reraised").
function M.handler(e)
  local reg = debug.getregistry()
  local f = debug.getinfo(2, "f")
  f = f and f.func
  local explicit = f ~= nil and (rawequal(f, reg["tg.error_fn"]) or rawequal(f, reg["tg.assert_fn"]))
  local tb = debug.traceback(nil, 2)
  local rr = reg["tg.reraised"]
  if not explicit and type(rr) == "table" and rawequal(rr[1], e) then
    explicit = rr.explicit
    local origin = type(rr.traceback) == "string" and rr.traceback:match("(stack traceback:\n.*)$")
    if origin then tb = origin .. "\n(passed on by task:join)\n" .. tb end
  end
  reg["tg.reraised"] = nil
  return { e = e, tb = tb, explicit = explicit, handled = true }
end

-- M.returned(r) -> message | nil: does the case's packed return value say
-- it failed?  (false [, msg]; nil, err; an error value.)
function M.returned(r)
  if type(r) ~= "table" or (r.n or 0) == 0 then return nil end
  local a, b = r[1], r[2]
  if a == false then
    return b ~= nil and (check.message_of(b) or ("the case returned false and a %s value"):format(type(b)))
      or "the case returned false"
  end
  if a == nil and b ~= nil then
    return check.message_of(b) or ("the case returned nil and a %s value"):format(type(b))
  end
  if core.is_error(a) then return a.message end
  return nil
end

-- ---- run_events ------------------------------------------------------------

-- Which instance an entry of run_events is about (its field "tg"), so that
-- `tgrun observe` can follow a run from that stream alone.
local function who()
  local cfg = core.config()
  local st = core.state("outcome who")
  if st.seq ~= cfg.global_seq or not st.text then      -- made again once the seqs are known
    st.seq = cfg.global_seq
    st.text = json.encode({ seq = cfg.global_seq, group_seq = cfg.group_seq, name = cfg.instance_name,
      host = cfg.host })
  end
  return st.text
end

-- Append events to the run's run_events, bounded (5 s each): on Redis as
-- stream entries (then one EXPIRE: every key of a run expires), through a
-- sync service as publishes to its run_events topic, as Testground's SDKs
-- do.  What stdout and run.out say stands even when this cannot be done;
-- the reason goes to stderr.  what: how the message names them.  Yields.
function M.signal_all(evs, what)
  what = what or "the outcome"
  local function fail(why)
    io.stderr:write("tgrun: could not record ", what, " in run_events: ", tostring(why), "\n")
  end
  local svc = require "tg.svc.c"
  if svc.active() then
    for _, ev in ipairs(evs) do
      if svc.down() then return fail(svc.down()) end
      local ok, err = pcall(svc.event, events.encode(ev), 5)
      if not ok then return fail(err) end
    end
    return
  end
  local redis = require "tg.redis"
  if redis.down() then return end
  local keys = require "tg.keys"
  local tg = who()
  for _, ev in ipairs(evs) do
    local ok, err = pcall(redis.call, { "XADD", keys.run_events, "*", "p", events.encode(ev), "tg", tg }, 5,
      "XADD run_events")
    if not ok then return fail(err) end
  end
  local ok, err = pcall(redis.call, { "EXPIRE", keys.run_events, keys.ttl }, 5, "EXPIRE run_events")
  if not ok then fail(err) end
end

-- The same on Redis without waiting (redis.send: the replies come back in
-- order, before any later call's, and a failure is a warning in the log);
-- false when Redis is not what records them (a sync service) or is gone.
local function send_all(evs)
  if require("tg.svc.c").active() then return false end
  local redis = require "tg.redis"
  if redis.down() then return true end
  local keys = require "tg.keys"
  local tg = who()
  local ok = true
  for _, ev in ipairs(evs) do
    ok = ok and pcall(redis.send, { "XADD", keys.run_events, "*", "p", events.encode(ev), "tg", tg },
      "XADD run_events")
  end
  if ok then pcall(redis.send, { "EXPIRE", keys.run_events, keys.ttl }, "EXPIRE run_events") end
  return true
end

-- M.publish_start(ev): the start event to run_events, not waited for (the
-- instance goes on at once); not through a sync service (Testground's SDKs
-- send none).
function M.publish_start(ev)
  send_all({ ev })
end

function M.signal(ev, what)
  return M.signal_all({ ev }, what)
end

-- Events recorded while the case runs (stage events, record_failure) go to
-- run_events from a task of their own, in order and in batches, so that
-- recording never blocks (or needs) the caller's task; M.flush() waits
-- for them.
local function drain()
  local st = state()
  while #st.queue > 0 do
    local batch = st.queue
    st.queue = {}
    M.signal_all(batch, #batch == 1 and next(batch[1]) or "recorded events")
  end
  st.publisher = nil
end

-- M.publish_later(ev): queue ev for run_events.  Does not yield.  On
-- Redis it is sent at once without waiting (no task).
function M.publish_later(ev)
  if send_all({ ev }) then return end
  local st = state()
  st.queue[#st.queue + 1] = ev
  if not st.publisher then st.publisher = core.spawn(drain) end
end

function M.flush()
  local p = state().publisher
  if p then pcall(p.join, p, { timeout = 30 }) end
end

-- ---- recording ---------------------------------------------------------------

-- env:record_failure(err): a failure_event now (stdout, run.out,
-- run_events), and the instance's outcome is failure; the case goes on.
function M.record_failure(err)
  local m = check.message_of(err)
  if m == nil then
    if err == nil then
      error(core.error("invalid", "env:record_failure: err must be a message or an error value, got nothing"), 3)
    end
    m = ("error object is a %s value"):format(type(err))
  end
  local st = state()
  if st.concluded then return end
  local ev = { failure_event = { group = group(), error = m } }
  st.recorded[#st.recorded + 1] = { kind = "failure", msg = m, ev = ev, emitted = true }
  events.emit(ev)
  M.publish_later(ev)
end

-- The stack part of a task's traceback (the message is said separately).
local function stack_of(tb)
  return type(tb) == "string" and (tb:match("(stack traceback:\n.*)$") or tb) or ""
end

-- core.on("task_error", M.task_failed)(name, results): a task ended with an error
-- and nobody was joining it.  Said at once; it fails the instance unless a
-- join takes it before the case ends (tg_rt.c sets results.claimed).
function M.task_failed(name, res)
  local e = res[1]
  if core.is_error(e) and e.code == "cancelled" then return end
  local kind, m = M.classify(e, res.explicit)
  require("tg.log").error("task %s failed: %s", name, m)
  core.trace_mark("task_error", ("task %s failed: %s"):format(name, m))
  local st = state()
  if st.concluded then return end
  local text = ("task %s failed: %s"):format(name, m)
  local ev = kind == "crash"
    and { crash_event = { group = group(), error = text, stacktrace = stack_of(res.traceback) } }
    or { failure_event = { group = group(), error = text .. "\n" .. stack_of(res.traceback) } }
  st.recorded[#st.recorded + 1] = { kind = kind, msg = text, ev = ev, res = res }
end

-- Has anything failed the instance so far (the case's own end aside)?
function M.failed()
  for _, r in ipairs(state().recorded) do
    if not (r.res and r.res.claimed) then return true end
  end
  return false
end

-- M.conclude(ok, res) -> status, first, finals.  ok/res: the case's xpcall
-- (res: its packed return values, or the handler's {e, tb, explicit}).
-- status 0 success, 1 failure or crash, 2 a bad parameter (said on
-- stderr); first: the first line of the first error, as the event stream
-- shows it; finals: the events still to write, in order -- at most one: the
-- errors of unjoined tasks and the case's own, the earliest first, make
-- one outcome event (its kind the earliest's; the others' first lines
-- follow as "also failed: ..."), so that the run's counters see one
-- outcome per instance (besides one per record_failure, as in sdk-go).
function M.conclude(ok, res)
  local st = state()
  st.concluded = true
  local standing, pending, emitted_first, last_recorded = {}, {}, nil, nil
  for _, r in ipairs(st.recorded) do
    if not (r.res and r.res.claimed) then
      standing[#standing + 1] = r
      if r.emitted then
        emitted_first = emitted_first or r.msg
        last_recorded = r.msg
      else
        pending[#pending + 1] = r
      end
    end
  end
  local own
  if not ok then
    local e = res.e
    local kind, m = M.classify(e, res.explicit)
    if core.is_error(e) and e.code == "bad_param" then
      own = { msg = m, bad_param = true, ev = { failure_event = { group = group(), error = m } } }
    elseif kind == "crash" then
      own = { msg = m, ev = { crash_event = { group = group(), error = m, stacktrace = res.tb } } }
    else
      own = { msg = m, ev = { failure_event = { group = group(),
        error = m .. (res.tb ~= "" and "\n" .. res.tb or "") } } }
    end
  else
    local m = M.returned(res)
    if m then own = { msg = m, ev = { failure_event = { group = group(), error = m } } } end
  end
  -- the Go idiom record_failure(err); return nil, err says it once
  if own and own.ev.failure_event and own.msg == last_recorded then own = nil end
  if own then pending[#pending + 1] = own end
  if #standing == 0 and not own then
    return 0, nil, { { success_event = { group = group() } } }
  end
  local finals = {}
  if #pending > 0 then
    local ev = pending[1].ev
    if #pending > 1 then
      local also = {}
      for i = 2, #pending do also[#also + 1] = "also failed: " .. tostring(pending[i].msg):match("^[^\n]*") end
      local body = ev.failure_event or ev.crash_event
      ev = { [ev.failure_event and "failure_event" or "crash_event"] = { group = body.group,
        error = body.error .. "\n" .. table.concat(also, "\n"), stacktrace = body.stacktrace } }
    end
    finals[1] = ev
  end
  local first = emitted_first or (standing[1] and standing[1].msg) or own.msg
  first = tostring(first):match("^[^\n]*")
  if own and own.bad_param and #standing == 0 then
    io.stderr:write("tgrun: ", own.msg, "\n")
    return 2, first, finals
  end
  return 1, first, finals
end

return M
