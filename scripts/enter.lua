-- enter.lua -- an instance enters a state (signal_entry, signal_and_wait).
--
-- KEYS[1]  state counter  P:states:<state>   (a string that INCRs: Go SDK compatible)
-- KEYS[2]  awaited targets P:tg:waits:<state> (zset, member = score = target)
-- KEYS[3]  notify stream  P:tg:notify          (entries s=<KEYS[1]>, n=<count>)
-- ARGV[1]  target the caller will wait for, or "" when it only signals
-- ARGV[2]  TTL in seconds for keys this run creates
-- Reply:   the caller's 1-based arrival order (the new count).
--
-- Atomic because the count, the registration of the caller's own target and
-- the decision to notify must see one state: a waiter that registered its
-- target before this entry is woken by it, and one that registers after it
-- reads a count that already includes it.  Only the entry that reaches a
-- registered target notifies, once for all the targets it reaches, so a
-- barrier of N costs O(N) wake-ups, not O(N^2).
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local target = tonumber(ARGV[1])
if target and n < target then
  redis.call('ZADD', KEYS[2], target, target)
  if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
  return n
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', n, 'LIMIT', 0, 1)
if due[1] then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', n)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 's', KEYS[1], 'n', n)
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return n
