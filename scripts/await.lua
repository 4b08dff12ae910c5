-- await.lua -- a waiter registers the target it waits for (barrier).
--
-- KEYS[1]  state counter   P:states:<state>
-- KEYS[2]  awaited targets P:tg:waits:<state>
-- KEYS[3]  membership      P:tg:members:<state> (u32 #0: the smallest awaited target)
-- ARGV[1]  target
-- ARGV[2]  TTL in seconds
-- Reply:   the current count.
--
-- Atomic so that the count read and the registration are one step: an entry
-- that reaches the target either happened before (the count shows it) or
-- after (it sees the registered target and notifies).  Running it twice
-- changes nothing, so a resend after a lost connection is safe.
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local target = tonumber(ARGV[1])
if n < target then
  if redis.call('ZADD', KEYS[2], target, target) == 1 then
    redis.call('EXPIRE', KEYS[2], ARGV[2])
  end
  local least = redis.call('BITFIELD', KEYS[3], 'GET', 'u32', '#0')[1]
  if least == 0 or target < least then
    redis.call('BITFIELD', KEYS[3], 'SET', 'u32', '#0', target)
  end
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return n
