-- feasible.lua -- how far can a barrier still get, now that peers died?
--
-- KEYS[1]  state counter  P:states:<state>
-- KEYS[2]  membership     P:tg:members:<state> (bit <sid> set: that instance entered)
-- KEYS[3]  dead instances P:tg:dead (set of sids)
-- Reply:   {count, number of dead instances, how many of them had entered,
--           "sid, sid, ..." of the dead}
--
-- Atomic so that the count and the membership agree.  The caller computes
-- the most that can ever enter: instances - dead + dead_entered.
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local dead = redis.call('SMEMBERS', KEYS[3])
local entered = 0
table.sort(dead, function(a, b) return tonumber(a) < tonumber(b) end)
for _, sid in ipairs(dead) do
  entered = entered + redis.call('GETBIT', KEYS[2], sid)
end
return { n, #dead, entered, table.concat(dead, ", ") }
