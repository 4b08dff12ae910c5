-- hostile_spec.lua -- what a careless or hostile user does, each as a
-- spec: names that are not names, timeouts of zero and of forever,
-- os.exit, a runner SIGKILLed, a run id reused, passwords, bad input.
-- Every case asserts the exact outcome and that nothing is left behind.
local tg = require "tg"
local sync = require "tg.sync"
local json = require "tg.json"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/hostile.lua"

local function num(s) return tonumber((s or ""):match("%-?%d+%.?%d*")) end

-- tgrun with args against srv (nil: the spec's own Redis), waited for
local function run(srv, args, env)
  local e = { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(srv and srv.port or h.redis_port) }
  for k, v in pairs(env or {}) do e[k] = v end
  return h.run(args, e)
end

local function count(s, pat) return select(2, s:gsub(pat, "")) end

describe("names", function()
  it("spaces in the plan's file name, the run id, the case and the lock and queue names", function()
    local dir = h.tmpdir()
    local plan = dir .. "/my plan.lua"
    os.execute(("cp %s %s"):format(h.shq(PLAN), h.shq(plan)))
    local k = "hostile:" .. h.uniq("sp")
    local r = run(nil, { "-n", "3", "--run-id", "a run with spaces " .. h.uniq("r"), "-c", "a case with spaces",
      "-p", "k=" .. k, "-p", "lock=my lock: {x}", "-p", "queue=my queue: 1", plan })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("3 instances, 3 succeeded", r.stdout)
    local srv = { cli = function(c) local p = io.popen(("redis-cli -p %d %s"):format(h.redis_port, c)); local s = p:read("*a"); p:close(); return s end }
    assert.equal(30, num(srv.cli("GET " .. k .. ":v")), "mutual exclusion under a name with spaces")
    assert.equal(10, num(srv.cli("LLEN " .. k .. ":popped")))
  end)

  it("a lock whose name has spaces and colons comes back when its holder is SIGKILLed", function()
    local srv = h.redis_server()
    local k = "hostile:" .. h.uniq("hk")
    local runid = h.uniq("hold")
    local env = { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(srv.port), TG_SESSION_TTL = "1" }
    local lock = "a lock: with {braces} and spaces"
    local holder = h.spawn({ "-n", "1", "--run-id", runid, "-c", "locker", "-p", "role=holder", "-p", "k=" .. k,
      "-p", "lock=" .. lock, PLAN }, env)
    local pid = h.wait_until(function() return num(srv.cli("GET " .. k .. ":pid")) end, 10)
    assert.truthy(pid, "the holder did not take the lock")
    local taker = h.spawn({ "-n", "1", "--run-id", runid, "--join", "-c", "locker", "-p", "role=taker", "-p", "k=" .. k,
      "-p", "lock=" .. lock, PLAN }, env)
    tg.sleep(0.3)
    os.execute("kill -9 " .. pid)
    local r = taker:wait(20)
    assert.truthy(r)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local took = num(srv.cli("GET " .. k .. ":took"))
    assert.is_true(took and took < 0.3 + 1 + 1, "the lock came back after " .. tostring(took) .. " s")
    local hr = holder:wait(10)
    assert.equal(1, hr.code)
    assert.matches("killed by signal 9", hr.stdout)
    -- the holder's death was announced: it is in the run's dead set
    local P = ("run:%s:plan:hostile:case:locker"):format(runid)
    assert.equal(1, num(srv.cli("SCARD " .. P .. ":tg:dead")))
    srv.kill()
  end)

  it("names that collide with internal keys do not: x:op:y, s:q, a NUL byte, 10 KB, unicode", function()
    -- a state named like another state's op-id record
    local base = h.uniq("st")
    assert.equal(1, sync.signal_entry(base, { op_id = "y" }))
    assert.equal(1, sync.signal_entry(base .. ":op:y"))
    assert.equal(1, sync.signal_entry(base, { op_id = "y" }), "the retry still returns the first seq")
    assert.equal(2, sync.signal_entry(base .. ":op:y"))
    -- a semaphore named like another's queue
    local s = h.uniq("sem")
    local a, b = sync.semaphore(s, 1), sync.semaphore(s .. ":q", 1)
    a:acquire({ timeout = 2 })
    b:acquire({ timeout = 2 })                   -- not the queue of a: its own permit
    a:release()
    b:release()
    -- topics named with NUL, 10 KB and unicode are delivered
    for _, name in ipairs({ "nul\0byte", ("x"):rep(800), "naïve ✓ 名前", "{braces} : colons" }) do
      local seq, sub = sync.publish_subscribe(name, { name = name })
      assert.equal(1, seq)
      local v = sub:next({ timeout = 3 })
      assert.equal(name, v.name)
      sub:close()
    end
    -- a 10 KB name is refused clearly (a key over 900 bytes), not truncated
    local ok, err = pcall(sync.publish, ("y"):rep(10240), 1)
    assert.is_false(ok)
    assert.equal("invalid", err.code)
  end)
end)

describe("timeouts of zero and of forever", function()
  for _, what in ipairs({ "zero", "tiny", "late" }) do
    it(("a barrier that times out before Redis answers (%s) fails cleanly, in processes and in-process"):format(what), function()
      for _, mode in ipairs({ {}, { "--inproc" } }) do
        local args = { "-n", "2", "-c", "zero", "-p", "what=" .. what, "--timeout", "1" }
        for _, m in ipairs(mode) do args[#args + 1] = m end
        args[#args + 1] = PLAN
        local r = run(nil, args)
        -- never a crash: each instance succeeds (tiny: its release may beat
        -- 1 ms) or fails with its timeout, or peer_failed after the other's
        assert.is_true(r.code == 1 or (what == "tiny" and r.code == 0), r.stdout .. r.stderr)
        local ok = tonumber(r.stdout:match("2 instances, (%d) succeeded"))
        assert.is_true(ok == 0 or what == "tiny", r.stdout)
        -- (each failed one: its own timeout, or peer_failed after the other's)
        assert.equal(2 - ok, count(r.stdout, "failed: barrier '%a+' timed out after")
          + count(r.stdout, "failed: barrier '%a+' can no longer complete: instance %d+ failed or died"), r.stdout)
        if ok < 2 then assert.is_true(count(r.stdout, "failed: barrier '%a+' timed out after") >= 1, r.stdout) end
      end
    end)
  end

  it("math.huge timeouts and tg.sleep(math.huge) end at the run's deadline", function()
    for _, what in ipairs({ "sleep", "barrier" }) do
      local r = run(nil, { "-n", "1", "-c", "huge", "-p", "what=" .. what, "--timeout", "1", PLAN })
      assert.equal(1, r.code, r.stdout .. r.stderr)
      assert.is_true(r.secs < 4, "took " .. r.secs)
      assert.matches("run's deadline", r.stdout)
    end
  end)

  for _, how in ipairs({ "spawn", "coroutine" }) do
    it(("plan code that never yields (in a %s) ends at the run's deadline, in-process"):format(how), function()
      local r = run(nil, { "-n", "3", "--inproc", "-c", "busy", "-p", "how=" .. how, "--timeout", "2", PLAN })
      assert.equal(1, r.code, r.stdout .. r.stderr)
      assert.matches("failed: the run's deadline passed while plan code ran for [%d.]+ s without yielding", r.stdout)
    end)
  end

  it("a huge --timeout works (keys get a TTL Redis takes)", function()
    local r = run(nil, { "-n", "2", "-c", "exits", "-p", "how=none", "--timeout", "5e15", PLAN })
    assert.matches("2 instances", r.stdout)
    assert.not_matches("invalid expire time", r.stdout .. r.stderr)
  end)
end)

describe("os.exit", function()
  for _, how in ipairs({ "0", "true", "1", "false" }) do
    it(("os.exit(%s) ends only that instance, as a failure, in processes and in-process"):format(how), function()
      for _, mode in ipairs({ {}, { "--inproc" } }) do
        local args = { "-n", "3", "-c", "exits", "-p", "how=" .. how }
        for _, m in ipairs(mode) do args[#args + 1] = m end
        args[#args + 1] = PLAN
        local r = run(nil, args)
        assert.equal(1, r.code, r.stdout .. r.stderr)
        assert.matches("3 instances, 2 succeeded, 1 failed", r.stdout)
        assert.matches("failed: the plan called os.exit%(" .. how .. "%)", r.stdout)
      end
    end)
  end

  it("os.exit whose error the plan catches still ends the instance, though it yields again at once", function()
    for _, mode in ipairs({ {}, { "--inproc" } }) do
      local args = { "-n", "3", "-c", "busy", "-p", "how=exit_yield", "--timeout", "20" }
      for _, m in ipairs(mode) do args[#args + 1] = m end
      args[#args + 1] = PLAN
      local r = run(nil, args)
      assert.equal(1, r.code, r.stdout .. r.stderr)
      assert.matches("3 instances, 2 succeeded, 1 failed", r.stdout)
      assert.matches("failed: the plan called os.exit while plan code ran", r.stdout)
    end
  end)

  it("os.exit at load time is one line and exit 2, before anything runs", function()
    local dir = h.tmpdir()
    local plan = h.write(dir .. "/exits.lua", "os.exit(0)\nreturn function() end\n")
    local r = run(nil, { "-n", "3", plan })
    assert.equal(2, r.code)
    assert.matches("plan failed while loading: the plan called os.exit%(0%)", r.stderr)
  end)
end)

describe("lost wake-ups", function()
  it("an entry with another target, or with none, releases a waiter at once", function()
    local k = "hostile:" .. h.uniq("wk")
    local r = run(nil, { "-n", "2", "-c", "wakeups", "-p", "k=" .. k, PLAN })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local function get(f)
      local p = io.popen(("redis-cli -p %d GET %s:%s"):format(h.redis_port, k, f))
      local s = p:read("*a")
      p:close()
      return tonumber(s)
    end
    local diff = get("diff_released") - get("diff_entered")
    local plain = get("plain_released") - get("plain_entered")
    print(("\n  released %.3f s after an entry with another target, %.3f s after a plain entry"):format(diff, plain))
    assert.is_true(diff < 0.25, ("released %.3f s after the entry that reached its target"):format(diff))
    assert.is_true(plain < 0.25, ("released %.3f s after the plain entry"):format(plain))
  end)
end)

describe("the runner", function()
  it("SIGKILLed, it takes its instances and its private redis-server with it", function()
    for _, mode in ipairs({ {}, { "--inproc" } }) do
      local dir = h.tmpdir()
      local plan = dir .. "/plan-" .. h.uniq("k") .. ".lua"
      os.execute(("cp %s %s"):format(h.shq(PLAN), h.shq(plan)))
      local id = h.uniq("sk")
      local args = { "-n", "3", "--run-id", id, "-c", "idle" }
      for _, m in ipairs(mode) do args[#args + 1] = m end
      args[#args + 1] = plan
      local p = h.spawn(args, { REDIS_HOST = "", REDIS_PORT = "" })
      -- tgrun processes of this run (not the shells around them)
      local function pids()
        local f = io.popen(("pgrep -f %s"):format(h.shq(plan)))
        local out = {}
        for pid in f:read("*a"):gmatch("%d+") do
          local cmd = h.read("/proc/" .. pid .. "/cmdline") or ""
          if cmd:sub(1, #h.tgrun + 1) == h.tgrun .. "\0" then out[#out + 1] = pid end
        end
        f:close()
        return table.concat(out, " ")
      end
      -- redis-servers working in a folder of this run (the private one)
      local function redis_for(id)
        local f = io.popen("for p in $(pgrep -x redis-server); do readlink /proc/$p/cwd; done | grep -c '/tgrun-" .. id .. "-'")
        local s = f:read("*a")
        f:close()
        return tonumber(s) or 0
      end
      assert.truthy(h.wait_until(function()
        local n = 0
        for _ in pids():gmatch("%d+") do n = n + 1 end
        return n >= (mode[1] and 1 or 4) and redis_for(id) == 1
      end, 10), "the run did not start")
      local runner = tonumber(h.read(p.dir .. "/pid"))
      -- the runner is the child of the shell that h.spawn started
      local f = io.popen("pgrep -P " .. runner)
      local tgrun_pid = tonumber(f:read("*l"))
      f:close()
      os.execute("kill -9 " .. tgrun_pid)
      assert.truthy(h.wait_until(function() return pids() == "" end, 10),
        "instances left after their runner was SIGKILLed: " .. pids())
      assert.truthy(h.wait_until(function() return redis_for(id) == 0 end, 10),
        "the private redis-server was left after its runner was SIGKILLed")
      assert.truthy(h.wait_until(function() return not h.read("/proc/" .. tgrun_pid .. "/stat") end, 5))
      p:wait(5)
    end
  end)

  it("never puts a Redis password on a command line", function()
    local srv = h.redis_server({ password = "s3cret-pw" })
    local dir = h.tmpdir()
    local plan = dir .. "/pw-" .. h.uniq("p") .. ".lua"
    os.execute(("cp %s %s"):format(h.shq(PLAN), h.shq(plan)))
    local p = h.spawn({ "-n", "2", "-c", "idle", "--redis", "redis://:s3cret-pw@127.0.0.1:" .. srv.port, plan }, {})
    local seen = h.wait_until(function()
      local f = io.popen(("pgrep -f %s"):format(h.shq(plan)))
      local list = f:read("*a")
      f:close()
      local n, found = 0, false
      for pid in list:gmatch("%d+") do
        local cmd = h.read("/proc/" .. pid .. "/cmdline") or ""
        -- tgrun instances only (not the shells that started the run)
        if cmd:sub(1, #h.tgrun + 1) == h.tgrun .. "\0" and cmd:find("--redis", 1, true)
          and not cmd:find("\0-n\0", 1, true) then
          n = n + 1
          if cmd:find("s3cret", 1, true) then found = true end
        end
      end
      return n == 2 and { found = found } or nil
    end, 10)
    assert.truthy(seen, "the instances did not start: " .. tostring(h.read(p.dir .. "/out")) .. tostring(h.read(p.dir .. "/err")))
    assert.is_false(seen.found, "an instance's command line holds the password")
    -- both instances are in the case once both entered initialized_global
    -- (being seen as processes is earlier than that)
    local key
    assert.truthy(h.wait_until(function()
      key = srv.cli("KEYS *:states:initialized_global"):match("[^\n]+")
      return key and srv.cli("GET " .. key):match("^2")
    end, 20), "the instances did not enter initialized_global: " .. tostring(key and srv.cli("GET " .. key))
      .. " " .. tostring(h.read(p.dir .. "/out")) .. tostring(h.read(p.dir .. "/err")))
    srv.cli("INCR " .. key:gsub("initialized_global", "finish"))
    local r = p:wait(20)
    assert.truthy(r)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.not_matches("s3cret", r.stdout .. r.stderr)
    srv.kill()
  end)

  it("refuses a run id that another launch used on the same Redis, unless --join", function()
    local id = h.uniq("reuse")
    local r1 = run(nil, { "-n", "2", "--run-id", id, "-c", "exits", "-p", "how=none", PLAN })
    assert.equal(0, r1.code, r1.stdout .. r1.stderr)
    local r2 = run(nil, { "-n", "2", "--run-id", id, "-c", "exits", "-p", "how=none", PLAN })
    assert.equal(2, r2.code, r2.stdout .. r2.stderr)
    assert.matches("run id '" .. id:gsub("%-", "%%-") .. "' already has keys in Redis", r2.stdout .. r2.stderr)
    assert.matches("%-%-join", r2.stdout .. r2.stderr)
    local r3 = run(nil, { "-n", "2", "--run-id", id, "--join", "-c", "exits", "-p", "how=none", PLAN })
    assert.equal(0, r3.code, r3.stdout .. r3.stderr)
  end)
end)

describe("keys after a crash", function()
  it("every key of a run whose lock holder and waiters were killed has a TTL", function()
    local srv = h.redis_server()
    local k = "hostile:" .. h.uniq("ttl")
    local runid = h.uniq("ttl")
    local env = { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(srv.port), TG_SESSION_TTL = "1" }
    local holder = h.spawn({ "-n", "1", "--run-id", runid, "-c", "locker", "-p", "role=holder", "-p", "k=" .. k,
      "-p", "lock=l", PLAN }, env)
    assert.truthy(h.wait_until(function() return num(srv.cli("GET " .. k .. ":pid")) end, 10))
    local taker = h.spawn({ "-n", "1", "--run-id", runid, "--join", "-c", "locker", "-p", "role=taker", "-p", "k=" .. k,
      "-p", "lock=l", PLAN }, env)
    tg.sleep(0.5)
    -- both killed, runners and instances: nobody is left to reap anything
    os.execute("pkill -9 -f " .. h.shq(PLAN))
    holder:wait(10)
    taker:wait(10)
    local P = ("run:%s:plan:hostile:case:locker"):format(runid)
    local keys = {}
    for key in srv.cli("KEYS " .. P .. "*"):gmatch("[^\n]+") do keys[#keys + 1] = key end
    assert.is_true(#keys > 5, "too few keys to be a test: " .. #keys)
    for _, key in ipairs(keys) do
      local ttl = num(srv.cli("TTL " .. h.shq(key)))
      assert.is_true(ttl and ttl > 0, key .. " has no TTL (" .. tostring(ttl) .. ")")
    end
    srv.kill()
  end)
end)

describe("bad input", function()
  local function plan_with(body)
    return h.write(h.tmpdir() .. "/p.lua", body)
  end

  it("gives one line and exit 2 for bad counts, a missing run id, an outputs path that is a file", function()
    local cases = {
      { { "-g", "a=4294967297", PLAN }, nil, 'group "a" has 4294967297 instances: a run has at most 1000000' },
      { { "-g", "a=1000001", PLAN }, nil, 'group "a" has 1000001 instances' },
      { { "-g", "a=2000000000", PLAN }, nil, 'group "a" has 2000000000 instances' },
      { { "-n", "0", PLAN }, nil, "%-n needs a whole number of instances from 1 to 1000000" },
      { { "-c", "idle", PLAN }, { TEST_INSTANCE_COUNT = "0" }, "TEST_INSTANCE_COUNT must be a whole number of instances from 1" },
      { { "-c", "idle", PLAN }, { TEST_INSTANCE_COUNT = "-3" }, "TEST_INSTANCE_COUNT must be" },
      { { "-c", "idle", PLAN }, { TEST_INSTANCE_COUNT = "99999999999999999999" }, "TEST_INSTANCE_COUNT must be" },
      { { "-c", "idle", PLAN }, { TEST_INSTANCE_COUNT = "3" }, "TEST_RUN is not set, but TEST_INSTANCE_COUNT is 3" },
      { { "--redis", "redis://no-such-host.invalid:6379", "-c", "idle", PLAN }, nil, "cannot connect to Redis at no%-such%-host%.invalid:6379" },
      { { "--redis", "unix:///nonexistent/redis.sock", "-c", "idle", PLAN }, nil, "cannot connect to Redis at unix:/nonexistent/redis.sock" },
      { { "-n", "2", "--redis", "unix:///nonexistent/redis.sock", "-c", "idle", PLAN }, nil, "cannot connect to Redis at unix:/nonexistent/redis.sock" },
    }
    for _, c in ipairs(cases) do
      local r = run(nil, c[1], c[2])
      assert.equal(2, r.code, table.concat(c[1], " ") .. ": " .. r.stdout .. r.stderr)
      assert.matches(c[3], r.stdout .. r.stderr)
      assert.not_matches("Assertion", r.stderr)
    end
    local afile = h.write(h.tmpdir() .. "/a-file", "x")
    for _, mode in ipairs({ {}, { "-n", "2" }, { "-n", "2", "--inproc" } }) do
      local args = {}
      for _, m in ipairs(mode) do args[#args + 1] = m end
      for _, a in ipairs({ "--outputs", afile, "-c", "idle", PLAN }) do args[#args + 1] = a end
      local r = run(nil, args, { TEST_RUN = "x" })
      assert.equal(2, r.code, r.stdout .. r.stderr)
      assert.matches("cannot create the outputs folder", r.stderr)
    end
  end)

  it("raises invalid naming the argument for wrong types, a NaN lease, a 600 MB publish", function()
    local function invalid(pattern, fn, ...)
      local ok, err = pcall(fn, ...)
      assert.is_false(ok)
      assert.equal("invalid", err.code, tostring(err))
      assert.matches(pattern, err.message)
    end
    invalid("signal_entry: options must be a table, got 1", sync.signal_entry, "s", 1)
    invalid('tg.sleep: seconds must be a number >= 0, got "x"', tg.sleep, "x")
    invalid("tg.sleep: seconds must be a number >= 0, got %-?nan", tg.sleep, 0 / 0)
    invalid("tg.spawn: fn must be a function, got 3", tg.spawn, 3)
    invalid("mutex: lease must be a number of seconds > 0", sync.mutex, "m", { lease = 0 / 0 })
    invalid("a value may be at most 256 MiB", sync.publish, "big", ("x"):rep(300 * 1048576))
  end)

  it("a case that runs out of memory says so", function()
    local plan = plan_with([[
local core = require "tg.core"
return function()
  core.memory_limit(collectgarbage("count") * 1024 + 4000000)
  local t = {}
  for i = 1, 1e8 do t[i] = ("x"):rep(64) .. i end
end]])
    local r = run(nil, { "-n", "1", plan })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("failed: the case ran out of memory", r.stdout)
  end)

  it("NOAUTH and a wrong password say to give the password", function()
    local srv = h.redis_server({ password = "pw" })
    local r = h.run({ "--redis", "redis://127.0.0.1:" .. srv.port, "-c", "idle", PLAN }, {})
    assert.equal(2, r.code)
    assert.matches("NOAUTH[^\n]*give the password", r.stderr)
    r = h.run({ "--redis", "redis://:wrong@127.0.0.1:" .. srv.port, "-c", "idle", PLAN }, {})
    assert.equal(2, r.code)
    assert.matches("give the password", r.stderr)
    assert.not_matches("wrong", r.stderr:gsub("WRONGPASS", ""))
    r = h.run({ "--redis", "redis://127.0.0.1:" .. srv.port, "-c", "exits", "-p", "how=none", "-n", "2", PLAN },
      { REDIS_PASSWORD = "pw" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    srv.kill()
  end)
end)
