-- space_spec.lua -- instances of one process share one Lua state (the
-- compiled code, the libraries, tgrun's modules) and nothing that is an
-- instance's own: globals, top-level locals, the plan's modules, library
-- tables it changed, parameters, configuration, seeds, coroutines and
-- failures.  Every case runs --inproc (the sharing) and as processes (the
-- same behaviour).
local h = require "helpers"

after_each(h.check_clean)

local PLAN = h.src .. "/tests/lua/plans/space/space.lua"
local N = 6

local function run(case, mode, extra)
  local args = { "-n", tostring(N), "-c", case, "-p", "tag=t" }
  if mode == "inproc" then args[#args + 1] = "--inproc" end
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  args[#args + 1] = PLAN
  return h.run(args)
end

local function oks(out, what)
  local seen = {}
  for seq in out:gmatch("ok " .. what .. " (%d+)") do seen[tonumber(seq)] = true end
  local n = 0
  for i = 1, N do if seen[i] then n = n + 1 end end
  return n
end

for _, mode in ipairs({ "inproc", "processes" }) do
  describe("instances of one run (" .. mode .. ")", function()
    for _, case in ipairs({ "globals", "libraries", "coroutines", "params", "temp" }) do
      it("keep their own " .. case, function()
        local r = run(case, mode)
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.equal(N, oks(r.stdout, case), r.stdout)
      end)
    end

    it("each draw their own random numbers, as stock Lua 5.4 does for the seed", function()
      local r = run("random", mode)
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local p = io.popen([[lua5.4 -e 'math.randomseed(42) local t = {} for i = 1, 5 do t[i] = math.random(1, 1000000) end io.write(table.concat(t, ","))']])
      local want = p:read("a")
      p:close()
      assert.truthy(want:match("^%d+,%d+,%d+,%d+,%d+$"), want)
      local n = 0
      for seq, got in r.stdout:gmatch("ok random (%d+) ([%d,]+)") do
        assert.equal(want, got, "instance " .. seq)
        n = n + 1
      end
      assert.equal(N, n, r.stdout)
    end)

    it("keep their own state in tgrun's modules (metrics, recorded failures)", function()
      local r = run("modules", mode)
      assert.equal(1, r.code, r.stdout .. r.stderr)
      assert.matches(N .. " instances, " .. (N - 1) .. " succeeded, 1 failed", r.stdout)
      assert.matches("recorded by instance one", r.stdout)
      assert.equal(N, oks(r.stdout, "modules"), r.stdout)
    end)

    it("fail alone: an error and an os.exit end only their own instance", function()
      local r = run("failures", mode)
      assert.equal(1, r.code, r.stdout .. r.stderr)
      assert.matches(N .. " instances, " .. (N - 2) .. " succeeded, 2 failed", r.stdout)
      assert.matches("instance one fails on purpose", r.stdout)
      assert.matches("os.exit", r.stdout)
      assert.equal(N - 2, oks(r.stdout, "failures"), r.stdout)
    end)
  end)
end

describe("one Lua state for the instances of a process", function()
  it("costs kilobytes per instance, not a state each", function()
    -- the process's peak RSS at two sizes: the difference over the extra
    -- instances is what one more instance costs (bench/run measures it
    -- precisely; here only that it is far below a whole state's ~90 KB)
    local function peak(n)
      local out = h.tmpdir()
      local r = h.run({ "-n", tostring(n), "--inproc", "--run-id", "mem" .. n, "--outputs", out,
        h.src .. "/bench/plans/idle.lua" })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local text = ""
      for i = 0, n - 1 do text = text .. (h.read(("%s/mem%d/single/%d/bench.out"):format(out, n, i)) or "") end
      return assert(tonumber(text:match("^mem (%d+)")), "no measurement: " .. text)
    end
    local a, b = peak(200), peak(1200)
    local per = (b - a) / 1000
    -- AddressSanitizer puts a red zone around every allocation
    local asan = h.run({ "--version" }).stdout:match("AddressSanitizer")
    local limit = asan and 120 or 40
    assert.is_true(per < limit, ("%.1f KB per in-process instance (limit %d KB%s)"):format(per, limit,
      asan and ", sanitized build" or ""))
  end)

  it("runs a plan's top level once for each instance, in its own globals", function()
    local dir = h.tmpdir()
    h.write(dir .. "/p.lua", [[
      local sync = require "tg.sync"
      ran = (ran or 0) + 1
      local here = ...
      return function(env)
        sync.signal_and_wait("x", env.instance_count)
        assert(ran == 1, "the top level ran " .. ran .. " times in these globals")
        assert(here == nil, "the plan's chunk got arguments")
        print("top level ran once")
      end]])
    local r = h.run({ "-n", "3", "--inproc", dir .. "/p.lua" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local n = 0
    for _ in r.stdout:gmatch("top level ran once") do n = n + 1 end
    assert.equal(3, n, r.stdout)
  end)

  it("keeps line numbers and messages of a plan that does not compile or fails while loading", function()
    local dir = h.tmpdir()
    h.write(dir .. "/bad.lua", "#!/usr/bin/env tgrun\nlocal x = \nreturn function() end\n")
    local r = h.run({ "-n", "2", "--inproc", dir .. "/bad.lua" })
    assert.equal(2, r.code)
    assert.matches("bad.lua:3: unexpected symbol near 'return'", r.stderr)
    h.write(dir .. "/boom.lua", "\n\nerror('boom at load')\n")
    r = h.run({ "-n", "2", "--inproc", dir .. "/boom.lua" })
    assert.equal(2, r.code)
    assert.matches("boom.lua:3: boom at load", r.stderr)
    h.write(dir .. "/shebang.lua", "#!/usr/bin/env tgrun\n\nreturn function() error('line three') end\n")
    r = h.run({ "-n", "2", "--inproc", dir .. "/shebang.lua" })
    assert.equal(1, r.code)
    assert.matches("shebang.lua:3: line three", r.stdout)
  end)
end)
