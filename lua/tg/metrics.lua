-- tg.metrics -- result metrics as Testground-style JSON lines in
-- <outputs_path>/results.out, one line per call, written and flushed at once
-- (Testground's runenv.R() flushes every second; we flush per line so a
-- crashed instance loses nothing).
--
--   local metrics = require "tg.metrics"
--   metrics.point("latency", 0.25, "s")
--   metrics.counter("messages")          -- total 1
--   metrics.counter("messages", 10)      -- total 11
--   local stop = metrics.timer("fetch")
--   fetch()
--   local secs = stop()
--
-- Each line is
--   {"ts":<epoch ns, integer>,"type":<type>,"name":<name>,"measures":{...}}
-- with these measures per type:
--   "point"    {"value": <number>}, plus "unit": <string> when a unit is given
--   "counter"  {"count": <integer>}   the new running total of this name in
--                                     this instance (each call writes it)
--   "timer"    {"seconds": <number>}  monotonic seconds from timer() to stop()
-- Bad arguments raise code "invalid" at once; a results.out that cannot be
-- opened or written raises code "io" rather than dropping the metric.
local core = require "tg.core"
local json = require "tg.json"
local check = require "tg.check"

local metrics = {}

-- Per instance (every instance of a process shares this module):
-- state().out, the open results.out, opened on the first metric, and
-- state().totals, counter name -> running total.
local function state()
  local st = core.state("metrics")
  if not st.totals then st.totals = {} end
  return st
end

local function results_path()
  local dir = core.config().outputs_path
  if type(dir) ~= "string" or dir == "" then return nil end
  return dir .. "/results.out"
end

local function write(kind, name, measures)
  local st = state()
  local out = st.out
  if not out then
    local path = results_path()
    if not path then
      error(core.error("io", ("metrics.%s: this instance has no outputs path to write results.out to"):format(kind)), 3)
    end
    local f, err = io.open(path, "a")
    if not f then
      error(core.error("io", ("metrics.%s: cannot open %s: %s"):format(kind, path, err)), 3)
    end
    out = f
    st.out = f
  end
  -- built by hand so the keys come in Testground's order
  local line = ('{"ts":%d,"type":"%s","name":%s,"measures":%s}\n'):format(
    core.time_ns(), kind, json.encode(name), json.encode(measures))
  local ok, err = out:write(line)
  if ok then ok, err = out:flush() end
  if not ok then
    error(core.error("io", ("metrics.%s: cannot write results.out: %s"):format(kind, tostring(err))), 3)
  end
end

local function finite(call, what, v)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    error(core.error("invalid", ("%s: %s must be a finite number, got %s"):format(
      call, what, type(v) == "number" and tostring(v) or (v == nil and "nothing" or "a " .. type(v)))), 3)
  end
  return v
end

-- metrics.point(name, value [, unit]) -- record one observation.
function metrics.point(name, value, unit)
  check.name("metrics.point", "name", name)
  finite("metrics.point", "value", value)
  if unit ~= nil and type(unit) ~= "string" then
    error(core.error("invalid", ("metrics.point: unit must be a string, got a %s"):format(type(unit))), 2)
  end
  write("point", name, { value = value, unit = unit })
end

-- metrics.counter(name [, n]) -> total
-- Add n (a whole number, default 1; negative counts down, like go-metrics'
-- Counter.Dec) to this instance's running total for name and record it.
function metrics.counter(name, n)
  check.name("metrics.counter", "name", name)
  if n == nil then n = 1 end
  local k = type(n) == "number" and math.tointeger(n)
  if not k then
    error(core.error("invalid", ("metrics.counter: n must be a whole number, got %s"):format(
      type(n) == "number" and tostring(n) or "a " .. type(n))), 2)
  end
  local totals = state().totals
  local total = (totals[name] or 0) + k
  write("counter", name, { count = total })
  -- only counted once it is on record, so a failed write can be retried
  totals[name] = total
  return total
end

-- metrics.timer(name) -> stop
-- Start timing now; stop() records the monotonic seconds elapsed and
-- returns them.  stop() may be called once.
function metrics.timer(name)
  check.name("metrics.timer", "name", name)
  local t0 = core.now()
  local stopped = false
  return function()
    if stopped then
      error(core.error("invalid", ('metrics.timer "%s": stop() was already called'):format(name)), 2)
    end
    stopped = true
    local secs = core.now() - t0
    write("timer", name, { seconds = secs })
    return secs
  end
end

return metrics
