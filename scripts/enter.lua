-- enter.lua -- an instance enters a state (signal_entry, signal_and_wait).
--
-- KEYS[1]  state counter   P:states:<state>      (a string that INCRs: Go SDK compatible)
-- KEYS[2]  awaited targets P:tg:waits:<state>    (zset, member = score = target)
-- KEYS[3]  notify stream   P:tg:notify           (entries s=<KEYS[1]>, n=<count>)
-- KEYS[4]  membership      P:tg:members:<state>  (bitmap: bit <sid> = that instance
--                                                 entered; bit 0 = targets registered)
-- ARGV[1]  target the caller will wait for, or "" when it only signals
-- ARGV[2]  TTL in seconds for keys this run creates
-- ARGV[3]  the caller's instance number (global_seq), or "" before it has one
-- ARGV[4]  operation id, or "": a retry with the same id returns the first
--          answer instead of entering twice
-- Reply:   the caller's 1-based arrival order (the new count).
--
-- Atomic because the count, the membership and the decision to notify must
-- see one state: a waiter that registered its target before this entry is
-- woken by it, and one that registers after it reads a count that already
-- includes it.  Only an entry that reaches an awaited target notifies, once
-- for all the targets it reaches, so a barrier of N costs O(N) wake-ups.
-- The common round (every instance enters with the same target) costs three
-- commands per instance: this script, INCR, BITFIELD; the last one XADDs.
if ARGV[4] ~= "" then
  local prev = redis.call('GET', KEYS[1] .. ':op:' .. ARGV[4])
  if prev then return tonumber(prev) end
end
local n = redis.call('INCR', KEYS[1])
local flag
if ARGV[3] ~= "" then
  flag = redis.call('BITFIELD', KEYS[4], 'SET', 'u1', ARGV[3], 1, 'GET', 'u1', 0)[2]
else
  flag = redis.call('GETBIT', KEYS[4], 0)
end
if n == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
if ARGV[4] ~= "" then
  redis.call('SET', KEYS[1] .. ':op:' .. ARGV[4], n, 'EX', ARGV[2])
end
local target = tonumber(ARGV[1])
local notify = target ~= nil and n == target
if flag == 1 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', n, 'LIMIT', 0, 1)
  if due[1] then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', n)
    notify = true
  end
end
if notify then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 's', KEYS[1], 'n', n)
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return n
