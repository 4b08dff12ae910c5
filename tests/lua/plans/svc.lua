-- a plan whose instances meet through a sync service (svc_spec.lua), or
-- directly on Redis: the same calls either way
local sync = require "tg.sync"
local log = require "tg.log"
local tg = require "tg"
local cases = {}

-- every instance (param total, default the run's count) meets the others
-- at a barrier, publishes one value and reads everybody's
function cases.meet(env)
  local total = env:int("total", env.instance_count)
  local seq = sync.signal_and_wait("ready", total, { timeout = 30 })
  local sub = sync.subscribe("ids")
  sync.publish("ids", { from = env:string("who", "lua"), seq = seq, big = 12345678901234567890 })
  local seen = {}
  for _, v in ipairs(sub:take(total, { timeout = 30 })) do
    -- (values from the JS SDK carry no big integer: JavaScript has none)
    assert(v.big == nil or v.big == 12345678901234567890, "a big integer changed on the way: " .. tostring(v.big))
    seen[v.from .. ":" .. v.seq] = true
  end
  local n = 0
  for _ in pairs(seen) do n = n + 1 end
  assert(n == total, ("read %d distinct values of %d"):format(n, total))
  sync.signal_and_wait("done", total, { timeout = 30 })
  log.info("met %d", total)
end

function cases.late(env)
  sync.signal_entry("late")
  sync.barrier("late", env.instance_count + 1, { timeout = 1 })
end

function cases.wait_forever(env)
  sync.signal_entry("stuck")
  log.info("waiting")
  sync.barrier("stuck", env.instance_count + 1, { timeout = 60 })
end

function cases.fail()
  error("deliberate failure")
end

-- what the sync service does not have
function cases.unsupported()
  local names = { "mutex", "semaphore", "election", "double_barrier", "counter", "queue" }
  for _, k in ipairs(names) do
    local ok, err = pcall(sync[k], "x", 1)
    assert(not ok and err.code == "unsupported", k .. ": " .. tostring(err))
    assert(err.message:match("^sync%." .. k .. " needs Redis: the sync service %(ws://127%.0%.0%.1:%d+%) has no "),
      err.message)
  end
  local ok, err = pcall(sync.signal_entry, "s", { op_id = "x" })
  assert(not ok and err.code == "unsupported", tostring(err))
  log.info("all unsupported")
end

-- with Redis as well: coordination from Redis, barriers through the service
function cases.both(env)
  local m = sync.mutex("m")
  local token = m:lock({ timeout = 10 })
  assert(token >= 1)
  m:unlock()
  assert(sync.counter("c"):add(1) >= 1)
  sync.signal_and_wait("both", env.instance_count, { timeout = 30 })
  assert(require("tg.svc.c").stats().requests > 0, "the barrier did not go through the sync service")
end

-- many instances in one process: one websocket for all of them
function cases.one_socket(env)
  sync.signal_and_wait("in", env.instance_count, { timeout = 60 })
  if env.global_seq == 1 then
    local port = env:int("port")
    local r = tg.exec({ "sh", "-c", ("ss -Htn state established '( dport = :%d )' | wc -l"):format(port) })
    local n = tonumber(r.stdout)
    assert(n == 1, ("%d connections to the sync service, not one"):format(n or -1))
  end
  sync.signal_and_wait("out", env.instance_count, { timeout = 60 })
end

-- subscriptions: close, several readers of one topic, a value published
-- before the subscription
function cases.subs(env)
  sync.publish("early", "first")
  local a, b = sync.subscribe("early"), sync.subscribe("early")
  assert(a:next({ timeout = 5 }) == "first")
  assert(b:next({ timeout = 5 }) == "first")
  local t = tg.spawn(function() return a:next({ timeout = 10 }) end)
  tg.sleep(0.05)
  a:close()
  local ok, err = pcall(t.join, t)
  assert(not ok and err.code == "closed", tostring(err))
  local ok2, err2 = pcall(b.next, b, { timeout = 0.2 })
  assert(not ok2 and err2.code == "timeout", tostring(err2))
  sync.publish("early", { n = 2 })
  assert(b:next({ timeout = 5 }).n == 2)
  b:close()
  local seq, sub = sync.publish_subscribe("ps", "x")
  assert(seq == 1 and sub:next({ timeout = 5 }) == "x")
  sub:close()
  assert(sync.publish_and_wait("pw", 1, "pw-state", 0) == 1)
end

return cases
