-- multihost_spec.lua -- one run spread over several "hosts", and tgrun
-- observe following it from yet another.  Each host is a network namespace
-- of its own on a bridge (tests/lua/netlab.lua), with its own address; the
-- run's Redis lives in one more, the observer in another.  Each host runs
-- its share with `tgrun -n K --instance-count N --instance-offset O
-- --redis URL --run-id RUN --subnet LAB`, so its instances advertise the
-- host's address and the plan's TCP crosses the bridge, never loopback.
-- Needs root (ip netns): a machine without it fails here with the reason.
local h = require "helpers"
local netlab = require "netlab"

after_each(h.check_clean)   -- nothing left behind by any spec

local ADDRESSES = h.src .. "/examples/addresses.lua"
local LOCAL = h.src .. "/tests/lua/plans/local.lua"
local NOREDIS = { REDIS_HOST = "", REDIS_PORT = "" }

describe("a run across hosts, followed by tgrun observe", function()
  local lab
  setup(function() lab = netlab.up({ "r", "h1", "h2", "h3", "o" }, { redis = "r" }) end)
  teardown(function()
    if lab then lab:down() end
  end)

  -- host x runs instances offset..offset+k-1 of a run of total
  local function share(x, run, offset, k, total, args)
    local a = { "-n", tostring(k), "--instance-count", tostring(total), "--instance-offset", tostring(offset),
      "--redis", lab.redis_url, "--run-id", run, "--subnet", lab.subnet, "--timeout", "60" }
    for _, w in ipairs(args) do a[#a + 1] = w end
    local p = h.spawn(a, NOREDIS, { prefix = lab:exec(x) })
    p.host = x
    return p
  end

  local function observe(run, args)
    local a = { "observe", "--redis", lab.redis_url, "--run", run }
    for _, w in ipairs(args or {}) do a[#a + 1] = w end
    return h.spawn(a, NOREDIS, { prefix = lab:exec("o") })
  end

  local function finish(p, timeout)
    local r, err = p:wait(timeout or 60)
    if not r then p.kill() end
    assert(r, err)
    return r
  end

  it("K instances on each of three hosts form one run of N; observe exits 0 with the per-group summary", function()
    local run = h.uniq("mh")
    local obs = observe(run, { "--timeout", "60" })       -- before anything runs: it waits for the run
    local groups = { "-g", "a=2", "-g", "b=4", ADDRESSES }
    local inproc = { "--inproc" }
    for _, w in ipairs(groups) do inproc[#inproc + 1] = w end
    local hosts = { share("h1", run, 0, 2, 6, groups), share("h2", run, 2, 2, 6, groups),
      share("h3", run, 4, 2, 6, inproc) }         -- the third host runs its share in one process
    local labels = { h1 = { "a[0]", "a[1]" }, h2 = { "b[0]", "b[1]" }, h3 = { "b[2]", "b[3]" } }
    local seqs, hosts_of_seq = {}, {}
    for i, p in ipairs(hosts) do
      local r = finish(p)
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local first = (i - 1) * 2
      assert.matches(("2 instances %%(indices %d..%d of a run of 6%%), 2 succeeded, 0 failed"):format(first, first + 1),
        r.stdout)
      local addr = lab.ns[p.host].addr
      for _, label in ipairs(labels[p.host]) do
        -- each instance advertises its host's address: peers dial it over the bridge
        local seq, where = r.stdout:match(label:gsub("[%[%]]", "%%%0") .. " instance (%d+) listens on ([%d.]+):%d+")
        assert.truthy(seq, label .. " did not say where it listens:\n" .. r.stdout)
        assert.equal(addr, where)
        assert.is_nil(seqs[seq], "two instances got global_seq " .. seq)
        seqs[seq], hosts_of_seq[tonumber(seq)] = true, p.host
      end
      assert.is_nil(r.stdout:find("127%.0%.0%.1"), "an instance advertised loopback:\n" .. r.stdout)
    end
    for i = 1, 6 do assert.truthy(seqs[tostring(i)], "no instance got global_seq " .. i) end
    -- the ring (seq i dials seq i+1) crosses from host to host
    local crossings = 0
    for i = 1, 6 do crossings = crossings + (hosts_of_seq[i] ~= hosts_of_seq[i % 6 + 1] and 1 or 0) end
    assert.is_true(crossings >= 3, "the ring crossed hosts only " .. crossings .. " times")

    local o = finish(obs)
    assert.equal(0, o.code, o.stdout .. o.stderr)
    assert.matches("run " .. run:gsub("%-", "%%-") .. " %(plan addresses, case default%): 6 instances %(observed%), "
      .. "6 succeeded, 0 failed", o.stdout)
    assert.matches("group a: 2 succeeded, 0 failed", o.stdout)
    assert.matches("group b: 4 succeeded, 0 failed", o.stdout)
    for _, l in ipairs({ "a[0]", "a[1]", "b[0]", "b[3]" }) do
      assert.truthy(o.stdout:find(l .. "@", 1, true), "observe did not name " .. l .. ":\n" .. o.stdout)
    end
  end)

  it("observe exits 1 and names the failed instance with its first error", function()
    local run = h.uniq("mhfail")
    local p1 = share("h1", run, 0, 2, 4, { "-c", "one_fails", LOCAL })
    local p2 = share("h2", run, 2, 2, 4, { "-c", "one_fails", LOCAL })
    local r1, r2 = finish(p1), finish(p2)
    -- exactly one host has the instance with global_seq 2, which fails
    assert.same({ 0, 1 }, { math.min(r1.code, r2.code), math.max(r1.code, r2.code) }, r1.stdout .. r2.stdout)
    local o = finish(observe(run, { "--timeout", "30" }))   -- after the run: it reads the stream from its start
    assert.equal(1, o.code, o.stdout .. o.stderr)
    assert.matches("4 instances %(observed%), 3 succeeded, 1 failed", o.stdout)
    assert.matches("single%[%d%]@%S+ failed: .*local%.lua:14: instance two gives up", o.stdout)
  end)

  it("observe gives up at its --timeout, naming the instances it never heard of", function()
    local run = h.uniq("mhlost")
    -- only the first host of two starts: its instances wait for the others until the run's deadline
    local p1 = share("h1", run, 0, 2, 4, { "-c", "hang", "--timeout", "2", LOCAL })
    local t0 = require("tg").now()
    local o = finish(observe(run, { "--timeout", "6" }), 30)
    assert.equal(1, o.code, o.stdout .. o.stderr)
    assert.is_true(require("tg").now() - t0 < 15, "observe was not bounded by its --timeout")
    assert.matches("the deadline passed with 2 of the run's instance%(s%) without an outcome", o.stderr)
    assert.matches("4 instances %(observed%), 0 succeeded, 4 failed", o.stdout)
    assert.matches("single%[0%]@%S+ failed: barrier 'done' timed out", o.stdout)
    local _, never = o.stdout:gsub("single#%? did not finish: never recorded a start or an outcome", "")
    assert.equal(2, never, o.stdout)
    assert.equal(1, finish(p1).code)
  end)
end)

describe("bad input for shares and observe: one line, exit 2", function()
  local function one_line(r)
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.equal(1, select(2, r.stderr:gsub("\n", "")), r.stderr)
  end

  it("a share without the run id, without a Redis, or past the run's end", function()
    local r = h.run({ "-n", "2", "--instance-count", "4", "--redis", "127.0.0.1:1", LOCAL }, NOREDIS)
    one_line(r)
    assert.matches("needs the run id every host uses: give %-%-run%-id", r.stderr)
    r = h.run({ "-n", "2", "--instance-count", "4", "--run-id", "x", LOCAL }, NOREDIS)
    one_line(r)
    assert.matches("needs the Redis every host uses: give %-%-redis URL", r.stderr)
    r = h.run({ "-n", "2", "--instance-count", "4", "--instance-offset", "3", "--run-id", "x", LOCAL }, NOREDIS)
    one_line(r)
    assert.matches("goes past the run's 4 instances", r.stderr)
    r = h.run({ "-n", "2", "-g", "a=1", "-g", "b=1", "--instance-count", "4", "--run-id", "x",
      "--redis", "127.0.0.1:1", LOCAL }, NOREDIS)
    one_line(r)
    assert.matches("the groups add up to 2 instances but %-%-instance%-count says 4", r.stderr)
    r = h.run({ "--instance-offset", "1", LOCAL }, NOREDIS)
    one_line(r)
    assert.matches("need %-n K", r.stderr)
    r = h.run({ "-n", "2", "--subnet", "10.1.2.3", LOCAL }, NOREDIS)
    one_line(r)
    assert.matches("%-%-subnet needs an IPv4 network", r.stderr)
  end)

  it("observe without --run, with a Redis that does not answer, or for a run that never shows", function()
    local r = h.run({ "observe", "--redis", "127.0.0.1:" .. h.redis_port }, NOREDIS)
    one_line(r)
    assert.matches("which run%? give %-%-run ID", r.stderr)
    r = h.run({ "observe", "--redis", "127.0.0.1:1", "--run", "x" }, NOREDIS)
    one_line(r)
    assert.matches("cannot connect to Redis at 127%.0%.0%.1:1", r.stderr)
    r = h.run({ "observe", "--redis", "127.0.0.1:" .. h.redis_port, "--run", h.uniq("none"), "--timeout", "0.5" },
      NOREDIS)
    one_line(r)
    assert.matches("no events of run .* check %-%-run and %-%-redis", r.stderr)
    r = h.run({ "observe", "--run", "x", LOCAL }, NOREDIS)
    one_line(r)
    assert.matches("observe takes no plan", r.stderr)
  end)
end)
