-- tg -- the core module: tasks and time, and the other modules as fields.
--
--   local tg = require "tg"
--   local t = tg.spawn(function(x) tg.sleep(0.1) return x * 2 end, 21)
--   assert(t:join() == 42)
local core = require "tg.core"

local tg = {
  spawn = core.spawn,   -- tg.spawn(fn, ...) -> task; task:join([opts]), task:cancel()
  sleep = core.sleep,   -- tg.sleep(seconds)          yields
  now = core.now,       -- monotonic seconds (float)
  time = core.time,     -- wall clock seconds since the epoch (float)
}

-- tg.exec(argv [, opts]) -> {code =, stdout =, stderr =}
function tg.exec(argv, opts)
  return require("tg.proc").exec(argv, opts)
end

local lazy = { sync = true, roles = true, log = true, metrics = true, net = true, json = true }
return setmetatable(tg, {
  __index = function(t, k)
    if lazy[k] then
      local m = require("tg." .. k)
      rawset(t, k, m)
      return m
    end
  end,
})
