-- coord.lua -- sessions, and resources served one waiter at a time:
-- semaphores (sync.mutex and sync.election are semaphores of one permit)
-- and queues.
--
-- KEYS[1]  the resource key R (P:tg:sem:<name>, P:tg:queue:<name>) or, for
--          session operations, P:tg:sessions
-- ARGV     op, kind, ticket, value, prefix, inbox, sid, n, lease_ms, capacity, ttl
--   op     acquire | release | withdraw | reject | push | pop | holder
--          | add (counters) | beat | die | bye
--   kind   "sem" or "queue"
--   ticket the waiter's ticket id ("<process>:<n>"), unique in the run
--   prefix P = run:<run>:plan:<plan>:case:<case>; the run's other keys are
--          derived from it: P:tg:notify, P:tg:dead, P:tg:leases,
--          P:tg:held:<sid>, P:tg:queued:<sid>
-- n      permits to acquire, or to release (release: part of what the
--        ticket holds; the rest stays held)
-- Replies: acquire/pop {1, value} when granted at once, {0} when queued (the
--          value arrives later in the ticket's process inbox as an entry
--          w=<ticket> v=<value> x=<R> t=<kind>); release 1 or 0 (not held);
--          push 1; holder "<sid>" or false; add the new value; beat/die/bye the number of
--          sessions reaped or ended.
--
-- Why atomic: every operation reads and changes the holders, the queue of
-- waiting tickets and the permits together; a hand-over to the next waiter
-- must happen in the same step as the release that allows it, or two
-- waiters could be granted one permit.  Sessions: an instance that dies
-- (its session expires, or it records a failure) gives back everything it
-- held and leaves every queue it waited in, in one step, and the run hears
-- of it once (a notify entry d=<sid>).
local R = KEYS[1]
local op, kind, ticket, value, P = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local inbox, sid, n = ARGV[6], ARGV[7], tonumber(ARGV[8]) or 1
local lease, cap = tonumber(ARGV[9]) or 0, tonumber(ARGV[10]) or 1
local ttl = (ARGV[11] and ARGV[11] ~= '') and ARGV[11] or '86400'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function deliver(res, k, w, info, v)
  -- info = "inbox sid n lease"
  local ibox = string.match(info, '^(%S+)')
  redis.call('XADD', ibox, 'MAXLEN', '~', 1000, '*', 'w', w, 'v', v, 'x', res, 't', k)
  redis.call('EXPIRE', ibox, ttl)
end

local function parse(info)
  local ibox, s, cnt, ls = string.match(info, '^(%S+) (%S+) (%S+) (%S+)$')
  return ibox, s, tonumber(cnt) or 1, tonumber(ls) or 0
end

-- semaphores ------------------------------------------------------------------

local function grant(res, w, s, cnt, ls)
  redis.call('HINCRBY', res, 'used', cnt)
  local token = redis.call('HINCRBY', res, 'token', 1)
  redis.call('HSET', res .. ':holders', w, s .. ' ' .. cnt)
  redis.call('SADD', P .. ':tg:held:' .. s, res .. ' ' .. w)
  if ls > 0 then
    redis.call('ZADD', P .. ':tg:leases', now_ms() + ls, res .. ' ' .. w)
  end
  return token
end

-- hand permits to the queued tickets, in order, while they fit
local function serve(res)
  local c = tonumber(redis.call('HGET', res, 'cap') or '1')
  while true do
    local w = redis.call('LINDEX', res .. ':q', 0)
    if not w then break end
    local info = redis.call('HGET', res .. ':w', w)
    if not info then
      redis.call('LPOP', res .. ':q')
    else
      local ibox, s, cnt, ls = parse(info)
      local used = tonumber(redis.call('HGET', res, 'used') or '0')
      if used + cnt > c then break end
      redis.call('LPOP', res .. ':q')
      redis.call('HDEL', res .. ':w', w)
      redis.call('SREM', P .. ':tg:queued:' .. s, res .. ' ' .. w)
      local token = grant(res, w, s, cnt, ls)
      deliver(res, 'sem', w, info, token)
    end
  end
end

-- give back part (default: all) of the permits that ticket w holds
local function release(res, w, part)
  local h = redis.call('HGET', res .. ':holders', w)
  if not h then return 0 end
  local s, cnt = string.match(h, '^(%S+) (%S+)$')
  cnt = tonumber(cnt)
  if part and part < cnt then
    redis.call('HSET', res .. ':holders', w, s .. ' ' .. (cnt - part))
    redis.call('HINCRBY', res, 'used', -part)
    serve(res)
    return 1
  end
  redis.call('HDEL', res .. ':holders', w)
  redis.call('HINCRBY', res, 'used', -cnt)
  redis.call('SREM', P .. ':tg:held:' .. s, res .. ' ' .. w)
  redis.call('ZREM', P .. ':tg:leases', res .. ' ' .. w)
  serve(res)
  return 1
end

local function withdraw(res, w)
  local info = redis.call('HGET', res .. ':w', w)
  if info then
    local _, s = parse(info)
    redis.call('SREM', P .. ':tg:queued:' .. s, res .. ' ' .. w)
    redis.call('HDEL', res .. ':w', w)
  end
  redis.call('LREM', res .. ':q', 0, w)
  if kind == 'sem' then serve(res) end    -- a big request that left may unblock smaller ones
