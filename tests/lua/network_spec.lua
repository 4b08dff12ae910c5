-- network_spec.lua -- tg.network measured for real: instances of
-- plans/network.lua and examples/network/splitbrain.lua, each in a network
-- namespace of its own on a bridge that this spec makes (and removes), with
-- a redis-server in a namespace of its own; traffic only ever goes between
-- those namespaces (and loopback).  Needs root (ip netns, tc, iptables): a
-- machine without them fails here with the reason, it does not skip.
local tg = require "tg"
local json = require "tg.json"
local h = require "helpers"
local netlab = require "netlab"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/network.lua"
local SPLITBRAIN = h.src .. "/examples/network/splitbrain.lua"
local RATE_TOLERANCE = 0.15

local sh, must = netlab.sh, netlab.must

---------------------------------------------------------------- the lab

local lab                   -- netlab: r runs redis; a..d run instances

local NAMES = { "r", "a", "b", "c", "d" }

local function lab_up()
  local ok, why = pcall(function()
    must("command -v ip && command -v tc && command -v iptables && command -v redis-server && command -v setpriv")
  end)
  assert(ok, "network_spec needs ip, tc (iproute2), iptables, redis-server and setpriv (util-linux): " .. tostring(why))
  lab = netlab.up(NAMES, { redis = "r" })
end

local function lab_down()
  if not lab then return end
  local l = lab
  lab = nil
  l:down()
end

