-- await.lua -- a waiter registers the target it waits for (barrier).
--
-- KEYS[1]  state counter   P:states:<state>
-- KEYS[2]  awaited targets P:tg:waits:<state>
-- KEYS[3]  membership      P:tg:members:<state> (bit 0 tells entries to look at KEYS[2])
-- ARGV[1]  target
-- ARGV[2]  TTL in seconds
-- Reply:   the current count.
--
-- Atomic so that the count read and the registration are one step: an entry
-- that reaches the target either happened before (the count shows it) or
-- after (it sees the flag, finds the registration and notifies).
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('SETBIT', KEYS[3], 0, 1)
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return n
