-- tg.network -- the network as a test variable: this instance's data-network
-- address, link shaping, partitions.
--
--   local network = require "tg.network"
--   local me = network.address()                  -- "10.213.0.3"
--   network.shape({ rate = "10mbit" })            -- egress at 10 Mbit/s
--   network.shape({ rate = 2e6, latency = 0.05, jitter = 0.01, loss = 1 })
--   network.reset()                               -- no shaping
--   network.partition({ groups = { "right" } })   -- drop traffic to/from them
--   network.partition({ "10.213.0.7", "10.213.1.0/24" }, { action = "reject" })
--   network.heal()                                -- every partition of ours gone
--
-- Where it acts.  Every change is made in this instance's own network
-- namespace, on its data interface: the interface holding the first IPv4
-- address inside env.subnet (TEST_SUBNET).  In a plain local run every
-- instance shares the host's loopback (env.ip 127.0.0.1); shaping or
-- partitioning that would hit everyone, so shape/reset/partition/heal raise
-- "unsupported" there: run the instances in containers or network
-- namespaces.  A change is applied with `tc` / `iptables` and read back
-- (`tc -j qdisc show`, `iptables -S`) before the call returns, so a barrier
-- after it means "everybody's network is now in this state".
--
-- Under Testground (env.sidecar, TEST_SIDECAR=true) the sidecar owns the
-- network: the calls publish the wanted configuration on the topic
-- "network:<hostname>" in the JSON shape of sdk-go's network.Config and wait
-- at its callback state, as sdk-go's ConfigureNetwork does (see below).
--
-- network.address() -> "a.b.c.d".  Does not yield.
--   This instance's data-network address; "127.0.0.1" when env.subnet is a
--   loopback subnet (a local run).  Raises "not_found" when no interface has
--   an address inside a non-loopback env.subnet.
--
-- network.interface([opts]) -> name, address.  Yields (runs `ip`).
--   The data interface ("eth0") and its address; raises "unsupported" in a
--   local run (loopback).
--
-- network.shape(opts) -> nil.  Yields.  Replaces the shaping of the data
--   interface's egress (what this instance sends) with exactly what opts say:
--     rate       bits per second: a number, or a string "800kbit", "10mbit",
--                "1.5gbit", "64000bit" (units bit, kbit, mbit, gbit; 1000-based,
--                as tc counts).  1000 bit/s .. 100 gbit/s.  Token bucket (tbf).
--     burst      bytes the bucket holds: a number, or "32kb", "1mb" (1024-based,
--                as tc counts); 1600 .. 1 GiB; only with rate.  Default: 20 ms
--                worth of rate, at least 8 KiB.
--     latency    seconds of added delay (0 .. 3600)        netem
--     jitter     seconds, +/- around latency (needs latency) netem
--     loss       percent of packets dropped (0 .. 100)      netem
--     duplicate  percent of packets sent twice (0 .. 100)   netem
--     corrupt    percent of packets with a flipped bit      netem
--     timeout    seconds for the whole call (optional)
--   Values out of range, unknown options and jitter without latency raise
--   "invalid" at once, before anything changes.  latency, jitter, loss,
--   duplicate and corrupt need the kernel's netem qdisc (sch_netem); a kernel
--   without it gives "unsupported" naming sch_netem, and the shaping in force
--   before the call is left as it was.  No option is ever ignored.
--
-- network.reset([opts]) -> nil.  Yields.  Removes the shaping (the
--   interface's default qdisc again).
--
-- network.peers([opts]) -> {{seq =, group =, address =}, ...}.  Yields.
--   Every instance's data-network address, by global_seq.  The first call
--   publishes this instance's entry on the topic "tg.network.peers" and waits
--   (opts.timeout, else the run's deadline) until every instance of the run
--   has published: it is an all-to-all exchange, so every instance must
--   reach it (partition/heal with groups call it).
--
-- network.partition(spec [, opts]) -> nil.  Yields.
--   Drops (opts.action "drop", the default) or rejects ("reject": a TCP
--   connect fails at once with "refused") every packet to and from the peers
--   that spec names, in both directions, until heal.  spec is one address or
--   CIDR string, or a table whose list part holds addresses / CIDRs and whose
--   optional fields are
--     groups     list of group ids: every instance of those groups but this one
--     instances  list of global_seq numbers (1 .. instance_count)
--   A group that is not in the run, a seq out of range, a string that is not
--   an IPv4 address or CIDR raise "invalid".  Loopback traffic and the run's
--   Redis (REDIS_HOST/REDIS_PORT) are never cut.  The rules live in two
--   iptables chains of ours, TGRUN-IN (jumped to from INPUT) and TGRUN-OUT
--   (from OUTPUT), so heal removes exactly ours.
--
-- network.heal([spec [, opts]]) -> nil.  Yields.  Without spec removes every
--   partition rule of ours; with one, the rules for those peers only.
--
-- Errors: "invalid" (bad arguments, at once), "unsupported" (a loopback-only
-- instance; no CAP_NET_ADMIN -- a container needs `--cap-add NET_ADMIN`; no
-- sch_netem in the kernel; tc/iptables/ip not installed; something the
-- sidecar cannot do), "network" (a command failed or its change did not read
-- back: the message names the command and the first line of its stderr),
-- "timeout", "cancelled".
--
-- The sidecar protocol (TEST_SIDECAR=true).  sdk-go's
-- network.Client.ConfigureNetwork publishes a network.Config on the topic
-- "network:" .. os.Hostname() and then waits until CallbackTarget entries of
-- the state CallbackState (default target: the instance count); the sidecar
-- applies the config and enters that state.  We publish the same JSON, as Go's
-- encoding/json writes the struct (no tags but `json:"State"`):
--   {"Network":"default","IPv4":null,"IPv6":null,"Enable":true,
--    "Default":{"Latency":<ns>,"Jitter":<ns>,"Bandwidth":<bit/s>,"Filter":0,
--               "Loss":<%>,"Corrupt":<%>,"CorruptCorr":0,"Reorder":0,
--               "ReorderCorr":0,"Duplicate":<%>,"DuplicateCorr":0},
--    "Rules":null | [{<LinkShape fields>,"Filter":1|2,"Subnet":{"IP":"a.b.c.d","Mask":"<base64>"}}],
--    "State":"<callback state>"}
-- Bandwidth is in bits/s: sdk-go's comment says bytes, but the sidecar hands
-- it to netlink's HTB rate, which divides by 8.  Filter: 1 Reject, 2 Drop.
-- Every publish carries the current shaping (the sidecar re-applies Default
-- each time) and only the rules this call adds (the sidecar adds a route per
-- rule).  The callback state is opts.callback_state (then the target is
-- opts.callback_target, default the instance count, as in Go) or, without it,
-- a state of this instance's own ("tg-network:<hostname>:<n>") with target 1,
-- so the call returns when this instance's sidecar has applied it, as it
-- does without a sidecar.  Not expressible there, so "unsupported": burst (a
-- LinkShape has none) and heal (the sidecar removes no rule).
local tg = require "tg"
local core = require "tg.core"
local check = require "tg.check"
local json = require "tg.json"

local network = {}
-- (every instance of a process shares this module: its configuration and
-- what it applied -- shaping, sidecar calls, partitions in force -- are
-- looked up per call: config() and state())
local config = core.config
local function state()
  local st = core.state("network")
  if not st.rules then
    st.applied = {}          -- the shaping in force (as applied by us), to restore after a failure
    st.sidecar_shape = {}    -- what the sidecar was last asked to apply
    st.sidecar_calls = 0
    st.rules = {}            -- text of a net -> action, for the partitions in force
    st.chains_ready = false
  end
  return st
end

local CHAIN_IN, CHAIN_OUT = "TGRUN-IN", "TGRUN-OUT"
local PEERS_TOPIC = "tg.network.peers"

local function raise(code, fmt, ...)
  error(core.error(code, fmt:format(...)), 0)
end

---------------------------------------------------------------- addresses

-- "a.b.c.d" -> 32-bit integer, or nil.
local function ip4(s)
  if type(s) ~= "string" then return nil end
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  local n = 0
  for _, p in ipairs({ a, b, c, d }) do
    p = tonumber(p)
    if p > 255 then return nil end
    n = n * 256 + p
  end
  return n
end

local function ip4_string(n)
  return ("%d.%d.%d.%d"):format(n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)
end

-- "a.b.c.d/n" or "a.b.c.d" -> {base =, bits =, text =} (base masked), or nil.
local function cidr(s)
  if type(s) ~= "string" then return nil end
  local addr, bits = s:match("^([%d%.]+)/(%d+)$")
  if not addr then addr, bits = s, "32" end
  local n = ip4(addr)
  bits = tonumber(bits)
  if not n or bits > 32 then return nil end
  local mask = bits == 0 and 0 or (0xffffffff << (32 - bits)) & 0xffffffff
  local base = n & mask
  return { base = base, bits = bits, mask = mask, text = ip4_string(base) .. "/" .. bits }
end

local function contains(net, n)
  return (n & net.mask) == net.base
end

-- The IPv4 addresses of this network namespace, in the kernel's order:
-- /proc/net/fib_trie lists each local address as "|-- a.b.c.d" followed by
-- "/32 host LOCAL".  No subprocess, so it also works before any task runs.
local function local_addresses()
  local f = io.open("/proc/net/fib_trie", "r")
  if not f then return {} end
  local out, seen, last = {}, {}, nil
  for line in f:lines() do
    local a = line:match("|%-%- (%d+%.%d+%.%d+%.%d+)")
    if a then last = a
    elseif last and line:match("/32 host LOCAL") then
      if not seen[last] then seen[last] = true; out[#out + 1] = last end
      last = nil
    end
  end
  f:close()
  return out
end

local LOOPBACK = cidr("127.0.0.0/8")

local function subnet_of()
  local s = config().subnet
  local net = cidr(s or "")
  if not net then return nil end
  return net
end

-- network.data_address() -> address | nil, message.  Never raises.
-- (tg.instance uses it at start-up to give env.ip its real value.)
function network.data_address()
  local net = subnet_of()
  if not net or contains(LOOPBACK, net.base) then return "127.0.0.1" end
  local have = local_addresses()
  for _, a in ipairs(have) do
    if contains(net, ip4(a)) then return a end
  end
  return nil, ("no interface has an IPv4 address inside TEST_SUBNET %s (addresses here: %s)"):format(
    config().subnet, #have > 0 and table.concat(have, ", ") or "none")
end

function network.address()
  local a, err = network.data_address()
  if not a then raise("not_found", "network.address: %s", err) end
  return a
end

---------------------------------------------------------------- commands

-- Run argv; returns the result table.  A missing program or no permission to
-- start it is "unsupported"; opts.timeout bounds it.
local function run(call, argv, timeout)
  local ok, r = pcall(tg.exec, argv, { timeout = timeout })
  if not ok then
    if core.is_error(r) and r.code == "not_found" then
      raise("unsupported", "%s: %s is not installed (Debian: apt-get install %s)", call, argv[1],
        argv[1] == "iptables" and "iptables" or "iproute2")
    elseif core.is_error(r) and tostring(r.message):find("not permitted", 1, true) then
      raise("unsupported", "%s: cannot run %s without CAP_NET_ADMIN: a container needs --cap-add NET_ADMIN", call, argv[1])
    end
    error(r, 0)
  end
  return r
end

local function first_line(s)
  s = (s or ""):match("^%s*(.-)%s*$")
  return s:match("^[^\n]*")
end

local function denied(stderr)
  return stderr:find("Operation not permitted", 1, true) or stderr:find("Permission denied", 1, true)
    or stderr:find("you must be root", 1, true)
end

-- Run argv and raise unless it exits 0; returns stdout.
local function must(call, argv, timeout)
  local r = run(call, argv, timeout)
  if r.code ~= 0 then
    if denied(r.stderr) then
      raise("unsupported", "%s: `%s` was refused (%s): this instance lacks CAP_NET_ADMIN; "
        .. "a container needs --cap-add NET_ADMIN", call, table.concat(argv, " "), first_line(r.stderr))
    end
    raise("network", "%s: `%s` failed (exit %d): %s", call, table.concat(argv, " "), r.code,
      first_line(r.stderr ~= "" and r.stderr or r.stdout))
  end
  return r.stdout
end

-- CAP_NET_ADMIN (12) in the bounding set: without it neither root nor a
-- program with file capabilities can change the network.
local function check_capability(call)
  local f = io.open("/proc/self/status", "r")
  if not f then return end
  local s = f:read("a")
  f:close()
  local hex = s:match("CapBnd:%s*(%x+)")
  if hex and (tonumber(hex, 16) or 0) & (1 << 12) == 0 then
    raise("unsupported", "%s: this instance may not change its network (no CAP_NET_ADMIN): "
      .. "a container needs --cap-add NET_ADMIN", call)
  end
end

-- The data interface: its name and address.  Loopback -> unsupported.
local iface_cache
local function data_interface(call, timeout)
  local addr, err = network.data_address()
  if not addr then raise("not_found", "%s: %s", call, err) end
  if contains(LOOPBACK, ip4(addr)) then
    raise("unsupported", "%s: this instance has no network of its own (its address is %s, the loopback "
      .. "it shares with every local instance); run it in a container (Testground, docker) or a network "
      .. "namespace", call, addr)
  end
  if iface_cache and iface_cache.address == addr then return iface_cache.name, addr end
  local out = must(call, { "ip", "-o", "-4", "addr", "show" }, timeout)
  for line in out:gmatch("[^\n]+") do
    local name, a = line:match("^%d+:%s+(%S+)%s+inet%s+([%d%.]+)/")
    if name and a == addr then
      name = name:gsub("@.*$", "")
      iface_cache = { name = name, address = addr }
      return name, addr
    end
  end
  raise("network", "%s: `ip -o -4 addr show` lists no interface with %s", call, addr)
end

function network.interface(opts)
  local timeout = check.timeout("network.interface", opts)
  return data_interface("network.interface", timeout >= 0 and timeout or nil)
end

---------------------------------------------------------------- shaping

local RATE_UNITS = { bit = 1, kbit = 1e3, mbit = 1e6, gbit = 1e9 }
local SIZE_UNITS = { b = 1, k = 1024, kb = 1024, m = 1024 ^ 2, mb = 1024 ^ 2, g = 1024 ^ 3, gb = 1024 ^ 3 }

local function describe(v) return check.describe(v) end

local function parse_rate(v)
  local n
  if type(v) == "number" then n = v
  elseif type(v) == "string" then
    local num, unit = v:lower():match("^%s*([%d%.]+)%s*(%a+)%s*$")
    n = num and RATE_UNITS[unit] and tonumber(num) and tonumber(num) * RATE_UNITS[unit]
    if not n then
      check.fail("network.shape: rate must be bits per second, a number or a string like \"10mbit\" "
        .. "(units bit, kbit, mbit, gbit), got %s", describe(v))
    end
  else
    check.fail("network.shape: rate must be bits per second, got %s", describe(v))
  end
  if n ~= n or n < 1000 or n > 100e9 then
    check.fail("network.shape: rate must be between 1000 bit/s and 100 gbit/s, got %s", describe(v))
  end
  return math.floor(n + 0.5)
end

local function parse_size(v)
  local n
  if type(v) == "number" then n = v
  elseif type(v) == "string" then
    local num, unit = v:lower():match("^%s*([%d%.]+)%s*(%a*)%s*$")
    if unit == "" then unit = "b" end
    n = num and SIZE_UNITS[unit] and tonumber(num) and tonumber(num) * SIZE_UNITS[unit]
    if not n then
      check.fail("network.shape: burst must be bytes, a number or a string like \"32kb\", got %s", describe(v))
    end
  else
    check.fail("network.shape: burst must be bytes, got %s", describe(v))
  end
  if n ~= n or n < 1600 or n > 1024 ^ 3 then
    check.fail("network.shape: burst must be between 1600 bytes and 1 GiB, got %s", describe(v))
  end
  return math.floor(n)
end

local function number_in(name, v, lo, hi, unit)
  if type(v) ~= "number" or v ~= v or v < lo or v > hi then
    check.fail("network.shape: %s must be a number of %s from %s to %s, got %s", name, unit, lo, hi, describe(v))
  end
  return v
end

local SHAPE_OPTIONS = { rate = true, burst = true, latency = true, jitter = true, loss = true,
  duplicate = true, corrupt = true, timeout = true, callback_state = true, callback_target = true }
local NETEM = { "latency", "jitter", "loss", "duplicate", "corrupt" }

-- Validate shape options: a plain table of numbers; nothing changes yet.
local function shape_spec(opts)
  if type(opts) ~= "table" then
    check.fail("network.shape: options must be a table such as {rate = \"10mbit\"}, got %s", describe(opts))
  end
  for k in pairs(opts) do
    if not SHAPE_OPTIONS[k] then check.fail("network.shape: unknown option %s", describe(k)) end
  end
  local s = {}
  if opts.rate ~= nil then s.rate = parse_rate(opts.rate) end
  if opts.burst ~= nil then
    if not s.rate then check.fail("network.shape: burst needs rate") end
    s.burst = parse_size(opts.burst)
  end
  if opts.latency ~= nil then s.latency = number_in("latency", opts.latency, 0, 3600, "seconds") end
  if opts.jitter ~= nil then
    if not s.latency then check.fail("network.shape: jitter needs latency") end
    s.jitter = number_in("jitter", opts.jitter, 0, 3600, "seconds")
  end
  for _, k in ipairs({ "loss", "duplicate", "corrupt" }) do
    if opts[k] ~= nil then s[k] = number_in(k, opts[k], 0, 100, "percent") end
  end
  return s
end

local function needs_netem(s)
  for _, k in ipairs(NETEM) do if s[k] and s[k] > 0 then return true end end
  return false
end

-- Whether the kernel lacks netem: unknown (nil) until a tc call told us.
-- tc is the authority (a kernel config file may be missing or stale).
local netem_missing

local function unsupported_netem(call, s)
  local used = {}
  for _, k in ipairs(NETEM) do if s[k] then used[#used + 1] = k end end
  raise("unsupported", "%s: %s needs the kernel's netem qdisc (sch_netem, CONFIG_NET_SCH_NETEM), "
    .. "which this kernel lacks; rate and burst work without it", call, table.concat(used, ", "))
end

local function us(seconds) return ("%dus"):format(math.floor(seconds * 1e6 + 0.5)) end
local function pct(p) return ("%g%%"):format(p) end

local function tbf_args(s)
  local bytes_per_s = s.rate / 8
  local burst = s.burst or math.max(math.floor(bytes_per_s / 50), 8192)
  -- a queue of 100 ms at the rate on top of the bucket: deep enough for TCP to
  -- fill the link, shallow enough not to add seconds of delay
  local limit = burst + math.max(math.floor(bytes_per_s / 10), 3 * 1514)
  return { "tbf", "rate", s.rate .. "bit", "burst", tostring(burst), "limit", tostring(limit) }, burst
end

local function append(t, more) for _, v in ipairs(more) do t[#t + 1] = v end return t end

local function root_qdiscs(call, ifname, timeout)
  local out = must(call, { "tc", "-j", "qdisc", "show", "dev", ifname }, timeout)
  local ok, list = pcall(json.decode, out)
  if not ok or type(list) ~= "table" then
    raise("network", "%s: cannot read `tc -j qdisc show dev %s`: %s", call, ifname, first_line(out))
  end
  return list
end

local function delete_root(call, ifname, timeout)
  local r = run(call, { "tc", "qdisc", "del", "dev", ifname, "root" }, timeout)
  if r.code ~= 0 then
    if denied(r.stderr) then must(call, { "tc", "qdisc", "del", "dev", ifname, "root" }, timeout) end
    -- nothing to delete is fine: "handle of zero" / "No such file"
    if not (r.stderr:find("handle of zero", 1, true) or r.stderr:find("No such file", 1, true)
        or r.stderr:find("Invalid handle", 1, true)) then
      raise("network", "%s: `tc qdisc del dev %s root` failed: %s", call, ifname, first_line(r.stderr))
    end
  end
end

local function near(a, b) return math.abs(a - b) <= math.max(1, b * 0.01) end

-- Read back what the kernel holds and compare it with s.
local function confirm_shape(call, ifname, s, timeout)
  local list = root_qdiscs(call, ifname, timeout)
  local root, tbf, netem
  for _, q in ipairs(list) do
    if q.root then root = q end
    if q.kind == "tbf" then tbf = q end
    if q.kind == "netem" then netem = q end
  end
  local function bad(what)
    raise("network", "%s: the kernel does not hold the shaping just applied on %s (%s): `tc qdisc show` says %s",
      call, ifname, what, json.encode(list))
  end
  if not s.rate and not needs_netem(s) then
    if root and (root.kind == "tbf" or root.kind == "netem") then bad("expected no shaping") end
    return
  end
  if s.rate then
    local rate = tbf and tbf.options and tonumber(tbf.options.rate)
    if not rate or not near(rate * 8, s.rate) then bad("rate " .. s.rate .. " bit/s") end
  end
  if needs_netem(s) then
    if not netem then bad("netem") end
    local o = netem.options or {}
    if s.loss and s.loss > 0 and not (o.loss_random or o.loss) then bad("loss") end
    if s.latency and s.latency > 0 and not (o.delay or o.latency) then bad("latency") end
  end
end

local function apply_shape(call, s, timeout)
  local ifname = data_interface(call, timeout)
  check_capability(call)
  if needs_netem(s) and netem_missing then unsupported_netem(call, s) end
  delete_root(call, ifname, timeout)
  if needs_netem(s) then
    local argv = { "tc", "qdisc", "add", "dev", ifname, "root", "handle", "1:", "netem" }
    if s.latency then
      append(argv, { "delay", us(s.latency) })
      if s.jitter and s.jitter > 0 then argv[#argv + 1] = us(s.jitter) end
    end
    if s.loss then append(argv, { "loss", pct(s.loss) }) end
    if s.duplicate then append(argv, { "duplicate", pct(s.duplicate) }) end
    if s.corrupt then append(argv, { "corrupt", pct(s.corrupt) }) end
    local r = run(call, argv, timeout)
    if r.code ~= 0 then
      if r.stderr:find("qdisc kind is unknown", 1, true) or r.stderr:find("Unknown qdisc", 1, true) then
        netem_missing = true
        local applied = state().applied
        if next(applied) then apply_shape(call, applied, timeout) end    -- as it was
        unsupported_netem(call, s)
      end
      must(call, argv, timeout)          -- raises with the command and its stderr
    end
    if s.rate then
      must(call, append({ "tc", "qdisc", "add", "dev", ifname, "parent", "1:1", "handle", "10:" }, tbf_args(s)), timeout)
    end
  elseif s.rate then
    must(call, append({ "tc", "qdisc", "add", "dev", ifname, "root", "handle", "1:" }, tbf_args(s)), timeout)
  end
  confirm_shape(call, ifname, s, timeout)
  state().applied = s
end

---------------------------------------------------------------- the sidecar

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname", "r")
  local h = f and f:read("l")
  if f then f:close() end
  return h or os.getenv("HOSTNAME") or "localhost"
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function mask_base64(mask)       -- 4 bytes -> 8 characters, as Go encodes a []byte
  local b = { mask >> 24 & 255, mask >> 16 & 255, mask >> 8 & 255, mask & 255 }
  local out = {}
  local n = b[1] << 16 | b[2] << 8 | b[3]
  for i = 3, 0, -1 do local c = (n >> (6 * i)) & 63; out[#out + 1] = B64:sub(c + 1, c + 1) end
  n = b[4] << 16
  out[#out + 1] = B64:sub((n >> 18 & 63) + 1, (n >> 18 & 63) + 1)
  out[#out + 1] = B64:sub((n >> 12 & 63) + 1, (n >> 12 & 63) + 1)
  out[#out + 1] = "=="
  return table.concat(out)
end

local function link_shape(s)
  s = s or {}
  return {
    Latency = math.floor((s.latency or 0) * 1e9 + 0.5), Jitter = math.floor((s.jitter or 0) * 1e9 + 0.5),
    Bandwidth = s.rate or 0, Filter = 0, Loss = s.loss or 0, Corrupt = s.corrupt or 0, CorruptCorr = 0,
    Reorder = 0, ReorderCorr = 0, Duplicate = s.duplicate or 0, DuplicateCorr = 0,
  }
end

local function sidecar_configure(call, shape, rules, opts, timeout)
  local sync = require "tg.sync"
  local host = hostname()
  local st = state()
  st.sidecar_calls = st.sidecar_calls + 1
  local state = opts and opts.callback_state
  local target
  if state ~= nil then
    check.name(call, "callback_state", state)
    target = opts.callback_target ~= nil and check.count(call, "callback_target", opts.callback_target, 1)
      or config().instance_count
  else
    state = ("tg-network:%s:%d"):format(host, st.sidecar_calls)
    target = 1
  end
  local config = {
    Network = "default", IPv4 = json.null, IPv6 = json.null, Enable = true,
    Default = link_shape(shape), Rules = rules and json.array(rules) or json.null, State = state,
  }
  sync.publish_and_wait("network:" .. host, config, state, target,
    { timeout = timeout >= 0 and timeout or nil })
end

---------------------------------------------------------------- shape / reset

function network.shape(opts)
  local s = shape_spec(opts)
  local timeout = check.timeout("network.shape", opts)
  if config().sidecar then
    if s.burst then
      raise("unsupported", "network.shape: burst cannot be passed to Testground's sidecar (its LinkShape has none)")
    end
    sidecar_configure("network.shape", s, nil, opts, timeout)
    state().sidecar_shape = s
    return
  end
  apply_shape("network.shape", s, timeout >= 0 and timeout or nil)
end

function network.reset(opts)
  if opts ~= nil and type(opts) ~= "table" then
    check.fail("network.reset: options must be a table, got %s", describe(opts))
  end
  local timeout = check.timeout("network.reset", opts)
  if config().sidecar then
    sidecar_configure("network.reset", {}, nil, opts, timeout)
    state().sidecar_shape = {}
    return
  end
  apply_shape("network.reset", {}, timeout >= 0 and timeout or nil)
end

---------------------------------------------------------------- peers

local peers_cache
function network.peers(opts)
  local timeout = check.timeout("network.peers", opts)
  if peers_cache then return peers_cache end
  local sync = require "tg.sync"
  local me = { seq = config().global_seq, group = config().group_id, address = network.address() }
  sync.publish(PEERS_TOPIC, me)
  local sub = sync.subscribe(PEERS_TOPIC)
  local ok, got = pcall(sub.take, sub, config().instance_count, { timeout = timeout >= 0 and timeout or nil })
  sub:close()
  if not ok then
    if core.is_error(got) and got.code == "timeout" then
      raise("timeout", "network.peers: waited for every instance's address on topic '%s': %s "
        .. "(every instance must call network.peers, or partition/heal with groups)", PEERS_TOPIC, got.message)
    end
    error(got, 0)
  end
  local list = {}
  for _, p in ipairs(got) do list[#list + 1] = p end
  table.sort(list, function(a, b) return (a.seq or 0) < (b.seq or 0) end)
  peers_cache = list
  return list
end

---------------------------------------------------------------- partitions

local PART_OPTIONS = { action = true, timeout = true, callback_state = true, callback_target = true }

-- Validate a spec: {nets = {cidr...}, groups = {...}, instances = {...}}.
local function part_spec(call, spec)
  local out = { nets = {}, groups = {}, instances = {} }
  local function net_of(v, where)
    local n = cidr(v)
    if not n then
      check.fail("%s: %s must be an IPv4 address or CIDR such as \"10.1.0.7\" or \"10.1.0.0/24\", got %s",
        call, where, describe(v))
    end
    return n
  end
  if type(spec) == "string" then
    out.nets[1] = net_of(spec, "the peer")
    return out
  end
  if type(spec) ~= "table" then
    check.fail("%s: spec must be an address, a CIDR, or a table {addresses..., groups = {...}, instances = {...}}, got %s",
      call, describe(spec))
  end
  for k, v in pairs(spec) do
    if math.type(k) == "integer" then
      if k < 1 or k > #spec then check.fail("%s: spec has a hole at [%d]", call, k) end
    elseif k == "groups" or k == "instances" then
      if type(v) ~= "table" then check.fail("%s: spec.%s must be a list, got %s", call, k, describe(v)) end
    else
      check.fail("%s: unknown field %s in spec (addresses in the list part; groups, instances)", call, describe(k))
    end
  end
  for i, v in ipairs(spec) do out.nets[#out.nets + 1] = net_of(v, ("spec[%d]"):format(i)) end
  for i, g in ipairs(spec.groups or {}) do
    if type(g) ~= "string" or g == "" then check.fail("%s: spec.groups[%d] must be a group id, got %s", call, i, describe(g)) end
    out.groups[#out.groups + 1] = g
  end
  for i, n in ipairs(spec.instances or {}) do
    local seq = math.type(n) == "integer" and n or (type(n) == "number" and math.tointeger(n))
    if not seq or seq < 1 or seq > (config().instance_count or 0) then
      check.fail("%s: spec.instances[%d] must be a global_seq from 1 to %d, got %s", call, i,
        config().instance_count or 0, describe(n))
    end
    out.instances[#out.instances + 1] = seq
  end
  if #out.nets + #out.groups + #out.instances == 0 then check.fail("%s: spec names no peer", call) end
  return out
end

-- Turn groups and instances into /32 nets (this instance left out).
local function resolve(call, sp, timeout)
  local nets = {}
  for _, n in ipairs(sp.nets) do nets[#nets + 1] = n end
  if #sp.groups + #sp.instances == 0 then return nets end
  local peers = network.peers({ timeout = timeout })
  local by_group, by_seq, names = {}, {}, {}
  for _, p in ipairs(peers) do
    if not by_group[p.group] then by_group[p.group] = {}; names[#names + 1] = p.group end
    table.insert(by_group[p.group], p)
    by_seq[p.seq] = p
  end
  table.sort(names)
  local me = config().global_seq
  local function add(p)
    if p.seq ~= me then nets[#nets + 1] = cidr(p.address) end
  end
  for _, g in ipairs(sp.groups) do
    if not by_group[g] then
      raise("invalid", "%s: no group '%s' in this run (groups: %s)", call, g, table.concat(names, ", "))
    end
    for _, p in ipairs(by_group[g]) do add(p) end
  end
  for _, seq in ipairs(sp.instances) do
    if not by_seq[seq] then raise("invalid", "%s: no instance with global_seq %d in this run", call, seq) end
    add(by_seq[seq])
  end
  return nets
end

-- The run's Redis, never to be cut: its IPv4 addresses and port.
local function redis_exemptions(call, timeout)
  local host, port = os.getenv("REDIS_HOST"), tonumber(os.getenv("REDIS_PORT") or "") or 6379
  if not host or host == "" then return {} end
  local addrs = {}
  if ip4(host) then addrs[1] = host
  else
    local r = run(call, { "getent", "ahostsv4", host }, timeout)
    for a in r.stdout:gmatch("(%d+%.%d+%.%d+%.%d+)%s+STREAM") do
      if not addrs[a] then addrs[a] = true; addrs[#addrs + 1] = a end
    end
  end
  local out = {}
  for _, a in ipairs(addrs) do
    if not contains(LOOPBACK, ip4(a)) then out[#out + 1] = { address = a, port = port } end
  end
  return out
end

local function ipt(call, args, timeout)
  return must(call, append({ "iptables", "-w", "5" }, args), timeout)
end

local function ensure_chains(call, timeout)
  if state().chains_ready then return end
  for _, c in ipairs({ { CHAIN_IN, "INPUT", "-i" }, { CHAIN_OUT, "OUTPUT", "-o" } }) do
    local r = run(call, { "iptables", "-w", "5", "-N", c[1] }, timeout)
    if r.code ~= 0 and not r.stderr:find("already exists", 1, true) then
      ipt(call, { "-N", c[1] }, timeout)       -- raises with what failed
    end
    ipt(call, { "-F", c[1] }, timeout)
    local jump = { c[2], "!", c[3], "lo", "-j", c[1] }
    local present = run(call, append({ "iptables", "-w", "5", "-C" }, jump), timeout)
    if present.code ~= 0 then ipt(call, append({ "-I", c[2], "1" }, { table.unpack(jump, 2) }), timeout) end
  end
  for _, r in ipairs(redis_exemptions(call, timeout)) do
    ipt(call, { "-A", CHAIN_IN, "-s", r.address .. "/32", "-p", "tcp", "--sport", tostring(r.port), "-j", "RETURN" }, timeout)
    ipt(call, { "-A", CHAIN_OUT, "-d", r.address .. "/32", "-p", "tcp", "--dport", tostring(r.port), "-j", "RETURN" }, timeout)
  end
  state().chains_ready = true
end

local function rule_args(chain, net, action)
  local dir = chain == CHAIN_IN and "-s" or "-d"
  local t = { chain, dir, net.text, "-j", action == "reject" and "REJECT" or "DROP" }
  return t
end

-- Read back both chains and check that exactly the rules in `rules` are there.
local function confirm_rules(call, timeout)
  for _, chain in ipairs({ CHAIN_IN, CHAIN_OUT }) do
    local out = ipt(call, { "-S", chain }, timeout)
    local have = {}
    for line in out:gmatch("[^\n]+") do
      local dir, net, target = line:match("^%-A " .. chain:gsub("%-", "%%-") .. " %-([sd]) (%S+) %-j (%u+)")
      if dir and (target == "DROP" or target == "REJECT") then have[net] = target end
    end
    for text, action in pairs(state().rules) do
      local want = action == "reject" and "REJECT" or "DROP"
      if have[text] ~= want then
        raise("network", "%s: rule for %s (%s) missing from chain %s after iptables said it added it: %s",
          call, text, want, chain, first_line(out))
      end
      have[text] = nil
    end
    local left = next(have)
    if left then
      raise("network", "%s: chain %s still holds a rule for %s after it was removed", call, chain, left)
    end
  end
end

local function part_opts(call, opts)
  if opts == nil then return "drop", -1 end
  if type(opts) ~= "table" then check.fail("%s: options must be a table, got %s", call, describe(opts)) end
  for k in pairs(opts) do
    if not PART_OPTIONS[k] then check.fail("%s: unknown option %s", call, describe(k)) end
  end
  local action = opts.action or "drop"
  if action ~= "drop" and action ~= "reject" then
    check.fail("%s: action must be \"drop\" or \"reject\", got %s", call, describe(opts.action))
  end
  return action, check.timeout(call, opts)
end

local function sidecar_rules(nets, action)
  local out = {}
  for _, n in ipairs(nets) do
    local r = link_shape(nil)
    r.Filter = action == "reject" and 1 or 2
    r.Subnet = { IP = ip4_string(n.base), Mask = mask_base64(n.mask) }
    out[#out + 1] = r
  end
  return out
end

function network.partition(spec, opts)
  local call = "network.partition"
  local sp = part_spec(call, spec)
  local action, timeout = part_opts(call, opts)
  local t = timeout >= 0 and timeout or nil
  local nets = resolve(call, sp, t)
  if config().sidecar then
    if #nets == 0 then return end
    sidecar_configure(call, state().sidecar_shape, sidecar_rules(nets, action), opts, timeout)
    return
  end
  data_interface(call, t)
  check_capability(call)
  ensure_chains(call, t)
  local rules = state().rules
  for _, n in ipairs(nets) do
    local old = rules[n.text]
    if old ~= action then
      if old then
        ipt(call, append({ "-D" }, rule_args(CHAIN_IN, n, old)), t)
        ipt(call, append({ "-D" }, rule_args(CHAIN_OUT, n, old)), t)
      end
      ipt(call, append({ "-A" }, rule_args(CHAIN_IN, n, action)), t)
      ipt(call, append({ "-A" }, rule_args(CHAIN_OUT, n, action)), t)
      rules[n.text] = action
    end
  end
  confirm_rules(call, t)
end

function network.heal(spec, opts)
  local call = "network.heal"
  local sp = spec ~= nil and part_spec(call, spec) or nil
  local _, timeout = part_opts(call, opts)
  local t = timeout >= 0 and timeout or nil
  if config().sidecar then
    raise("unsupported", "%s: Testground's sidecar cannot remove a partition (it turns Reject/Drop rules "
      .. "into routes and has no way to take one back)", call)
  end
  data_interface(call, t)
  check_capability(call)
  if not state().chains_ready then
    ensure_chains(call, t)       -- also clears rules left by an earlier process
    state().rules = {}
    confirm_rules(call, t)
    return
  end
  local nets = sp and resolve(call, sp, t)
  local rules = state().rules
  for text, action in pairs(rules) do
    local drop = not nets
    if nets then
      for _, n in ipairs(nets) do if n.text == text then drop = true end end
    end
    if drop then
      local n = cidr(text)
      ipt(call, append({ "-D" }, rule_args(CHAIN_IN, n, action)), t)
      ipt(call, append({ "-D" }, rule_args(CHAIN_OUT, n, action)), t)
      rules[text] = nil
    end
  end
  confirm_rules(call, t)
end

return network