-- Start one instance of a plan in namespace x (a..d).  env: TEST_* extras.
local function start(x, plan, case, run, count, group, extra, opts)
  local out = h.tmpdir()
  local env = {
    TEST_PLAN = "network", TEST_CASE = case or "", TEST_RUN = run, TEST_INSTANCE_COUNT = tostring(count),
    TEST_GROUP_ID = group, TEST_GROUP_INSTANCE_COUNT = tostring(opts and opts.group_count or 1),
    TEST_SUBNET = lab.subnet, TEST_OUTPUTS_PATH = out, REDIS_HOST = lab.ns.r.addr,
    REDIS_PORT = tostring(lab.redis_port), TEST_INSTANCE_PARAMS = extra or "",
  }
  local prefix = { "ip", "netns", "exec", lab.ns[x].name }
  for _, w in ipairs(opts and opts.prefix or {}) do prefix[#prefix + 1] = w end
  if opts and opts.open_outputs then must("chmod 777 " .. out) end
  local p = h.spawn({ "--timeout", "60", plan }, env, { prefix = prefix, bin = opts and opts.bin })
  p.out = out
  return p
end

-- Wait for every instance; each must exit 0.  Returns their run.out texts.
local function all_ok(ps, timeout)
  local outs = {}
  for i, p in ipairs(ps) do
    local r, err = p:wait(timeout or 60)
    if not r then p.kill() end
    assert(r, ("instance %d: %s"):format(i, tostring(err)))
    local runout = h.read(p.out .. "/run.out") or ""
    assert(r.code == 0, ("instance %d exited %s: %s\n%s"):format(i, tostring(r.code), r.stderr,
      runout:sub(-3000)))
    assert(runout:find('"success_event"', 1, true), "no success_event in run.out of instance " .. i)
    outs[i] = runout
  end
  return outs
end

local function messages(runout)
  local out = {}
  for _, l in ipairs(h.json_lines(runout)) do
    if l.event.message_event then out[#out + 1] = l.event.message_event.message end
  end
  return out
end

-- Whether this kernel has sch_netem: asked of tc itself, in a namespace of ours.
local function kernel_has_netem()
  local ns = lab.ns.d.name
  local code, out = sh(("ip netns exec %s tc qdisc add dev eth0 root handle 1: netem delay 1ms"):format(ns))
  if code == 0 then
    must(("ip netns exec %s tc qdisc del dev eth0 root"):format(ns))
    return true
  end
  assert(out:find("qdisc kind is unknown", 1, true), "tc netem probe failed otherwise: " .. out)
  return false
end

describe("tg.network in network namespaces", function()
  setup(lab_up)
  teardown(lab_down)

  it("gives env.ip and network.address() the instance's address in TEST_SUBNET", function()
    local p = start("a", PLAN, "address", h.uniq("addr"), 1, "single")
    local outs = all_ok({ p })
    local addr = lab.ns.a.addr
    assert.truthy(outs[1]:find('"address ' .. addr .. ' on eth0"', 1, true), outs[1])
    -- the start event carries the subnet; and tg.net listeners advertise the address
    assert.truthy(outs[1]:find('"network":"' .. lab.subnet .. '"', 1, true))
  end)

  it("shapes egress with tbf to the set rate (within 15 %), and reset lifts it", function()
    local run, rate = h.uniq("tput"), 20e6
    local recv = start("a", PLAN, "throughput", run, 2, "recv", "rate=" .. rate .. "|secs=3")
    local send = start("b", PLAN, "throughput", run, 2, "send", "rate=" .. rate .. "|secs=3")
    local outs = all_ok({ recv, send }, 60)
    local shaped, after = outs[2]:match('result: shaped (%d+) bit/s, after reset (%d+) bit/s')
    assert.truthy(shaped, outs[2])
    shaped, after = tonumber(shaped), tonumber(after)
    print(("\n    throughput through a %.0f Mbit/s tbf: %.2f Mbit/s (%.1f %%); after reset: %.0f Mbit/s")
      :format(rate / 1e6, shaped / 1e6, (shaped / rate - 1) * 100, after / 1e6))
    assert.is_true(math.abs(shaped - rate) <= rate * RATE_TOLERANCE,
      ("shaped throughput %.0f bit/s is not within 15 %% of %.0f"):format(shaped, rate))
    assert.is_true(after > 3 * rate, ("after reset only %.0f bit/s"):format(after))
    -- nothing of ours stays on the sender's interface
    local q = must(("ip netns exec %s tc qdisc show dev eth0"):format(lab.ns.b.name))
    assert.is_nil(q:find("tbf"), q)
  end)

  it("partitions a pair (drop: timeout, reject: refused, by group and by seq) and heals it", function()
    local run = h.uniq("part")
    local left = start("a", PLAN, "partition", run, 2, "left")
    local right = start("b", PLAN, "partition", run, 2, "right")
    all_ok({ left, right }, 60)
    -- heal left the chains empty but for the Redis exemption
    for _, x in ipairs({ "a", "b" }) do
      local rules = must(("ip netns exec %s iptables -S TGRUN-IN"):format(lab.ns[x].name))
      assert.is_nil(rules:find("DROP") or rules:find("REJECT"), rules)
    end
  end)

  it("checks arguments at once and names the missing sch_netem (or applies netem where the kernel has it)", function()
    local netem = kernel_has_netem() and "present" or "missing"
    local p = start("c", PLAN, "limits", h.uniq("limits"), 1, "single", "netem=" .. netem)
    local outs = all_ok({ p })
    assert.truthy(outs[1]:find("netem: " .. (netem == "missing" and "unsupported as expected" or "applied"), 1, true))
  end)

  it("raises unsupported naming --cap-add NET_ADMIN for an instance without CAP_NET_ADMIN", function()
    -- the unprivileged user runs a copy of tgrun and the plan from a folder
    -- it may enter (a clone under a private temp folder is not one)
    local pub = h.tmpdir()
    must(("chmod 755 %s && cp %s %s %s/ && chmod 755 %s/tgrun && chmod 644 %s/network.lua"):format(h.shq(pub),
      h.shq(h.tgrun), h.shq(PLAN), h.shq(pub), h.shq(pub), h.shq(pub)))
    local p = start("d", pub .. "/network.lua", "nocap", h.uniq("nocap"), 1, "single", nil,
      { prefix = { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-net_admin" }, open_outputs = true, bin = pub .. "/tgrun" })
    all_ok({ p })
  end)

  it("runs examples/network/splitbrain.lua: each half progresses alone, then they reconcile", function()
    local run = h.uniq("split")
    local ps = {}
    for i, x in ipairs({ "a", "b", "c", "d" }) do
      ps[i] = start(x, SPLITBRAIN, "", run, 4, i <= 2 and "left" or "right", nil, { group_count = 2 })
    end
    local outs = all_ok(ps, 90)
    for i, o in ipairs(outs) do
      local m = table.concat(messages(o), "\n")
      assert.truthy(m:find("split: " .. (i <= 2 and "left" or "right") .. " holds its half's 2 entries", 1, true), m)
      assert.truthy(m:find("healed: all 4 instances hold the same 4 entries", 1, true), m)
    end
  end)
end)

describe("tg.network without a network of its own", function()
  it("a local instance (loopback subnet) gets 127.0.0.1 and unsupported for changes", function()
    local out = h.tmpdir()
    local r = h.run({ "--timeout", "30", "-c", "loopback", PLAN }, {
      REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port), TEST_OUTPUTS_PATH = out,
      TEST_SUBNET = "127.1.0.0/16" })
    assert.equal(0, r.code, r.stderr .. (h.read(out .. "/run.out") or ""))
  end)
end)

describe("tg.network under Testground's sidecar", function()
  -- the spec plays the sidecar: it lets the instance past network-initialized,
  -- reads each config the instance publishes on network:<hostname> and, only
  -- then, enters the callback state the config names
  local function cli(args)
    local code, out = sh(("redis-cli -p %d %s"):format(h.redis_port, args))
    assert(code == 0, out)
    return out
  end

  it("publishes sdk-go's network.Config JSON and waits at the callback state", function()
    local run = h.uniq("sidecar")
    local host = h.read("/proc/sys/kernel/hostname"):match("^%s*(.-)%s*$")
    local out = h.tmpdir()
    local p = h.spawn({ "--timeout", "60", PLAN }, {
      TEST_PLAN = "network", TEST_CASE = "sidecar", TEST_RUN = run, TEST_INSTANCE_COUNT = "1",
      TEST_SIDECAR = "true", TEST_SUBNET = "16.0.0.0/16", TEST_OUTPUTS_PATH = out,
      REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port) })
    local P = ("run:%s:plan:network:case:sidecar"):format(run)
    cli(("INCR %s:states:network-initialized"):format(P))
    local topic = ("%s:topics:network:%s"):format(P, host)

    local function config(n)
      local got = h.wait_until(function()
        local lines = {}
        for line in cli(("XRANGE %s - +"):format(topic)):gmatch("[^\n]+") do
          if line:sub(1, 1) == "{" then lines[#lines + 1] = line end
        end
        return #lines >= n and lines[n]
      end, 20)
      assert.truthy(got, "no config number " .. n .. " on " .. topic .. ": " .. tostring(h.read(p.dir .. "/err")))
      return json.decode(got)
    end
    local function waits_then_release(state)
      tg.sleep(0.3)
      assert.is_nil(h.read(p.dir .. "/rc"), "the instance did not wait at the callback state " .. state)
      cli(("INCR %s"):format(h.shq(P .. ":states:" .. state)))
    end

    local c1 = config(1)
    assert.equal("default", c1.Network)
    assert.is_true(c1.Enable)
    assert.equal(json.null, c1.IPv4)
    assert.equal(json.null, c1.Rules)
    assert.same({ Latency = 50000000, Jitter = 10000000, Bandwidth = 10000000, Filter = 0, Loss = 1.5,
      Corrupt = 0, CorruptCorr = 0, Reorder = 0, ReorderCorr = 0, Duplicate = 0, DuplicateCorr = 0 }, c1.Default)
    assert.equal(("tg-network:%s:1"):format(host), c1.State)
    waits_then_release(c1.State)

    local c2 = config(2)
    assert.same(c1.Default, c2.Default)           -- the shaping in force travels with every config
    assert.equal(2, #c2.Rules)
    assert.same({ IP = "10.9.0.7", Mask = "/////w==" }, c2.Rules[1].Subnet)
    assert.same({ IP = "10.9.1.0", Mask = "////AA==" }, c2.Rules[2].Subnet)
    assert.equal(1, c2.Rules[1].Filter)           -- Reject
    assert.equal(("tg-network:%s:2"):format(host), c2.State)
    waits_then_release(c2.State)

    local c3 = config(3)
    assert.equal("all-reset", c3.State)
    assert.equal(0, c3.Default.Bandwidth)
    assert.equal(0, c3.Default.Latency)
    waits_then_release("all-reset")

    local r = p:wait(30)
    assert.truthy(r, "the instance did not finish")
    local runout = h.read(out .. "/run.out") or ""
    assert.equal(0, r.code, r.stderr .. runout)
    local m = table.concat(messages(runout), "\n")
    assert.truthy(m:find("shape confirmed\npartition confirmed\nreset confirmed", 1, true), m)
  end)
end)
