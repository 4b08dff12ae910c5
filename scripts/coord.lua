-- coord.lua -- sessions, and resources served one waiter at a time:
-- semaphores (sync.mutex and sync.election are semaphores of one permit)
-- and queues.
--
-- KEYS[1]  the resource key R (P:tg:sem:<name>, P:tg:queue:<name>, ...) or,
--          for session operations, P:tg:sessions
-- ARGV     op, kind, ticket, value, prefix, inbox, sid, n, lease_ms,
--          capacity, ttl, op id, resend
--   op     acquire | release | withdraw | reject | holder | add | push | pop
--          | ack | beat | die | bye
--   kind   "sem" or "queue"
--   ticket the waiter's ticket id ("<process>:<n>"), unique in the run
--   prefix P = run:<run>:plan:<plan>:case:<case>; the run's other keys are
--          derived from it: P:tg:notify, P:tg:dead, P:tg:leases, P:tg:beat,
--          P:tg:held:<sid>, P:tg:queued:<sid>, P:tg:handed:<sid>, P:tg:op:<id>
--   n      permits to acquire or release (release: part of what the ticket
--          holds; the rest stays held); beat: unused
--   lease_ms  a grant's lease, or (beat) the session TTL
--   op id  add and push: a resend with the same id returns the first answer
--   resend "1": the request may have run before (its connection was lost)
-- Names and values are opaque bytes: records that hold several of them are
-- JSON arrays (cjson), never strings split on spaces.
-- Replies: acquire/pop {1, value} when granted at once, {0} when queued (the
--          value arrives later in the ticket's process inbox as an entry
--          w=<ticket> v=<value> x=<R> t=<kind> i=<sid>); release 1 or 0 (not held);
--          push 1; holder "<sid>" or false; add the new value; ack 1 (the
--          hand-over was still this ticket's) or 0 (it was given back);
--          beat {sessions ended, {sids of the caller's that are dead}};
--          die 1 (it died now) or 0; bye 1, or 0 when the session had
--          already been declared dead.
--
-- Why atomic: every operation reads and changes the holders, the queue of
-- waiting tickets and the permits together; a hand-over to the next waiter
-- must happen in the same step as the release that allows it, or two
-- waiters could be granted one permit.  A queue value handed over stays on
-- record (P:tg:handed:<sid>) until its consumer acknowledges it, so a
-- consumer that dies before taking it gives it back: exactly once.
-- Sessions: an instance that dies (its session expires, or it records a
-- failure) gives back everything it held or was handed and leaves every
-- queue it waited in, in one step, and the run hears of it once (a notify
-- entry d=<sid>).
local R = KEYS[1]
local op, kind, ticket, value, P = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local inbox, sid, n = ARGV[6], ARGV[7], tonumber(ARGV[8]) or 1
local lease, cap = tonumber(ARGV[9]) or 0, tonumber(ARGV[10]) or 1
local ttl = (ARGV[11] and ARGV[11] ~= '') and ARGV[11] or '86400'
local opid, resend = ARGV[12] or '', ARGV[13] == '1'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- write, then make sure the key expires with the run's others
local function keep(key)
  redis.call('EXPIRE', key, ttl)
end

local function rec(...) return cjson.encode({ ... }) end

-- the first answer of operation opid, if it ran
local function first_answer()
  if opid == '' then return nil end
  return redis.call('GET', P .. ':tg:op:' .. opid)
end

local function remember(v)
  if opid ~= '' then redis.call('SET', P .. ':tg:op:' .. opid, v, 'EX', ttl) end
  return v
end

-- hand value v to queued ticket w (its record: {inbox, sid, n, lease})
local function deliver(res, k, w, info, v)
  redis.call('XADD', info[1], '*', 'w', w, 'v', v, 'x', res, 't', k, 'i', info[2])
  keep(info[1])
end

-- semaphores ------------------------------------------------------------------

local function grant(res, w, s, cnt, ls)
  redis.call('HINCRBY', res, 'used', cnt)
  local token = redis.call('HINCRBY', res, 'token', 1)
  keep(res)
  redis.call('HSET', res .. ':holders', w, rec(s, cnt, token))
  keep(res .. ':holders')
  redis.call('SADD', P .. ':tg:held:' .. s, rec(res, w))
  keep(P .. ':tg:held:' .. s)
  if ls > 0 then
    redis.call('ZADD', P .. ':tg:leases', now_ms() + ls, rec(res, w))
    keep(P .. ':tg:leases')
  end
  return token
end

-- hand permits to the queued tickets, in order, while they fit
local function serve(res)
  local c = tonumber(redis.call('HGET', res, 'cap') or '1')
  while true do
    local w = redis.call('LINDEX', res .. ':q', 0)
    if not w then break end
    local raw = redis.call('HGET', res .. ':w', w)
    if not raw then
      redis.call('LPOP', res .. ':q')
    else
      local info = cjson.decode(raw)
      local used = tonumber(redis.call('HGET', res, 'used') or '0')
      if used + info[3] > c then break end
      redis.call('LPOP', res .. ':q')
      redis.call('HDEL', res .. ':w', w)
      redis.call('SREM', P .. ':tg:queued:' .. info[2], rec(res, w))
      deliver(res, 'sem', w, info, grant(res, w, info[2], info[3], info[4]))
    end
  end
end

-- give back part (default: all) of the permits that ticket w holds
local function release(res, w, part)
  local raw = redis.call('HGET', res .. ':holders', w)
  if not raw then return 0 end
  local h = cjson.decode(raw)
  if part and part < h[2] then
    redis.call('HSET', res .. ':holders', w, rec(h[1], h[2] - part, h[3]))
    redis.call('HINCRBY', res, 'used', -part)
    serve(res)
    return 1
  end
  redis.call('HDEL', res .. ':holders', w)
  redis.call('HINCRBY', res, 'used', -h[2])
  redis.call('SREM', P .. ':tg:held:' .. h[1], rec(res, w))
  redis.call('ZREM', P .. ':tg:leases', rec(res, w))
  serve(res)
  return 1
end

local function withdraw(res, w)
  local raw = redis.call('HGET', res .. ':w', w)
  if raw then
    redis.call('SREM', P .. ':tg:queued:' .. cjson.decode(raw)[2], rec(res, w))
    redis.call('HDEL', res .. ':w', w)
  end
  redis.call('LREM', res .. ':q', 0, w)
  if kind == 'sem' then serve(res) end    -- a big request that left may unblock smaller ones
end

local function enqueue(res, w, s, cnt, ls)
  redis.call('RPUSH', res .. ':q', w)
  keep(res .. ':q')
  redis.call('HSET', res .. ':w', w, rec(inbox, s, cnt, ls))
  keep(res .. ':w')
  redis.call('SADD', P .. ':tg:queued:' .. s, rec(res, w))
  keep(P .. ':tg:queued:' .. s)
end

-- queues --------------------------------------------------------------------

-- the value is handed to ticket w of session s: on record until acked
local function handed(res, w, s, v)
  redis.call('HSET', P .. ':tg:handed:' .. s, w, rec(res, v))
  keep(P .. ':tg:handed:' .. s)
end

local function push(res, v, front)
  while true do
    local w = redis.call('LPOP', res .. ':q')
    if not w then break end
    local raw = redis.call('HGET', res .. ':w', w)
    if raw then
      local info = cjson.decode(raw)
      redis.call('HDEL', res .. ':w', w)
      redis.call('SREM', P .. ':tg:queued:' .. info[2], rec(res, w))
      handed(res, w, info[2], v)
      deliver(res, 'queue', w, info, v)
      return 1
    end
  end
  if front then redis.call('LPUSH', res .. ':items', v)
  else redis.call('RPUSH', res .. ':items', v) end
  keep(res .. ':items')
  return 1
end

-- sessions ------------------------------------------------------------------

-- everything session s held, waited for or was handed goes back
local function cleanup(s)
  for _, e in ipairs(redis.call('SMEMBERS', P .. ':tg:held:' .. s)) do
    local r = cjson.decode(e)
    release(r[1], r[2])
  end
  for _, e in ipairs(redis.call('SMEMBERS', P .. ':tg:queued:' .. s)) do
    local r = cjson.decode(e)
    redis.call('HDEL', r[1] .. ':w', r[2])
    redis.call('LREM', r[1] .. ':q', 0, r[2])
  end
  local h = redis.call('HGETALL', P .. ':tg:handed:' .. s)
  for i = 1, #h, 2 do
    local r = cjson.decode(h[i + 1])
    push(r[1], r[2], true)
  end
  redis.call('DEL', P .. ':tg:held:' .. s, P .. ':tg:queued:' .. s, P .. ':tg:handed:' .. s)
end

local function die(s, why)
  redis.call('ZREM', P .. ':tg:sessions', s)
  if redis.call('SADD', P .. ':tg:dead', s) == 1 then
    keep(P .. ':tg:dead')
    cleanup(s)
    redis.call('XADD', P .. ':tg:notify', 'MAXLEN', '~', 10000, '*', 'd', s, 'r', why)
    keep(P .. ':tg:notify')
    return 1
  end
  return 0
end

-- add gap ms to every score of zset key (the store stood still that long)
local function shift(key, gap)
  local all = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local args = {}
  for i = 1, #all, 2 do
    args[#args + 1] = tonumber(all[i + 1]) + gap
    args[#args + 1] = all[i]
    if #args >= 2000 then
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call('ZADD', key, unpack(args)) end
end

-- operations ------------------------------------------------------------------

if op == 'acquire' then
  if resend then                          -- did the first send run?
    local raw = redis.call('HGET', R .. ':holders', ticket)
    if raw then return { 1, cjson.decode(raw)[3] } end
    if redis.call('HEXISTS', R .. ':w', ticket) == 1 then return { 0 } end
  end
  if redis.call('HSETNX', R, 'cap', cap) == 0 then
    cap = tonumber(redis.call('HGET', R, 'cap'))
  end
  keep(R)
  local used = tonumber(redis.call('HGET', R, 'used') or '0')
  if n > cap then
    return redis.error_reply('asks for ' .. n .. ' permits of ' .. cap)
  end
  if redis.call('LLEN', R .. ':q') == 0 and used + n <= cap then
    return { 1, grant(R, ticket, sid, n, lease) }
  end
  enqueue(R, ticket, sid, n, lease)
  return { 0 }
elseif op == 'release' then
  local r = release(R, ticket, n)
  -- a resend of a release that ran: the permits are gone already
  if r == 0 and resend then return 1 end
  return r
elseif op == 'withdraw' then
  withdraw(R, ticket)
  return 1
elseif op == 'reject' then
  -- a hand-over reached a ticket nobody waits for: give it back
  if kind == 'sem' then return release(R, ticket) end
  if redis.call('HDEL', P .. ':tg:handed:' .. sid, ticket) == 0 and sid ~= '' then
    return 0                              -- given back already (its session ended)
  end
  return push(R, value, true)
elseif op == 'holder' then
  local h = redis.call('HGETALL', R .. ':holders')
  if h[2] then return tostring(cjson.decode(h[2])[1]) end
  return false
elseif op == 'add' then
  -- a counter (sync.counter): R is a plain integer key; value the increment
  local prev = first_answer()
  if prev then return tonumber(prev) end
  local v = redis.call('INCRBY', R, value)
  keep(R)
  return remember(v)
elseif op == 'push' then
  if first_answer() then return 1 end
  push(R, value, false)
  return remember(1)
elseif op == 'pop' then
  if resend then
    local raw = redis.call('HGET', P .. ':tg:handed:' .. sid, ticket)
    if raw then return { 1, cjson.decode(raw)[2] } end
    if redis.call('HEXISTS', R .. ':w', ticket) == 1 then return { 0 } end
  end
  local v = redis.call('LPOP', R .. ':items')
  if v then
    handed(R, ticket, sid, v)
    return { 1, v }
  end
  enqueue(R, ticket, sid, 1, 0)
  return { 0 }
elseif op == 'ack' then
  -- the consumer takes the value handed to ticket: 0 when it was given back
  return redis.call('HDEL', P .. ':tg:handed:' .. sid, ticket)
elseif op == 'beat' then
  -- refresh this process's sessions (sid: "3 17 42 ..."), then end the
  -- sessions and leases that expired; one call per process, however many
  -- instances it runs
  local t = now_ms()
  local last = tonumber(redis.call('GET', P .. ':tg:beat') or '0')
  redis.call('SET', P .. ':tg:beat', t, 'EX', ttl)
  -- Nobody's beat got through for most of a TTL: the store stood still
  -- (DEBUG SLEEP, CLIENT PAUSE, a stalled host), not the instances.  The
  -- stall does not count against anybody: every expiry moves by its length.
  if last > 0 and t - last > lease * 0.6 then
    shift(R, t - last)
    shift(P .. ':tg:leases', t - last)
  end
  local checkdead = redis.call('SCARD', P .. ':tg:dead') > 0
  local args, dead = {}, {}
  for s in string.gmatch(sid, '%S+') do
    if checkdead and redis.call('SISMEMBER', P .. ':tg:dead', s) == 1 then
      dead[#dead + 1] = s
    else
      args[#args + 1] = t + lease
      args[#args + 1] = s
      if #args >= 2000 then
        redis.call('ZADD', R, unpack(args))
        args = {}
      end
    end
  end
  if #args > 0 then redis.call('ZADD', R, unpack(args)) end
  if sid ~= '' then keep(R) end
  local ended = 0
  for _, s in ipairs(redis.call('ZRANGEBYSCORE', R, '-inf', t, 'LIMIT', 0, 16)) do
    ended = ended + die(s, 'session expired')
  end
  for _, e in ipairs(redis.call('ZRANGEBYSCORE', P .. ':tg:leases', '-inf', t, 'LIMIT', 0, 16)) do
    local r = cjson.decode(e)
    redis.call('ZREM', P .. ':tg:leases', e)
    release(r[1], r[2])
  end
  return { ended, dead }
elseif op == 'die' then
  return die(sid, value)
elseif op == 'bye' then
  if redis.call('SISMEMBER', P .. ':tg:dead', sid) == 1 then return 0 end
  redis.call('ZREM', R, sid)
  cleanup(sid)
  return 1
end
return redis.error_reply('coord.lua: unknown operation ' .. tostring(op))
