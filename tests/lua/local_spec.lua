-- local_spec.lua -- tgrun -n: real multi-process runs with a private Redis.
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/local.lua"

-- Local runs here start their own redis-server: no REDIS_HOST/PORT.
local function run(args, env, opts)
  local e = { REDIS_HOST = "", REDIS_PORT = "" }
  for k, v in pairs(env or {}) do e[k] = v end
  return h.run(args, e, opts)
end

-- A private copy of the plan at a unique path, so that pgrep can tell
-- whether any process of this run is left.
local function plan_copy()
  local dir = h.tmpdir()
  local path = dir .. "/" .. h.uniq("plan") .. ".lua"
  h.write(path, h.read(PLAN))
  return path, dir
end

local function pids_matching(pat)
  -- "[x]yz" matches "xyz" but not the shell that runs pgrep with it
  local p = io.popen("pgrep -f " .. h.shq("[" .. pat:sub(1, 1) .. "]" .. pat:sub(2)) .. " 2>/dev/null")
  local s = p:read("*a")
  p:close()
  return s
end

describe("tgrun -n", function()
  it("runs 50 instances in two groups against its own Redis", function()
    local out = h.tmpdir()
    local r = run({ "-n", "50", "-g", "seeds=20", "-g", "leeches=30", "-c", "all",
      "--run-id", "r50", "--outputs", out, PLAN })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("50 instances, 50 succeeded, 0 failed", r.stdout)
    assert.matches("group seeds: 20 succeeded, 0 failed", r.stdout)
    assert.matches("group leeches: 30 succeeded, 0 failed", r.stdout)
    assert.matches("leeches%[29%] entered as %d+ of 50 %(group leeches, %d+%)", r.stdout)
    for _, g in ipairs({ { "seeds", 20 }, { "leeches", 30 } }) do
      for i = 0, g[2] - 1 do
        local f = h.read(("%s/r50/%s/%d/run.out"):format(out, g[1], i))
        assert.truthy(f, ("no run.out for %s[%d]"):format(g[1], i))
        assert.matches('"success_event"', f)
      end
    end
    -- group_seq counts within the group; global_seq over the run
    local seen = {}
    for n in r.stdout:gmatch("entered as (%d+) of 50") do seen[tonumber(n)] = true end
    for i = 1, 50 do assert.truthy(seen[i], "no instance entered as " .. i) end
  end)

  it("reports the failing instance and its first error, exit 1", function()
    local r = run({ "-n", "4", "-c", "one_fails", PLAN })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("4 instances, 3 succeeded, 1 failed", r.stdout)
    assert.matches("single%[%d%] failed: .*local.lua:14: instance two gives up", r.stdout)
  end)

  it("on --timeout every wait ends at the deadline, naming the barrier and the counts", function()
    local plan = plan_copy()
    local r = run({ "-n", "5", "-c", "hang", "--timeout", "1.5", plan })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_true(r.secs < 10, "took " .. r.secs)
    assert.matches("single%[%d%] failed: barrier 'done' timed out after [%d.]+ s %(the run's deadline%): 4 of 5 entered", r.stdout)
    assert.equal("", pids_matching(plan))
  end)

  it("a wait with a longer timeout of its own still ends at the run's deadline", function()
    local plan = plan_copy()
    local r = run({ "-n", "3", "-c", "hang_long", "--timeout", "1", plan })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_true(r.secs < 1 + 3, "took " .. r.secs)
    assert.matches("single%[%d%] failed: barrier 'done' timed out after [%d.]+ s %(the run's deadline%): 2 of 3 entered", r.stdout)
    assert.equal("", pids_matching(plan))
  end)

  it("ends plan code that never yields at the deadline, saying so", function()
    local plan = plan_copy()
    local r = run({ "-n", "2", "-c", "busy", "--timeout", "1", plan })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_true(r.secs < 1 + 3, "took " .. r.secs)
    assert.equal(2, select(2, r.stdout:gsub("failed: the run's deadline passed while plan code ran for [%d.]+ s without yielding", "")), r.stdout)
    assert.equal("", pids_matching(plan))
  end)

  it("stops instances blocked past the deadline (SIGTERM, then SIGKILL) and says what each waited for", function()
    local plan = plan_copy()
    local r = run({ "-n", "3", "-c", "blocked", "--timeout", "1", "--grace", "0.2", plan })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_true(r.secs < 1 + 0.2 + 3 + 3, "took " .. r.secs)   -- deadline, grace, SIGKILL after 3 s, slack
    assert.matches("deadline %(1 s%) has passed: stopping 1 instance", r.stderr)
    assert.matches("single%[%d%] did not finish: killed by signal 9 before it recorded an outcome %(the run's deadline had passed%)", r.stdout)
    assert.equal(2, select(2, r.stdout:gsub("failed: barrier 'done' timed out after [%d.]+ s %(the run's deadline%): 2 of 3 entered", "")), r.stdout)
    assert.equal("", pids_matching(plan))
  end)

  it("stops its private redis-server afterwards", function()
    local r = run({ "-n", "2", "-c", "all", "--run-id", "redisgone", PLAN })
    assert.equal(0, r.code, r.stderr)
    assert.equal("", pids_matching("tgrun-redisgone-"))
  end)

  it("exits 2 with one line when redis-server is not on PATH", function()
    local r = run({ "-n", "2", "-c", "all", PLAN }, { PATH = "/nonexistent" })
    assert.equal(2, r.code)
    assert.matches("redis%-server is not on PATH", r.stderr)
    assert.equal(1, select(2, r.stderr:gsub("\n", "")))
  end)

  it("rejects bad --group specs and counts that do not add up", function()
    local r = run({ "-n", "3", "-g", "seeds", "-c", "all", PLAN })
    assert.equal(2, r.code)
    assert.matches("seeds", r.stderr)
    r = run({ "-n", "3", "-g", "a=1", "-g", "b=1", "-c", "all", PLAN })
    assert.equal(2, r.code)
    assert.matches("add up to 2 instances but %-n says 3", r.stderr)
    r = run({ "-n", "2", "-g", "a=1", "-g", "a=1", "-c", "all", PLAN })
    assert.equal(2, r.code)
    assert.matches('group "a" is given twice', r.stderr)
  end)

  it("groups alone give the instance count", function()
    local r = run({ "-g", "a=2", "-g", "b=1", "-c", "all", PLAN })
    assert.equal(0, r.code, r.stderr)
    assert.matches("3 instances, 3 succeeded", r.stdout)
  end)

  it("a plan that does not load fails once, before any instance starts", function()
    local r = run({ "-n", "5", h.src .. "/tests/lua/plans/syntax_error.lua" })
    assert.equal(2, r.code)
    assert.equal(1, select(2, r.stderr:gsub("\n", "")))
    assert.matches("plan does not compile", r.stderr)
    r = run({ "-n", "5", "-c", "nope", PLAN })
    assert.equal(2, r.code)
    assert.matches("unknown case 'nope'", r.stderr)
  end)

  it("a bad parameter in every instance is a usage error: exit 2", function()
    local r = run({ "-n", "2", "-c", "bad_param", "-p", "rounds=many", PLAN })
    assert.equal(2, r.code, r.stdout)
    assert.matches('parameter "rounds" is not an integer: "many"', r.stdout)
  end)
end)

