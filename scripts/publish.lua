-- publish.lua -- append a value to a topic.
--
-- KEYS[1]  topic stream P:topics:<topic> (field p = JSON, as the Go SDK writes)
-- ARGV[1]  the JSON value
-- ARGV[2]  TTL in seconds
-- Reply:   the value's 1-based position in the topic.
--
-- Atomic so that the position returned is the entry's own: XADD and XLEN in
-- one step (the Go SDK used MULTI for the same reason), in one round trip.
redis.call('XADD', KEYS[1], '*', 'p', ARGV[1])
local n = redis.call('XLEN', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n
