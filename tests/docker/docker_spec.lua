-- docker_spec.lua -- tgrun -n N --docker: every instance its own container
-- on the run's private internal network.  Needs a Docker engine, so it is
-- not one of ctest's specs: the container stage (tests/docker.sh, after the
-- engine and the base image are there) runs it with
--
--   tests/harness/with-redis.sh build/tgrun tests/lua/run_specs.lua \
--       -p dir=$PWD/tests/docker -p output=plainTerminal
--
-- Every run here is checked for leftovers afterwards: no container, network
-- or volume labelled with its run id (docker ps -a / network ls / volume ls
-- --filter label=tgrun.run=RUN), no temp folder, no watchdog process.
local tg = require "tg"
local h = require "helpers"
local netlab = require "netlab"

after_each(h.check_clean)   -- nothing left behind by any spec

local sh, must = netlab.sh, netlab.must
local PLAN = h.src .. "/tests/docker/plans/docker.lua"
local ADDRESSES = h.src .. "/examples/addresses.lua"
local LOCAL = h.src .. "/tests/lua/plans/local.lua"
local NOREDIS = { REDIS_HOST = "", REDIS_PORT = "" }

local function esc(s) return (s:gsub("%p", "%%%0")) end

-- What the run left in Docker, or "" (and no temp folder, no watchdog).
local function leftovers(run)
  local out = {}
  for _, what in ipairs({ "ps -aq", "network ls -q", "volume ls -q" }) do
    local o = must("docker " .. what .. " --filter label=tgrun.run=" .. run)
    if o:match("%S") then out[#out + 1] = what .. ": " .. o end
  end
  local _, tmp = sh("for d in ${TMPDIR:-/tmp}/tgrun-" .. run .. "-*; do [ -e \"$d\" ] && echo \"$d\"; done; true")
  if tmp:match("%S") then out[#out + 1] = "temp folder " .. tmp end
  local _, reaper = sh("pgrep -f '[_]docker-reaper " .. run .. " '")
  if reaper:match("%S") then out[#out + 1] = "watchdog " .. reaper end
  return table.concat(out, "; ")
end

-- Wait (bounded) until nothing of the run is left; fail naming what is.
local function assert_clean(run, timeout)
  local left
  local ok = h.wait_until(function()
    left = leftovers(run)
    return left == ""
  end, timeout or 10)
  assert(ok, "left behind by run " .. run .. ": " .. tostring(left))
end

local function run(args, env)
  local e = {}
  for k, v in pairs(NOREDIS) do e[k] = v end
  for k, v in pairs(env or {}) do e[k] = v end
  return h.run(args, e)
end

local function spawn(args)
  return h.spawn(args, NOREDIS)
end

-- Send sig to the tgrun that p runs (the child of p's shell).
local function signal(p, sig)
  os.execute(("pkill -%s -P $(cat %s/pid) 2>/dev/null"):format(sig, p.dir))
end

-- Wait until p's stdout has n lines matching pattern.
local function wait_lines(p, pattern, n, timeout)
  return h.wait_until(function()
    local out = h.read(p.dir .. "/out") or ""
    return select(2, out:gsub(pattern, "")) >= n
  end, timeout or 60)
end

local function in_subnet(addr, cidr)
  local function num(a)
    local b1, b2, b3, b4 = a:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    return ((tonumber(b1) * 256 + tonumber(b2)) * 256 + tonumber(b3)) * 256 + tonumber(b4)
  end
  local base, bits = cidr:match("^([%d.]+)/(%d+)$")
  local size = 2 ^ (32 - tonumber(bits))
  return num(addr) // size == num(base) // size
end

local function one_line(r)
  assert.equal(2, r.code, r.stdout .. r.stderr)
  assert.equal(1, select(2, r.stderr:gsub("\n", "")), r.stderr)
end

describe("tgrun -n --docker", function()
  it("runs each instance in its own container; TCP over the run's network; outputs collected; nothing left", function()
    local out, id = h.tmpdir(), h.uniq("dk")
    local r = run({ "-n", "4", "-g", "a=2", "-g", "b=2", "--docker", "--outputs", out, "--run-id", id,
      "-c", "where", PLAN })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("4 instances, 4 succeeded, 0 failed", r.stdout)
    assert.matches("group a: 2 succeeded, 0 failed", r.stdout)
    assert.matches("group b: 2 succeeded, 0 failed", r.stdout)
    local me = must("id -u"):match("%d+")
    local subnet
    for _, g in ipairs({ "a", "b" }) do
      for i = 0, 1 do
        local dir = ("%s/%s/%s/%d"):format(out, id, g, i)
        local runout = h.read(dir .. "/run.out")
        assert.truthy(runout, "no run.out in " .. dir)
        assert.truthy(runout:find('"success_event"', 1, true), runout)
        -- TEST_SUBNET is the network's real subnet; the outputs are the caller's again
        subnet = runout:match('"network":"([%d./]+)"')
        assert.truthy(subnet and not subnet:match("^127%."), runout)
        assert.equal(me, must("stat -c %u " .. dir .. "/run.out"):match("%d+"))
      end
    end
    -- every instance listens on its container's address in the subnet, and was dialled there
    local n = 0
    for ip, addr in r.stdout:gmatch("ip ([%d.]+) listens on ([%d.]+):%d+") do
      n = n + 1
      assert.equal(ip, addr)
      assert.is_true(in_subnet(ip, subnet), ip .. " is not in " .. subnet)
    end
    assert.equal(4, n, r.stdout)
    assert.equal(4, select(2, r.stdout:gsub("heard from [%d.]+:%d+", "")), r.stdout)
    assert.is_nil(r.stdout:find("127%.0%.0%.1"), r.stdout)
    assert_clean(id)
  end)

  it("mounts the plan's folder: a changed plan runs without a new image", function()
    local dir = h.tmpdir()
    must("chmod 755 " .. dir)                 -- the image's user reads it
    local plan = dir .. "/marker.lua"
    local function write(marker)
      h.write(plan, ('return function(env) require("tg.log").info("marker %s") end'):format(marker))
    end
    write("one")
    local id1, id2 = h.uniq("dkm"), h.uniq("dkm")
    local r1 = run({ "-n", "2", "--docker", "--run-id", id1, plan })
    assert.equal(0, r1.code, r1.stdout .. r1.stderr)
    assert.equal(2, select(2, r1.stdout:gsub("marker one", "")), r1.stdout)
    write("two")
    local r2 = run({ "-n", "2", "--docker", "--run-id", id2, plan })
    assert.equal(0, r2.code, r2.stdout .. r2.stderr)
    assert.equal(2, select(2, r2.stdout:gsub("marker two", "")), r2.stdout)
    assert.is_nil(r2.stderr:find("building image", 1, true), r2.stderr)
    assert_clean(id1)
    assert_clean(id2)
  end)

  it("a plan that fails: exit 1, the failed instance with its first error", function()
    local id = h.uniq("dkf")
    local r = run({ "-n", "4", "--docker", "--run-id", id, "-c", "one_fails", LOCAL })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("4 instances, 3 succeeded, 1 failed", r.stdout)
    assert.matches("single%[%d%] failed: /plan/local%.lua:14: instance two gives up", r.stdout)
    assert_clean(id)
  end)

  it("on the deadline SIGTERM reaches each container's tgrun; one that cannot answer is removed", function()
    local id = h.uniq("dkd")
    local t0 = tg.now()
    local r = run({ "-n", "2", "--docker", "--run-id", id, "-c", "stuck", "--timeout", "6", "--grace", "0.5", PLAN })
    local secs = tg.now() - t0
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("the run's deadline %(6 s%) has passed: stopping 2 instance", r.stderr)
    -- SIGTERM at 6.5 s goes unanswered (the runtime is blocked), the containers go 3 s later
    assert.matches("single%[%d%] did not finish: killed by signal 9 before it recorded an outcome "
      .. "%(the run's deadline had passed%)", r.stdout)
    assert.is_true(secs < 6 + 0.5 + 3 + 10, "took " .. secs .. " s")
    assert_clean(id)
  end)

  it("Ctrl-C: every container's tgrun says what it waited for; nothing left", function()
    local id = h.uniq("dkc")
    local p = spawn({ "-n", "3", "--docker", "--run-id", id, "-c", "hang", PLAN })
    assert.truthy(wait_lines(p, "single%[%d%] start", 3), "the instances did not start: " .. tostring(h.read(p.dir .. "/err")))
    local t0 = tg.now()
    signal(p, "INT")
    local r = p:wait(30)
    assert.truthy(r, "tgrun did not end after SIGINT")
    assert.is_true(tg.now() - t0 < 10, "took " .. (tg.now() - t0) .. " s")
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("interrupted: stopping 3 instance", r.stderr)
    assert.matches("did not finish: interrupted %(SIGTERM%) while waiting at barrier 'done'", r.stdout)
    assert_clean(id)
  end)

  it("Ctrl-C twice removes containers that do not answer at once", function()
    local id = h.uniq("dkcc")
    local p = spawn({ "-n", "2", "--docker", "--run-id", id, "-c", "stuck", PLAN })
    assert.truthy(wait_lines(p, "stuck now", 2), "the instances did not get stuck: " .. tostring(h.read(p.dir .. "/err")))
    signal(p, "INT")
    tg.sleep(0.5)
    local t0 = tg.now()
    signal(p, "INT")
    local r = p:wait(30)
    assert.truthy(r, "tgrun did not end after the second SIGINT")
    assert.is_true(tg.now() - t0 < 10, "took " .. (tg.now() - t0) .. " s")
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("interrupted again: killing every instance", r.stderr)
    assert.matches("single%[%d%] did not finish: killed by signal 9", r.stdout)
    assert_clean(id)
  end)

  it("a SIGKILLed tgrun: its watchdog removes the containers, the network, the Redis and the temp folder", function()
    local id = h.uniq("dkk")
    local p = spawn({ "-n", "2", "--docker", "--run-id", id, "-c", "hang", PLAN })
    assert.truthy(wait_lines(p, "single%[%d%] start", 2), "the instances did not start: " .. tostring(h.read(p.dir .. "/err")))
    local redis_pid = tonumber(must("cat ${TMPDIR:-/tmp}/tgrun-" .. id .. "-*/redis.pid"))
    assert.truthy(redis_pid)
    signal(p, "KILL")
    assert.truthy(p:wait(10))
    assert_clean(id, 30)
    assert.truthy(h.wait_until(function() return sh("kill -0 " .. redis_pid) ~= 0 end, 10),
      "the run's redis-server is still running")
    assert.matches("run " .. esc(id) .. " ended without cleaning up: removed 2 container%(s%) and 1 network%(s%)",
      h.read(p.dir .. "/err"))
  end)

  it("a SIGKILLed tgrun and watchdog: the next --docker run sweeps what they left", function()
    local id = h.uniq("dks")
    local p = spawn({ "-n", "2", "--docker", "--run-id", id, "-c", "hang", PLAN })
    assert.truthy(wait_lines(p, "single%[%d%] start", 2), "the instances did not start: " .. tostring(h.read(p.dir .. "/err")))
    local redis_pid = tonumber(must("cat ${TMPDIR:-/tmp}/tgrun-" .. id .. "-*/redis.pid"))
    must("pkill -KILL -f '[_]docker-reaper " .. id .. " '")
    signal(p, "KILL")
    assert.truthy(p:wait(10))
    tg.sleep(1)
    assert.matches("ps %-aq: ", leftovers(id))          -- still there: nobody cleaned up
    local id2 = h.uniq("dks2")
    local r = run({ "-n", "1", "--docker", "--run-id", id2, "-c", "all", LOCAL })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("removed 2 container%(s%) and 1 network%(s%) left by 1 %-%-docker run%(s%) whose tgrun is gone",
      r.stderr)
    assert_clean(id)
    assert_clean(id2)
    assert.truthy(h.wait_until(function() return sh("kill -0 " .. redis_pid) ~= 0 end, 10),
      "the crashed run's redis-server is still running")
  end)
end)

describe("tgrun -n --docker: bad input", function()
  it("an image that does not exist: one line, exit 2, nothing made", function()
    local id = h.uniq("dkb")
    local r = run({ "-n", "2", "--docker", "tgrun-no-such-image:1", "--run-id", id, "-c", "all", LOCAL })
    one_line(r)
    assert.matches('image "tgrun%-no%-such%-image:1" is not on this Docker engine %(tgrun never pulls%)', r.stderr)
    assert_clean(id)
  end)

  it("no Docker engine, or no docker command: one line, exit 2", function()
    local r = run({ "-n", "2", "--docker", "-c", "all", LOCAL }, { DOCKER_HOST = "unix:///nonexistent/docker.sock" })
    one_line(r)
    assert.matches("%-%-docker: no Docker engine answers %(.*%): start one", r.stderr)
    r = run({ "-n", "2", "--docker", "-c", "all", LOCAL }, { PATH = "/nonexistent" })
    one_line(r)
    assert.matches("%-%-docker needs the docker command, which is not on PATH", r.stderr)
  end)

  it("--docker with --redis: one line, exit 2", function()
    local r = run({ "-n", "2", "--docker", "--redis", "127.0.0.1:6379", "-c", "all", LOCAL })
    one_line(r)
    assert.matches("%-%-docker runs its own Redis", r.stderr)
  end)

  it("network features the kernel lacks, values out of range, unknown peers: failing instances with the code", function()
    local id = h.uniq("dkn")
    -- does this kernel have sch_netem?  Asked of tc in a namespace of ours.
    local ns = "tgprobe-" .. id:gsub("[^%w]", "")
    must("ip netns add " .. ns .. " && ip -n " .. ns .. " link set lo up")
    local netem = sh("ip netns exec " .. ns .. " tc qdisc add dev lo root netem delay 1ms") == 0
    must("ip netns del " .. ns)
    local r = run({ "-n", "2", "--docker", "--run-id", id, "-c", "bad_network", PLAN })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("2 instances, 0 succeeded, 2 failed", r.stdout)
    if netem then
      assert.matches("check netem: ok", r.stdout)
    else
      assert.matches("check netem: code=unsupported: network%.shape: .*sch_netem", r.stdout)
      assert.matches("single%[%d%] failed: network%.shape: .*sch_netem", r.stdout)
    end
    assert.matches("check range: code=invalid: network%.shape: rate", r.stdout)
    assert.matches("check peer: code=invalid: network%.partition: .*nosuch", r.stdout)
    assert.matches("single%[%d%] failed: network%.partition: .*nosuch", r.stdout)
    assert_clean(id)
  end)
end)
