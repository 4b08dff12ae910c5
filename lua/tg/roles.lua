-- tg.roles -- deterministic role assignment.  Every instance computes the
-- same plan from the spec and the instance count, and takes the role whose
-- range holds its arrival order (global_seq, or group_seq with opts.group),
-- so no coordination is needed and the answer does not depend on who
-- arrives first: the seq-th arrival always gets the same role.
--
--   local roles = require "tg.roles"
--   local role, index = roles.assign({ { "bootstrapper", 1 }, { "seed", 0.2 }, { "leech", "rest" } })
--   -- 10 instances: seq 1 is bootstrapper 1, seqs 2-3 are seed 1-2, seqs 4-10 are leech 1-7
--
-- A spec is an ordered list of {role, amount}; role names are non-empty and
-- unique.  An amount is
--   * a count: a whole number >= 0.  Any integer-valued number is a count,
--     so 2.0 is two instances and 1.0 is ONE instance, not "all" (use
--     "rest", or a fraction list that adds up to 1, for "all");
--   * a fraction: a number with 0 < f < 1, a share of the instances LEFT
--     AFTER THE FIXED COUNTS (m = n - sum of counts);
--   * "rest": whatever the counts and fractions leave (at most one entry,
--     anywhere in the list).
--
-- Rounding (largest remainder).  Fraction i has the quota q_i = f_i * m.
-- The fractions together get T instances, where T = m when there is no
-- "rest" (the fractions must then add up to 1), and T = F * m rounded to the
-- nearest whole number, halves up, when there is one (F = sum of the f_i,
-- at most 1).  Each fraction first gets floor(q_i); the T - sum(floor(q_i))
-- instances left over go one each to the fractions with the largest
-- remainders q_i - floor(q_i), ties broken by spec order (earlier first).
-- Examples: n = 10, {{"b",1},{"s",0.2},{"l","rest"}} -> m = 9, q = 1.8 ->
-- 1, 2, 7;  n = 7, {{"a",0.5},{"b",0.5}} -> 3.5, 3.5 -> 4, 3.
-- Without "rest", counts alone must add up to n exactly.
--
-- Roles take consecutive seq ranges in spec order: the first entry gets
-- seqs 1..count_1, the next the following ones, and so on; a role with
-- count 0 has the empty range first = last + 1.
local core = require "tg.core"

local roles = {}

-- Float slack: 0.1 + 0.2 + 0.7 is not exactly 1, and 0.29 * 100 is
-- 28.999999999999996; neither should change a count.
local EPS = 1e-9

local function fail(fmt, ...)
  -- an error value, not a string: the level adds no position to it
  error(core.error("invalid", fmt:format(...)), 2)
end

local show = require("tg.check").describe

local function num(x)   -- a float for a message, without float noise
  return ("%.10g"):format(x)
end

local function plural(k, word)
  return ("%s %s%s"):format(k, word, k == 1 and "" or "s")
end

-- Validate the spec; returns entries {name=, kind=, value=}, the sum of the
-- counts (a float when it would not fit n: only for the message), the sum
-- of the fractions, the index of "rest" or nil, and the number of fractions.
local function parse(call, spec, n)
  if type(spec) ~= "table" then
    fail('%s: spec must be a list of {role, amount} entries, got %s', call, show(spec))
  end
  if #spec == 0 then
    fail('%s: spec must list at least one {role, amount} entry', call)
  end
  local entries, seen = {}, {}
  local fixed, frac, nfrac, rest = 0, 0, 0, nil
  for i = 1, #spec do
    local e = spec[i]
    if type(e) ~= "table" then
      fail('%s: spec entry %d must be a {role, amount} table, got %s', call, i, show(e))
    end
    local name, amount = e[1], e[2]
    if type(name) ~= "string" or name == "" then
      fail('%s: spec entry %d: the role name must be a non-empty string, got %s', call, i, show(name))
    end
    if seen[name] then
      fail('%s: role "%s" appears twice in the spec (entries %d and %d)', call, name, seen[name], i)
    end
    seen[name] = i
    local kind, value
    if amount == "rest" then
      if rest then
        fail('%s: only one role may take "rest", but "%s" (entry %d) and "%s" (entry %d) both do',
          call, entries[rest].name, rest, name, i)
      end
      kind, rest = "rest", i
    elseif type(amount) == "number" and math.tointeger(amount) then
      value = math.tointeger(amount)
      if value < 0 then
        fail('%s: role "%s": a count must be a whole number >= 0, got %s', call, name, show(amount))
      end
      kind = "count"
      -- a count larger than n already fails; summing in floats then keeps
      -- huge counts from wrapping around
      fixed = (value > n or math.type(fixed) == "float") and fixed + (value + 0.0) or fixed + value
    elseif type(amount) == "number" then
      if not (amount > 0 and amount < 1) then   -- also NaN
        fail('%s: role "%s": a fraction must be > 0 and < 1 (a whole number is a count), got %s',
          call, name, show(amount))
      end
      kind, value = "fraction", amount
      frac, nfrac = frac + amount, nfrac + 1
    else
      fail('%s: role "%s": the amount must be a count, a fraction between 0 and 1 or "rest", got %s',
        call, name, show(amount))
    end
    entries[i] = { name = name, kind = kind, value = value }
  end
  if frac > 1 + EPS then
    fail('%s: the fractions add up to %s, more than 1', call, num(frac))
  end
  return entries, fixed, frac, rest, nfrac
