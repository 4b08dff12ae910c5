-- sync_spec.lua -- the Testground primitives, run inside tgrun against the
-- harness's redis-server.
local tg = require "tg"
local sync = require "tg.sync"
local core = require "tg.core"
local redis = require "tg.redis"
local keys = require "tg.keys"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

describe("signal_entry", function()
  it("numbers concurrent entries 1..n in arrival order", function()
    local state = h.uniq("arrive")
    local tasks, seqs = {}, {}
    for i = 1, 25 do
      tasks[i] = tg.spawn(function() return sync.signal_entry(state) end)
    end
    for i = 1, 25 do seqs[#seqs + 1] = tasks[i]:join() end
    table.sort(seqs)
    for i = 1, 25 do assert.equal(i, seqs[i]) end
    assert.equal("25", redis.call({ "GET", keys.state(state) }))
  end)

  it("rejects an empty or non-string state at once with code invalid", function()
    for _, bad in ipairs({ "", 42, false }) do
      local ok, err = pcall(sync.signal_entry, bad)
      assert.is_false(ok)
      assert.equal("invalid", err.code)
      assert.matches("signal_entry: state must be a non%-empty string", err.message)
    end
  end)
end)

describe("barrier", function()
  it("returns at once for target 0 and for a target already met", function()
    local state = h.uniq("met")
    local t0 = tg.now()
    sync.barrier(state, 0)
    sync.signal_entry(state)
    sync.signal_entry(state)
    sync.barrier(state, 2)
    sync.barrier(state, 1)
    assert.is_true(tg.now() - t0 < 0.2)
  end)

  it("is released the moment the target is reached, not on a poll", function()
    local state = h.uniq("release")
    local released_at
    local waiter = tg.spawn(function()
      sync.barrier(state, 3, { timeout = 5 })
      released_at = tg.now()
    end)
    tg.sleep(0.05)
    sync.signal_entry(state)
    sync.signal_entry(state)
    tg.sleep(0.3)
    assert.is_nil(released_at)            -- 2 of 3: still waiting
    local entered_at = tg.now()
    sync.signal_entry(state)
    waiter:join()
    assert.is_not_nil(released_at)
    assert.is_true(released_at - entered_at < 0.1,
      ("released %.3f s after the last entry"):format(released_at - entered_at))
  end)

  it("releases several waiters with different targets as each is reached", function()
    local state = h.uniq("multi")
    local order = {}
    local ts = {}
    for _, target in ipairs({ 4, 2, 3 }) do
      ts[#ts + 1] = tg.spawn(function()
        sync.barrier(state, target, { timeout = 5 })
        order[#order + 1] = target
      end)
    end
    for _ = 1, 4 do
      tg.sleep(0.05)
      sync.signal_entry(state)
    end
    for _, t in ipairs(ts) do t:join() end
    assert.same({ 2, 3, 4 }, order)
  end)

  it("times out with what it waited for and how far it got", function()
    local state = h.uniq("slow")
    for _ = 1, 3 do sync.signal_entry(state) end
    local t0 = tg.now()
    local ok, err = pcall(sync.barrier, state, 4, { timeout = 0.3 })
    local took = tg.now() - t0
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    assert.equal(("barrier '%s' timed out after 0.3 s: 3 of 4 entered"):format(state), err.message)
    assert.equal(err.message, tostring(err))
    assert.is_true(took >= 0.29 and took < 1, "took " .. took)
  end)

  it("is released within about a second by a plain INCR (a Go SDK instance)", function()
    local state = h.uniq("goincr")
    sync.signal_entry(state)
    local released
    local w = tg.spawn(function()
      sync.barrier(state, 2, { timeout = 5 })
      released = tg.now()
    end)
    tg.sleep(0.05)
    local t0 = tg.now()
    redis.call({ "INCR", keys.state(state) })   -- no notification: only the safety net sees it
    w:join()
    assert.is_true(released - t0 < 1.5, ("released after %.3f s"):format(released - t0))
  end)

  it("signal_and_wait returns the arrival order once all arrived", function()
    local state = h.uniq("saw")
    local ts = {}
    for i = 1, 10 do
      ts[i] = tg.spawn(function() return sync.signal_and_wait(state, 10, { timeout = 5 }) end)
    end
    local seqs = {}
    for i = 1, 10 do seqs[i] = ts[i]:join() end
    table.sort(seqs)
    for i = 1, 10 do assert.equal(i, seqs[i]) end
  end)

  it("rejects a negative or fractional target at once", function()
    for _, bad in ipairs({ -1, 1.5, "3" }) do
      local ok, err = pcall(sync.barrier, "x", bad)
      assert.is_false(ok)
      assert.equal("invalid", err.code)
    end
    local ok, err = pcall(sync.barrier, "x", 1, { timeout = -2 })
    assert.is_false(ok)
    assert.equal("invalid", err.code)
  end)
end)

describe("topics", function()
  it("replays from the first value, in order, to a late subscriber", function()
    local topic = h.uniq("replay")
    for i = 1, 10 do assert.equal(i, sync.publish(topic, { i = i, s = "v" .. i })) end
    local sub = sync.subscribe(topic)
    local got = sub:take(10, { timeout = 5 })
    for i = 1, 10 do assert.same({ i = i, s = "v" .. i }, got[i]) end
    local v, seq = nil, nil
    tg.spawn(function() tg.sleep(0.05) sync.publish(topic, "eleventh") end)
    v, seq = sub:next({ timeout = 5 })
    assert.equal("eleventh", v)
    assert.equal(11, seq)
    sub:close()
  end)

  it("serves two subscriptions to one topic independently", function()
    local topic = h.uniq("two")
    local a = sync.subscribe(topic)
    sync.publish(topic, 1)
    local b = sync.subscribe(topic)
    sync.publish(topic, 2)
    assert.same({ 1, 2 }, a:take(2, { timeout = 5 }))
    assert.same({ 1, 2 }, b:take(2, { timeout = 5 }))
    a:close()
    sync.publish(topic, 3)
    assert.equal(3, (b:next({ timeout = 5 })))
    b:close()
  end)

  it("does not let a subscriber that never reads stall another", function()
    local topic = h.uniq("stall")
    local lazy = sync.subscribe(topic)   -- never read
    local busy = sync.subscribe(topic)
    local reader = tg.spawn(function() return busy:take(200, { timeout = 10 }) end)
    for i = 1, 200 do sync.publish(topic, i) end
    local got = reader:join()
    assert.equal(200, #got)
    assert.equal(200, got[200])
    assert.equal(200, lazy:buffered())
    lazy:close()
    busy:close()
  end)

  it("publish_subscribe gives the caller its own value back", function()
    local topic = h.uniq("pubsub")
    local seq, sub = sync.publish_subscribe(topic, { me = true })
    assert.equal(1, seq)
    assert.same({ me = true }, (sub:next({ timeout = 5 })))
  end)

  it("times out a take with how many values arrived", function()
    local topic = h.uniq("short")
    sync.publish(topic, "only")
    local sub = sync.subscribe(topic)
    local ok, err = pcall(sub.take, sub, 3, { timeout = 0.2 })
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    assert.matches("got 1 of 3 values", err.message)
  end)

  it("refuses a value that is not JSON", function()
    local ok, err = pcall(sync.publish, h.uniq("bad"), { f = function() end })
    assert.is_false(ok)
    assert.equal("invalid", err.code)
    assert.matches("cannot encode a function", err.message)
  end)

  it("writes the Go SDK wire format: a stream entry with field p", function()
    local topic = h.uniq("wire")
    sync.publish(topic, { addr = "10.0.0.1:4001", id = 7 })
    local entries = redis.call({ "XRANGE", keys.topic(topic), "-", "+" })
    assert.equal(1, #entries)
    assert.same({ "p", '{"addr":"10.0.0.1:4001","id":7}' }, entries[1][2])
  end)

  it("publish_and_wait publishes and waits without entering", function()
    local topic, state = h.uniq("paw"), h.uniq("paw-state")
    local t = tg.spawn(function() return sync.publish_and_wait(topic, "x", state, 1, { timeout = 5 }) end)
    tg.sleep(0.05)
    assert.equal("waiting", t:status())
    sync.signal_entry(state)
    assert.equal(1, t:join())
  end)
end)

describe("Redis usage", function()
  it("redis.send: sent without waiting, in order with later calls; an error reply is a warning", function()
    local k = h.uniq("send")
    redis.send({ "SET", k, "v" })
    redis.send({ "APPEND", k, "w" })
    assert.equal("vw", redis.call({ "GET", k }))     -- the same connection, in order
    redis.call({ "DEL", k })
    local dir = h.tmpdir()
    h.write(dir .. "/p.lua", ([[
      local redis = require "tg.redis"
      return function()
        redis.call({ "SET", "%s", "not a number" })
        redis.send({ "INCR", "%s" }, "INCR the text")
        redis.call({ "PING" })
        redis.call({ "DEL", "%s" })
      end]]):format(k, k, k))
    local r = h.run({ dir .. "/p.lua" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("warning: INCR the text: Redis replied: ERR value is not an integer", r.stdout)
    h.fails_invalid("empty Redis command", redis.send, {})
  end)

  it("reloads its scripts when the server lost them (SCRIPT FLUSH)", function()
    local state = h.uniq("flush")
    assert.equal(1, sync.signal_entry(state))
    redis.call({ "SCRIPT", "FLUSH" })
    assert.equal(2, sync.signal_entry(state))          -- NOSCRIPT, then EVAL
    assert.equal(3, sync.signal_and_wait(state, 3, { timeout = 5 }))
    assert.equal(1, sync.publish(h.uniq("flush-topic"), "x"))
  end)

  -- client id -> name of every connection the server has
  local function clients()
    local ids = {}
    for line in redis.call({ "CLIENT", "LIST" }):gmatch("[^\n]+") do
      ids[tonumber(line:match("id=(%d+)"))] = line:match("name=(%S*)")
    end
    return ids
  end

  it("uses two connections, and subscriptions never reconnect", function()
    local before = clients()
    local subs = {}
    for i = 1, 20 do subs[i] = sync.subscribe(h.uniq("conn")) end
    for i = 1, 20, 2 do subs[i]:close() end
    local topic = h.uniq("conn-after")
    local s2 = sync.subscribe(topic)
    sync.publish(topic, "still here")
    assert.equal("still here", (s2:next({ timeout = 5 })))
    local after = clients()
    -- no connection of ours came or went: the same ids with the same names
    for cid, name in pairs(after) do
      if name == "tgrun-cmd" or name == "tgrun-blk" then
        if before[cid] == nil then error("a new tgrun connection appeared: id " .. cid) end
      end
    end
    for cid, name in pairs(before) do
      if (name == "tgrun-cmd" or name == "tgrun-blk") and after[cid] == nil then
        error("a tgrun connection went away: id " .. cid)
      end
    end
    local myid = redis.call({ "CLIENT", "ID" })
    assert.equal("tgrun-cmd", after[myid])
    for _, s in ipairs(subs) do s:close() end
    s2:close()
  end)
end)

describe("tasks", function()
  it("cancel ends a pending wait with code cancelled", function()
    local state = h.uniq("cancel")
    local t = tg.spawn(function() sync.barrier(state, 99, { timeout = 30 }) end)
    tg.sleep(0.05)
    t:cancel()
    local ok, err = pcall(t.join, t)
    assert.is_false(ok)
    assert.equal("cancelled", err.code)
    assert.truthy(err.message:find("barrier '" .. state .. "': cancelled", 1, true), err.message)
  end)

  it("join re-raises the task's error and returns its results", function()
    local t = tg.spawn(function(a, b) return a + b, "x" end, 2, 3)
    local s, x = t:join()
    assert.equal(5, s)
    assert.equal("x", x)
    local bad = tg.spawn(function() error("boom") end)
    local ok, err = pcall(bad.join, bad)
    assert.is_false(ok)
    assert.matches("boom", err)
  end)

  it("join has a bound", function()
    local t = tg.spawn(function() tg.sleep(5) end)
    local ok, err = pcall(t.join, t, { timeout = 0.1 })
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    t:cancel()
  end)

  it("a wait started after plan code blocked the loop still gets its whole timeout", function()
    os.execute("sleep 1.2")          -- blocks the loop: its cached clock goes stale
    local t0 = tg.now()
    local ok, err = pcall(sync.barrier, h.uniq("stale"), 5, { timeout = 0.5 })
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    assert.is_true(tg.now() - t0 >= 0.45, "timed out after " .. (tg.now() - t0))
  end)

  it("sleep waits about as long as asked", function()
    local t0 = tg.now()
    tg.sleep(0.1)
    local d = tg.now() - t0
    assert.is_true(d >= 0.099 and d < 0.3, "slept " .. d)
  end)

  it("a bare coroutine.yield in a task lets others run and resumes", function()
    local log = {}
    local a = tg.spawn(function() log[#log + 1] = "a1"; coroutine.yield(); log[#log + 1] = "a2" end)
    local b = tg.spawn(function() log[#log + 1] = "b1" end)
    a:join()
    b:join()
    assert.same({ "a1", "b1", "a2" }, log)
  end)

  it("refuses a runtime wait inside a user coroutine with a clear error", function()
    local co = coroutine.wrap(function() return pcall(tg.sleep, 0.01) end)
    local ok, err = co()
    assert.is_false(ok)
    assert.equal("invalid", err.code)
    assert.matches("must run in a task", err.message)
  end)

  it("releases finished tasks: their records and their memory", function()
    collectgarbage()
    collectgarbage()
    local before = core.stats()
    local mem0 = collectgarbage("count")
    -- 2,000 tasks that each hold ~10 KB while they run, joined one by one
    for _ = 1, 2000 do
      tg.spawn(function() local t = {} for i = 1, 1000 do t[i] = i end return #t end):join()
    end
    collectgarbage()
    collectgarbage()
    local after = core.stats()
    assert.equal(before.tasks, after.tasks)
    assert.equal(before.live_tasks, after.live_tasks)          -- every task struct freed
    -- what is left is the GC's slack, not 2,000 coroutines (~20 MB if kept)
    assert.is_true(collectgarbage("count") - mem0 < 256, ("%.0f KB more than before"):format(collectgarbage("count") - mem0))
    assert.is_true(after.memory - before.memory < 256 * 1024, ("%d bytes more in the pool"):format(after.memory - before.memory))
    -- a handle that is kept keeps its results, not its coroutine
    local kept = {}
    for i = 1, 100 do kept[i] = tg.spawn(function() return i end) end
    for i = 1, 100 do assert.equal(i, kept[i]:join()) end
    collectgarbage()
    assert.equal(before.live_tasks + 100, core.stats().live_tasks)
    kept = nil
    collectgarbage()
    collectgarbage()
    assert.equal(before.live_tasks, core.stats().live_tasks)
  end)
end)
