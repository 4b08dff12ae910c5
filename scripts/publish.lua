-- publish.lua -- append a value to a topic.
--
-- KEYS[1]  topic stream P:topics:<topic> (field p = JSON, as the Go SDK writes)
-- KEYS[2]  this publish's record P:tg:op:<op id> (its position, for a resend)
-- ARGV[1]  the JSON value
-- ARGV[2]  TTL in seconds
-- ARGV[3]  "1": a resend after a lost connection (the first send may have
--          run): a value already added under this op id is not added again
-- Reply:   the value's 1-based position in the topic.
--
-- Atomic so that the position returned is the entry's own: XADD and XLEN in
-- one step (the Go SDK used MULTI for the same reason), in one round trip;
-- and so that the record and the entry are one fact.
if ARGV[3] == '1' then
  local prev = redis.call('GET', KEYS[2])
  if prev then return tonumber(prev) end
end
redis.call('XADD', KEYS[1], '*', 'p', ARGV[1])
local n = redis.call('XLEN', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
redis.call('SET', KEYS[2], n, 'EX', ARGV[2])
return n
