-- locks.lua -- a work queue consumed by all, a mutex around a critical
-- section, and an elected leader that sums up.
--
--   tgrun -n 5 examples/locks.lua
--
--   1. Everybody campaigns in the election "summarizer" (in a task of its
--      own: campaign waits until this instance leads) and pushes ITEMS
--      work items onto the queue "work".  After the barrier "pushed",
--      instance 1 pushes one "stop" marker per instance: the queue is
--      first-in first-out, so the markers come after all the work.
--   2. Everybody pops until it gets a marker.  Each item is popped by
--      exactly one instance.  Its result is recorded inside the mutex
--      "ledger": the critical section checks that nobody else is in it and
--      keeps the fencing tokens, which grow with every grant.
--   3. After the barrier "consumed", the elected leader reads all results,
--      checks that every item was done exactly once and publishes the
--      summary; the others cancel their campaigns and read the summary.
local tg = require "tg"
local sync = require "tg.sync"
local log = require "tg.log"
local metrics = require "tg.metrics"

local ITEMS = 6
local T = { timeout = 30 }

return function(env)
  local n, me = env.instance_count, env.global_seq
  local election = sync.election("summarizer")
  local campaign = tg.spawn(function() return election:campaign(T) end)

  local queue = sync.queue("work")
  for i = 1, ITEMS do queue:push({ item = (me - 1) * ITEMS + i }) end
  sync.signal_and_wait("pushed", n, T)
  if me == 1 then
    for _ = 1, n do queue:push({ stop = true }) end
  end

  local ledger = sync.mutex("ledger", { lease = 10 })
  local inside = sync.counter("ledger-inside")
  local done, tokens = 0, {}
  while true do
    local job = queue:pop(T)
    if job.stop then break end
    local result = job.item * job.item
    ledger:with(function(token)
      assert(inside:add(1) == 1, "two instances inside the mutex")
      tokens[#tokens + 1] = token
      sync.publish("results", { item = job.item, result = result, by = me, token = token })
      tg.sleep(0.005)                     -- hold it a moment: others queue up
      inside:add(-1)
    end)
    done = done + 1
  end
  log.info("instance %d did %d items (ledger tokens %s)", me, done, table.concat(tokens, ","))
  metrics.point("items_done", done)
  sync.signal_and_wait("consumed", n, T)

  -- exactly one campaign has won by now: its holder is the leader
  local leader = election:leader()
  local sub = sync.subscribe("summary")
  if leader == me then
    campaign:join(T)
    local results = sync.subscribe("results"):take(n * ITEMS, T)
    local seen, sum, token_seen = {}, 0, {}
    for _, r in ipairs(results) do
      assert(not seen[r.item], "item " .. r.item .. " was done twice")
      assert(not token_seen[r.token], "fencing token " .. r.token .. " was granted twice")
      seen[r.item], token_seen[r.token] = true, true
      sum = sum + r.result
    end
    for i = 1, n * ITEMS do assert(seen[i], "item " .. i .. " was never done") end
    sync.publish("summary", { leader = me, items = #results, sum = sum })
  else
    campaign:cancel()
    assert(not pcall(campaign.join, campaign), "a second instance won the election")
  end
  local summary = sub:next(T)
  sub:close()
  log.info("summary by leader %d: %d items, sum of squares %d", summary.leader, summary.items, summary.sum)
  local m = n * ITEMS
  assert(summary.sum == m * (m + 1) * (2 * m + 1) // 6, "wrong sum")
  sync.signal_and_wait("summarized", n, T)
  if leader == me then election:resign() end
end
