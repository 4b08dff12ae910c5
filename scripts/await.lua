-- await.lua -- a waiter registers the target it waits for (barrier).
--
-- KEYS[1]  state counter   P:states:<state>
-- KEYS[2]  slots           P:tg:members:<state> (top bit of u32 slot T: target T awaited)
-- ARGV[1]  target
-- ARGV[2]  TTL in seconds
-- Reply:   the current count.
--
-- Atomic so that the count read and the registration are one step: an entry
-- that reaches the target either happened before (the count shows it) or
-- after (the entry with n == target sees the registration and notifies).
-- Running it twice changes nothing, so a resend after a lost connection is
-- safe.  Targets above 1,000,000 are not registered (see enter.lua).
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local target = tonumber(ARGV[1])
if n < target and target <= 1000000 then
  redis.call('SETBIT', KEYS[2], 32 * target, 1)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return n
