-- outcome_spec.lua -- how a case's end becomes the instance's outcome, as
-- sdk-go's run.Invoke decides it: returned failure values, raised errors
-- (failure) against errors of the VM (crash), env:record_failure, errors
-- of tasks nobody joins; real processes, their event lines and run_events.
local redis = require "tg.redis"
local json = require "tg.json"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/outcome.lua"

local function env(extra)
  local e = { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port) }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- Run one case as a single instance: {code, stdout, stderr, lines,
-- outcomes = the success/failure/crash events in order}.
local function run(case, args, extra)
  local a = { "-c", case }
  for _, x in ipairs(args or {}) do a[#a + 1] = x end
  a[#a + 1] = PLAN
  local r = h.run(a, env(extra))
  r.lines = h.json_lines(r.stdout)
  r.outcomes = {}
  for _, l in ipairs(r.lines) do
    for _, k in ipairs({ "success_event", "failure_event", "crash_event" }) do
      if l.event[k] then r.outcomes[#r.outcomes + 1] = { kind = k, body = l.event[k] } end
    end
  end
  return r
end

local function one(r, kind)
  assert.equal(1, #r.outcomes, r.stdout .. r.stderr)
  assert.equal(kind, r.outcomes[1].kind, r.stdout)
  return r.outcomes[1].body
end

describe("a case's return values", function()
  it("nothing, true and other values succeed", function()
    for _, c in ipairs({ "ret_nothing", "ret_true", "ret_other", "ret_nil_nil" }) do
      local r = run(c)
      assert.equal(0, r.code, c .. ": " .. r.stdout .. r.stderr)
      assert.same({ group = "single" }, one(r, "success_event"))
    end
  end)

  it("false [, msg], nil plus an error, and an error value fail, with the message", function()
    local want = {
      ret_false = "the case returned false",
      ret_false_msg = "the numbers did not add up",
      ret_nil_err = "no route to 10.0.0.7",
      ret_nil_errval = "fetch timed out after 3 s",
      ret_errval = "3 of 4 blocks arrived",
      ret_nil_table = "a table error",
    }
    for c, msg in pairs(want) do
      local r = run(c)
      assert.equal(1, r.code, c)
      assert.same({ group = "single", error = msg }, one(r, "failure_event"))
    end
  end)
end)

describe("errors the plan raises: failure_event", function()
  it("error() and assert() with a message, with the traceback", function()
    local r = run("err_string")
    assert.equal(1, r.code)
    local f = one(r, "failure_event")
    assert.matches("^[^\n]*outcome.lua:%d+: deliberate\nstack traceback:\n", f.error)
    assert.matches("in function 'error'", f.error)
    f = one(run("assert_msg"), "failure_event")
    assert.matches("^[^\n]*outcome.lua:%d+: arithmetic is broken\nstack traceback:", f.error)
    assert.matches("^no position\n", one(run("err_level0"), "failure_event").error)
    assert.matches("^42\n", one(run("err_number"), "failure_event").error)
  end)

  it("a table keeps its message: message, msg, error, __tostring", function()
    local want = { err_message = "from message", err_msg = "from msg", err_error = "from error",
      err_tostring = "from __tostring" }
    for c, msg in pairs(want) do
      local r = run(c)
      assert.equal(1, r.code)
      assert.matches("^" .. msg .. "\nstack traceback:", one(r, "failure_event").error)
      assert.not_matches("error object is a", r.stdout)
    end
  end)

  it("tgrun's own errors (a barrier that timed out) are failures", function()
    local r = run("err_tg")
    assert.equal(1, r.code)
    assert.matches("^barrier 'nobody%-comes' timed out after 0.1 s: 0 of 2 entered", one(r, "failure_event").error)
  end)
end)

describe("errors of the VM or a library: crash_event", function()
  it("has the message and a stack trace naming the plan", function()
    local want = {
      vm_index = "outcome.lua:%d+: attempt to index a nil value %(local 't'%)",
      vm_call = "outcome.lua:%d+: attempt to call a nil value %(local 'f'%)",
      vm_arith = "outcome.lua:%d+: attempt to perform arithmetic on a table value",
      lib_arg = "outcome.lua:%d+: bad argument #1 to 'rep'",
      overflow = "stack overflow",
    }
    for c, pattern in pairs(want) do
      local r = run(c)
      assert.equal(1, r.code, c)
      local cr = one(r, "crash_event")
      assert.matches(pattern, cr.error)
      assert.equal("single", cr.group)
      assert.matches("^stack traceback:\n", cr.stacktrace)
      assert.matches("outcome.lua:%d+", cr.stacktrace)
    end
  end)

  it("error() with a value that carries no message", function()
    for c, t in pairs({ err_nil = "nil", err_empty = "table", err_bool = "boolean" }) do
      local r = run(c)
      assert.equal(1, r.code)
      assert.equal("error object is a " .. t .. " value", one(r, "crash_event").error)
    end
  end)

  it("the local runner says crashed, and failed for a failure", function()
    local r = h.run({ "-n", "1", "-c", "vm_index", PLAN }, env())
    assert.equal(1, r.code)
    assert.matches("single%[0%] crashed: [^\n]*attempt to index a nil value", r.stdout)
    r = h.run({ "-n", "2", "--inproc", "-c", "err_string", PLAN }, env())
    assert.equal(1, r.code)
    assert.matches("single%[1%] failed: [^\n]*deliberate", r.stdout)
  end)
end)

describe("env:record_failure", function()
  it("records each failure at once, the case goes on, and the instance fails", function()
    local r = run("record_twice")
    assert.equal(1, r.code)
    assert.equal(2, #r.outcomes)
    assert.same({ group = "single", error = "first problem" }, r.outcomes[1].body)
    assert.same({ group = "single", error = "second problem" }, r.outcomes[2].body)
    -- in the order they happened, between the case's own lines; no success after
    local order = {}
    for _, l in ipairs(r.lines) do
      local e = l.event
      if e.failure_event then order[#order + 1] = e.failure_event.error end
      if e.message_event and e.message_event.message:match("^still going") then order[#order + 1] = e.message_event.message end
      assert.is_nil(e.success_event)
    end
    assert.same({ "first problem", "still going after the first", "second problem", "still going after the second" },
      order)
    -- the local runner: failed, with the first recorded failure as its first error
    local l = h.run({ "-n", "1", "-c", "record_twice", PLAN }, env())
    assert.equal(1, l.code)
    assert.matches("single%[0%] failed: first problem\n", l.stdout)
  end)

  it("goes to run_events too, each one, as sdk-go's RecordFailure signals it", function()
    local id = h.uniq("rec")
    local r = run("record_twice", { "--run-id", id }, { TEST_PLAN = "oc" })
    assert.equal(1, r.code)
    local kinds = {}
    for _, e in ipairs(redis.call({ "XRANGE", ("run:%s:plan:oc:case:record_twice:run_events"):format(id), "-", "+" })) do
      local ev = json.decode(e[2][2])
      local k = next(ev)
      kinds[#kinds + 1] = k .. (ev.failure_event and (" " .. ev.failure_event.error) or "")
    end
    assert.same({ "stage_start_event", "stage_end_event", "start_event", "failure_event first problem",
      "failure_event second problem" }, kinds)
  end)

  it("record_failure(err); return nil, err is one event; a later error is another", function()
    local r = run("record_then_return")
    assert.equal(1, r.code)
    assert.same({ group = "single", error = "lost 3 of 10 messages" }, one(r, "failure_event"))
    r = run("record_then_raise")
    assert.equal(1, r.code)
    assert.equal(2, #r.outcomes)
    assert.equal("recorded first", r.outcomes[1].body.error)
    assert.matches("raised later", r.outcomes[2].body.error)
  end)

  it("without an error is a bad argument", function()
    local r = run("record_nothing")
    assert.equal(1, r.code)
    assert.matches("^env:record_failure: err must be a message or an error value, got nothing",
      one(r, "failure_event").error)
  end)
end)

describe("an error in a task nobody joins", function()
  it("fails the instance, though the case returned", function()
    local r = run("task_unjoined")
    assert.equal(1, r.code)
    local f = one(r, "failure_event")
    assert.matches("^task [^\n]*:%d+ failed: [^\n]*outcome.lua:%d+: the task gave up\nstack traceback:", f.error)
    assert.matches("error: task [^\n]* failed: [^\n]*the task gave up", r.stdout)   -- said when it happened
    r = run("task_unjoined_vm")
    assert.equal(1, r.code)
    assert.matches("attempt to index a nil value", one(r, "crash_event").error)
  end)

  it("is the first error when the case fails afterwards", function()
    local r = run("task_then_timeout")
    assert.equal(1, r.code)
    local f = one(r, "failure_event")
    assert.matches("^task [^\n]* failed: [^\n]*the publisher died\n", f.error)
    assert.matches("\nalso failed: barrier 'never%-reached' timed out after 0.2 s", f.error)
    local l = h.run({ "-n", "1", "-c", "task_then_timeout", PLAN }, env())
    assert.matches("single%[0%] failed: task [^\n]* failed: [^\n]*the publisher died\n", l.stdout)
  end)

  it("is the case's to handle once a join takes it", function()
    local r = run("task_joined_later")
    assert.equal(0, r.code, r.stdout)
    one(r, "success_event")
  end)

  it("keeps its kind when a join passes it on", function()
    local r = run("task_joined_crash")
    assert.equal(1, r.code)
    local cr = one(r, "crash_event")
    assert.matches("attempt to perform arithmetic on a nil value", cr.error)
    assert.matches("passed on by task:join", cr.stacktrace)
    r = run("task_joined_failure")
    assert.matches("explicit in the task", one(r, "failure_event").error)
  end)

  it("does not count when the task was cancelled", function()
    local r = run("task_cancelled")
    assert.equal(0, r.code, r.stdout)
    one(r, "success_event")
  end)
end)

describe("stage events", function()
  it("network-initialized is a stage even without a sidecar, as sdk-go's InitContext has it", function()
    local r = run("ret_nothing")
    local kinds = {}
    for _, l in ipairs(r.lines) do kinds[#kinds + 1] = next(l.event) end
    assert.same({ "start_event", "stage_start_event", "message_event", "stage_end_event", "success_event" }, kinds)
    assert.same({ name = "network-initialized", group = "single" }, r.lines[2].event.stage_start_event)
    assert.equal("network initialisation successful", r.lines[3].event.message_event.message)
  end)

  it("a sidecar that never initialises the network: the message Go writes, and a failure", function()
    local r = run("ret_nothing", { "--timeout", "0.5" }, { TEST_SIDECAR = "true", TEST_INSTANCE_COUNT = "1" })
    assert.equal(1, r.code)
    assert.matches('"message":"network initialisation failed"', r.stdout, 1, true)
    assert.matches("^barrier 'network%-initialized'", one(r, "failure_event").error)
    assert.not_matches("stage_end_event", r.stdout)
  end)
end)
