-- tg.instance -- what every instance does around its case: pick the case,
-- record the start, take the Testground start-up entries, run the case, and
-- record the outcome (tg.outcome) on stdout, in run.out and in the run's
-- run_events stream.
--
-- run_events gets the start (once the instance has its seqs), the stage
-- events and the outcome: field "p" is the Testground event (what
-- Testground's daemon reads), field "tg" says which instance it was --
-- {seq, group_seq, name, host}, name being the runner's "group[index]" when
-- a runner gave one -- so that `tgrun observe` can follow a run from that
-- stream alone.
local core = require "tg.core"

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

-- As sdk-go's network.WaitNetworkInitialized: stage_start_event, the
-- network-initialized barrier where a sidecar sets the network up, the
-- message the k8s runner looks for, stage_end_event.  The stage events go
-- on stdout and in run.out like every event, and to run_events, where
-- Go's SDK signals them (queued: the case does not wait for that).
local function network_initialized(cfg, events, outcome, sync, log)
  local name, group = "network-initialized", cfg.group_id
  local start = { stage_start_event = { name = name, group = group } }
  local done = { stage_end_event = { name = name, group = group } }
  local fine = { message_event = { message = "network initialisation successful" } }
  outcome.publish_later(start)
  if not cfg.sidecar then
    events.emit_all({ start, fine, done })  -- nothing to wait for: one write
  else
    events.emit(start)
    local ok, e = pcall(sync.barrier, name, cfg.instance_count)
    if not ok then
      log.info("network initialisation failed")
      error(e, 0)
    end
    events.emit_all({ fine, done })
  end
  outcome.publish_later(done)
end

-- The case ended: the metrics' last snapshot (tg.metrics).  An instance of
-- its own (what Testground starts) leaves results.out and diagnostics.out
-- even when the plan wrote none, as sdk-go does; in-process instances (ten
-- thousand folders) only when they wrote metrics.
local function close_metrics(cfg, log)
  local m = package.loaded["tg.metrics"]
  if m then
    local problem = m.close_all(not cfg.label)
    if problem then log.warn("metrics: %s", problem) end
  elseif not cfg.label and type(cfg.outputs_path) == "string" and cfg.outputs_path ~= "" then
    for _, name in ipairs({ "results.out", "diagnostics.out" }) do
      local f = io.open(cfg.outputs_path .. "/" .. name, "a")
      if f then f:close() end
    end
  end
end

-- M.main(case_fn) -> exit status, first error line.  Runs as the main task.
-- How the outcome is decided: tg.outcome.
function M.main(case_fn)
  local cfg = core.config()
  local events = require "tg.events"
  local outcome = require "tg.outcome"
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
  -- the defaults the plan declares, as Testground passes a manifest's
  require("tg.params").apply(cfg)
  local env = require("tg.env").new(cfg)
  local session = require "tg.session"

  -- a warning from the runtime (a fire-and-forget command that failed, a
  -- heartbeat that failed) goes to the log
  core.on("warning", function(text) log.warn("%s", text) end)
  -- an error of a task nobody joins is said at once and fails the instance
  -- unless a join takes it before the case ends
  core.on("task_error", outcome.task_failed)

  local start = { start_event = { runenv = {
    plan = cfg.plan, case = cfg.case, run = cfg.run_id, params = cfg.params,
    instances = cfg.instance_count, outputs_path = cfg.outputs_path, network = cfg.subnet,
    group = cfg.group_id, group_instances = cfg.group_instance_count,
    start_time = cfg.start_time,
  } } }
  events.emit(start)

  if ip_problem then log.warn("env.ip stays %s: %s", cfg.ip, ip_problem) end

  local heartbeat
  local ok, res = xpcall(function()
    -- as sdk-go's InitContext: the network-initialized stage (its barrier
    -- only where a sidecar sets the network up), then the start-up entries
    network_initialized(cfg, events, outcome, sync, log)
    env.global_seq = sync.signal_entry("initialized_global")
    env.group_seq = sync.signal_entry("initialized_group_" .. cfg.group_id)
    cfg.global_seq, cfg.group_seq = env.global_seq, env.group_seq   -- for tg.roles
    -- sessions (locks given back, peer failures told) live in Redis: none
    -- when a sync service is used without it
    if not require("tg.redis").down() then heartbeat = session.start(env.global_seq) end
    outcome.publish_start(start)       -- now it can say which instance started
    return table.pack(case_fn(env))
  end, outcome.handler)
  -- Lua skips the handler for a memory error: res is then the error itself
  if not ok and (type(res) ~= "table" or not res.handled) then
    res = { e = res == "not enough memory" and core.error("nomem", "the case ran out of memory "
      .. "(not enough memory; core.memory_limit or the machine's)") or res, tb = "", explicit = true }
  end
  core.memory_limit(0)   -- recording the outcome must not fail for a limit the plan set

  core.case_over()
  close_metrics(cfg, log)
  -- Declared dead by the run (this process was stopped or cut off for
  -- longer than the session TTL): whatever the case did, it did not succeed.
  local dead = core.declared_dead()
  if ok and dead then
    ok, res = false, { e = core.error("dead", "this instance was declared dead by the run: " .. dead), tb = "" }
  end
  if heartbeat then heartbeat:cancel() end
  if ok and not outcome.failed() and not outcome.returned(res) and cfg.global_seq
      and not require("tg.redis").down() then
    local said, alive = session.bye(cfg.global_seq)
    if said and alive == 0 then
      ok, res = false, { e = core.error("dead", "this instance was declared dead by the run (its session "
        .. "lapsed before it ended): its peers went on without it"), tb = "" }
    end
  end

  local status, first, finals = outcome.conclude(ok, res)
  -- the outcome in the trace too (written at once: what follows may not end)
  core.trace_mark(status == 0 and "success" or (finals[1] and finals[1].crash_event) and "crash" or "failure",
    first)
  if status ~= 0 and cfg.global_seq and not require("tg.redis").down() then
    session.die(cfg.global_seq, first or "failed")
  end
  for _, ev in ipairs(finals) do events.emit(ev) end
  outcome.flush()                       -- what was recorded earlier goes first
  outcome.signal_all(finals)
  events.close()
  return status, first
end

return M
