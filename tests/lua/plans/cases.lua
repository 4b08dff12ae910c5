-- a plan with several cases, used by cli_spec.lua
local sync = require "tg.sync"
local log = require "tg.log"
local tg = require "tg"
local cases = {}

function cases.ok(env)
  log.info("hello from %s, global_seq %d, group_seq %d", env.group_id, env.global_seq, env.group_seq)
end

function cases.fail(env)
  local x = env:int("x", 1)
  if x > 0 then error("deliberate failure") end
end

function cases.crash()
  error(nil)
end

function cases.table_error()
  error({})
end

function cases.params(env)
  log.info("params %s", require("tg.json").encode(env.params))
  log.info("peers %d ratio %g flag %s", env:int("peers"), env:number("ratio", 0.5), tostring(env:bool("flag", false)))
end

function cases.wire(env)
  sync.publish("t", { a = 1, b = "x" })
  sync.signal_entry("s")
end

-- tasks wait at barriers and a subscription until Redis goes away
function cases.wait_forever(env)
  local sub = sync.subscribe("never")
  local ts = {
    tg.spawn(function() sync.barrier("never-a", 5) end),
    tg.spawn(function() sub:next() end),
  }
  sync.signal_entry("waiting")
  sync.barrier("never-b", 5)
  for _, t in ipairs(ts) do t:join() end
end

function cases.env(env)
  log.info("env %s", require("tg.json").encode({
    run_id = env.run_id, plan = env.plan, case = env.case, instance_count = env.instance_count,
    group_id = env.group_id, group_instance_count = env.group_instance_count,
    outputs_path = env.outputs_path, sidecar = env.sidecar, subnet = env.subnet,
    start_time = env.start_time, ip = env.ip, global_seq = env.global_seq, group_seq = env.group_seq,
  }))
end

function cases.spin()
  require("tg").sleep(30)
end

return cases