end

local function build(call, spec, n)
  if type(n) ~= "number" or not math.tointeger(n) or n < 0 then
    fail('%s: the instance count must be a whole number >= 0, got %s', call, show(n))
  end
  n = math.tointeger(n)
  local entries, fixed, frac, rest, nfrac = parse(call, spec, n)
  if fixed > n then
    fail('%s: cannot assign %s to fixed roles with only %s', call,
      plural(math.type(fixed) == "float" and ("%.0f"):format(fixed) or fixed, "instance"),
      plural(n, "instance"))
  end
  local m = n - fixed           -- what the fractions and "rest" share
  local target                  -- how many of the m the fractions get
  if rest then
    target = math.floor(frac * m + 0.5 + EPS)
  elseif nfrac > 0 then
    if frac < 1 - EPS then
      fail('%s: the fractions add up to %s, not 1, and no role takes "rest"', call, num(frac))
    end
    target = m
  else
    if fixed ~= n then
      fail('%s: the counts add up to %d but the run has %s; make them add up or give one role "rest"',
        call, fixed, plural(n, "instance"))
    end
    target = 0
  end

  -- largest remainder: floors first, then one more each to the largest
  -- remainders.  Remainders are compared as integers (in 1e-9 units) so
  -- float noise cannot reorder them and the sort order stays strict.
  local given, order = 0, {}
  for i, e in ipairs(entries) do
    if e.kind == "fraction" then
      local q = e.value * m
      e.count = math.floor(q + EPS)
      e.rem = math.floor(math.max(0, q - e.count) / EPS + 0.5)
      e.pos = i
      given = given + e.count
      order[#order + 1] = e
    elseif e.kind == "count" then
      e.count = e.value
    end
  end
  table.sort(order, function(a, b)
    if a.rem ~= b.rem then return a.rem > b.rem end
    return a.pos < b.pos
  end)
  local extra = target - given
  assert(extra >= 0 and extra <= #order, "roles: largest-remainder rounding went wrong")
  for j = 1, extra do order[j].count = order[j].count + 1 end
  if rest then entries[rest].count = m - target end

  local plan, first = {}, 1
  for i, e in ipairs(entries) do
    plan[i] = { name = e.name, count = e.count, first = first, last = first + e.count - 1 }
    first = first + e.count
  end
  assert(first == n + 1, "roles: the plan does not cover every instance")
  return plan
end

-- roles.plan(spec, n) -> { {name =, count =, first =, last =}, ... }
-- The whole assignment for n instances, in spec order: role i holds the
-- seqs first..last (count = last - first + 1, possibly 0).  Pure; raises
-- "invalid" for a bad spec or one that does not fit n.
function roles.plan(spec, n)
  return build("roles.plan", spec, n)
end

-- roles.assign(spec [, opts]) -> role, index
-- This instance's role and its 1-based place within that role.  Uses
-- global_seq and instance_count from the instance's configuration, or with
-- opts.group = true group_seq and group_instance_count; opts.seq and
-- opts.count override them (to ask on behalf of another instance).  Does
-- not yield.
function roles.assign(spec, opts)
  if opts ~= nil and type(opts) ~= "table" then
    fail('roles.assign: options must be a table, got %s', show(opts))
  end
  opts = opts or {}
  local cfg = core.config()
  local seq_field = opts.group and "group_seq" or "global_seq"
  local count_field = opts.group and "group_instance_count" or "instance_count"
  local seq, n = opts.seq, opts.count
  if seq == nil then seq = cfg[seq_field] end
  if n == nil then n = cfg[count_field] end
  if seq == nil then
    fail('roles.assign: this instance has no %s yet (it is taken at start-up, before the case runs); pass opts.seq',
      seq_field)
  end
  if type(seq) ~= "number" or not math.tointeger(seq) then
    fail('roles.assign: seq must be a whole number, got %s', show(seq))
  end
  seq = math.tointeger(seq)
  local plan = build("roles.assign", spec, n)
  if seq < 1 or seq > n then
    fail('roles.assign: seq %d is out of range 1..%d', seq, n)
  end
  for _, r in ipairs(plan) do
    if seq <= r.last then return r.name, seq - r.first + 1 end
  end
  error("roles: unreachable")   -- the plan covers 1..n
end

return roles
