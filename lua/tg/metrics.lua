-- tg.metrics -- metrics in the files and the record format sdk-go writes
-- (its runenv.R() and runenv.D(), go-metrics underneath), so that scripts
-- written for Go plans read tgrun's output unchanged:
--
--   <outputs>/results.out       metrics (this module; env:R())
--   <outputs>/diagnostics.out   metrics.diagnostics (env:D()): the same calls
--
-- one JSON object per line, keys in this order and measures' keys sorted:
--   {"ts":<epoch ns>,"type":<type>,"name":<name>,"measures":{...}}
--
--   call                                 type        measures
--   metrics.point(name, v [, unit])      point       value (+ unit, tgrun's, when given)
--   metrics.counter(name [, n]) -> total counter     count
--   metrics.gauge(name, v)               gauge       value
--   metrics.histogram(name, v)           histogram   count max mean min p50 p75 p95 p99
--                                                    p999 p9999 stddev variance
--   metrics.meter(name [, n]) -> total   meter       count m1 m5 m15 mean (events/s)
--   metrics.timer(name) -> stop          timer       the histogram's, in nanoseconds,
--   metrics.time(name, seconds)                      and m1 m5 m15 meanrate
--
-- A point is written at once, as sdk-go does.  The others aggregate, as
-- go-metrics' do: every one of a file's aggregates is written (a
-- snapshot) when one of them changes at least 1 s (results) or 5 s
-- (diagnostics) after the last snapshot -- sdk-go writes one every
-- second/5 s by a ticker -- and always when the case ends, which sdk-go
-- does not (its last second is lost); metrics.flush() writes one now.
-- Lines are flushed as they are written.  Both files exist after the case
-- even if empty, as sdk-go creates them at start (in-process instances of
-- tgrun -n --inproc: only those written to).
--
-- As go-metrics computes them: histograms and timers keep a uniform
-- sample of 1028 values (min, max, mean, stddev, variance -- population --
-- and percentiles come from it; count is every value); percentile p of n
-- sorted values is at position p*(n+1), interpolated; meters' m1/m5/m15
-- are exponentially weighted rates ticked every 5 s since the meter's
-- first mark, mean (a timer's meanrate) is count / seconds since then.
-- (go-metrics' timers sample with exponential decay; below 1028 values the
-- two are the same.)
--
-- Bad arguments raise code "invalid" at once (a name used for another
-- kind too); a file that cannot be opened or written raises code "io"
-- from the call that writes.
local core = require "tg.core"
local json = require "tg.json"
local check = require "tg.check"

local RESERVOIR = 1028
local TICK = 5                       -- seconds between a meter's rate ticks
local ALPHA = { m1 = 1 - math.exp(-5 / 60 / 1), m5 = 1 - math.exp(-5 / 60 / 5), m15 = 1 - math.exp(-5 / 60 / 15) }
local PCT = { { "p50", 0.5 }, { "p75", 0.75 }, { "p95", 0.95 }, { "p99", 0.99 }, { "p999", 0.999 }, { "p9999", 0.9999 } }

local function finite(call, what, v, level)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    error(core.error("invalid", ("%s: %s must be a finite number, got %s"):format(
      call, what, type(v) == "number" and tostring(v) or (v == nil and "nothing" or "a " .. type(v)))), level or 3)
  end
  return v
end

local function whole(call, what, n)
  if n == nil then return 1 end
  local k = type(n) == "number" and math.tointeger(n)
  if not k then
    error(core.error("invalid", ("%s: %s must be a whole number, got %s"):format(
      call, what, type(n) == "number" and tostring(n) or "a " .. type(n))), 3)
  end
  return k
end

-- ---- samples and rates (go-metrics' arithmetic) ------------------------------

local function sample_new() return { n = 0, values = {} } end

local function sample_add(s, v)
  s.n = s.n + 1
  local vals = s.values
  if #vals < RESERVOIR then vals[#vals + 1] = v
  else
    local r = math.random(1, s.n)
    if r <= RESERVOIR then vals[r] = v end
  end
end

-- count, max, mean, min, stddev, variance and the percentiles into m
local function sample_measures(s, m)
  local vals, n = s.values, #s.values
  m.count = s.n
  if n == 0 then
    m.max, m.mean, m.min, m.stddev, m.variance = 0, 0, 0, 0, 0
    for _, p in ipairs(PCT) do m[p[1]] = 0 end
    return
  end
  local sorted, sum = {}, 0
  for i = 1, n do sorted[i] = vals[i]; sum = sum + vals[i] end
  table.sort(sorted)
  local mean = sum / n
  local var = 0
  for i = 1, n do var = var + (vals[i] - mean) ^ 2 end
  var = var / n
  m.min, m.max, m.mean, m.variance, m.stddev = sorted[1], sorted[n], mean, var, math.sqrt(var)
  for _, p in ipairs(PCT) do
    local pos = p[2] * (n + 1)
    local v
    if pos < 1 then v = sorted[1]
    elseif pos >= n then v = sorted[n]
    else
      local lo = math.floor(pos)
      v = sorted[lo] + (pos - lo) * (sorted[lo + 1] - sorted[lo])
    end
    m[p[1]] = v
  end
end

local function rate_new(now) return { t0 = now, ticks = 0, uncounted = 0, count = 0, init = false, m1 = 0, m5 = 0, m15 = 0 } end

-- Catch up with the 5 s ticks that passed: the first takes what was
-- marked since the last one, the rest saw nothing (closed form).
local function rate_tick(r, now)
  local due = math.floor((now - r.t0) / TICK)
  if due <= r.ticks then return end
  local instant = r.uncounted / TICK
  for k, a in pairs(ALPHA) do
    local rate = r.init and (r[k] + a * (instant - r[k])) or instant
    r[k] = rate * (1 - a) ^ (due - r.ticks - 1)
  end
  r.init, r.uncounted, r.ticks = true, 0, due
end

local function rate_mark(r, n, now)
  rate_tick(r, now)
  r.uncounted = r.uncounted + n
  r.count = r.count + n
end

local function rate_measures(r, now, m, mean_key)
  rate_tick(r, now)
  m.m1, m.m5, m.m15 = r.m1, r.m5, r.m15
  local secs = now - r.t0
  m[mean_key] = secs > 0 and r.count / secs or 0
end

-- ---- one file: results.out or diagnostics.out -------------------------------

local function new_registry(file, freq, label)
  local R = {}
  -- Every instance of a process shares this module: what one instance
  -- recorded lives in its core.state(<file>):
  --   out          the open file, opened on the first line
  --   aggs, order  name -> {kind, ...}; names in first-use order
  --   last         when the last snapshot was written
  local key = "metrics " .. file
  local function state()
    local st = core.state(key)
    if not st.aggs then st.aggs, st.order, st.last = {}, {}, core.now() end
    return st
  end

  local function write(call, kind, name, measures)
    local st = state()
    local out = st.out
    if not out then
      local dir = core.config().outputs_path
      if type(dir) ~= "string" or dir == "" then
        error(core.error("io", ("%s: this instance has no outputs path to write %s to"):format(call, file)), 4)
      end
      local f, err = io.open(dir .. "/" .. file, "a")
      if not f then error(core.error("io", ("%s: cannot open %s/%s: %s"):format(call, dir, file, err)), 4) end
      out = f
      st.out = f
    end
    -- built by hand so the keys come in sdk-go's order
    local line = ('{"ts":%d,"type":"%s","name":%s,"measures":%s}\n'):format(
      core.time_ns(), kind, json.encode(name), json.encode(measures))
    local ok, err = out:write(line)
    if ok then ok, err = out:flush() end
    if not ok then error(core.error("io", ("%s: cannot write %s: %s"):format(call, file, tostring(err))), 4) end
  end

  local function measures_of(a, now)
    local m = {}
    if a.kind == "counter" then m.count = a.total
    elseif a.kind == "gauge" then m.value = a.value
    elseif a.kind == "histogram" then sample_measures(a.sample, m)
    elseif a.kind == "meter" then
      rate_measures(a.rate, now, m, "mean")
      m.count = a.rate.count
    else                                          -- timer
      sample_measures(a.sample, m)
      rate_measures(a.rate, now, m, "meanrate")
    end
    return m
  end

  local function snapshot(call)
    local now = core.now()
    local st = state()
    st.last = now
    for _, name in ipairs(st.order) do
      local a = st.aggs[name]
      write(call, a.kind, name, measures_of(a, now))
    end
  end

  -- The aggregate `name` of this kind (made on first use).
  local function agg(call, kind, name)
    check.name(call, "name", name)
    local st = state()
    local aggs = st.aggs
    local a = aggs[name]
    if a then
      if a.kind ~= kind then
        error(core.error("invalid", ('%s: "%s" is already a %s in %s'):format(call, name, a.kind, file)), 3)
      end
      return a
    end
    a = { kind = kind }
    if kind == "counter" then a.total = 0
    elseif kind == "gauge" then a.value = 0
    elseif kind == "histogram" then a.sample = sample_new()
    elseif kind == "meter" then a.rate = rate_new(core.now())
    else a.sample, a.rate = sample_new(), rate_new(core.now()) end
    aggs[name] = a
    st.order[#st.order + 1] = name
    return a
  end

  local function changed(call)
    if core.now() - state().last >= freq then snapshot(call) end
  end

  -- point(name, value [, unit]): one observation, written at once.
  function R.point(name, value, unit)
    local call = label .. ".point"
    check.name(call, "name", name)
    finite(call, "value", value)
    if unit ~= nil and type(unit) ~= "string" then
      error(core.error("invalid", ("%s: unit must be a string, got a %s"):format(call, type(unit))), 2)
    end
    write(call, "point", name, { value = value, unit = unit })
  end

  -- counter(name [, n]) -> total: add n (a whole number, default 1;
  -- negative counts down, like go-metrics' Counter.Dec).
  function R.counter(name, n)
    local call = label .. ".counter"
    local k = whole(call, "n", n)
    local a = agg(call, "counter", name)
    a.total = a.total + k
    changed(call)
    return a.total
  end

  -- gauge(name, value): set the gauge.
  function R.gauge(name, value)
    local call = label .. ".gauge"
    finite(call, "value", value)
    agg(call, "gauge", name).value = value
    changed(call)
  end

  -- histogram(name, value): one value into the histogram's sample.
  function R.histogram(name, value)
    local call = label .. ".histogram"
    finite(call, "value", value)
    sample_add(agg(call, "histogram", name).sample, value)
    changed(call)
  end

  -- meter(name [, n]) -> total: n events (default 1) happened now.
  function R.meter(name, n)
    local call = label .. ".meter"
    local k = whole(call, "n", n)
    if k < 0 then error(core.error("invalid", call .. ": n must be >= 0, got " .. k), 2) end
    local a = agg(call, "meter", name)
    rate_mark(a.rate, k, core.now())
    changed(call)
    return a.rate.count
  end

  -- time(name, seconds): one duration into the timer (Go's Timer.Update).
  function R.time(name, seconds)
    local call = label .. ".time"
    finite(call, "seconds", seconds)
    if seconds < 0 then error(core.error("invalid", call .. ": seconds must be >= 0, got " .. seconds), 2) end
    local a = agg(call, "timer", name)
    sample_add(a.sample, math.floor(seconds * 1e9 + 0.5))
    rate_mark(a.rate, 1, core.now())
    changed(call)
  end

  -- timer(name) -> stop: start timing now; stop() -> seconds puts the
  -- monotonic time elapsed into the timer and returns it; once.
  function R.timer(name)
    local call = label .. ".timer"
    agg(call, "timer", name)
    local t0 = core.now()
    local stopped = false
    return function()
      if stopped then
        error(core.error("invalid", ('%s "%s": stop() was already called'):format(call, name)), 2)
      end
      stopped = true
      local secs = core.now() - t0
      R.time(name, secs)
      return secs
    end
  end

  -- flush(): a snapshot of every aggregate now.
  function R.flush()
    snapshot(label .. ".flush")
  end

  -- The case ended: the last snapshot; with touch, the file exists even
  -- if empty.  Problems are returned, not raised (the outcome is being
  -- recorded).
  function R.close(touch)
    local ok, err = pcall(snapshot, label .. ".close")
    local st = state()
    local out = st.out
    if ok and touch and not out then
      local dir = core.config().outputs_path
      local f = type(dir) == "string" and dir ~= "" and io.open(dir .. "/" .. file, "a")
      if f then f:close() end
    end
    if out then out:close() end
    st.out = nil
    if not ok then return tostring(err) end
  end

  return R
end

local metrics = new_registry("results.out", 1, "metrics")
metrics.results = metrics
metrics.diagnostics = new_registry("diagnostics.out", 5, "metrics.diagnostics")

-- metrics.close_all(touch) -> problem | nil: both files' last snapshot
-- (the instance runner calls it when the case has ended); touch: create
-- them even if empty.
function metrics.close_all(touch)
  local a = metrics.close(touch)
  local b = metrics.diagnostics.close(touch)
  return a or b
end

return metrics
