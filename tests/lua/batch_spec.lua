-- batch_spec.lua -- a state's entries and waits of one turn of a process's
-- loop go to Redis as one script call (enter_batch.lua): arrival order
-- within a batch, mixed batches, op ids, large batches, targets above the
-- registered range, names that are not names, resends after CLIENT KILL,
-- and rounds in processes and in-process.  Run inside tgrun against the
-- harness's redis-server (and private ones where Redis must misbehave).
local tg = require "tg"
local sync = require "tg.sync"
local redis = require "tg.redis"
local keys = require "tg.keys"
local barrier = require "tg.barrier.c"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/batch.lua"

-- calls of each command so far (INFO commandstats)
local function cmdstats()
  local out = {}
  for name, calls in tostring(redis.call({ "INFO", "commandstats" })):gmatch("cmdstat_([%w|]+):calls=(%d+)") do
    out[name] = tonumber(calls)
  end
  return out
end

-- spawn n tasks running fn(i) (they first run together, in order, on the
-- next turn of the loop) and return their results in spawn order
local function together(n, fn)
  local ts = {}
  for i = 1, n do ts[i] = tg.spawn(fn, i) end
  local out = {}
  for i = 1, n do out[i] = ts[i]:join() end
  return out
end

describe("one turn, one batch", function()
  it("numbers the entries of one turn consecutively in call order, with one EVALSHA and one INCRBY", function()
    -- a heartbeat may land in the window: try again (at most 3 times)
    local ok_once = false
    for _ = 1, 3 do
      local state = h.uniq("order")
      local b0, c0 = barrier.stats().batches, cmdstats()
      local seqs = together(40, function() return sync.signal_entry(state) end)
      local b1, c1 = barrier.stats().batches, cmdstats()
      for i = 1, 40 do assert.equal(i, seqs[i]) end
      assert.equal("40", redis.call({ "GET", keys.state(state) }))
      assert.equal(1, b1 - b0)
      assert.equal(1, (c1.incrby or 0) - (c0.incrby or 0))
      if (c1.evalsha or 0) - (c0.evalsha or 0) == 1 then ok_once = true break end
    end
    assert.is_true(ok_once, "never one EVALSHA for a turn's entries")
  end)

  it("sends one script call per state: two states entered in one turn are two", function()
    local a, b = h.uniq("two-a"), h.uniq("two-b")
    local b0, c0 = barrier.stats().batches, cmdstats()
    local seqs = together(60, function(i) return sync.signal_and_wait(i % 2 == 0 and a or b, 30, { timeout = 5 }) end)
    local b1, c1 = barrier.stats().batches, cmdstats()
    assert.equal(2, b1 - b0)
    assert.equal(2, (c1.incrby or 0) - (c0.incrby or 0))
    for i = 1, 60 do assert.equal((i + 1) // 2, seqs[i]) end  -- each state's entries in call order
  end)

  it("mixes signal-only entries, several targets and plain barrier() waits", function()
    local state = h.uniq("mixed")
    local plan = {
      { "signal" }, { "wait", 5 }, { "enter", 6 }, { "signal" }, { "enter", 5 }, { "wait", 7 },
      { "enter", 9 }, { "signal" }, { "wait", 9 }, { "enter", 7 },
    }
    local released = {}
    local ts = {}
    for i, p in ipairs(plan) do
      ts[i] = tg.spawn(function()
        local r
        if p[1] == "signal" then r = sync.signal_entry(state)
        elseif p[1] == "wait" then sync.barrier(state, p[2], { timeout = 5 })
        else r = sync.signal_and_wait(state, p[2], { timeout = 5 }) end
        released[i] = tg.now()
        return r
      end)
    end
    -- 7 entries in this turn: every target up to 7 is reached by the batch itself
    tg.sleep(0.2)
    for i, p in ipairs(plan) do
      if p[2] == 9 then assert.is_nil(released[i]) else assert.is_not_nil(released[i], "entry " .. i) end
    end
    -- entries 1, 3, 4, 5, 7, 8, 10 in call order: seqs 1..7
    local expect = { [1] = 1, [3] = 2, [4] = 3, [5] = 4, [7] = 5, [8] = 6, [10] = 7 }
    for i, s in pairs(expect) do
      if plan[i][2] ~= 9 then assert.equal(s, ts[i]:join()) end
    end
    local t0 = tg.now()
    together(2, function() return sync.signal_entry(state) end)   -- 9: the rest goes at once
    assert.equal(5, ts[7]:join())
    ts[9]:join()
    assert.is_true(tg.now() - t0 < 0.5)
    assert.equal("9", redis.call({ "GET", keys.state(state) }))
  end)

  it("gives two tasks with one op_id in one turn one answer, and a later retry the same", function()
    local state = h.uniq("opid")
    local seqs = together(5, function(i)
      if i == 2 or i == 4 then return sync.signal_entry(state, { op_id = "same" }) end
      if i == 5 then return sync.signal_entry(state, { op_id = "other" }) end
      return sync.signal_entry(state)
    end)
    -- entries 1, 2 (op "same", new), 3, 5 (op "other") are new: 1, 2, 3, 4; entry 4 answers as 2
    assert.same({ 1, 2, 3, 2, 4 }, seqs)
    assert.equal("4", redis.call({ "GET", keys.state(state) }))
    assert.equal(2, sync.signal_entry(state, { op_id = "same" }))
    assert.equal(4, sync.signal_and_wait(state, 4, { op_id = "other", timeout = 5 }))
    assert.equal("4", redis.call({ "GET", keys.state(state) }))
  end)

  it("takes 3,000 entries in one turn: one batch, seqs 1..3,000 in call order, all released", function()
    local state = h.uniq("big")
    local b0 = barrier.stats().batches
    local seqs = together(3000, function() return sync.signal_and_wait(state, 3000, { timeout = 20 }) end)
    assert.equal(1, barrier.stats().batches - b0)
    for i = 1, 3000 do assert.equal(i, seqs[i]) end
    assert.equal("3000", redis.call({ "GET", keys.state(state) }))
    -- 3,000 op ids in one turn too (one HMGET, one HSET, chunked under Lua's unpack limit)
    local ops = h.uniq("bigops")
    local got = together(3000, function(i) return sync.signal_entry(ops, { op_id = "op" .. (i % 1500) }) end)
    for i = 1, 3000 do assert.equal(i <= 1500 and i or i - 1500, got[i]) end
    assert.equal("1500", redis.call({ "GET", keys.state(ops) }))
  end)
end)

describe("targets", function()
  it("above 1,000,000: a waiter is released by the batch that reaches it", function()
    local state = h.uniq("high")
    redis.call({ "SET", keys.state(state), "999998" })
    local w = tg.spawn(function() sync.barrier(state, 1000001, { timeout = 5 }) return tg.now() end)
    tg.sleep(0.05)
    local t0 = tg.now()
    local seqs = together(3, function() return sync.signal_entry(state) end)
    assert.same({ 999999, 1000000, 1000001 }, seqs)
    assert.is_true(w:join() - t0 < 0.2)
    -- and a signal_and_wait whose own target is there
    local s2 = together(2, function() return sync.signal_and_wait(state, 1000003, { timeout = 5 }) end)
    assert.same({ 1000002, 1000003 }, s2)
  end)

  it("zero and huge: 0 goes at once, a huge one times out saying how far it got", function()
    local state = h.uniq("zero")
    local r = together(3, function(i)
      if i == 1 then return sync.signal_and_wait(state, 0, { timeout = 5 }) end
      if i == 2 then sync.barrier(state, 0) return 0 end
      local ok, err = pcall(sync.signal_and_wait, state, math.maxinteger, { timeout = 0.2 })
      assert.is_false(ok)
      return err
    end)
    assert.equal(1, r[1])
    assert.equal("timeout", r[3].code)
    assert.equal(("barrier '%s' timed out after 0.2 s: 2 of %d entered"):format(state, math.maxinteger), r[3].message)
  end)
end)

describe("names", function()
  it("with spaces, colons and NUL bytes, several in one turn, each its own state", function()
    local base = h.uniq("n")
    local names = { base .. " a b", base .. ":x:y", base .. "\0nul", base .. "%3A", base .. ":x" }
    local seqs = together(10, function(i)
      return sync.signal_and_wait(names[(i - 1) % #names + 1], 2, { timeout = 5 })
    end)
    for i = 1, 10 do assert.equal(i <= 5 and 1 or 2, seqs[i]) end
    for _, n in ipairs(names) do assert.equal("2", redis.call({ "GET", keys.state(n) })) end
    -- a timeout names the state as far as its first NUL
    local ok, err = pcall(sync.barrier, base .. "\0nul", 3, { timeout = 0.1 })
    assert.is_false(ok)
    assert.equal(("barrier '%s' timed out after 0.1 s: 2 of 3 entered"):format(base), err.message)
  end)
end)

describe("rounds", function()
  local function rounds(args, n, R)
    local k = "batch:" .. h.uniq("rounds")
    local run = h.uniq("brun")
    local full = { "-n", tostring(n), "--run-id", run, "-c", "rounds", "-p", "k=" .. k, "-p", "rounds=" .. R }
    for _, a in ipairs(args) do full[#full + 1] = a end
    full[#full + 1] = PLAN
    local r = h.run(full, { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port) })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local P = ("run:%s:plan:batch:case:rounds"):format(run)
    for i = 1, R do
      local got = redis.call({ "HGETALL", k .. ":r" .. i })
      local seen = {}
      for j = 1, #got, 2 do
        local sid, seq = tonumber(got[j]), tonumber(got[j + 1])
        assert.is_nil(seen[seq], "seq " .. seq .. " twice in round " .. i)
        seen[seq] = true
        -- the instance's slot holds its seq (low 31 bits of u32 slot sid)
        local slot = redis.call({ "BITFIELD", P .. ":tg:members:r" .. i, "GET", "u31", 32 * sid + 1 })
        assert.equal(seq, slot[1])
      end
      for s = 1, n do assert.is_true(seen[s], ("round %d: nobody got %d"):format(i, s)) end
      assert.equal(tostring(n), redis.call({ "GET", P .. ":states:r" .. i }))
    end
    return tonumber(redis.call({ "GET", k .. ":batches" }))
  end

  it("in processes: every round's seqs are 1..N, each in its instance's slot", function()
    local batches = rounds({}, 4, 6)
    assert.equal(8, batches)          -- one per round; instance 1 enters rounds 3 and 6 and then waits: two
  end)

  it("in-process: every round's seqs are 1..N, each in its instance's slot, a batch or two per round", function()
    local batches = rounds({ "--inproc" }, 200, 6)
    -- 1,200 entries (and 200 waits): a batch per round or a few (rounds 3
    -- and 6: the entries, then the waits; a notification that releases some
    -- waiters a turn before the batch's own reply releases the rest), never
    -- anything like one request per entry
    assert.is_true(batches >= 8 and batches <= 24, "batches: " .. batches)
  end)
end)

describe("a batch whose connection is killed between its send and its reply", function()
  for _, mode in ipairs({ "processes", "in-process" }) do
    it(("counts each entry once after the reconnect (%s)"):format(mode), function()
      local srv = h.redis_server({ debug = true })
      local k = "batch:" .. h.uniq("kill")
      local run = h.uniq("krun")
      local args = { "-n", "3", "--redis", srv.url, "--run-id", run, "-c", "kill", "-p", "k=" .. k,
        "-p", "port=" .. srv.port, "-p", "tasks=3" }
      if mode == "in-process" then args[#args + 1] = "--inproc" end
      args[#args + 1] = PLAN
      local r = h.run(args, {})
      local seqs, count = srv.cli("LRANGE " .. k .. ":seqs 0 -1"), srv.cli(("GET run:%s:plan:batch:case:kill:states:s"):format(run))
      local replays, reconnects = srv.cli("GET " .. k .. ":replays"), srv.cli("GET " .. k .. ":reconnects")
      srv.stop()
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local list = {}
      for s in seqs:gmatch("%d+") do list[#list + 1] = tonumber(s) end
      table.sort(list)
      assert.same({ 1, 2, 3, 4, 5 }, list)               -- 3 tasks of instance 1, one of each other
      assert.equal(5, tonumber(count:match("%d+")))
      assert.is_true(tonumber(reconnects:match("%d+")) >= 1, "no reconnect: " .. reconnects)
      -- the batches had run when the kill came: their resends found them done
      assert.is_true(tonumber(replays:match("%d+")) >= 1, "no resend found its batch done: " .. replays)
    end)
  end
end)
