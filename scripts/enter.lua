-- enter.lua -- an instance enters a state (signal_entry, signal_and_wait).
--
-- KEYS[1]  state counter   P:states:<state>      (a string that INCRs: Go SDK compatible)
-- KEYS[2]  slots           P:tg:members:<state>  (BITFIELD, one u32 slot per number i:
--                                                 its top bit set = target i awaited,
--                                                 its low 31 bits = instance i's seq)
-- KEYS[3]  notify stream   P:tg:notify           (entries s=<KEYS[1]>, n=<count>)
-- KEYS[4]  op ids          P:tg:ops:<state>      (hash op id -> seq)
-- ARGV[1]  target the caller will wait for, or "" when it only signals
-- ARGV[2]  TTL in seconds for keys this run creates
-- ARGV[3]  the caller's instance number (global_seq), or "" before it has one
-- ARGV[4]  operation id, or "": a retry with the same id returns the first
--          answer instead of entering twice
-- ARGV[5]  "1": a resend after a lost connection (the first send may have
--          run): an instance that already entered gets its seq back
-- Reply:   the caller's 1-based arrival order (the new count).
--
-- Atomic because the count, the membership and the decision to notify must
-- see one state: a waiter whose target is registered before this entry is
-- woken by it, and one that registers after it reads a count that already
-- includes it.  A waiter registers its target in the same BITFIELD that
-- records its seq (a target T is registered only while the count is below
-- it, so exactly one later entry has n == T); an entry notifies when n is
-- its own target or a registered one -- once, however many wait -- so a
-- barrier of N costs O(N) wake-ups and every entry three commands (this
-- script, INCR, BITFIELD), plus the one XADD that releases everybody.
-- Targets above 1,000,000 are not registered (their slot would make the key
-- large): an entry with that very target, or the once-a-second re-check,
-- releases them.
local sid, op = ARGV[3], ARGV[4]
if op ~= '' then
  local prev = redis.call('HGET', KEYS[4], op)
  if prev then return tonumber(prev) end
end
if ARGV[5] == '1' and sid ~= '' then
  local seq = redis.call('BITFIELD', KEYS[2], 'GET', 'u31', 32 * sid + 1)[1]
  if seq ~= 0 then return seq end
end
local n = redis.call('INCR', KEYS[1])
local target = tonumber(ARGV[1])
local ops = {}
if n == 1 then ops = { 'SET', 'u1', 0, 0 } end  -- makes the key (slot 0 is nobody's), for its TTL
if sid ~= '' then
  ops[#ops + 1] = 'SET'; ops[#ops + 1] = 'u31'; ops[#ops + 1] = 32 * sid + 1; ops[#ops + 1] = n
end
if target and n < target and target <= 1000000 then
  ops[#ops + 1] = 'SET'; ops[#ops + 1] = 'u1'; ops[#ops + 1] = 32 * target; ops[#ops + 1] = 1
end
local reached = 0
if n <= 1000000 then
  ops[#ops + 1] = 'GET'; ops[#ops + 1] = 'u1'; ops[#ops + 1] = 32 * n
  local r = redis.call('BITFIELD', KEYS[2], unpack(ops))
  reached = r[#r]
elseif #ops > 0 then
  redis.call('BITFIELD', KEYS[2], unpack(ops))
end
if n == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
if op ~= '' then
  redis.call('HSET', KEYS[4], op, n)
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
if (target ~= nil and n == target) or reached == 1 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 's', KEYS[1], 'n', n)
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return n