end

-- queues --------------------------------------------------------------------

local function push(res, v, front)
  while true do
    local w = redis.call('LPOP', res .. ':q')
    if not w then break end
    local info = redis.call('HGET', res .. ':w', w)
    if info then
      local _, s = parse(info)
      redis.call('HDEL', res .. ':w', w)
      redis.call('SREM', P .. ':tg:queued:' .. s, res .. ' ' .. w)
      deliver(res, 'queue', w, info, v)
      return 1
    end
  end
  if front then redis.call('LPUSH', res .. ':items', v)
  else redis.call('RPUSH', res .. ':items', v) end
  redis.call('EXPIRE', res .. ':items', ttl)
  return 1
end

-- sessions ------------------------------------------------------------------

local function cleanup(s)
  local held = redis.call('SMEMBERS', P .. ':tg:held:' .. s)
  for _, e in ipairs(held) do
    local res, w = string.match(e, '^(%S+) (%S+)$')
    release(res, w)
  end
  local queued = redis.call('SMEMBERS', P .. ':tg:queued:' .. s)
  for _, e in ipairs(queued) do
    local res, w = string.match(e, '^(%S+) (%S+)$')
    redis.call('HDEL', res .. ':w', w)
    redis.call('LREM', res .. ':q', 0, w)
  end
  redis.call('DEL', P .. ':tg:held:' .. s, P .. ':tg:queued:' .. s)
end

local function die(s, why)
  redis.call('ZREM', P .. ':tg:sessions', s)
  if redis.call('SADD', P .. ':tg:dead', s) == 1 then
    redis.call('EXPIRE', P .. ':tg:dead', ttl)
    cleanup(s)
    redis.call('XADD', P .. ':tg:notify', 'MAXLEN', '~', 10000, '*', 'd', s, 'r', why)
    redis.call('EXPIRE', P .. ':tg:notify', ttl)
    return 1
  end
  return 0
end

-- operations ------------------------------------------------------------------

if op == 'acquire' then
  if redis.call('HSETNX', R, 'cap', cap) == 0 then
    cap = tonumber(redis.call('HGET', R, 'cap'))
  end
  redis.call('EXPIRE', R, ttl)
  local used = tonumber(redis.call('HGET', R, 'used') or '0')
  if n > cap then
    return redis.error_reply('asks for ' .. n .. ' permits of ' .. cap)
  end
  if redis.call('LLEN', R .. ':q') == 0 and used + n <= cap then
    return { 1, grant(R, ticket, sid, n, lease) }
  end
  redis.call('RPUSH', R .. ':q', ticket)
  redis.call('HSET', R .. ':w', ticket, inbox .. ' ' .. sid .. ' ' .. n .. ' ' .. lease)
  redis.call('SADD', P .. ':tg:queued:' .. sid, R .. ' ' .. ticket)
  return { 0 }
elseif op == 'release' then
  return release(R, ticket, n)
elseif op == 'withdraw' then
  withdraw(R, ticket)
  return 1
elseif op == 'reject' then
  -- a hand-over reached a ticket nobody waits for: give it back
  if kind == 'sem' then return release(R, ticket) end
  return push(R, value, true)
elseif op == 'holder' then
  local h = redis.call('HGETALL', R .. ':holders')
  if h[2] then return string.match(h[2], '^(%S+)') end
  return false
elseif op == 'add' then
  -- a counter (sync.counter): R is a plain integer key; value the increment
  local v = redis.call('INCRBY', R, value)
  redis.call('EXPIRE', R, ttl)
  return v
elseif op == 'push' then
  return push(R, value, false)
elseif op == 'pop' then
  local v = redis.call('LPOP', R .. ':items')
  if v then return { 1, v } end
  redis.call('RPUSH', R .. ':q', ticket)
  redis.call('HSET', R .. ':w', ticket, inbox .. ' ' .. sid .. ' 1 0')
  redis.call('SADD', P .. ':tg:queued:' .. sid, R .. ' ' .. ticket)
  return { 0 }
elseif op == 'beat' then
  -- refresh this process's sessions (sid: "3 17 42 ..."), then end the
  -- sessions and leases that expired; one call per process, however many
  -- instances it runs
  local t = now_ms()
  local args = {}
  for s in string.gmatch(sid, '%S+') do
    args[#args + 1] = t + lease
    args[#args + 1] = s
    if #args >= 2000 then
      redis.call('ZADD', R, unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call('ZADD', R, unpack(args)) end
  if sid ~= '' then redis.call('EXPIRE', R, ttl) end
  local ended = 0
  for _, s in ipairs(redis.call('ZRANGEBYSCORE', R, '-inf', t, 'LIMIT', 0, 16)) do
    ended = ended + die(s, 'session expired')
  end
  for _, e in ipairs(redis.call('ZRANGEBYSCORE', P .. ':tg:leases', '-inf', t, 'LIMIT', 0, 16)) do
    local res, w = string.match(e, '^(%S+) (%S+)$')
    redis.call('ZREM', P .. ':tg:leases', e)
    release(res, w)
  end
  return ended
elseif op == 'die' then
  return die(sid, value)
elseif op == 'bye' then
  redis.call('ZREM', R, sid)
  cleanup(sid)
  return 1
end
return redis.error_reply('coord.lua: unknown operation ' .. tostring(op))
