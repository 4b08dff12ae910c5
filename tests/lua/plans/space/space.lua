-- space.lua -- what instances of one process share and what each keeps to
-- itself (space_spec runs it with --inproc and as processes).  Each case
-- prints "ok <what>" lines the spec counts, and fails on any leak.
local sync = require "tg.sync"
local core = require "tg.core"
local counter = require "counter"
local legacy = require "legacy"

local top = 0          -- a top-level local: one per instance
function plan_global() return "mine" end

local function all(env, name) return sync.signal_and_wait(name, env.instance_count) end

local cases = {}

-- globals, top-level locals, plan modules and their globals
function cases.globals(env)
  local seq = all(env, "start")
  assert(rawget(_G, "marker") == nil, "a global set by another instance is visible: " .. tostring(rawget(_G, "marker")))
  marker = seq
  top = top + seq
  assert(_G == _ENV and _G._G == _G, "_G is not this instance's globals")
  assert(counter.bump() == 1, "the plan's module keeps one counter for every instance")
  assert(type(legacy) == "table" and legacy.bump() == 1, "an old-style module is shared")
  assert(loaded_at == 1, "the plan's module ran " .. tostring(loaded_at) .. " times in this instance's globals")
  all(env, "set")
  assert(marker == seq, "marker became " .. tostring(marker) .. ", this instance set " .. seq)
  assert(top == seq, "the top-level local is shared: " .. top)
  assert(counter.bump() == 2, "module state changed by another instance")
  -- load without an env runs in this instance's globals
  load("loaded_global = ...")(seq)
  assert(loaded_global == seq)
  all(env, "loaded")
  assert(loaded_global == seq, "load() wrote to the shared globals")
  -- a metatable on this instance's globals is its own business
  setmetatable(_G, { __index = function(_, k) return "default " .. k end })
  assert(undefined_thing == "default undefined_thing")
  all(env, "mt")
  setmetatable(_G, nil)
  print("ok globals " .. seq)
end

-- library tables: a write makes this instance's own copy; tg modules are read-only
function cases.libraries(env)
  local seq = all(env, "start")
  string.shout = function(s) return s:upper() .. "!" end
  assert(string.shout("hi") == "HI!")
  table.unpack = table.unpack          -- the same value: accepted, nothing copied
  local exit = os.exit
  os.exit = function() return "stubbed " .. seq end
  assert(os.exit() == "stubbed " .. seq)
  os.exit = exit
  all(env, "patched")
  assert(os.exit == exit)
  assert(require("string").shout, "require('string') does not give this instance's copy")
  local ok, err = pcall(function() sync.signal_and_wait = nil end)
  assert(not ok and tostring(err):match("shared by every instance"), "tg.sync could be changed: " .. tostring(err))
  assert(type(sync.signal_and_wait) == "function")
  -- pairs and # through the proxies
  local n = 0
  for _ in pairs(math) do n = n + 1 end
  assert(n > 20, "pairs(math) saw " .. n .. " fields")
  all(env, "done")
  print("ok libraries " .. seq)
end

-- seeds: math.random is each instance's own generator (as stock Lua 5.4)
function cases.random(env)
  local seq = all(env, "start")
  math.randomseed(42)
  local mine = {}
  for i = 1, 5 do
    mine[i] = math.random(1, 1000000)
    if i % 2 == 0 then all(env, "draw" .. i) end     -- others draw in between
  end
  print("ok random " .. seq .. " " .. table.concat(mine, ","))
end

-- coroutines made by the plan belong to its instance
function cases.coroutines(env)
  local seq = all(env, "start")
  local co = coroutine.wrap(function()
    coroutine.yield(core.config().global_seq)
    local ok, err = pcall(sync.signal_entry, "inside")
    coroutine.yield(ok, tostring(err))
  end)
  assert(co() == env.global_seq, "a coroutine of the plan saw another instance's config")
  local ok, err = co()
  assert(not ok and err:match("must run in a task"), "a wait inside coroutine.wrap: " .. err)
  local c2 = coroutine.create(function() return env.params.tag end)
  local _, tag = coroutine.resume(c2)
  assert(tag == env.params.tag)
  all(env, "end")
  print("ok coroutines " .. seq)
end

-- parameters and configuration are each instance's
function cases.params(env)
  local seq = all(env, "start")
  env.params.mine = tostring(seq)
  core.config().scratch = seq
  all(env, "set")
  assert(env.params.mine == tostring(seq))
  assert(core.config().scratch == seq)
  assert(core.config().global_seq == env.global_seq)
  print("ok params " .. seq)
end

-- tgrun's modules keep each instance's state apart: metrics totals, a
-- recorded failure
function cases.modules(env)
  local metrics = require "tg.metrics"
  local seq = all(env, "start")
  assert(metrics.counter("c") == 1, "a counter total is shared")
  all(env, "counted")
  assert(metrics.counter("c") == 2, "a counter total is shared")
  if seq == 1 then env:record_failure("recorded by instance one") end
  all(env, "recorded")
  print("ok modules " .. seq)
end

-- env.temp_path is there and the instance's own (in-process, it is made
-- when first asked for)
function cases.temp(env)
  local seq = all(env, "start")
  if core.config().temp_lazy then
    assert(rawget(env, "temp_path") == nil, "the temp folder was made before anyone asked")
    assert(not io.open(rawget(env, "_temp") .. "/probe", "w"), "the temp folder is there before anyone asked")
  end
  local f = assert(io.open(env.temp_path .. "/probe", "w"))
  f:write(seq)
  f:close()
  all(env, "written")
  f = assert(io.open(env.temp_path .. "/probe"))
  assert(f:read("a") == tostring(seq), "another instance wrote into this temp folder")
  f:close()
  print("ok temp " .. seq)
end

-- one instance fails and one calls os.exit: the others succeed
function cases.failures(env)
  local seq = all(env, "start")
  if seq == 1 then error("instance one fails on purpose") end
  if seq == 2 then os.exit(0) end
  for i = 1, 3 do sync.signal_entry("after") end
  print("ok failures " .. seq)
end

return cases
