-- enter_batch.lua -- the entries and waits of one state that one process
-- gathered in one turn of its loop (signal_entry, signal_and_wait, barrier),
-- as one step.
--
-- KEYS[1]  state counter   P:states:<state>      (a string that INCRs: Go SDK compatible)
-- KEYS[2]  slots           P:tg:members:<state>  (one u32 slot per number i at byte 4i:
--                                                 its top bit set = target i awaited,
--                                                 its low 31 bits = instance i's seq)
-- KEYS[3]  notify stream   P:tg:notify           (entries s=<KEYS[1]>, n=<count>)
-- KEYS[4]  op ids          P:tg:ops:<state>      (hash op id -> seq; batch id -> n0)
-- ARGV[1]  TTL in seconds for keys this run creates
-- ARGV[2]  "1": a resend after a lost connection (the first send may have run)
-- ARGV[3]  batch id (unique in the run), or "": when the batch has an entry
--          with neither an instance number nor an op id, or two entries with
--          one instance number (tasks of one instance), the count before it
--          is recorded under this id, so that a resend can tell whether the
--          first send ran and answer exactly as it did
-- ARGV[4]  t, how many targets follow
-- ARGV[5]  e, how many entries follow the targets
-- ARGV[6]  "1" when a plain wait (barrier) is among the targets: the slots
--          key then gets its TTL whenever a target is registered (await.lua)
-- ARGV[7]  the lowest and ARGV[8] the highest instance number of the
--          entries, or "" (they tell whether the slots are written as one
--          stretch)
-- ARGV[9 .. 8+t]        the targets waited for, by entries and by plain
--                       waits (repeats allowed)
-- ARGV[9+t .. 8+t+e]    entry i's instance number (global_seq), or ""
-- ARGV[9+t+e ..]        pairs (i, op id) for the entries that have an op id
-- Reply:   {n0, n, i1, s1, i2, s2, ...}: the count was n0 before this
--          batch's new entries and is n after them; entry ij's seq is sj (an
--          op id that already had an answer, a second entry with the same op
--          id, an instance that had entered before a resend); every other
--          entry gets n0 + its place among those others, in order: new
--          entries are numbered consecutively in the order they were given.
--          The pairs come in increasing i; a resend that found the batch
--          done (all of it, or an instance's entry) ends them with (0, 0).
--          When there is no pair (every entry new: the usual case), just n
--          (n0 is n - e).
--
-- Atomic for the reasons enter.lua gives (one count, one membership, one
-- decision to notify -- a target T is registered only while the count is
-- below it, so the one batch that passes T sees it), and because a resend
-- must find the batch either done or not at all.  Per batch: one INCRBY, the
-- slots written in one BITFIELD (or, for many instance numbers close
-- together, one GETRANGE + SETRANGE that keeps every slot's top bit), the
-- targets registered in the same BITFIELD, the awaited bits in (n0, n] read
-- (in that BITFIELD when there are few, else one GETRANGE), and one XADD when
-- the batch reaches an awaited target or one of its own.  So N entries of
-- one process cost a handful of commands, not 3 N.  Targets above 1,000,000
-- are not registered (see enter.lua).
local ttl, resend, bid = ARGV[1], ARGV[2] == '1', ARGV[3]
local nt, ne, waits = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local slo, shi = tonumber(ARGV[7]), tonumber(ARGV[8])
local tb = 8                             -- ARGV[tb + j]: target j
local sb = tb + nt                       -- ARGV[sb + i]: entry i's sid
local ob = sb + ne                       -- ARGV[ob + 2j - 1], ARGV[ob + 2j]: entry index, op id
local nops = (#ARGV - ob) / 2
local MAXREG = 1000000
local CHUNK = 4000                       -- values per unpack (Lua 5.1 allows < 8000): whole SETs

-- entries answered without a new seq (nil while there is none): listed[i]
-- = its seq, same[i] = the earlier entry with its op id; opof[i] = the op
-- id of a new entry that is the first with it, opname[i] = entry i's op id
local listed, same, opof, opname
local k = ne                             -- new entries
local replayed = false                   -- a resend found entries of this batch done

if nops > 0 then
  -- op ids: one HMGET; an op id with an answer answers its entry
  listed, same, opof, opname = {}, {}, {}, {}
  local names, first = {}, {}
  for j = 1, nops do names[j] = ARGV[ob + 2 * j] end
  local prev = {}
  for a = 1, nops, CHUNK do
    for _, v in ipairs(redis.call('HMGET', KEYS[4], unpack(names, a, math.min(a + CHUNK - 1, nops)))) do
      prev[#prev + 1] = v
    end
  end
  for j = 1, nops do
    local i, op = tonumber(ARGV[ob + 2 * j - 1]), names[j]
    opname[i] = op
    if prev[j] then listed[i] = tonumber(prev[j]); k = k - 1
    elseif first[op] then same[i] = first[op]; k = k - 1
    else first[op] = i; opof[i] = op end
  end
end

local was = resend and bid ~= '' and redis.call('HGET', KEYS[4], bid)
if was then
  -- a resend, and the first send ran (and recorded every op id it saw
  -- new): answer every entry as then.  An op id whose answer is above that
  -- n0 got it from that very batch: its first entry was new (numbered in
  -- order), later ones were listed.
  local n0 = tonumber(was)
  local out, new = { n0, tonumber(redis.call('GET', KEYS[1]) or '0') or 0 }, {}
  for i = 1, ne do
    local s, op = listed and listed[i], opname and opname[i]
    if s and s > n0 and not new[op] then new[op] = true; s = nil end
    if s then out[#out + 1] = i; out[#out + 1] = s end
  end
  out[#out + 1] = 0; out[#out + 1] = 0
  return out
elseif resend then
  -- no record: the first send did not run, or every entry of it has its
  -- own instance number, and an instance that already entered gets its seq
  -- back (as enter.lua)
  listed, same = listed or {}, same or {}
  local get, idx = {}, {}
  for i = 1, ne do
    local sid = ARGV[sb + i]
    if sid ~= '' and not listed[i] and not same[i] then
      get[#get + 1] = 'GET'; get[#get + 1] = 'u31'; get[#get + 1] = 32 * sid + 1
      idx[#idx + 1] = i
    end
  end
  local r = {}
  for a = 1, #get, CHUNK - 1 do
    for _, v in ipairs(redis.call('BITFIELD', KEYS[2], unpack(get, a, math.min(a + CHUNK - 2, #get)))) do
      r[#r + 1] = v
    end
  end
  for j, i in ipairs(idx) do
    if r[j] ~= 0 then
      replayed = true
      listed[i] = r[j]; k = k - 1
      if opof then opof[i] = nil end
    end
  end
end

-- the new entries, numbered in order
local n
if k > 0 then n = redis.call('INCRBY', KEYS[1], k)
else n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 end
local n0 = n - k

-- their slots: seq s of instance i in the low 31 bits of slot i: one
-- SET u31 each in the BITFIELD, or -- many instance numbers close together
-- (an in-process run's) -- their stretch of slots rewritten at once with
-- GETRANGE + SETRANGE, each slot's top bit (a registered target) kept.
-- The batch needs its record (ARGV[3]) when an entry has neither a number
-- nor an op id, when a number comes twice, or when its slot already held a
-- seq (the instance entered before): then its slot cannot tell a resend
-- whether this batch ran.
local ops, m, nop = {}, 0, 0             -- BITFIELD arguments, their count, operations
if n0 == 0 and k > 0 then ops = { 'SET', 'u1', 0, 0 }; m = 4; nop = 1 end  -- makes the key (slot 0 is nobody's)
local stretch = k >= 32 and slo and shi and slo >= 1 and shi - slo < 4 * k and shi - slo < 4000000
local at = stretch and {} or nil         -- at[sid - slo + 1] = its seq, then its slot's 4 bytes
local seen = not stretch and k > 1 and {} or nil
local record = false
local hset, seqof = {}, opof and {} or nil
local sidop, nsidop = nop + 1, 0         -- the BITFIELD operations that write slots
local rank = 0
for i = 1, ne do
  if not (listed and (listed[i] or same[i])) then
    rank = rank + 1
    local sid = tonumber(ARGV[sb + i])
    if not sid then
      if not (opof and opof[i]) then record = true end
    elseif at then
      local p = sid - slo + 1
      if at[p] then record = true end
      at[p] = n0 + rank
    else
      if seen then
        if seen[sid] then record = true end
        seen[sid] = true
      end
      ops[m + 1] = 'SET'; ops[m + 2] = 'u31'; ops[m + 3] = 32 * sid + 1; ops[m + 4] = n0 + rank
      m = m + 4; nop = nop + 1; nsidop = nsidop + 1
    end
    if opof and opof[i] then
      hset[#hset + 1] = opof[i]; hset[#hset + 1] = n0 + rank
      seqof[i] = n0 + rank
    end
  end
end
if at then
  local len = shi - slo + 1
  local s = redis.call('GETRANGE', KEYS[2], 4 * slo, 4 * shi + 3)
  local pack = struct.pack
  if not string.find(s, '[^%z]') then
    -- nothing there yet (a new state's first batch): no slot to keep
    for p = 1, len do
      local q = at[p]
      at[p] = q and pack('>I4', q) or '\0\0\0\0'
    end
  else
    if #s < 4 * len then s = s .. string.rep('\0', 4 * len - #s) end
    local unpack4 = struct.unpack
    for p = 1, len do
      local q = at[p]
      if q then
        local old = unpack4('>I4', s, 4 * p - 3)
        if old >= 2147483648 then q = q + 2147483648; old = old - 2147483648 end
        if old ~= 0 then record = true end
        at[p] = pack('>I4', q)
      else
        at[p] = string.sub(s, 4 * p - 3, 4 * p)
      end
    end
  end
  redis.call('SETRANGE', KEYS[2], 4 * slo, table.concat(at))
end

-- targets: register those above the count; does this batch reach one?
local reached, registered = false, false
for j = 1, nt do
  local target = tonumber(ARGV[tb + j])
  if target then
    if n < target and target <= MAXREG then
      ops[m + 1] = 'SET'; ops[m + 2] = 'u1'; ops[m + 3] = 32 * target; ops[m + 4] = 1
      m = m + 4; nop = nop + 1
      registered = true
    elseif n0 < target and target <= n then
      reached = true
    end
  end
end
-- ... or one that somebody registered, in (n0, n]: a few slots are read in
-- the same BITFIELD, many as bytes (the first byte of each slot)
local rlo, rhi = n0 + 1, math.min(n, MAXREG)
local gets = 0
if not reached and rlo <= rhi and rhi - rlo < 32 and m + 3 * (rhi - rlo + 1) <= CHUNK then
  for i = rlo, rhi do
    ops[m + 1] = 'GET'; ops[m + 2] = 'u1'; ops[m + 3] = 32 * i
    m = m + 3; nop = nop + 1
    gets = gets + 1
  end
end
if m > 0 then
  local r
  if m <= CHUNK then r = redis.call('BITFIELD', KEYS[2], unpack(ops))
  else                                   -- (only SETs: 4 values each)
    r = {}
    for a = 1, m, CHUNK do
      for _, v in ipairs(redis.call('BITFIELD', KEYS[2], unpack(ops, a, math.min(a + CHUNK - 1, m)))) do
        r[#r + 1] = v
      end
    end
  end
  for j = sidop, sidop + nsidop - 1 do if r[j] ~= 0 then record = true end end
  for j = nop - gets + 1, nop do if r[j] == 1 then reached = true end end
end
if not reached and rlo <= rhi and gets == 0 then
  local s = redis.call('GETRANGE', KEYS[2], 4 * rlo, 4 * rhi + 3) .. '\0\0\0'
  if string.find(string.gsub(s, '(.)...', '%1'), '[\128-\255]') then reached = true end
end

if n0 == 0 and k > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
elseif waits and registered then
  redis.call('EXPIRE', KEYS[2], ttl)
end
if record and bid ~= '' then hset[#hset + 1] = bid; hset[#hset + 1] = n0 end
if #hset > 0 then
  for a = 1, #hset, CHUNK do redis.call('HSET', KEYS[4], unpack(hset, a, math.min(a + CHUNK - 1, #hset))) end
  redis.call('EXPIRE', KEYS[4], ttl)
end
if reached then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 's', KEYS[1], 'n', n)
  redis.call('EXPIRE', KEYS[3], ttl)
end

if not listed then return n end
local out = { n0, n }
for i = 1, ne do
  local s = listed[i]
  if not s and same[i] then s = listed[same[i]] or seqof[same[i]] or 0 end
  if s then out[#out + 1] = i; out[#out + 1] = s end
end
if replayed then out[#out + 1] = 0; out[#out + 1] = 0 end
return out
