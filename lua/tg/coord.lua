-- tg.coord -- coordination beyond barriers: mutex, semaphore, election,
-- double barrier, counter, queue.  Exposed as fields of tg.sync.
--
--   local m = sync.mutex("db", { lease = 10 })
--   local token = m:lock({ timeout = 5 })      -- fencing token, grows with every grant
--   ...                                        -- m:unlock(), or m:with(fn)
--
-- Every waiter is served through the server-side script coord.lua and a
-- ticket: a release hands the resource to the first queued waiter in the
-- same atomic step and wakes only that waiter (its process's inbox).  Locks,
-- permits and leadership belong to the instance's session: when the instance
-- dies they come back (see tg.session).
local core = require "tg.core"
local json = require "tg.json"
local check = require "tg.check"
local redis = require "tg.redis"
local keys = require "tg.keys"
local c = require "tg.coord.c"          -- tickets and coord.lua calls (src/tg_coord.c)

local coord = {}

local function sid()
  local cfg = core.config()
  return tostring(cfg.global_seq or 0)
end

-- Wait for a ticket of resource (name) -- "sem", "mutex", "election" or
-- "queue" -- until op ("acquire", "pop") is granted; returns the value and
-- the ticket id.
local function ticket(resource, name, op, n, lease, cap, timeout, label)
  local id = c.ticket_id()
  return c.ticket(id, resource, name, op, sid(), n or 1, math.floor(lease or 0), cap or 1, timeout, label), id
end

-- One coord.lua call that does not wait for the resource.
local function call(resource, name, op, id, value, label, n)
  return c.call(resource, name, op, sid(), id or "", value or "", n or 1, label)
end

-- sync.semaphore(name, permits) -------------------------------------------------

local Sem = {}
Sem.__index = Sem

function coord.semaphore(name, permits)
  check.name("semaphore", "name", name)
  permits = check.count("semaphore", "permits", permits, 1)
  return setmetatable({ name = name, permits = permits, resource = "sem", key = keys.sem(name),
    held = {}, what = ("semaphore '%s'"):format(name) }, Sem)
end

-- s:acquire([n, opts]) -> fencing token.  Waits until n permits are free.
function Sem:acquire(n, opts)
  if type(n) == "table" then n, opts = nil, n end
  n = check.count("acquire", "n", n or 1, 1)
  if n > self.permits then
    check.fail("%s: cannot acquire %d of %d permits", self.what, n, self.permits)
  end
  local timeout = check.timeout("acquire", opts)
  local v, id = ticket(self.resource, self.name, "acquire", n, (self.lease or 0) * 1000, self.permits, timeout,
    ("acquire of %d permit%s of %s"):format(n, n > 1 and "s" or "", self.what))
  self.held[#self.held + 1] = { id = id, n = n }
  return math.tointeger(tonumber(v))
end

-- s:release([n]): give back n permits (from the most recent acquisitions;
-- part of an acquisition may be given back, the rest stays held).
function Sem:release(n)
  n = check.count("release", "n", n or 1, 1)
  local have = 0
  for _, h in ipairs(self.held) do have = have + h.n end
  if have < n then
    check.fail("%s: release of %d permit%s, but this handle holds only %d", self.what, n,
      n > 1 and "s" or "", have)
  end
  local left = n
  while left > 0 do
    local h = self.held[#self.held]
    local part = math.min(h.n, left)
    if part == h.n then table.remove(self.held) else h.n = h.n - part end
    left = left - part
    if call(self.resource, self.name, "release", h.id, nil, "release of " .. self.what, part) == 0 then
      check.fail("%s: the permits were no longer held (lease expired, or the session ended)", self.what)
    end
  end
end

-- sync.mutex(name [, {lease = seconds}]) ------------------------------------------

local Mutex = {}
Mutex.__index = Mutex

function coord.mutex(name, opts)
  check.name("mutex", "name", name)
  local lease = opts and opts.lease
  if lease ~= nil and (type(lease) ~= "number" or not (lease > 0) or lease == math.huge) then
    check.fail("mutex: lease must be a number of seconds > 0")
  end
  local s = coord.semaphore(name, 1)
  s.resource = "mutex"
  s.key = keys.mutex(name)
  s.lease = lease
  s.what = ("mutex '%s'"):format(name)
  return setmetatable({ sem = s, name = name }, Mutex)
end

-- m:lock([opts]) -> fencing token.  Yields until this instance holds it.
function Mutex:lock(opts)
  if #self.sem.held > 0 then
    check.fail("mutex '%s': already locked by this handle", self.name)
  end
  return self.sem:acquire(1, opts)
end

-- m:unlock(): an error when this handle does not hold the lock.
function Mutex:unlock()
  if #self.sem.held == 0 then
    check.fail("mutex '%s': unlock of a lock this instance does not hold", self.name)
  end
  self.sem:release(1)
end

-- m:with(fn, ...) -> fn's results; unlocks on error too.
function Mutex:with(fn, ...)
  if type(fn) ~= "function" then check.fail("mutex:with needs a function") end
  local token = self:lock()
  local r = table.pack(pcall(fn, token, ...))
  self:unlock()
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- sync.election(name) -----------------------------------------------------------

local Election = {}
Election.__index = Election

function coord.election(name)
  check.name("election", "name", name)
  local s = coord.semaphore(name, 1)
  s.resource = "election"
  s.key = keys.election(name)
  s.what = ("election '%s'"):format(name)
  return setmetatable({ sem = s, name = name }, Election)
end

-- e:campaign([opts]) -> term (grows with every new leader).  Yields until
-- this instance leads.
function Election:campaign(opts)
  if #self.sem.held > 0 then return self.term end
  self.term = self.sem:acquire(1, opts)
  return self.term
end

-- e:resign(): hand leadership to the next candidate.
function Election:resign()
  if #self.sem.held == 0 then
    check.fail("election '%s': resign by an instance that does not lead", self.name)
  end
  self.sem:release(1)
  self.term = nil
end

-- e:leader() -> global_seq of the current leader, or nil.
function Election:leader()
  local h = call(self.sem.resource, self.name, "holder", nil, nil, "leader of " .. self.sem.what)
  return h and math.tointeger(tonumber(h)) or nil
end

-- e:is_leader() -> bool
function Election:is_leader()
  return #self.sem.held > 0
end

-- sync.double_barrier(name, count) -------------------------------------------------

local Double = {}
Double.__index = Double

function coord.double_barrier(name, count)
  check.name("double_barrier", "name", name)
  count = check.count("double_barrier", "count", count, 1)
  return setmetatable({ name = name, count = count }, Double)
end

-- d:enter([opts]): wait until count instances entered.
function Double:enter(opts)
  return require("tg.sync").signal_and_wait(self.name .. ":enter", self.count, opts)
end

-- d:leave([opts]): wait until count instances left.
function Double:leave(opts)
  return require("tg.sync").signal_and_wait(self.name .. ":leave", self.count, opts)
end

-- sync.counter(name) --------------------------------------------------------------

local Counter = {}
Counter.__index = Counter

function coord.counter(name)
  check.name("counter", "name", name)
  return setmetatable({ name = name, key = keys.counter(name) }, Counter)
end

-- c:add(n) -> the new value
function Counter:add(n)
  n = n or 1
  if math.type(n) ~= "integer" then check.fail("counter '%s': add needs a whole number", self.name) end
  -- one script: the key expires with the run's other keys
  return call("counter", self.name, "add", nil, tostring(n), ("add to counter '%s'"):format(self.name))
end

-- c:get() -> the value (0 before the first add)
function Counter:get()
  return math.tointeger(tonumber(redis.call({ "GET", self.key }, -1, "counter get") or 0))
end

-- sync.queue(name) ------------------------------------------------------------------

local Queue = {}
Queue.__index = Queue

function coord.queue(name)
  check.name("queue", "name", name)
  return setmetatable({ name = name, key = keys.queue(name) }, Queue)
end

-- q:push(value): a JSON-encodable value; handed straight to a waiting pop.
function Queue:push(value)
  local ok, text = pcall(json.encode, value)
  if not ok then check.fail("queue '%s': the value cannot be sent as JSON: %s", self.name, tostring(text)) end
  if #text > check.MAX_VALUE then
    check.fail("queue '%s': the value is %d bytes as JSON; a value may be at most %d MiB", self.name, #text,
      check.MAX_VALUE // 1048576)
  end
  call("queue", self.name, "push", nil, text, ("push to queue '%s'"):format(self.name))
end

-- q:pop([opts]) -> value.  Yields until a value is there; each value is
-- popped by exactly one instance.
function Queue:pop(opts)
  local timeout = check.timeout("pop", opts)
  local v = ticket("queue", self.name, "pop", 1, 0, 1, timeout, ("pop from queue '%s'"):format(self.name))
  return json.decode(v)
end

return coord
