-- tg.instance -- what every instance does around its case: pick the case,
-- record the start, take the Testground start-up entries, run the case, and
-- record the outcome on stdout, in run.out and in the run's run_events stream.
--
-- run_events gets the start (once the instance has its seqs) and the
-- outcome: field "p" is the Testground event (what Testground's daemon
-- reads), field "tg" says which instance it was -- {seq, group_seq, name,
-- host}, name being the runner's "group[index]" when a runner gave one --
-- so that `tgrun observe` can follow a run from that stream alone.
local core = require "tg.core"
local json = require "tg.json"

local M = {}

-- M.select(plan_result, wanted) -> name, fn | nil, message
function M.select(result, wanted)
  if wanted == "" then wanted = nil end
  if type(result) == "function" then return wanted or "default", result end
  if type(result) ~= "table" then
    return nil, ("the plan must return a function or a table of case functions, not %s"):format(
      result == nil and "nothing" or "a " .. type(result))
  end
  local names = {}
  for k, v in pairs(result) do
    if type(k) == "string" and type(v) == "function" then names[#names + 1] = k end
  end
  table.sort(names)
  if #names == 0 then return nil, "the plan returned a table without case functions" end
  if wanted then
    if type(result[wanted]) == "function" then return wanted, result[wanted] end
    return nil, ("unknown case '%s'; the plan has: %s"):format(wanted, table.concat(names, ", "))
  end
  if #names == 1 then return names[1], result[names[1]] end
  return nil, ("the plan has %d cases (%s): choose one with --case NAME or TEST_CASE"):format(
    #names, table.concat(names, ", "))
end

local function message_of(e)
  if type(e) == "string" then return e end
  if core.is_error(e) then return e.message end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return nil
end

-- Append an event to run_events, bounded: what stdout and run.out say
-- stands even when Redis is gone.  With a sync service, the outcome is
-- published there, as Testground's SDKs do (its daemon counts them); the
-- start is not (the SDKs do not send one).
local function signal_event(ev, what)
  local svc = require "tg.svc.c"
  if svc.active() then
    if what ~= "outcome" then return end
    if svc.down() then
      io.stderr:write("tgrun: could not record the outcome in run_events: ", svc.down(), "\n")
      return
    end
    local ok, err = pcall(svc.event, json.encode(ev), 5)
    if not ok then io.stderr:write("tgrun: could not record the outcome in run_events: ", tostring(err), "\n") end
    return
  end
  local redis = require "tg.redis"
  if redis.down() then return end
  local keys = require "tg.keys"
  local cfg = core.config()
  local who = json.encode({ seq = cfg.global_seq, group_seq = cfg.group_seq, name = cfg.instance_name,
    host = cfg.host })
  local xadd = { "XADD", keys.run_events, "*", "p", json.encode(ev), "tg", who }
  local expire = { "EXPIRE", keys.run_events, keys.ttl }
  local ok, err
  if what == "start" then
    -- not waited for: the instance goes on at once (the outcome, later on
    -- the same connection, is waited for, and comes after it)
    ok, err = pcall(redis.send, xadd, "XADD run_events (start)")
    if ok then ok, err = pcall(redis.send, expire, "EXPIRE run_events") end
  else
    ok, err = pcall(redis.call, xadd, 5, "XADD run_events")
    if ok then ok, err = pcall(redis.call, expire, 5, "EXPIRE run_events") end
  end
  if not ok then
    io.stderr:write("tgrun: could not record the ", what, " in run_events: ", tostring(err), "\n")
  end
end

-- M.main(case_fn) -> exit status, first error line.  Runs as the main task.
function M.main(case_fn)
  local cfg = core.config()
  local events = require "tg.events"
  local sync = require "tg.sync"
  local log = require "tg.log"
  -- env.ip: with a real data network (TEST_SUBNET not loopback: Testground,
  -- containers, namespaces) the address of this instance's interface inside
  -- it, as sdk-go's GetDataNetworkIP finds it; TG_INSTANCE_IP still wins.
  local ip_problem
  if not os.getenv("TG_INSTANCE_IP") and type(cfg.subnet) == "string" and not cfg.subnet:match("^127%.") then
    local addr, why = require("tg.network").data_address()
    if addr then cfg.ip = addr else ip_problem = why end
  end
  local env = require("tg.env").new(cfg)
  local session = require "tg.session"

  -- a warning from the runtime (a fire-and-forget command that failed, a
  -- heartbeat that failed) goes to the log
  core.on("warning", function(text) log.warn("%s", text) end)

  -- an error of a task nobody joins is reported, not lost
  core.on("task_error", function(name, res)
    if core.is_error(res[1]) and res[1].code == "cancelled" then return end
    local m = message_of(res[1]) or ("error object is a " .. type(res[1]) .. " value")
    log.error("task %s failed: %s", name, m)
    core.trace_mark("task_error", ("task %s failed: %s"):format(name, m))
  end)

  local start = { start_event = { runenv = {
    plan = cfg.plan, case = cfg.case, run = cfg.run_id, params = cfg.params,
    instances = cfg.instance_count, outputs_path = cfg.outputs_path, network = cfg.subnet,
    group = cfg.group_id, group_instances = cfg.group_instance_count,
    start_time = cfg.start_time,
  } } }
  events.emit(start)

  if ip_problem then log.warn("env.ip stays %s: %s", cfg.ip, ip_problem) end

  local heartbeat
  local ok, err = xpcall(function()
    if cfg.sidecar then
      events.stage("stage_start", "network-initialized")
      sync.barrier("network-initialized", cfg.instance_count)
      log.info("network initialisation successful")
      events.stage("stage_end", "network-initialized")
    end
    env.global_seq = sync.signal_entry("initialized_global")
    env.group_seq = sync.signal_entry("initialized_group_" .. cfg.group_id)
    cfg.global_seq, cfg.group_seq = env.global_seq, env.group_seq   -- for tg.roles
    -- sessions (locks given back, peer failures told) live in Redis: none
    -- when a sync service is used without it
    if not require("tg.redis").down() then heartbeat = session.start(env.global_seq) end
    signal_event(start, "start")       -- now it can say which instance started
    case_fn(env)
  end, function(e)
    return { e = e, tb = debug.traceback(nil, 2), handled = true }
  end)
  -- Lua skips the handler for a memory error: err is then the error itself
  if not ok and (type(err) ~= "table" or not err.handled) then
    err = { e = err == "not enough memory" and core.error("nomem", "the case ran out of memory "
      .. "(not enough memory; core.memory_limit or the machine's)") or err, tb = "" }
  end
  core.memory_limit(0)   -- recording the outcome must not fail for a limit the plan set

  core.case_over()
  -- Declared dead by the run (this process was stopped or cut off for
  -- longer than the session TTL): whatever the case did, it did not succeed.
  local dead = core.declared_dead()
  if ok and dead then
    ok, err = false, { e = core.error("dead", "this instance was declared dead by the run: " .. dead), tb = "" }
  end
  if heartbeat then heartbeat:cancel() end
  if ok and cfg.global_seq and not require("tg.redis").down() then
    local said, alive = session.bye(cfg.global_seq)
    if said and alive == 0 then
      ok, err = false, { e = core.error("dead", "this instance was declared dead by the run (its session "
        .. "lapsed before it ended): its peers went on without it"), tb = "" }
    end
  end

  local ev, status, first
  if ok then
    ev = { success_event = { group = cfg.group_id } }
    status = 0
  else
    local e = err.e
    local msg = message_of(e)
    if core.is_error(e) and e.code == "bad_param" then
      ev = { failure_event = { group = cfg.group_id, error = msg } }
      status, first = 2, msg
      io.stderr:write("tgrun: ", msg, "\n")
    elseif msg then
      ev = { failure_event = { group = cfg.group_id, error = msg .. (err.tb ~= "" and "\n" .. err.tb or "") } }
      status, first = 1, msg
    else
      msg = ("error object is a %s value"):format(type(e))
      ev = { crash_event = { group = cfg.group_id, error = msg, stacktrace = err.tb } }
      status, first = 1, msg
    end
    if cfg.global_seq and not require("tg.redis").down() then
      session.die(cfg.global_seq, first or "failed")
    end
  end
  events.emit(ev)
  -- the outcome in the trace too (written at once: what follows may not end)
  core.trace_mark(ok and "success" or ev.crash_event and "crash" or "failure", first)
  signal_event(ev, "outcome")
  events.close()
  return status, first
end

return M
