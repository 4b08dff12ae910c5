-- a plan whose cases end every way a case can end, used by outcome_spec.lua
local tg = require "tg"
local core = require "tg.core"
local log = require "tg.log"
local sync = require "tg.sync"
local c = {}

-- returned values
function c.ret_nothing() end
function c.ret_true() return true end
function c.ret_other() return "fine", 42 end
function c.ret_nil_nil() return nil, nil end
function c.ret_false() return false end
function c.ret_false_msg() return false, "the numbers did not add up" end
function c.ret_nil_err() return nil, "no route to 10.0.0.7" end
function c.ret_nil_errval() return nil, core.error("timeout", "fetch timed out after 3 s") end
function c.ret_errval() return core.error("mismatch", "3 of 4 blocks arrived") end
function c.ret_nil_table() return nil, { message = "a table error" } end

-- raised on purpose: failures
function c.err_string() error("deliberate") end
function c.err_level0() error("no position", 0) end
function c.err_number() error(42) end
function c.assert_msg() assert(1 + 1 == 3, "arithmetic is broken") end
function c.err_message() error({ message = "from message", code = 7 }) end
function c.err_msg() error({ msg = "from msg" }) end
function c.err_error() error({ error = "from error" }) end
function c.err_tostring() error(setmetatable({}, { __tostring = function() return "from __tostring" end })) end
function c.err_tg() sync.barrier("nobody-comes", 2, { timeout = 0.1 }) end

-- the VM or a library raised: crashes
function c.vm_index() local t; return t.field end
function c.vm_call() local f; f() end
function c.vm_arith() return {} + 1 end
function c.lib_arg() return ("x"):rep({}) end
function c.overflow() local function f() return 1 + f() end return f() end
-- no message at all: crashes
function c.err_nil() error(nil) end
function c.err_empty() error({}) end
function c.err_bool() error(true) end

-- env:record_failure
function c.record_twice(env)
  env:record_failure("first problem")
  log.info("still going after the first")
  env:record_failure(core.error("x", "second problem"))
  log.info("still going after the second")
end
function c.record_then_return(env)
  local err = "lost 3 of 10 messages"
  env:record_failure(err)
  return nil, err
end
function c.record_then_raise(env)
  env:record_failure("recorded first")
  error("raised later")
end
function c.record_nothing(env) env:record_failure() end

-- tasks
function c.task_unjoined()
  tg.spawn(function() error("the task gave up") end)
  tg.sleep(0.05)
end
function c.task_unjoined_vm()
  tg.spawn(function() local t; t.x = 1 end)
  tg.sleep(0.05)
end
function c.task_then_timeout()
  tg.spawn(function() error("the publisher died") end)
  sync.barrier("never-reached", 2, { timeout = 0.2 })
end
function c.task_joined_later()
  local t = tg.spawn(function() error("handled by the case") end)
  tg.sleep(0.05)
  local ok, err = pcall(t.join, t)
  assert(not ok and tostring(err):match("handled by the case"))
end
function c.task_joined_crash()
  local t = tg.spawn(function() local n; return n + 1 end)
  tg.sleep(0.05)
  t:join()
end
function c.task_joined_failure()
  local t = tg.spawn(function() error("explicit in the task") end)
  t:join()
end
function c.task_cancelled()
  local t = tg.spawn(function() tg.sleep(10) end)
  tg.sleep(0.02)
  t:cancel()
  tg.sleep(0.02)
end

return c
