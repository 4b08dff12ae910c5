-- netlab.lua -- "hosts" for the specs: network namespaces on a bridge that
-- the spec makes (and removes), each with its own address, one of them
-- running a redis-server on its address.  Traffic only ever goes between
-- these namespaces (and loopback).  Needs root (ip netns, a bridge, veth).
--
--   local lab = netlab.up({ "r", "a", "b" }, { redis = "r" })
--   lab.ns.a.name, lab.ns.a.addr, lab.subnet, lab.redis_url, lab.prefix
--   lab:exec("a")                   -- {"ip", "netns", "exec", <a's name>}
--   lab:down()                      -- removes it all, checks nothing is left
local tg = require "tg"
local h = require "helpers"

local M = {}

-- Run a shell command; returns code, output (stdout and stderr together).
function M.sh(cmd, timeout)
  local r = tg.exec({ "sh", "-c", cmd .. " 2>&1" }, { timeout = timeout or 30 })
  return r.code, r.stdout
end

-- Run a shell command that must succeed; raises with its output.
function M.must(cmd, timeout)
  local code, out = M.sh(cmd, timeout)
  assert(code == 0, ("`%s` failed (exit %d): %s"):format(cmd, code, out))
  return out
end
local sh, must = M.sh, M.must

local Lab = {}
Lab.__index = Lab

-- The words that run a command inside namespace x.
function Lab:exec(x)
  return { "ip", "netns", "exec", self.ns[x].name }
end

-- Remove everything the lab made; then check nothing of it is left.
function Lab:down()
  if self.redis_pid then sh("kill " .. self.redis_pid) end
  for _, x in ipairs(self.names) do
    sh(("ip link del tgv%s%s"):format(self.sfx, x))          -- both ends of the veth
    if self.ns[x] then sh("ip netns del " .. self.ns[x].name) end
  end
  sh("ip link del " .. self.bridge)
  -- the kernel frees a namespace's devices once its last process is gone:
  -- allow it a moment, bounded
  local netns, links
  local clean = h.wait_until(function()
    netns = select(2, sh("ip netns list"))
    links = select(2, sh("ip -o link show"))
    return not netns:find("tgn%-" .. self.sfx) and not links:find("tg[bv]" .. self.sfx)
  end, 10)
  assert(clean, "left behind after 10 s: " .. netns .. links)
end

-- names: one-letter-ish names of the namespaces; opts.redis: the one that
-- runs a redis-server (port 6379 on its address).
function M.up(names, opts)
  local ok, why = pcall(must, "command -v ip && command -v redis-server && command -v redis-cli")
  assert(ok, "netlab needs ip (iproute2) and redis-server/redis-cli, and root: " .. tostring(why))
  local sfx = ("%05x"):format(math.random(0, 0xfffff))
  local lab = setmetatable({ sfx = sfx, prefix = "10.250." .. math.random(0, 255) .. ".", ns = {},
    bridge = "tgb" .. sfx, dir = h.tmpdir(), names = names }, Lab)
  lab.subnet = lab.prefix .. "0/24"
  local made = pcall(function()
    must(("ip link add %s type bridge && ip link set %s up"):format(lab.bridge, lab.bridge))
    for i, x in ipairs(names) do
      local ns = ("tgn-%s-%s"):format(sfx, x)
      local host = ("tgv%s%s"):format(sfx, x)
      local addr = lab.prefix .. i
      lab.ns[x] = { name = ns, addr = addr }
      must(table.concat({
        ("ip netns add %s"):format(ns),
        ("ip link add %s type veth peer name %sp"):format(host, host),
        ("ip link set %s master %s"):format(host, lab.bridge),
        ("ip link set %s up"):format(host),
        ("ip link set %sp netns %s"):format(host, ns),
        ("ip -n %s link set lo up"):format(ns),
        ("ip -n %s link set %sp name eth0"):format(ns, host),
        ("ip -n %s addr add %s/24 dev eth0"):format(ns, addr),
        ("ip -n %s link set eth0 up"):format(ns),
      }, " && "))
    end
  end)
  if not made then
    lab:down()
    error("could not make the network namespaces (root? iproute2?)")
  end
  if opts and opts.redis then
    local r = lab.ns[opts.redis]
    lab.redis_port = 6379
    lab.redis_url = ("redis://%s:%d"):format(r.addr, lab.redis_port)
    must(("ip netns exec %s redis-server --port %d --bind %s --protected-mode no --save '' --appendonly no "
      .. "--daemonize yes --dir %s --pidfile %s/redis.pid --logfile %s/redis.log"):format(
        r.name, lab.redis_port, r.addr, lab.dir, lab.dir, lab.dir))
    local other = names[1] == opts.redis and names[2] or names[1]
    local up = h.wait_until(function()
      return (sh(("ip netns exec %s redis-cli -h %s -p %d ping"):format(lab.ns[other].name, r.addr, lab.redis_port), 5)) == 0
    end, 10)
    lab.redis_pid = h.wait_until(function() return tonumber(h.read(lab.dir .. "/redis.pid")) end, 5)
    if not up then
      local log = tostring(h.read(lab.dir .. "/redis.log"))
      lab:down()
      error("redis-server in namespace " .. r.name .. " did not answer from " .. lab.ns[other].name .. ": " .. log)
    end
  end
  return lab
end

return M
