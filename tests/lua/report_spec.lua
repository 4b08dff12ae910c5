-- report_spec.lua -- tgrun report RUN_DIR and the report at the end of
-- tgrun -n (docs/api.md, "tgrun report"): trace.json in Chrome's trace
-- event format, parsed and checked; the summary's lines; and bad input --
-- an instance that crashed half way, a missing or cut trace, a run of an
-- older tgrun, a Testground run, an empty folder, folders that are not runs.
local h = require "helpers"
local json = require "tg.json"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/trace.lua"

local function run_local(args, env) return h.run_plan(PLAN, "rep", args, env) end

local function report(dir, ...)
  local args = { "report" }
  for _, a in ipairs({ ... }) do args[#args + 1] = a end
  args[#args + 1] = dir
  return h.run(args)
end

local function chrome(path)
  local text = h.read(path)
  assert.truthy(text, "no " .. path)
  return json.decode(text)
end

local function lines_of(text)
  local n = 0
  for _ in (text or ""):gmatch("[^\n]+") do n = n + 1 end
  return n
end

-- Perfetto and chrome://tracing want the complete events of one thread
-- nested or apart, never overlapping half way.
local function check_nesting(events)
  local by = {}
  for _, e in ipairs(events) do
    if e.ph == "X" then
      local k = e.pid .. "/" .. e.tid
      by[k] = by[k] or {}
      table.insert(by[k], e)
    end
  end
  for k, list in pairs(by) do
    table.sort(list, function(a, b) return a.ts < b.ts end)
    for i = 2, #list do
      local p, e = list[i - 1], list[i]
      assert.is_true(e.ts >= p.ts + p.dur or e.ts + e.dur <= p.ts + p.dur,
        ("thread %s: '%s' overlaps '%s' half way"):format(k, e.name, p.name))
    end
  end
end

describe("tgrun report", function()
  it("writes trace.json in Chrome's trace event format", function()
    local r = run_local({ "-n", "6", "-g", "a=2", "-g", "b=4", "-c", "one_fails", "-p", "fails=3" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local t = chrome(r.rundir .. "/trace.json")
    assert.equal("table", type(t.traceEvents))
    assert.equal("ms", t.displayTimeUnit)
    local procs, threads, xs, failures, publishes = {}, {}, 0, 0, 0
    for _, e in ipairs(t.traceEvents) do
      assert.equal("integer", math.type(e.pid))
      assert.equal("string", type(e.name))
      if e.ph == "M" then
        if e.name == "process_name" then procs[e.pid] = e.args.name end
        if e.name == "thread_name" then
          assert.equal("integer", math.type(e.tid))
          threads[e.args.name] = e.pid
        end
      elseif e.ph == "X" then
        xs = xs + 1
        assert.equal("number", type(e.ts))
        assert.equal("number", type(e.dur))
        assert.is_true(e.ts >= 0 and e.dur >= 0)
        assert.equal("string", type(e.cat))
      elseif e.ph == "i" then
        assert.equal("t", e.s)
        if e.name == "failure" then
          failures = failures + 1
          assert.matches("wrong checksum", e.args.message)
        end
        if e.name:match("^published 'results' #%d+$") then publishes = publishes + 1 end
      else
        error("unexpected phase " .. tostring(e.ph))
      end
    end
    -- one process per group, one thread (at least) per instance, named
    assert.matches("^group a %(2 instances%)$", procs[1])
    assert.matches("^group b %(4 instances%)$", procs[2])
    for _, l in ipairs({ "a[0]", "a[1]", "b[0]", "b[1]", "b[2]", "b[3]" }) do
      assert.truthy(threads[l], "no thread named " .. l)
      assert.equal(l:sub(1, 1) == "a" and 1 or 2, threads[l])
    end
    assert.is_true(xs > 6 * 5, "only " .. xs .. " spans")
    assert.equal(1, failures)
    assert.equal(6, publishes)
    check_nesting(t.traceEvents)
    -- barrier spans: args name the state; the last to arrive is flagged once per barrier
    local last = {}
    for _, e in ipairs(t.traceEvents) do
      if e.ph == "X" and e.cat == "signal_and_wait" then
        assert.truthy(e.args.name:match("^ready$") or e.args.name:match("^round%-%d$"), e.args.name)
        assert.equal("integer", math.type(e.args.result))
        if e.args.arrived_last then
          assert.is_nil(last[e.args.name], "two last arrivals at " .. e.args.name)
          last[e.args.name] = e.args.result
        end
      end
    end
    for _, s in ipairs({ "ready", "round-1", "round-2", "round-3" }) do assert.equal(6, last[s]) end
  end)

  it("names who arrived last at each barrier in the summary of tgrun -n", function()
    for _, mode in ipairs({ {}, { "--inproc" } }) do
      local args = { "-n", "4", "-g", "early=3", "-g", "late=1", "-c", "late" }
      for _, a in ipairs(mode) do args[#args + 1] = a end
      local r = run_local(args)
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("  slowest barriers %(first arrival to release%):\n", r.stdout)
      local line = r.stdout:match("\n    'gather' +([^\n]+)")
      assert.truthy(line, r.stdout)
      local after = line:match("^%d+ ms: late%[0%] arrived last, (%d+) ms after the first; the others waited")
      assert.truthy(after, line)
      assert.is_true(tonumber(after) >= 250, line)     -- it slept 0.3 s before it came
      assert.matches("\n  time waited per state %(all instances%): 'gather' [%d.]+ m?s", r.stdout)
      assert.matches("\n  timeline: " .. r.rundir:gsub("%p", "%%%0") .. "/timeline.html", r.stdout)
      assert.matches("\ntgrun: outputs in ", r.stdout)
      -- the same lines from tgrun report
      local rep = report(r.rundir)
      assert.equal(0, rep.code, rep.stderr)
      assert.matches("\n  'gather' +%d+ ms: late%[0%] arrived last", rep.stdout)
    end
  end)

  it("draws an instance that crashed half way, a missing trace and a cut one, saying what is missing", function()
    local r = run_local({ "-n", "4", "-c", "one_fails", "-p", "rounds=3" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local d = r.rundir .. "/single/"
    -- 0: crashed half way: its trace stops inside round-2 (the wait's
    -- begin was written, as the last flush before a kill leaves it: a "b"
    -- line, not the whole wait), its run.out after the start
    local keep, out = {}, {}
    for line in h.read(d .. "0/trace.jsonl"):gmatch("[^\n]+") do
      if line:match('"n":"round%-2"') then
        keep[#keep + 1] = line:gsub('^{"s":(%d+),"t":(%d+),"d":%d+,', '{"b":%1,"t":%2,'):gsub(',"v":%d+}$', "}")
        break
      end
      keep[#keep + 1] = line
    end
    h.write(d .. "0/trace.jsonl", table.concat(keep, "\n") .. "\n")
    for line in h.read(d .. "0/run.out"):gmatch("[^\n]+") do
      if line:match("start_event") then out[#out + 1] = line end
    end
    h.write(d .. "0/run.out", table.concat(out, "\n") .. "\n")
    -- 1: no trace (deleted); 2: its trace cut in the middle of a line
    os.remove(d .. "1/trace.jsonl")
    local t2 = h.read(d .. "2/trace.jsonl")
    h.write(d .. "2/trace.jsonl", t2:sub(1, #t2 - 9))
    local rep = report(r.rundir)
    assert.equal(0, rep.code, rep.stdout .. rep.stderr)
    assert.equal("", rep.stderr)
    assert.matches("report: 1 of 4 instances left no trace.jsonl [^\n]*: single%[1%]\n", rep.stdout)
    assert.matches("report: 1 of 4 instances have a trace.jsonl that ends in a cut line [^\n]*: single%[2%]\n", rep.stdout)
    assert.matches("report: 1 of 4 instances recorded no outcome [^\n]*: single%[0%]\n", rep.stdout)
    local t = chrome(r.rundir .. "/trace.json")
    local unfinished, threads = nil, {}
    for _, e in ipairs(t.traceEvents) do
      if e.ph == "X" and e.args.name == "round-2" and e.args.unfinished then unfinished = e end
      if e.name == "thread_name" then threads[e.args.name] = true end
    end
    assert.truthy(unfinished, "the crashed instance's last wait is not drawn as unfinished")
    for i = 0, 3 do assert.truthy(threads["single[" .. i .. "]"]) end
    local html = h.read(r.rundir .. "/timeline.html")
    assert.truthy(html:find("left no trace.jsonl", 1, true))
  end)

  it("draws a run of an older tgrun (no traces) from run.out", function()
    local r = run_local({ "-n", "3", "--no-trace", "-c", "one_fails", "-p", "fails=2", "-p", "rounds=1" })
    assert.equal(1, r.code)
    assert.is_nil(h.read(r.rundir .. "/timeline.html"))
    local rep = report(r.rundir)
    assert.equal(0, rep.code, rep.stdout .. rep.stderr)
    assert.matches("report: 3 of 3 instances left no trace.jsonl", rep.stdout)
    assert.not_matches("slowest barriers", rep.stdout)
    local t = chrome(r.rundir .. "/trace.json")
    local failures, threads = 0, 0
    for _, e in ipairs(t.traceEvents) do
      if e.name == "thread_name" then threads = threads + 1 end
      if e.ph == "i" and e.name == "failure" then
        failures = failures + 1
        assert.matches("wrong checksum", e.args.message)
      end
    end
    assert.equal(3, threads)
    assert.equal(1, failures)
  end)

  it("draws a Testground run: <run>/<group>/<index>/run.out of the Go SDK", function()
    local dir = h.tmpdir() .. "/c0ffee"
    local t0 = 1700000000000000000
    local function ev(ms, e) return json.encode({ ts = t0 + ms * 1000000, msg = "", group_id = "g", run_id = "c0ffee", event = e }) end
    for _, g in ipairs({ { "miners", 2 }, { "clients", 3 } }) do
      for i = 0, g[2] - 1 do
        local p = ("%s/%s/%d"):format(dir, g[1], i)
        os.execute("mkdir -p " .. h.shq(p))
        local lines = {
          ev(0, { start_event = { runenv = { plan = "pow", case = "mine" } } }),
          ev(5, { stage_start_event = { name = "setup", group = g[1] } }),
          ev(40 + i, { stage_end_event = { name = "setup", group = g[1] } }),
          ev(50, { message_event = { message = "hashing </script><script>alert(1)</script><!-- \u{2603}" } }),
        }
        if g[1] == "clients" and i == 2 then
          lines[#lines + 1] = ev(90, { failure_event = { group = g[1], error = "no block\ngoroutine 1 [running]" } })
        else
          lines[#lines + 1] = ev(100, { success_event = { group = g[1] } })
        end
        h.write(p .. "/run.out", table.concat(lines, "\n") .. "\n")
      end
    end
    h.write(dir .. "/clients/1/run.err", "not ours\n")
    local rep = report(dir)
    assert.equal(0, rep.code, rep.stdout .. rep.stderr)
    assert.matches("report: 5 of 5 instances left no trace.jsonl", rep.stdout)
    local t = chrome(dir .. "/trace.json")
    local stages, failure = 0, nil
    for _, e in ipairs(t.traceEvents) do
      if e.ph == "X" and e.cat == "stage" then
        stages = stages + 1
        assert.equal("setup", e.args.name)
        assert.is_true(e.dur >= 35000 and e.dur <= 37000)
      end
      if e.ph == "i" and e.name == "failure" then failure = e end
    end
    assert.equal(5, stages)
    assert.matches("^no block\ngoroutine 1", failure.args.message)
    assert.equal(90000, failure.ts)
    local html = h.read(dir .. "/timeline.html")
    assert.truthy(html:find('"clients[2]"', 1, true))
    -- a message that looks like HTML stays data: the page has its own two
    -- </script> and no more, and no <!-- inside its data
    assert.equal(2, select(2, html:gsub("</script>", "")))
    assert.is_nil(html:match('<script id="tg%-data"[^>]*>[^\n]*<!%-%-'))
    assert.truthy(html:find("\\u003c/script>", 1, true))
  end)

  it("draws an empty run folder as an empty page, in one line", function()
    local dir = h.tmpdir()
    local rep = report(dir)
    assert.equal(0, rep.code, rep.stdout .. rep.stderr)
    assert.matches("report: " .. dir:gsub("%p", "%%%0") .. " holds no instance folders", rep.stdout)
    assert.truthy(h.read(dir .. "/timeline.html"))
    assert.equal(0, #chrome(dir .. "/trace.json").traceEvents)
  end)

  it("refuses, in one line and with status 2, what is not a run", function()
    local base = h.tmpdir()
    local cases = {}
    cases[#cases + 1] = { base .. "/nope", "does not exist" }
    h.write(base .. "/file", "x")
    cases[#cases + 1] = { base .. "/file", "is not a folder" }
    os.execute("mkdir -p " .. h.shq(base .. "/junk/a/b") .. " " .. h.shq(base .. "/outs/run1/g/0")
      .. " " .. h.shq(base .. "/outs/run1/g/1"))
    h.write(base .. "/junk/a/b/notes.txt", "x")
    cases[#cases + 1] = { base .. "/junk", "is not a run's folder: expected <group>/<index>/" }
    h.write(base .. "/outs/run1/g/0/run.out", "")
    h.write(base .. "/outs/run1/g/1/run.out", "")
    cases[#cases + 1] = { base .. "/outs", "holds 1 run, it is not one: give one of them, e.g. tgrun report .*/outs/run1" }
    cases[#cases + 1] = { base .. "/outs/run1/g", "is one group's folder; give the run's folder, one level up" }
    cases[#cases + 1] = { base .. "/outs/run1/g/0", "is one instance's folder; give the run's folder, two levels up" }
    for _, c in ipairs(cases) do
      local rep = report(c[1])
      assert.equal(2, rep.code, c[1] .. ": " .. rep.stdout .. rep.stderr)
      assert.equal(1, lines_of(rep.stderr), rep.stderr)
      assert.matches("^tgrun: report: .*" .. c[2], rep.stderr)
      assert.not_matches("traceback", rep.stderr)
    end
    local none = h.run({ "report" })
    assert.equal(2, none.code)
    assert.matches("which run%?", none.stderr)
    local bad = h.run({ "report", "--frobnicate", base })
    assert.equal(2, bad.code)
    assert.matches("unknown option", bad.stderr)
  end)

  it("writes elsewhere with --out", function()
    local r = run_local({ "-n", "2", "-c", "late" })
    assert.equal(0, r.code, r.stderr)
    local out = h.tmpdir() .. "/pictures"
    local rep = report(r.rundir, "--out", out)
    assert.equal(0, rep.code, rep.stderr)
    assert.truthy(h.read(out .. "/timeline.html"))
    assert.truthy(chrome(out .. "/trace.json").traceEvents)
  end)
end)
