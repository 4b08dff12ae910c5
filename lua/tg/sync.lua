-- tg.sync -- Testground's sync primitives: states and barriers, topics.
--
-- Every call that waits yields the calling task and takes an options table
-- whose `timeout` (seconds) bounds the wait; without one, the run's deadline
-- does.  Errors are values with `code` and `message` (see API.md section 4).
local core = require "tg.core"
local json = require "tg.json"
local check = require "tg.check"
local svc = require "tg.svc.c"           -- the sync-service client (src/tg_svc.c)

-- The backend, chosen once, at the first call (a plan requires tg.sync
-- before the runtime has connected): with a sync service (--sync,
-- SYNC_SERVICE_HOST) states, barriers and topics go through it, else
-- through Redis.  Both C modules take the same calls.
local backend = { }
setmetatable(backend, { __index = function(t, k)
  if svc.active() then
    t.barrier, t.topics = svc, svc
  else
    t.barrier = require "tg.barrier.c"   -- states and barriers over Redis (src/tg_barrier.c)
    t.topics = require "tg.topic.c"      -- topics and subscriptions (src/tg_topic.c)
  end
  setmetatable(t, nil)
  return rawget(t, k)
end })

local sync = {}

-- (every instance of a process shares this module: the instance's
-- configuration -- global_seq arrives after start-up -- is read per call)
local config = core.config

local type, tointeger, mtype = type, math.tointeger, math.type

-- The instance's number for an entry: an integer goes to the C module as
-- it is (it writes the digits itself: with a thousand instances in a
-- process, a string made per call is measurable), anything else as
-- tostring shows it.
local function member(c)
  local seq = (c or config()).global_seq
  if mtype(seq) == "integer" then return seq end
  return seq and tostring(seq) or ""
end

-- The run's instance count when the wait should fail fast with peer_failed
-- once it can no longer complete; 0 when opts.tolerate_failures says the
-- plan expects instances to die.
local function failure_check(opts)
  if opts and opts.tolerate_failures then return 0 end
  return config().instance_count or 0
end

local function op_id(call, opts)
  if opts ~= nil and type(opts) ~= "table" then
    check.fail("%s: options must be a table, got %s", call, check.describe(opts))
  end
  local id = opts and opts.op_id
  if id == nil then return "" end
  if type(id) ~= "string" or id == "" then check.fail("%s: op_id must be a non-empty string", call) end
  return id
end

-- sync.signal_entry(state [, opts]) -> seq: enter state; seq is the arrival
-- order.  opts.op_id makes a retry return the first answer.
function sync.signal_entry(state, opts)
  if type(state) ~= "string" or state == "" then check.name("signal_entry", "state", state) end
  return backend.barrier.signal(state, member(), opts == nil and "" or op_id("signal_entry", opts))
end

-- sync.barrier(state, target [, opts]): wait until target instances entered.
function sync.barrier(state, target, opts)
  if type(state) ~= "string" or state == "" then check.name("barrier", "state", state) end
  local n = type(target) == "number" and tointeger(target)
  if not n or n < 0 then n = check.count("barrier", "target", target, 0) end
  local timeout = opts == nil and -1 or check.timeout("barrier", opts)
  if n == 0 then return end
  backend.barrier.wait(state, n, timeout, failure_check(opts))
end

-- sync.signal_and_wait(state, target [, opts]) -> seq: enter, then wait.
-- One script call: the entry and the registration of the target are atomic.
-- (The checks run as calls only when an argument is bad: this is the call
-- that a thousand instances of a process make in one turn.)
function sync.signal_and_wait(state, target, opts)
  if type(state) ~= "string" or state == "" then check.name("signal_and_wait", "state", state) end
  local n = type(target) == "number" and tointeger(target)
  if not n or n < 0 then n = check.count("signal_and_wait", "target", target, 0) end
  if opts == nil then
    local c = config()
    return backend.barrier.signal_and_wait(state, n, -1, c.instance_count or 0, member(c), "")
  end
  local timeout = check.timeout("signal_and_wait", opts)
  return backend.barrier.signal_and_wait(state, n, timeout, failure_check(opts), member(),
    op_id("signal_and_wait", opts))
