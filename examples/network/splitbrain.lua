-- splitbrain.lua -- a split brain and its healing, with tg.network.
--
-- Needs a network of its own per instance and CAP_NET_ADMIN, so it is not
-- one of the examples that tests/examples.sh runs on loopback.  Run by
-- tests/lua/network_spec.lua (one network namespace per instance) and by
-- tests/docker.sh (one container per instance, --cap-add NET_ADMIN):
--
--   docker run --cap-add NET_ADMIN -e TEST_GROUP_ID=left ... tgrun /plan/network/splitbrain.lua
--
-- Every instance keeps a set of entries and serves it over TCP (tg.net) on
-- the data network; Redis only coordinates the steps.  Groups "left" and
-- "right" (or, without groups, the first and second half by global_seq):
--   1. everybody listens and learns everybody's address;
--   2. each half cuts the other off (network.partition of the other group);
--   3. each instance writes an entry and pushes it to every peer: the pushes
--      within its half arrive, the ones across the cut fail -- each half makes
--      progress on its own, and neither sees the other's entries;
--   4. heal; every instance pushes everything it has to every peer
--      (anti-entropy);
--   5. all instances hold the same set: every entry of both halves.
local tg = require "tg"
local sync = require "tg.sync"
local net = require "tg.net"
local log = require "tg.log"
local network = require "tg.network"

local T = { timeout = 30 }

return function(env)
  local n, me = env.instance_count, env.global_seq
  assert(n >= 2, "splitbrain needs at least 2 instances")
  local side = env.group_id
  if side ~= "left" and side ~= "right" then side = me <= n // 2 and "left" or "right" end
  local other = side == "left" and "right" or "left"

  -- 1. the store and its server: each line "put <entry>" adds an entry
  local store, count = {}, 0
  local function put(e)
    if not store[e] then store[e] = true; count = count + 1 end
  end
  local l = net.listen("0.0.0.0:0")
  local server = tg.spawn(function()
    while true do
      local ok, conn = pcall(l.accept, l, T)
      if not ok then return end
      tg.spawn(function()
        while true do
          local ok2, line = pcall(conn.read_line, conn, { timeout = 10 })
          if not ok2 or line == "end" then break end
          put(line:match("^put (.+)$") or error("bad line " .. line))
        end
        pcall(conn.write, conn, "done\n")
        conn:close()
      end)
    end
  end)
  sync.publish("splitbrain:peers", { seq = me, side = side, address = l.address })
  local peers = {}
  local sub = sync.subscribe("splitbrain:peers")
  for _, p in ipairs(sub:take(n, T)) do if p.seq ~= me then peers[#peers + 1] = p end end
  sub:close()
  log.info("%s instance %d at %s; %d peers", side, me, l.address, #peers)

  -- push every entry we hold to every peer, in parallel; "ok" or the error code per peer
  local function push_all(timeout)
    local entries = {}
    for e in pairs(store) do entries[#entries + 1] = e end
    local tasks = {}
    for i, p in ipairs(peers) do
      tasks[i] = tg.spawn(function()
        local ok, conn = pcall(net.connect, p.address, { timeout = timeout })
        if not ok then return conn.code end
        for _, e in ipairs(entries) do conn:write("put " .. e .. "\n", T) end
        conn:write("end\n", T)
        local ok2, reply = pcall(conn.read_line, conn, { timeout = timeout })
        conn:close()
        if not ok2 then return reply.code end
        return reply == "done" and "ok" or "bad reply"
      end)
    end
    local res = {}
    for i, t in ipairs(tasks) do res[i] = t:join(T) end
    return res
  end
  sync.signal_and_wait("splitbrain:ready", n, T)

  -- 2. the cut, made by both halves, confirmed before anyone goes on
  if env.group_id == side then
    network.partition({ groups = { other } })
  else                                   -- no left/right groups: the other half by global_seq
    local seqs = {}
    for _, p in ipairs(peers) do if p.side ~= side then seqs[#seqs + 1] = p.seq end end
    network.partition({ instances = seqs })
  end
  sync.signal_and_wait("splitbrain:partitioned", n, T)

  -- 3. progress on each side
  put(("%s-%d"):format(side, me))
  local res = push_all(1)
  for i, p in ipairs(peers) do
    local want = p.side == side and "ok" or "timeout"
    assert(res[i] == want, ("push to %s instance %d across %s: expected %s, got %s"):format(
      p.side, p.seq, p.side == side and "our half" or "the cut", want, res[i]))
  end
  sync.signal_and_wait("splitbrain:written", n, T)
  local mine, theirs = 0, 0
  for e in pairs(store) do
    if e:match("^" .. side .. "%-") then mine = mine + 1 else theirs = theirs + 1 end
  end
  local half = 1
  for _, p in ipairs(peers) do if p.side == side then half = half + 1 end end
  assert(mine == half and theirs == 0,
    ("during the split %s instance %d holds %d of its half's %d entries and %d of the other's"):format(
      side, me, mine, half, theirs))
  log.info("split: %s holds its half's %d entries and none of the other half's", side, mine)
  sync.signal_and_wait("splitbrain:checked", n, T)

  -- 4. heal and reconcile
  network.heal()
  sync.signal_and_wait("splitbrain:healed", n, T)
  for i, r in ipairs(push_all(5)) do
    assert(r == "ok", ("push to instance %d after heal: %s"):format(peers[i].seq, r))
  end
  sync.signal_and_wait("splitbrain:reconciled", n, T)

  -- 5. everybody holds the same n entries
  local all = {}
  for e in pairs(store) do all[#all + 1] = e end
  table.sort(all)
  local digest = table.concat(all, ",")
  sync.publish("splitbrain:digests", digest)
  local d = sync.subscribe("splitbrain:digests")
  for _, other_digest in ipairs(d:take(n, T)) do
    assert(other_digest == digest, ("instances disagree after heal: %s vs %s"):format(digest, other_digest))
  end
  d:close()
  assert(count == n, ("after heal %d entries, expected %d"):format(count, n))
  log.info("healed: all %d instances hold the same %d entries", n, count)
  sync.signal_and_wait("splitbrain:done", n, T)
  l:close()
  server:join(T)
end
