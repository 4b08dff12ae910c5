-- enter.lua -- an instance enters a state (signal_entry, signal_and_wait).
--
-- KEYS[1]  state counter   P:states:<state>      (a string that INCRs: Go SDK compatible)
-- KEYS[2]  awaited targets P:tg:waits:<state>    (zset, member = score = target)
-- KEYS[3]  notify stream   P:tg:notify           (entries s=<KEYS[1]>, n=<count>)
-- KEYS[4]  membership      P:tg:members:<state>  (BITFIELD: u32 #0 = the smallest
--                                                 awaited target, 0 = none;
--                                                 u32 #<sid> = that instance's seq)
-- KEYS[5]  op ids          P:tg:ops:<state>      (hash op id -> seq)
-- ARGV[1]  target the caller will wait for, or "" when it only signals
-- ARGV[2]  TTL in seconds for keys this run creates
-- ARGV[3]  the caller's instance number (global_seq), or "" before it has one
-- ARGV[4]  operation id, or "": a retry with the same id returns the first
--          answer instead of entering twice
-- ARGV[5]  "1": register the target (this process's first waiter for it)
-- ARGV[6]  "1": a resend after a lost connection (the first send may have
--          run): an instance that already entered gets its seq back
-- Reply:   the caller's 1-based arrival order (the new count).
--
-- Atomic because the count, the membership and the decision to notify must
-- see one state: a waiter whose target is registered before this entry is
-- woken by it, and one that registers after it reads a count that already
-- includes it.  An entry notifies when it reaches its own target or any
-- registered one (the smallest is kept in u32 #0, so entries below it do no
-- extra work), once for all the targets it reaches: a barrier of N costs
-- O(N) wake-ups.  The common round costs three commands per instance
-- (this script, INCR, BITFIELD), plus one ZADD per process and target and
-- the one XADD that releases everybody.
local sid, op = ARGV[3], ARGV[4]
if op ~= '' then
  local prev = redis.call('HGET', KEYS[5], op)
  if prev then return tonumber(prev) end
end
if ARGV[6] == '1' and sid ~= '' then
  local seq = redis.call('BITFIELD', KEYS[4], 'GET', 'u32', '#' .. sid)[1]
  if seq ~= 0 then return seq end
end
local n = redis.call('INCR', KEYS[1])
local target = tonumber(ARGV[1])
local least
if sid ~= '' then
  least = redis.call('BITFIELD', KEYS[4], 'SET', 'u32', '#' .. sid, n, 'GET', 'u32', '#0')[2]
else
  least = redis.call('BITFIELD', KEYS[4], 'INCRBY', 'u32', '#0', 0)[1]
end
if n == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
if op ~= '' then
  redis.call('HSET', KEYS[5], op, n)
  redis.call('EXPIRE', KEYS[5], ARGV[2])
end
if ARGV[5] == '1' and target and n < target then
  if redis.call('ZADD', KEYS[2], target, target) == 1 then
    redis.call('EXPIRE', KEYS[2], ARGV[2])
  end
  if least == 0 or target < least then
    redis.call('BITFIELD', KEYS[4], 'SET', 'u32', '#0', target)
  end
end
local notify = target ~= nil and n == target
if least ~= 0 and n >= least then
  -- registered targets reached: drop them, keep the next smallest
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', n)
  local nxt = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  redis.call('BITFIELD', KEYS[4], 'SET', 'u32', '#0', nxt and tonumber(nxt) or 0)
  notify = true
end
if notify then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 's', KEYS[1], 'n', n)
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return n