end

-- sync.publish(topic, value) -> seq: append value; seq is its 1-based position.
function sync.publish(topic, value)
  check.name("publish", "topic", topic)
  local ok, text = pcall(json.encode, value)
  if not ok then
    check.fail("publish to topic '%s': the value cannot be sent as JSON: %s", topic,
      tostring(text):gsub("^json%.encode: ", ""))
  end
  if #text > check.MAX_VALUE then
    check.fail("publish to topic '%s': the value is %d bytes as JSON; a value may be at most %d MiB",
      topic, #text, check.MAX_VALUE // 1048576)
  end
  return backend.topics.publish(topic, text)
end

local Sub = {}
Sub.__index = Sub

-- sync.subscribe(topic [, opts]) -> sub: every value of the topic from the
-- first on, in order.  opts.timeout becomes the default bound of sub:next().
function sync.subscribe(topic, opts)
  check.name("subscribe", "topic", topic)
  local timeout = check.timeout("subscribe", opts)
  return setmetatable({ raw = backend.topics.subscribe(topic), topic = topic,
    timeout = timeout }, Sub)
end

-- sub:next([opts]) -> value, seq.  Yields until a value is there.
function Sub:next(opts)
  local t = check.timeout("next", opts)
  return self.raw:next_raw(t >= 0 and t or self.timeout)
end

-- sub:take(n [, opts]) -> {value, ...}: the next n values; opts.timeout
-- bounds the whole call.
function Sub:take(n, opts)
  n = check.count("take", "n", n, 0)
  local t = check.timeout("take", opts)
  if t < 0 then t = self.timeout end
  local deadline = t >= 0 and core.now() + t or nil
  local out = {}
  for i = 1, n do
    local left = deadline and math.max(0, deadline - core.now()) or -1
    local ok, v = pcall(self.raw.next_raw, self.raw, left)
    if not ok then
      if core.is_error(v) and v.code == "timeout" then
        error(core.error("timeout", ("take(%d) from topic '%s' timed out after %g s: got %d of %d values")
          :format(n, self.topic, t >= 0 and t or core.deadline(), i - 1, n)), 2)
      end
      error(v, 2)
    end
    out[i] = v
  end
  return out
end

-- sub:close(): stop reading; a pending next() ends with code "closed".
function Sub:close()
  self.raw:close()
end

-- sub:buffered() -> how many values were read and are not taken yet.
function Sub:buffered()
  return self.raw:buffered()
end

-- sync.publish_and_wait(topic, value, state, target [, opts]) -> seq:
-- publish, then wait at the barrier (as the Go SDK does: it does not enter).
function sync.publish_and_wait(topic, value, state, target, opts)
  local seq = sync.publish(topic, value)
  sync.barrier(state, target, opts)
  return seq
end

-- sync.publish_subscribe(topic, value [, opts]) -> seq, sub.
function sync.publish_subscribe(topic, value, opts)
  local sub = sync.subscribe(topic, opts)
  return sync.publish(topic, value), sub
end

-- further coordination: mutex, semaphore, election, double_barrier, counter,
-- queue -- loaded on first use (a state that never locks does not carry it).
-- A sync service has none of them: with one, they need Redis as well, and
-- without it each fails with one clear "unsupported" error when called.
local coord_names = { mutex = "mutexes", semaphore = "semaphores", election = "elections",
  double_barrier = "double barriers", counter = "counters", queue = "queues" }
return setmetatable(sync, { __index = function(t, k)
  local what = coord_names[k]
  if not what then return nil end
  local v
  if svc.active() and require("tg.redis").down() then
    v = function()
      error(core.error("unsupported", ("sync.%s needs Redis: the sync service (%s) has no %s; give Redis "
        .. "as well (REDIS_HOST/REDIS_PORT or --redis URL) to use it"):format(k, svc.where(), what)), 2)
    end
  else
    v = require("tg.coord")[k]
  end
  rawset(t, k, v)
  return v
end })
