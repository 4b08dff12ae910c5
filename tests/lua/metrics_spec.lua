-- metrics_spec.lua -- tg.metrics: the lines it appends to this instance's
-- <outputs_path>/results.out and diagnostics.out, read back from the files,
-- in sdk-go's record format.
local tg = require "tg"
local metrics = require "tg.metrics"
local core = require "tg.core"
local json = require "tg.json"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

-- busted has chdir'd into tests/lua, so a relative outputs path (tgrun's
-- default outputs/<run>/<group>/<index>) no longer names this instance's
-- folder.  Resolve it against the directory tgrun started in ($PWD) before
-- the first metric opens results.out, so it lands next to run.out; a path
-- that cannot be resolved fails the spec rather than write elsewhere.
do
  local cfg = core.config()
  local dir = cfg.outputs_path
  if dir:sub(1, 1) ~= "/" then
    local base = os.getenv("PWD")
    assert(base and h.read(base .. "/" .. dir .. "/run.out"),
      "cannot resolve the relative outputs path " .. dir .. " (PWD " .. tostring(base) .. ")")
    cfg.outputs_path = base .. "/" .. dir
  end
end

local function results_path(file)
  return core.config().outputs_path .. "/" .. (file or "results.out")
end

-- The raw lines of results.out (or file) about `name`, and the same lines decoded.
local function lines_of(name, file)
  local raw, decoded = {}, {}
  for line in (h.read(results_path(file)) or ""):gmatch("[^\n]+") do
    local v = json.decode(line)
    if v.name == name then
      raw[#raw + 1] = line
      decoded[#decoded + 1] = v
    end
  end
  return decoded, raw
end

local fails = require("helpers").fails_invalid

-- The measures sdk-go writes for each type (go-metrics' snapshots).
local HIST = { "count", "max", "mean", "min", "p50", "p75", "p95", "p99", "p999", "p9999", "stddev", "variance" }
local MEASURES = {
  point = { "value" }, counter = { "count" }, gauge = { "value" }, histogram = HIST,
  meter = { "count", "m1", "m15", "m5", "mean" },
  timer = { "count", "m1", "m15", "m5", "max", "mean", "meanrate", "min", "p50", "p75", "p95", "p99", "p999",
    "p9999", "stddev", "variance" },
}

local function keys_of(t)
  local k = {}
  for n in pairs(t) do k[#k + 1] = n end
  table.sort(k)
  return k
end

local function close(a, b, eps) return math.abs(a - b) <= (eps or 1e-9) * math.max(1, math.abs(b)) end

describe("metrics", function()
  it("writes a point at once with ts, type, name and measures {value, unit}, in that order", function()
    assert.equal(metrics, tg.metrics)
    local name = h.uniq("latency")
    local before = core.time_ns()
    metrics.point(name, 42.5, "ms")
    local after = core.time_ns()
    metrics.point(name, 7)
    local got, raw = lines_of(name)
    assert.equal(2, #got)
    assert.matches('^{"ts":%d+,"type":"point","name":"' .. name:gsub("%-", "%%-") .. '","measures":{', raw[1])
    assert.equal("integer", math.type(got[1].ts))
    assert.is_true(got[1].ts >= before and got[1].ts <= after)
    assert.same({ ts = got[1].ts, type = "point", name = name, measures = { value = 42.5, unit = "ms" } }, got[1])
    -- without a unit there is no unit field (sdk-go's points have none); an integer stays an integer
    assert.same({ value = 7 }, got[2].measures)
    assert.equal("integer", math.type(got[2].measures.value))
    assert.is_true(got[2].ts >= got[1].ts)
  end)

  it("writes every kind as one JSON object with exactly sdk-go's fields and measures", function()
    metrics.point(h.uniq("p"), 1)
    metrics.counter(h.uniq("c"))
    metrics.gauge(h.uniq("g"), 2.5)
    metrics.histogram(h.uniq("h"), 3)
    metrics.meter(h.uniq("m"))
    metrics.timer(h.uniq("t"))()
    metrics.time(h.uniq("t2"), 0.5)
    metrics.flush()
    local text = h.read(results_path())
    assert.is_string(text)
    assert.equal("\n", text:sub(-1))     -- flushed whole lines
    local seen = {}
    for line in text:gmatch("[^\n]+") do
      -- measures' keys sorted, as Go's encoding/json writes a map
      local ms = line:match('"measures":(%b{})}$')
      local order = {}
      for k in ms:gmatch('"([%w_]+)":') do order[#order + 1] = k end
      local sorted = { table.unpack(order) }
      table.sort(sorted)
      assert.same(sorted, order)
      local v = json.decode(line)
      assert.same({ "measures", "name", "ts", "type" }, keys_of(v))
      local want = MEASURES[v.type]
      assert.is_table(want, "unknown type " .. tostring(v.type))
      local got = keys_of(v.measures)
      if v.type == "point" and v.measures.unit then
        assert.same({ "unit", "value" }, got)
      else
        assert.same(want, got, v.type)
      end
      seen[v.type] = true
    end
    assert.same({ counter = true, gauge = true, histogram = true, meter = true, point = true, timer = true }, seen)
  end)

  it("accumulates a counter per name; a snapshot writes each total", function()
    local a, b = h.uniq("msgs"), h.uniq("bytes")
    assert.equal(1, metrics.counter(a))
    assert.equal(6, metrics.counter(a, 5))
    assert.equal(100, metrics.counter(b, 100))
    assert.equal(4, metrics.counter(a, -2))
    assert.equal(4, metrics.counter(a, 0))
    assert.equal(101, metrics.counter(b, 1.0))   -- an integer-valued float is a whole number
    metrics.flush()
    local la = lines_of(a)
    assert.equal(1, #la)
    assert.same({ count = 4 }, la[1].measures)
    assert.equal("counter", la[1].type)
    metrics.counter(a, 10)
    metrics.flush()
    la = lines_of(a)
    assert.equal(2, #la)
    assert.same({ count = 14 }, la[2].measures)
    local lb = lines_of(b)
    assert.same({ count = 101 }, lb[#lb].measures)
    assert.equal("integer", math.type(lb[#lb].measures.count))
  end)

  it("counts from concurrent tasks without losing an increment", function()
    -- 20 tasks each count 10 times and yield between counts, so that their
    -- calls really interleave (checked below): every running total from 1
    -- to 200 is seen by exactly one call, and the snapshot says 200.
    local name = h.uniq("conc")
    local by = {}                -- total -> the task that got it
    local tasks = {}
    for i = 1, 20 do
      tasks[i] = tg.spawn(function()
        for _ = 1, 10 do
          tg.sleep(math.random() < 0.5 and 0 or math.random() * 0.003)
          local total = metrics.counter(name)
          assert(by[total] == nil, "total seen twice: " .. total)
          by[total] = i
        end
      end)
    end
    for i = 1, 20 do tasks[i]:join({ timeout = 10 }) end
    local switches = 0
    for total = 1, 200 do
      assert.is_not_nil(by[total], "no call saw total " .. total)
      if total > 1 and by[total] ~= by[total - 1] then switches = switches + 1 end
    end
    assert.is_true(switches >= 100, "the tasks hardly interleaved: " .. switches .. " switches")
    metrics.flush()
    local got = lines_of(name)
    assert.equal(200, got[#got].measures.count)
  end)

  it("a gauge holds the last value", function()
    local name = h.uniq("peers")
    metrics.gauge(name, 3)
    metrics.gauge(name, 7.5)
    metrics.flush()
    local got = lines_of(name)
    assert.equal(1, #got)
    assert.same({ ts = got[1].ts, type = "gauge", name = name, measures = { value = 7.5 } }, got[1])
  end)

  it("a histogram: go-metrics' count, min, max, mean, population variance and percentiles", function()
    local name = h.uniq("sizes")
    for i = 100, 1, -1 do metrics.histogram(name, i) end
    metrics.flush()
    local m = lines_of(name)[1].measures
    assert.equal(100, m.count)
    assert.equal(1, m.min)
    assert.equal(100, m.max)
    assert.equal(50.5, m.mean)
    assert.is_true(close(m.variance, 833.25))
    assert.is_true(close(m.stddev, math.sqrt(833.25)))
    -- position p * (n + 1), interpolated; past the end: the largest
    assert.is_true(close(m.p50, 50.5))
    assert.is_true(close(m.p75, 75.75))
    assert.is_true(close(m.p95, 95.95))
    assert.is_true(close(m.p99, 99.99))
    assert.equal(100, m.p999)
    assert.equal(100, m.p9999)
    -- an empty one is all zeros
    local empty = h.uniq("empty")
    local stop = metrics.timer(empty)   -- registered, nothing recorded yet
    metrics.flush()
    local e = lines_of(empty)[1].measures
    assert.same({ 0, 0, 0, 0 }, { e.count, e.max, e.p50, e.meanrate })
    stop()
  end)

  it("a histogram keeps a sample of 1028 values, and counts every one", function()
    local name = h.uniq("many")
    for i = 1, 5000 do metrics.histogram(name, i % 10) end
    metrics.flush()
    local m = lines_of(name)[1].measures
    assert.equal(5000, m.count)
    assert.equal(0, m.min)
    assert.equal(9, m.max)
    assert.is_true(m.mean > 3.5 and m.mean < 5.5, "mean " .. m.mean)
  end)

  it("times a tg.sleep with a timer: stop() returns seconds, the timer holds nanoseconds", function()
    local name = h.uniq("sleep")
    local other = h.uniq("outer")
    local stop_outer = metrics.timer(other)
    local stop = metrics.timer(name)
    tg.sleep(0.2)
    local secs = stop()
    local outer = stop_outer()
    assert.is_true(secs >= 0.19 and secs < 1.0, "timer measured " .. secs .. " s")
    assert.is_true(outer >= secs)
    fails('metrics%.timer "' .. name:gsub("%-", "%%-") .. '": stop%(%) was already called', stop)
    metrics.time(name, 0.25)
    metrics.flush()
    local got = lines_of(name)
    assert.equal(1, #got)
    assert.equal("timer", got[1].type)
    local m = got[1].measures
    local ns = math.floor(secs * 1e9 + 0.5)
    assert.equal(2, m.count)
    assert.equal(math.min(ns, 250000000), m.min)
    assert.equal(math.max(ns, 250000000), m.max)
    assert.is_true(close(m.mean, (ns + 250000000) / 2))
    assert.is_true(m.meanrate > 0)
    assert.same({ 0, 0, 0 }, { m.m1, m.m5, m.m15 })   -- no 5 s tick yet
  end)

  it("a meter: count, mean rate, and m1/m5/m15 from its first 5 s tick", function()
    local name = h.uniq("msgs")
    assert.equal(4, metrics.meter(name, 4))
    assert.equal(10, metrics.meter(name, 6))
    tg.sleep(5.1)
    metrics.flush()
    local m = lines_of(name)[1].measures
    assert.equal(10, m.count)
    -- the first tick's rate is the events of its 5 s: 10 / 5
    assert.is_true(close(m.m1, 2) and close(m.m5, 2) and close(m.m15, 2), json.encode(m))
    assert.is_true(m.mean > 10 / 6 and m.mean < 10 / 5, "mean " .. m.mean)
  end)

  it("writes a snapshot of every aggregate when one changes a second after the last", function()
    local a, b = h.uniq("tick"), h.uniq("idle")
    metrics.flush()
    metrics.counter(a)
    metrics.gauge(b, 1)
    assert.equal(0, #lines_of(a))
    tg.sleep(1.05)
    metrics.counter(a)                  -- a second on: this change writes them all
    assert.same({ count = 2 }, lines_of(a)[1].measures)
    assert.same({ value = 1 }, lines_of(b)[1].measures)
    metrics.counter(a)                  -- within the second: nothing more
    assert.equal(1, #lines_of(a))
  end)

  it("diagnostics go to diagnostics.out, as sdk-go's runenv.D(); env:R() and env:D() are the two", function()
    local env = require("tg.env").new(core.config())
    assert.equal(metrics, env:R())
    assert.equal(metrics.diagnostics, env:D())
    local name = h.uniq("heap")
    env:D().gauge(name, 12345)
    env:D().point(name .. "-p", 1)
    env:D().flush()
    assert.same({ value = 12345 }, lines_of(name, "diagnostics.out")[1].measures)
    assert.equal(1, #lines_of(name .. "-p", "diagnostics.out"))
    assert.equal(0, #lines_of(name))
    assert.equal(0, #lines_of(name .. "-p"))
    -- the two files are separate registries: the same name may be two kinds
    metrics.counter(name)
    metrics.flush()
    assert.same({ count = 1 }, lines_of(name)[1].measures)
  end)

  it("rejects bad arguments at once with code invalid, writing nothing", function()
    local name = h.uniq("bad")
    fails("^metrics%.point: name must be a non%-empty string, got an empty string", metrics.point, "", 1)
    fails("^metrics%.point: name must be a non%-empty string, got nothing", metrics.point, nil, 1)
    fails("^metrics%.point: value must be a finite number, got a string", metrics.point, name, "1")
    fails("^metrics%.point: value must be a finite number, got nothing", metrics.point, name)
    fails("^metrics%.point: value must be a finite number, got %-?nan", metrics.point, name, 0 / 0)
    fails("^metrics%.point: value must be a finite number, got inf", metrics.point, name, math.huge)
    fails("^metrics%.point: unit must be a string, got a number", metrics.point, name, 1, 5)
    fails("^metrics%.counter: name must be a non%-empty string, got a number", metrics.counter, 3)
    fails("^metrics%.counter: n must be a whole number, got 1%.5", metrics.counter, name, 1.5)
    fails("^metrics%.counter: n must be a whole number, got a string", metrics.counter, name, "2")
    fails("^metrics%.timer: name must be a non%-empty string, got an empty string", metrics.timer, "")
    fails("^metrics%.timer: name must be a non%-empty string, got a table", metrics.timer, {})
    fails("^metrics%.gauge: value must be a finite number, got nothing", metrics.gauge, name)
    fails("^metrics%.histogram: value must be a finite number, got a string", metrics.histogram, name, "x")
    fails("^metrics%.meter: n must be >= 0, got %-1", metrics.meter, name, -1)
    fails("^metrics%.time: seconds must be >= 0, got %-1", metrics.time, name, -1)
    fails("^metrics%.diagnostics%.gauge: value must be a finite number", metrics.diagnostics.gauge, name, "x")
    metrics.flush()
    assert.equal(0, #lines_of(name))
    -- a rejected increment does not count
    assert.equal(1, metrics.counter(name))
    -- one name, one kind
    fails('^metrics%.gauge: "' .. name:gsub("%-", "%%-") .. '" is already a counter in results%.out',
      metrics.gauge, name, 1)
  end)

  it("a process: the last snapshot is written when the case ends; both files exist", function()
    local dir = h.tmpdir()
    local plan = h.write(dir .. "/m.lua", [[
local metrics = require "tg.metrics"
return {
  uses = function()
    for _ = 1, 5 do metrics.counter("ops") end
    metrics.time("op", 0.001)
  end,
  unused = function() end,
  fails = function() metrics.counter("before-failing", 3) error("deliberate") end,
}]])
    for _, c in ipairs({ "uses", "unused", "fails" }) do
      local out = dir .. "/out-" .. c
      local r = h.run({ "-c", c, "--outputs", out, plan }, {})
      assert.equal(c == "fails" and 1 or 0, r.code, r.stderr)
      assert.is_string(h.read(out .. "/diagnostics.out"))
      local res = h.read(out .. "/results.out")
      assert.is_string(res)
      if c == "unused" then assert.equal("", res) end
      if c == "uses" then
        local l = h.json_lines(res)
        assert.equal(2, #l)
        assert.same({ "counter", "ops", 5 }, { l[1].type, l[1].name, l[1].measures.count })
        assert.same({ "timer", "op", 1, 1000000 }, { l[2].type, l[2].name, l[2].measures.count, l[2].measures.max })
      end
      if c == "fails" then assert.equal(3, h.json_lines(res)[1].measures.count) end
    end
  end)
end)
