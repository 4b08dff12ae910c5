-- trace_spec.lua -- what each instance records in <outputs>/trace.jsonl
-- (docs/api.md, "The trace"): every kind of wait with its name, result or
-- error; publishes; the outcome; what a kill leaves; turning it off; and
-- that its memory stays bounded.  Real runs of tgrun against the harness's
-- redis-server.
local h = require "helpers"
local json = require "tg.json"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/trace.lua"

-- tgrun -n ... against the harness's Redis, in a fresh outputs folder:
-- the result of h.run with .out (the outputs folder) and .id (the run id)
local function run_local(args, env) return h.run_plan(PLAN, "trace", args, env) end

-- A trace file read back: {header =, spans = {...}, marks = {...}}; spans
-- in the order they began, each {k, n, task, b, e, v, err, msg}.
local function read_trace(path)
  local text = h.read(path)
  assert.truthy(text, "no trace at " .. path)
  local lines = h.json_lines(text)
  local t = { header = lines[1], spans = {}, marks = {}, byid = {} }
  for i = 2, #lines do
    local r = lines[i]
    if r.s then                                 -- a wait that ended before it was written: one line
      local s = { k = r.k, n = r.n, task = r.task, b = r.t, e = r.t + r.d, v = r.v }
      t.byid[r.s] = s
      t.spans[#t.spans + 1] = s
    elseif r.b then
      local s = { k = r.k, n = r.n, task = r.task, b = r.t }
      t.byid[r.b] = s
      t.spans[#t.spans + 1] = s
    elseif r.e then
      local s = assert(t.byid[r.e], "end of a span that did not begin: " .. r.e)
      s.e, s.v, s.err, s.msg = r.t, r.v, r.err, r.msg
    else
      t.marks[#t.marks + 1] = r
    end
  end
  return t
end

local function find(t, k, n)
  for _, s in ipairs(t.spans) do
    if s.k == k and (n == nil or s.n == n) then return s end
  end
end

local function mark(t, m)
  for _, r in ipairs(t.marks) do if r.m == m then return r end end
end

-- the kinds every instance of the plan "kinds" waits for ("topic" only
-- for sure where the topic is new to the process: the client's kinds-addr)
local KINDS = { "entry", "barrier", "signal_and_wait", "publish", "lock", "semaphore", "coord",
  "sleep", "exec", "read", "write", "join", "redis" }

local function check_kinds(rundir, ninst)
  local traces = {}
  for i = 0, ninst - 1 do
    local t = read_trace(("%s/single/%d/trace.jsonl"):format(rundir, i))
    traces[i] = t
    assert.equal(1, t.header.tgtrace)
    assert.equal("single", t.header.group)
    assert.equal("trace", t.header.plan)
    assert.equal("kinds", t.header.case)
    assert.equal("start", t.marks[1].m)
    for _, k in ipairs(KINDS) do assert.truthy(find(t, k), ("instance %d: no %s span"):format(i, k)) end
    for _, s in ipairs(t.spans) do
      assert.truthy(s.e, ("instance %d: %s '%s' never ended"):format(i, s.k, s.n))
      assert.is_true(s.e >= s.b)
    end
    -- names are the states, topics, resources, peers, programs
    assert.equal(1, #(function() local a = {} for _, s in ipairs(t.spans) do
      if s.k == "entry" and s.n == "initialized_global" then a[#a + 1] = s end end return a end)())
    assert.truthy(find(t, "barrier", "kinds-entered"))
    assert.truthy(find(t, "lock", "kinds-lock"))
    assert.truthy(find(t, "semaphore", "kinds-sem"))
    assert.truthy(find(t, "exec", "sh -c exit 0"))
    assert.truthy(find(t, "redis", "kinds ping"))
    assert.truthy(find(t, "sleep", "0.02"))
    -- results: arrival seqs and topic seqs
    local sw = find(t, "signal_and_wait", "kinds-done")
    assert.truthy(sw.v >= 1 and sw.v <= ninst, "no arrival seq")
    local p = find(t, "publish", "kinds-topic")
    assert.truthy(p.v >= 1 and p.v <= ninst, "no topic seq")
    assert.truthy(find(t, "entry", "initialized_global").v)
    -- errors: code and message
    local nb = find(t, "barrier", "kinds-nobody")
    assert.equal("timeout", nb.err)
    assert.matches("^barrier 'kinds%-nobody' timed out after 0%.2 s: %d+ of %d+ entered$", nb.msg)
    assert.is_true(nb.e - nb.b >= 190000, "the failed wait is too short: " .. (nb.e - nb.b))
    local c = find(t, "sleep", "30")
    assert.equal("cancelled", c.err)
    assert.matches("cancelled", c.msg)
    -- a spawned task's waits carry their own task
    local jt, other = find(t, "join").task, false
    for _, s in ipairs(t.spans) do
      if s.k == "sleep" and s.n == "0.01" and s.task ~= jt then other = true end
    end
    assert.is_true(other, "the spawned task's sleep carries the main task's id")
    assert.truthy(mark(t, "success"))
  end
  -- the server and the client sides
  local roles = {}
  for i = 0, ninst - 1 do
    roles[find(traces[i], "publish", "kinds-addr") and "server" or "client"] = traces[i]
  end
  assert.truthy(roles.server and roles.client, "no server and client")
  assert.truthy(find(roles.server, "accept"), "no accept")
  assert.truthy(find(roles.server, "coord", "kinds-queue"), "no queue push")
  assert.truthy(find(roles.server, "election", "kinds-election"))
  assert.truthy(find(roles.client, "queue", "kinds-queue"))
  assert.truthy(find(roles.client, "connect"))
  assert.truthy(find(roles.client, "topic", "kinds-addr"))
  return traces
end

describe("trace.jsonl", function()
  it("records every kind of wait with its name, its result or its error (processes)", function()
    local r = run_local({ "-n", "2", "-c", "kinds" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    check_kinds(r.rundir, 2)
  end)

  it("records the same in-process, on one clock", function()
    local r = run_local({ "-n", "2", "--inproc", "-c", "kinds" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local t = check_kinds(r.rundir, 2)
    assert.equal(t[0].header.t0, t[1].header.t0)
    assert.equal(t[0].header.pid, t[1].header.pid)
  end)

  it("records the failure with its message", function()
    local r = run_local({ "-n", "3", "-c", "one_fails", "-p", "fails=2", "-p", "rounds=1" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local failed = 0
    for i = 0, 2 do
      local t = read_trace(("%s/single/%d/trace.jsonl"):format(r.rundir, i))
      local f = mark(t, "failure")
      if f then
        failed = failed + 1
        assert.matches("instance 2 found a wrong checksum", f.msg)
        assert.is_nil(mark(t, "success"))
      else
        assert.truthy(mark(t, "success"))
      end
      -- the publish: topic and seq
      local p = find(t, "publish", "results")
      assert.truthy(p and p.v >= 1 and p.v <= 3)
    end
    assert.equal(1, failed)
  end)

  it("is not written with --no-trace or TG_TRACE=0; a bad TG_TRACE is a usage error", function()
    for _, how in ipairs({ { args = { "--no-trace" } }, { env = { TG_TRACE = "0" } },
      { env = { TG_TRACE = "off" }, inproc = true } }) do
      local args = { "-n", "2", "-c", "late" }
      for _, a in ipairs(how.args or {}) do args[#args + 1] = a end
      if how.inproc then args[#args + 1] = "--inproc" end
      local r = run_local(args, how.env)
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.truthy(h.read(r.rundir .. "/single/0/run.out"))
      assert.is_nil(h.read(r.rundir .. "/single/0/trace.jsonl"))
      assert.is_nil(h.read(r.rundir .. "/timeline.html"))
      assert.not_matches("slowest barriers", r.stdout)
    end
    local r = run_local({ "-n", "1", "-c", "late" }, { TG_TRACE = "perhaps" })
    assert.equal(2, r.code)
    assert.matches("TG_TRACE is not true or false", r.stderr)
  end)

  it("of an instance killed while it waits holds what it recorded up to the last flush", function()
    local dir, id = h.tmpdir(), h.uniq("stuck")
    local outputs = dir .. "/" .. id .. "/single/0"
    os.execute("mkdir -p " .. h.shq(outputs))
    local p = h.spawn({ "-c", "stuck", "--timeout", "60", PLAN }, {
      REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port), TEST_RUN = id,
      TEST_OUTPUTS_PATH = outputs, TEST_INSTANCE_COUNT = "1" })
    -- the flush timer writes within a second of the wait's beginning
    local path = outputs .. "/trace.jsonl"
    assert.truthy(h.wait_until(function()
      return (h.read(path) or ""):match('"k":"barrier","n":"stuck"')
    end, 10), "the waiting barrier never reached the file")
    p.kill()
    local res = p:wait(10)
    assert.truthy(res, "the instance did not die")
    local t = read_trace(path)
    local s = find(t, "barrier", "stuck")
    assert.is_nil(s.e)                          -- began, never ended: it was killed
    assert.truthy(find(t, "entry", "stuck-entered").e)
    assert.is_nil(mark(t, "success"))
    assert.is_nil(mark(t, "failure"))
    -- and the report draws it as unfinished, saying what is missing
    local rep = h.run({ "report", dir .. "/" .. id })
    assert.equal(0, rep.code, rep.stdout .. rep.stderr)
    assert.matches("1 of 1 instance recorded no outcome", rep.stdout)
    local chrome = json.decode(h.read(dir .. "/" .. id .. "/trace.json"))
    local found
    for _, e in ipairs(chrome.traceEvents) do
      if e.ph == "X" and e.args.name == "stuck" then found = e end
    end
    assert.truthy(found and found.args.unfinished)
  end)

  it("keeps at most ~8 KB per in-process instance (16 KB per process) in memory, however many waits", function()
    for _, how in ipairs({ { n = 1, most = 16384 }, { n = 8, inproc = true, most = 8192 } }) do
      local args = { "-n", tostring(how.n), "-c", "many", "-p", "waits=3000" }
      if how.inproc then args[#args + 1] = "--inproc" end
      local r = run_local(args)
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local seen = 0
      for mem in r.stdout:gmatch("trace memory (%d+)") do
        seen = seen + 1
        mem = tonumber(mem)
        assert.is_true(mem > 0 and mem <= how.most + 512 + #r.rundir, "trace memory " .. mem)
      end
      assert.equal(how.n, seen, r.stdout)
      -- and nothing was lost on the way: every wait is in the files
      for i = 0, how.n - 1 do
        local t = read_trace(("%s/single/%d/trace.jsonl"):format(r.rundir, i))
        local n = 0
        for _, s in ipairs(t.spans) do if s.k == "sleep" and s.e then n = n + 1 end end
        assert.equal(3000, n)
      end
    end
  end)
end)
