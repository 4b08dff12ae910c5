-- enter_batch.lua -- the entries and waits of one state that one process
-- gathered in one turn of its loop (signal_entry, signal_and_wait, barrier),
-- as one step.
--
-- KEYS[1]  state counter   P:states:<state>      (a string that INCRs: Go SDK compatible)
-- KEYS[2]  slots           P:tg:members:<state>  (BITFIELD, one u32 slot per number i:
--                                                 its top bit set = target i awaited,
--                                                 its low 31 bits = instance i's seq)
-- KEYS[3]  notify stream   P:tg:notify           (entries s=<KEYS[1]>, n=<count>)
-- KEYS[4]  op ids          P:tg:ops:<state>      (hash op id -> seq; also batch id -> n0)
-- ARGV[1]  TTL in seconds for keys this run creates
-- ARGV[2]  "1": a resend after a lost connection (the first send may have run)
-- ARGV[3]  batch id, or "": given when an entry has neither an instance
--          number nor an op id, so that a resend can find what the first
--          send did (the count before it is recorded under this id)
-- ARGV[4]  t, how many targets follow
-- ARGV[5]  e, how many entries follow the targets
-- ARGV[6]  "1" when a plain wait (barrier) is among the targets: the slots
--          key then gets its TTL whenever a target is registered (await.lua)
-- ARGV[7 .. 6+t]        the targets waited for (of entries and of plain
--                       waits; duplicates allowed)
-- ARGV[7+t .. 6+t+e]    entry i's instance number (global_seq), or ""
-- ARGV[7+t+e ..]        pairs (i, op id) for the entries that have an op id
-- Reply:   {n0, n, i1, s1, i2, s2, ...}: the count was n0 before this
--          batch's new entries and is n after them; entry ij's seq is sj
--          (an op id that had an answer, a second entry with the same op id,
--          an instance that had entered before a resend); every other entry
--          gets n0 + its place among those others, in order: the new
--          entries are numbered consecutively in the order they were given.
--
-- Atomic for the reasons enter.lua gives (one count, one membership, one
-- decision to notify), and because a resend must find the batch either done
-- or not at all.  The cost per entry is one BITFIELD SET (its seq) and a
-- little Lua; per batch: one INCRBY, one BITFIELD (split when it would pass
-- Lua 5.1's unpack limit), one read of the awaited bits between n0 and n,
-- and, when the batch reaches an awaited target, one XADD -- so a barrier of
-- N instances in one process is a handful of commands, not 3 N.  Targets
-- above 1,000,000 are not registered (see enter.lua).
local ttl, resend, bid = ARGV[1], ARGV[2] == '1', ARGV[3]
local nt, ne, waits = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local tb, sb = 6, 6 + nt                 -- ARGV[tb + j]: target j; ARGV[sb + i]: entry i's sid
local ob = sb + ne                       -- ARGV[ob + 2j - 1], ARGV[ob + 2j]: index and op id
local nops = (#ARGV - ob) / 2
local MAXREG = 1000000
local CHUNK = 4000                       -- values per unpack (Lua 5.1 allows < 8000); SETs are 4 wide

local listed = {}                        -- entry index -> seq, for entries not numbered n0 + k
local same = {}                          -- entry index -> earlier entry index with the same op id
local opof = {}                          -- entry index -> op id (first occurrence of it)

-- cmd key args[from..to], in calls of at most `per` values (a multiple of
-- the width of one operation); the replies' elements, concatenated
local function chunked(cmd, key, args, from, to, per)
  local out = {}
  for a = from, to, per do
    local r = redis.call(cmd, key, unpack(args, a, math.min(a + per - 1, to)))
    if type(r) == 'table' then for _, v in ipairs(r) do out[#out + 1] = v end end
  end
  return out
end

-- op ids: one HMGET; an op id with an answer answers its entry
if nops > 0 then
  local names, first = {}, {}
  for j = 1, nops do names[j] = ARGV[ob + 2 * j] end
  local prev = chunked('HMGET', KEYS[4], names, 1, nops, CHUNK)
  for j = 1, nops do
    local i, op = tonumber(ARGV[ob + 2 * j - 1]), names[j]
    if prev[j] then listed[i] = tonumber(prev[j])
    elseif first[op] then same[i] = first[op]
    else first[op] = i; opof[i] = op end
  end
end

-- the reply: n0, n, then (i, seq) for every entry not numbered n0 + k, in order
local function reply(n0, n, seqof)
  local out = { n0, n }
  for i = 1, ne do
    local s = listed[i]
    if not s and same[i] then s = listed[same[i]] or seqof[same[i]] or 0 end
    if s then out[#out + 1] = i; out[#out + 1] = s end
  end
  return out
end

if resend and bid ~= '' then
  -- a resend of a batch with a batch id: did the first send run?
  local n0 = redis.call('HGET', KEYS[4], bid)
  if n0 then
    -- it did: answer every entry as it answered then.  An op id whose
    -- answer came from that very batch has a seq above n0: it was new.
    n0 = tonumber(n0)
    for i, s in pairs(listed) do if s > n0 then listed[i] = nil end end
    local seqof, rank = {}, 0
    for i = 1, ne do
      if not listed[i] and not same[i] then rank = rank + 1; seqof[i] = n0 + rank end
    end
    return reply(n0, tonumber(redis.call('GET', KEYS[1]) or '0') or 0, seqof)
  end
elseif resend then
  -- an instance that already entered gets its seq back (as enter.lua)
  local get, idx = {}, {}
  for i = 1, ne do
    local sid = ARGV[sb + i]
    if sid ~= '' and not listed[i] and not same[i] then
      get[#get + 1] = 'GET'; get[#get + 1] = 'u31'; get[#get + 1] = 32 * sid + 1
      idx[#idx + 1] = i
    end
  end
  if #get > 0 then
    local r = chunked('BITFIELD', KEYS[2], get, 1, #get, CHUNK - 1)
    for j, i in ipairs(idx) do
      if r[j] ~= 0 then listed[i] = r[j]; opof[i] = nil end
    end
  end
end

-- the new entries, numbered in order
local k = ne
for _ in pairs(listed) do k = k - 1 end
for _ in pairs(same) do k = k - 1 end
local n
if k > 0 then n = redis.call('INCRBY', KEYS[1], k)
else n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 end
local n0 = n - k

local ops, hset, seqof = {}, {}, {}
if n0 == 0 and k > 0 then ops = { 'SET', 'u1', 0, 0 } end    -- makes the key (slot 0 is nobody's)
local m, rank = #ops, 0
for i = 1, ne do
  if not listed[i] and not same[i] then
    rank = rank + 1
    local sid = ARGV[sb + i]
    if sid ~= '' then
      ops[m + 1] = 'SET'; ops[m + 2] = 'u31'; ops[m + 3] = 32 * sid + 1; ops[m + 4] = n0 + rank
      m = m + 4
    end
    if opof[i] then
      hset[#hset + 1] = opof[i]; hset[#hset + 1] = n0 + rank
      seqof[i] = n0 + rank
    end
  end
end

-- targets: register those above the count; does this batch reach one?
local reached, registered = false, false
for j = 1, nt do
  local target = tonumber(ARGV[tb + j])
  if target then
    if n < target and target <= MAXREG then
      ops[m + 1] = 'SET'; ops[m + 2] = 'u1'; ops[m + 3] = 32 * target; ops[m + 4] = 1
      m = m + 4
      registered = true
    elseif n0 < target and target <= n then
      reached = true
    end
  end
end
-- ... or one that somebody registered, in (n0, n]: a few slots are read
-- in the same BITFIELD, many as bytes (the first byte of each slot)
local lo, hi = n0 + 1, math.min(n, MAXREG)
local gets = 0
if not reached and lo <= hi and hi - lo < 32 and m + 3 * (hi - lo + 1) <= CHUNK then
  for i = lo, hi do
    ops[m + 1] = 'GET'; ops[m + 2] = 'u1'; ops[m + 3] = 32 * i
    m = m + 3
    gets = gets + 1
  end
end
if m > 0 then
  local r = m <= CHUNK and redis.call('BITFIELD', KEYS[2], unpack(ops)) or chunked('BITFIELD', KEYS[2], ops, 1, m, CHUNK)
  for j = #r - gets + 1, #r do if r[j] == 1 then reached = true end end
end
if not reached and lo <= hi and gets == 0 then
  local s = redis.call('GETRANGE', KEYS[2], 4 * lo, 4 * hi + 3) .. '\0\0\0'
  if s:gsub('(.)...', '%1'):find('[\128-\255]') then reached = true end
end

if n0 == 0 and k > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
elseif waits and registered then
  redis.call('EXPIRE', KEYS[2], ttl)
end
if bid ~= '' then hset[#hset + 1] = bid; hset[#hset + 1] = n0 end
if #hset > 0 then
  chunked('HSET', KEYS[4], hset, 1, #hset, CHUNK)
  redis.call('EXPIRE', KEYS[4], ttl)
end
if reached then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 's', KEYS[1], 'n', n)
  redis.call('EXPIRE', KEYS[3], ttl)
end
return reply(n0, n, seqof)
