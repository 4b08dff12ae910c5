-- network.lua -- cases that network_spec.lua runs, one instance per network
-- namespace (or as the spec says), to measure and check tg.network.  Each
-- case asserts what it saw; the spec checks exit codes and the lines logged.
local tg = require "tg"
local sync = require "tg.sync"
local net = require "tg.net"
local log = require "tg.log"
local network = require "tg.network"

local T = { timeout = 30 }
local cases = {}

-- The error value of fn(...), which must fail.
local function fails(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

local function expect(code, pattern, fn, ...)
  local err = fails(fn, ...)
  assert(type(err) == "table" and err.code == code,
    ("expected code %s, got %s: %s"):format(code, tostring(err and err.code), tostring(err)))
  assert(tostring(err.message):find(pattern), ("message %q does not match %q"):format(err.message, pattern))
  return err
end

-- Receive everything one connection sends; bytes and seconds from the
-- first byte to the end.
local function drain(conn)
  local bytes, first, last = 0, nil, nil
  while true do
    local ok, data = pcall(conn.read, conn, nil, T)
    if not ok then break end
    if not first then first = tg.now() end
    bytes = bytes + #data
    last = tg.now()
  end
  return bytes, (last or 0) - (first or 0)
end

local function blast(address, secs)
  local conn = net.connect(address, T)
  local chunk = ("x"):rep(64 * 1024)
  local t0 = tg.now()
  while tg.now() - t0 < secs do conn:write(chunk, T) end
  conn:close()
end

-- Two instances: group "recv" measures, group "send" shapes its egress to
-- the rate parameter and sends for `secs` seconds; then resets and sends
-- for one more second, which must go much faster.
function cases.throughput(env)
  local rate, secs = env:number("rate"), env:number("secs", 3)
  if env.group_id == "recv" then
    local l = net.listen("0.0.0.0:0")
    sync.publish("receiver", l.address)
    for round = 1, 2 do
      local conn = l:accept(T)
      local bytes, took = drain(conn)
      local bps = bytes * 8 / took
      log.info("round %d: %d bytes in %.3f s = %.0f bit/s", round, bytes, took, bps)
      sync.publish("measured", { round = round, bps = bps })
    end
    l:close()
  else
    local sub = sync.subscribe("receiver")
    local addr = sub:next(T)
    sub:close()
    network.shape({ rate = rate })
    log.info("shaped to %.0f bit/s", rate)
    blast(addr, secs)
    local m = sync.subscribe("measured")
    local first = m:next(T)
    network.reset()
    blast(addr, 1)
    local second = m:next(T)
    m:close()
    log.info("result: shaped %.0f bit/s, after reset %.0f bit/s", first.bps, second.bps)
  end
  sync.signal_and_wait("done", env.instance_count, T)
end

-- Connect to addr: "ok", or the error code ("timeout", "refused", ...).
local function try_connect(addr, secs)
  local ok, conn = pcall(net.connect, addr, { timeout = secs })
  if ok then
    conn:write("ping\n")
    local ok2, line = pcall(conn.read_line, conn, { timeout = secs })
    conn:close()
    if not ok2 then return line.code end
    return line == "pong" and "ok" or ("bad reply " .. tostring(line))
  end
  return conn.code
end

-- Two instances, groups "left" and "right".  Both listen (answering
-- "pong"); the right one dials the left one.  A drop partition makes the
-- dial time out, a reject one makes it refused, heal makes it work again.
function cases.partition(env)
  local other = env.group_id == "left" and "right" or "left"
  local l = net.listen("0.0.0.0:0")
  local server = tg.spawn(function()
    while true do
      local ok, conn = pcall(l.accept, l, T)
      if not ok then return end
      local ok2, line = pcall(conn.read_line, conn, { timeout = 5 })
      if ok2 and line == "ping" then pcall(conn.write, conn, "pong\n") end
      conn:close()
    end
  end)
  sync.publish("listeners", { group = env.group_id, address = l.address })
  local peer
  local sub = sync.subscribe("listeners")
  for _, v in ipairs(sub:take(2, T)) do if v.group == other then peer = v.address end end
  sub:close()

  local peers = network.peers(T)
  assert(#peers == 2, "network.peers gave " .. #peers)
  expect("invalid", "no group 'purple' in this run %(groups: left, right%)",
    network.partition, { groups = { "purple" } })
  expect("invalid", "global_seq from 1 to 2", network.partition, { instances = { 3 } })

  local function step(name, want)
    sync.signal_and_wait(name .. "-set", 2, T)
    local got = try_connect(peer, 1)
    log.info("%s: dial %s -> %s", name, peer, got)
    assert(got == want, ("%s: expected %s, got %s"):format(name, want, got))
    sync.signal_and_wait(name .. "-checked", 2, T)
  end

  step("connected", "ok")
  network.partition({ groups = { other } })
  step("dropped", "timeout")
  network.partition({ groups = { other } }, { action = "reject" })
  step("rejected", "refused")
  network.heal()
  step("healed", "ok")
  network.partition({ instances = { env.global_seq == 1 and 2 or 1 } })
  step("dropped-by-seq", "timeout")
  network.heal({ groups = { other } })
  step("healed-by-group", "ok")
  l:close()
  server:join(T)
end

-- One instance: argument checks, the missing-netem case, and what stays in
-- force after a failed call.  Param netem: "missing" or "present" (the spec
-- probed the kernel itself).
function cases.limits(env)
  local netem = env:string("netem")
  expect("invalid", "rate must be between", network.shape, { rate = 10 })
  expect("invalid", "rate must be between", network.shape, { rate = "200gbit" })
  expect("invalid", "units bit, kbit, mbit, gbit", network.shape, { rate = "10mbps" })
  expect("invalid", "burst must be between", network.shape, { rate = "1mbit", burst = 10 })
  expect("invalid", "burst needs rate", network.shape, { burst = "32kb" })
  expect("invalid", "loss must be a number of percent from 0 to 100", network.shape, { loss = 101 })
  expect("invalid", "latency must be", network.shape, { latency = -1 })
  expect("invalid", "jitter needs latency", network.shape, { jitter = 0.01 })
  expect("invalid", "unknown option \"delay\"", network.shape, { delay = 0.01 })
  expect("invalid", "options must be a table", network.shape, "10mbit")
  expect("invalid", "must be an IPv4 address or CIDR", network.partition, "10.0.0.300")
  expect("invalid", "must be an IPv4 address or CIDR", network.partition, "peer-7")
  expect("invalid", "spec names no peer", network.partition, {})
  expect("invalid", "action must be", network.partition, "10.9.0.1", { action = "block" })

  network.shape({ rate = "5mbit" })
  local function root()
    return tg.exec({ "tc", "qdisc", "show", "dev", (network.interface()) }, T).stdout
  end
  assert(root():find("tbf 1: root .*rate 5Mbit"), root())
  if netem == "missing" then
    for _, o in ipairs({ { latency = 0.05 }, { loss = 1 }, { duplicate = 1 }, { corrupt = 1 },
        { rate = "1mbit", latency = 0.01, jitter = 0.005 } }) do
      expect("unsupported", "sch_netem", network.shape, o)
      -- the shaping in force before the call is still there
      assert(root():find("tbf 1: root .*rate 5Mbit"), "after a failed netem call: " .. root())
    end
    log.info("netem: unsupported as expected")
  else
    network.shape({ rate = "1mbit", latency = 0.01, jitter = 0.005, loss = 1 })
    assert(root():find("netem 1: root"), root())
    log.info("netem: applied")
  end
  network.reset()
  assert(not root():find("tbf") and not root():find("netem"), root())
end

-- env.ip, network.address() and network.interface() agree; a listener
-- advertises that address.
function cases.address(env)
  local a = network.address()
  local ifname, ifaddr = network.interface()
  assert(env.ip == a and ifaddr == a, ("env.ip %s, address() %s, interface() %s"):format(env.ip, a, ifaddr))
  local l = net.listen("0.0.0.0:0")
  assert(l.address:match("^(.*):%d+$") == a, l.address)
  l:close()
  log.info("address %s on %s", a, ifname)
end

-- A local run (loopback subnet): nothing to shape.
function cases.loopback(env)
  assert(network.address() == "127.0.0.1", network.address())
  assert(env.ip == "127.0.0.1")
  expect("unsupported", "no network of its own", network.shape, { rate = "1mbit" })
  expect("unsupported", "no network of its own", network.partition, "10.9.0.1")
end

-- Run without CAP_NET_ADMIN (the spec drops it): "unsupported", naming
-- --cap-add NET_ADMIN.
function cases.nocap()
  expect("unsupported", "%-%-cap%-add NET_ADMIN", network.shape, { rate = "1mbit" })
  expect("unsupported", "%-%-cap%-add NET_ADMIN", network.partition, "10.9.0.1")
  log.info("address without privileges: %s", network.address())
end

-- Under a sidecar (TEST_SIDECAR=true): the spec plays the sidecar.
function cases.sidecar(env)
  network.shape({ rate = "10mbit", latency = 0.05, jitter = 0.01, loss = 1.5 })
  log.info("shape confirmed")
  network.partition({ "10.9.0.7", "10.9.1.0/24" }, { action = "reject" })
  log.info("partition confirmed")
  network.reset({ callback_state = "all-reset", callback_target = 1 })
  log.info("reset confirmed")
  expect("unsupported", "sidecar cannot remove a partition", network.heal)
  expect("unsupported", "burst", network.shape, { rate = "1mbit", burst = "16kb" })
  assert(env.sidecar == true)
end

return cases
