-- metrics_spec.lua -- tg.metrics: the lines it appends to this instance's
-- <outputs_path>/results.out, read back from the file.
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

local function results_path()
  return core.config().outputs_path .. "/results.out"
end

-- The raw lines of results.out about `name`, and the same lines decoded.
local function lines_of(name)
  local raw, decoded = {}, {}
  for line in (h.read(results_path()) or ""):gmatch("[^\n]+") do
    local v = json.decode(line)
    if v.name == name then
      raw[#raw + 1] = line
      decoded[#decoded + 1] = v
    end
  end
  return decoded, raw
end

local fails = require("helpers").fails_invalid

describe("metrics", function()
  it("writes a point with ts, type, name and measures {value, unit}, in that order", function()
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
    -- without a unit there is no unit field; an integer stays an integer
    assert.same({ value = 7 }, got[2].measures)
    assert.equal("integer", math.type(got[2].measures.value))
    assert.is_true(got[2].ts >= got[1].ts)
  end)

  it("lands every line in results.out as one JSON object with exactly the documented fields", function()
    metrics.point(h.uniq("p"), 1)
    metrics.counter(h.uniq("c"))
    metrics.timer(h.uniq("t"))()
    local text = h.read(results_path())
    assert.is_string(text)
    assert.equal("\n", text:sub(-1))     -- flushed whole lines
    local n = 0
    for _, v in ipairs(h.json_lines(text)) do
      n = n + 1
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "measures", "name", "ts", "type" }, keys)
      local want = ({ point = { "value", "unit" }, counter = { "count" }, timer = { "seconds" } })[v.type]
      assert.is_table(want, "unknown type " .. tostring(v.type))
      for k in pairs(v.measures) do
        assert.is_true(k == want[1] or k == want[2], ("%s measure %s"):format(v.type, k))
      end
    end
    assert.is_true(n >= 3)
  end)

  it("accumulates a counter per name and writes each new total", function()
    local a, b = h.uniq("msgs"), h.uniq("bytes")
    assert.equal(1, metrics.counter(a))
    assert.equal(6, metrics.counter(a, 5))
    assert.equal(100, metrics.counter(b, 100))
    assert.equal(4, metrics.counter(a, -2))
    assert.equal(4, metrics.counter(a, 0))
    assert.equal(101, metrics.counter(b, 1.0))   -- an integer-valued float is a whole number
    local counts = {}
    for _, v in ipairs(lines_of(a)) do
      assert.equal("counter", v.type)
      counts[#counts + 1] = v.measures.count
    end
    assert.same({ 1, 6, 4, 4 }, counts)
    local last = lines_of(b)
    assert.same({ count = 101 }, last[#last].measures)
    assert.equal("integer", math.type(last[#last].measures.count))
  end)

  it("counts from concurrent tasks without losing an increment", function()
    -- 20 tasks each count 10 times and yield between counts, so that their
    -- calls really interleave (checked below): every running total from 1
    -- to 200 is seen by exactly one call, and results.out has them in order.
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
    local got = lines_of(name)
    assert.equal(200, #got)
    for k, line in ipairs(got) do assert.equal(k, line.measures.count) end
  end)

  it("times a tg.sleep with a timer and records the seconds it returns", function()
    local name = h.uniq("sleep")
    local other = h.uniq("outer")
    local stop_outer = metrics.timer(other)
    local stop = metrics.timer(name)
    tg.sleep(0.2)
    local secs = stop()
    local outer = stop_outer()
    assert.is_true(secs >= 0.19 and secs < 1.0, "timer measured " .. secs .. " s")
    assert.is_true(outer >= secs)
    local got = lines_of(name)
    assert.equal(1, #got)
    assert.equal("timer", got[1].type)
    assert.same({ seconds = secs }, got[1].measures)   -- the exact float, round-tripped
    fails('metrics%.timer "' .. name:gsub("%-", "%%-") .. '": stop%(%) was already called', stop)
    assert.equal(1, #lines_of(name))
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
    assert.equal(0, #lines_of(name))
    -- a rejected increment does not count
    assert.equal(1, metrics.counter(name))
  end)
end)
