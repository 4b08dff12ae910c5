-- feasible.lua -- how far can a barrier still get, now that peers died?
--
-- KEYS[1]  state counter  P:states:<state>
-- KEYS[2]  slots          P:tg:members:<state> (low 31 bits of u32 slot <sid> != 0:
--                                               that instance entered)
-- KEYS[3]  dead instances P:tg:dead (set of sids)
-- Reply:   {count, number of dead instances, how many of them had entered,
--           "sid, sid, ..." of the dead}
--
-- Atomic so that the count and the membership agree.  The caller computes
-- the most that can ever enter: instances - dead + dead_entered.
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local dead = redis.call('SMEMBERS', KEYS[3])
local entered = 0
table.sort(dead, function(a, b) return (tonumber(a) or 0) < (tonumber(b) or 0) end)
local get = {}
for _, sid in ipairs(dead) do
  if tonumber(sid) then
    get[#get + 1] = 'GET'
    get[#get + 1] = 'u31'
    get[#get + 1] = 32 * tonumber(sid) + 1
  end
end
if #get > 0 then
  for _, seq in ipairs(redis.call('BITFIELD', KEYS[2], unpack(get))) do
    if seq ~= 0 then entered = entered + 1 end
  end
end
return { n, #dead, entered, table.concat(dead, ', ') }