describe("tgrun -n --inproc", function()
  it("runs 200 instances in two groups in one process, each with its own env", function()
    local out = h.tmpdir()
    local r = run({ "-n", "200", "--inproc", "-g", "seeds=50", "-g", "leeches=150", "-c", "all",
      "--run-id", "ip200", "--outputs", out, PLAN })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("200 instances, 200 succeeded, 0 failed", r.stdout)
    assert.matches("group seeds: 50 succeeded, 0 failed", r.stdout)
    local seen, gseen = {}, { seeds = {}, leeches = {} }
    for n, g, gs in r.stdout:gmatch("entered as (%d+) of 200 %(group (%a+), (%d+)%)") do
      assert.is_nil(seen[tonumber(n)], "two instances entered as " .. n)
      seen[tonumber(n)] = true
      gseen[g][tonumber(gs)] = true
    end
    for i = 1, 200 do assert.truthy(seen[i], "no instance entered as " .. i) end
    for i = 1, 50 do assert.truthy(gseen.seeds[i], "no seed with group_seq " .. i) end
    for i = 1, 150 do assert.truthy(gseen.leeches[i], "no leech with group_seq " .. i) end
    assert.matches('"success_event"', h.read(out .. "/ip200/leeches/149/run.out"))
  end)

  it("all-to-all: every instance sees every value in the same order", function()
    local r = run({ "-n", "60", "--inproc", "-c", "all_to_all", PLAN })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local orders = {}
    for o in r.stdout:gmatch("order ([%d,]+)") do orders[#orders + 1] = o end
    assert.equal(60, #orders)
    for i = 2, 60 do assert.equal(orders[1], orders[i]) end
    local n = select(2, orders[1]:gsub(",", "")) + 1
    assert.equal(60, n)
  end)

  it("reports the failing instance, exit 1", function()
    local r = run({ "-n", "6", "--inproc", "-c", "one_fails", PLAN })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("6 instances, 5 succeeded, 1 failed", r.stdout)
    assert.matches("single%[%d%] failed: .*local.lua:14: instance two gives up", r.stdout)
  end)

  it("ends every wait at the run's deadline, naming the barrier and the counts", function()
    local r = run({ "-n", "5", "--inproc", "-c", "hang", "--timeout", "1" })
    assert.equal(2, r.code)   -- no plan: usage
    r = run({ "-n", "5", "--inproc", "-c", "hang", "--timeout", "1", PLAN })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_true(r.secs < 8, "took " .. r.secs)
    assert.matches("timed out after [%d.]+ s %(the run's deadline%): 4 of 5 entered", r.stdout)
  end)

  it("ends waits with longer timeouts, and plan code that never yields, at the deadline", function()
    local r = run({ "-n", "3", "--inproc", "-c", "hang_long", "--timeout", "1", PLAN })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_true(r.secs < 1 + 3, "took " .. r.secs)
    assert.matches("failed: barrier 'done' timed out after [%d.]+ s %(the run's deadline%): 2 of 3 entered", r.stdout)
    r = run({ "-n", "20", "--inproc", "-c", "busy", "--timeout", "1", PLAN })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_true(r.secs < 1 + 20 * 0.1 + 3, "took " .. r.secs)
    assert.equal(20, select(2, r.stdout:gsub("failed: the run's deadline passed while plan code ran for [%d.]+ s without yielding", "")), r.stdout)
  end)
end)
