-- plans for tests/docker/docker_spec.lua: tgrun -n --docker
local tg = require "tg"
local sync = require "tg.sync"
local log = require "tg.log"
local network = require "tg.network"
local cases = {}

-- enters, then waits for everybody; global_seq 1 never enters: hangs until stopped
function cases.hang(env)
  if env.global_seq ~= 1 then sync.signal_entry("done") end
  sync.barrier("done", env.instance_count, { timeout = 120 })
end

-- blocks the whole runtime, so SIGTERM cannot be answered: only removing
-- the container ends it
function cases.stuck(env)
  sync.signal_and_wait("started", env.instance_count)
  log.info("stuck now")
  os.execute("sleep 120")
end

-- the bad inputs of tg.network, each caught and reported with its code;
-- then the instance fails with one of them
function cases.bad_network(env)
  local function try(name, fn, ...)
    local ok, err = pcall(fn, ...)
    log.info("check %s: %s", name, ok and "ok" or ("code=%s: %s"):format(tostring(err.code), tostring(err.message)))
    return ok, err
  end
  local netem_ok, netem = try("netem", network.shape, { latency = 0.05 })
  local _, range = try("range", network.shape, { rate = "5tbit" })
  local _, peer = try("peer", network.partition, { groups = { "nosuch" } })
  sync.signal_and_wait("checked", env.instance_count)
  if env.global_seq == 1 then error(netem_ok and range or netem) end
  error(peer)
end

-- the address every instance advertises, and a TCP exchange over it
function cases.where(env)
  local net = require "tg.net"
  local l = net.listen("0.0.0.0:0")
  log.info("ip %s listens on %s", env.ip, l.address)
  local seq, sub = sync.publish_subscribe("where", l.address)
  local all = sub:take(env.instance_count, { timeout = 30 })
  sub:close()
  local peer = all[seq % env.instance_count + 1]
  local server = tg.spawn(function()
    local c = l:accept({ timeout = 30 })
    local line = c:read_line({ timeout = 30 })
    c:write("ok\n")
    c:close()
    return line
  end)
  local c = net.connect(peer, { timeout = 30 })
  c:write("from " .. l.address .. "\n")
  assert(c:read_line({ timeout = 30 }) == "ok")
  c:close()
  log.info("heard %s", server:join({ timeout = 30 }))
  sync.signal_and_wait("talked", env.instance_count)
end

return cases
