-- roles_spec.lua -- tg.roles: plans for many instance counts and spec shapes
-- against an exact integer oracle of the documented rounding rule, every seq
-- of every plan through assign(), order independence, and every error.
local tg = require "tg"
local roles = require "tg.roles"
local sync = require "tg.sync"
local core = require "tg.core"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

-- Shapes are written for the oracle: C(k) a count, F(p, q) the fraction p/q,
-- R "rest".  spec_of() turns them into what a plan author writes.
local function C(k) return { kind = "count", k = k } end
local function F(p, q) return { kind = "frac", p = p, q = q } end
local R = { kind = "rest" }

local function spec_of(shape)
  local spec = {}
  for i, e in ipairs(shape) do
    local amount = e.kind == "count" and e.k or e.kind == "frac" and e.p / e.q or "rest"
    spec[i] = { e.name, amount }
  end
  return spec
end

local function gcd(a, b)
  while b ~= 0 do a, b = b, a % b end
  return a
end

-- The documented rule in exact integer arithmetic (no floats): the expected
-- counts in spec order, or nil when the fixed counts do not fit n.
local function oracle(shape, n)
  local fixed, rest, D = 0, nil, 1
  for i, e in ipairs(shape) do
    if e.kind == "count" then fixed = fixed + e.k
    elseif e.kind == "rest" then rest = i
    else D = D // gcd(D, e.q) * e.q end
  end
  if fixed > n then return nil end
  local m = n - fixed
  local S, counts, fracs, given = 0, {}, {}, 0
  for i, e in ipairs(shape) do
    if e.kind == "count" then counts[i] = e.k
    elseif e.kind == "frac" then
      S = S + e.p * (D // e.q)
      counts[i] = e.p * m // e.q
      given = given + counts[i]
      fracs[#fracs + 1] = { i = i, rem = (e.p * m % e.q) * (D // e.q) }   -- remainder, in 1/D units
    end
  end
  local target
  if rest then target = (2 * S * m + D) // (2 * D)   -- S/D * m, halves up
  elseif #fracs > 0 then assert(S == D, "oracle: fractions must add up to 1 without rest"); target = m
  else assert(fixed == n, "oracle: counts must add up without rest"); target = 0 end
  table.sort(fracs, function(a, b)
    if a.rem ~= b.rem then return a.rem > b.rem end
    return a.i < b.i
  end)
  for j = 1, target - given do counts[fracs[j].i] = counts[fracs[j].i] + 1 end
  if rest then counts[rest] = m - target end
  return counts
end

local function named(...)
  local shape = { ... }
  for i, e in ipairs(shape) do
    -- a copy per use: R is shared
    shape[i] = { kind = e.kind, k = e.k, p = e.p, q = e.q, name = "r" .. i }
  end
  return shape
end

local shapes = {
  ["bootstrapper, 20% seeds, rest leeches"] = named(C(1), F(1, 5), R),
  ["two halves"] = named(F(1, 2), F(1, 2)),
  ["rest in the middle"] = named(F(1, 10), R, F(3, 10), C(2)),
  ["rest first"] = named(R, C(3), F(1, 4)),
  ["an empty role first"] = named(C(0), R),
  ["an empty role between"] = named(C(3), C(0), R),
  ["only rest"] = named(R),
  ["a quarter and the rest (halves round up)"] = named(F(1, 4), R),
  ["tenths adding up to 1"] = named(F(1, 10), F(2, 10), F(3, 10), F(4, 10)),
  ["thirds"] = named(F(1, 3), F(1, 3), F(1, 3)),
  ["equal remainders tie by spec order"] = named(F(3, 10), F(7, 10)),
  ["float noise (0.29 * 100)"] = named(F(29, 100), F(71, 100)),
  ["most of them, then the rest"] = named(F(999, 1000), R),
  ["fractions below 1 with rest"] = named(C(2), F(1, 8), F(1, 8), F(1, 6), R),
  ["integer-valued floats are counts"] = named(C(2.0), C(1.0), R),
}

local function check_plan(label, shape, n)
  local spec = spec_of(shape)
  local want = oracle(shape, n)
  if not want then
    local ok, err = pcall(roles.plan, spec, n)
    assert(not ok and err.code == "invalid", ("%s, n=%d: expected a too-many error"):format(label, n))
    assert.matches("cannot assign %d+ instances? to fixed roles with only " .. n .. " instance", err.message)
    return 0
  end
  local plan = roles.plan(spec, n)
  local where = ("%s, n=%d"):format(label, n)
  assert.equal(#shape, #plan, where)
  local next_first, total = 1, 0
  for i, r in ipairs(plan) do
    assert.equal(shape[i].name, r.name, where)
    assert.equal(want[i], r.count, ("%s: role %s"):format(where, r.name))
    assert.equal(math.type(r.count), "integer", where)
    assert.equal(next_first, r.first, where)
    assert.equal(r.first + r.count - 1, r.last, where)
    if shape[i].kind == "count" then assert.equal(shape[i].k, r.count, where) end
    next_first, total = r.last + 1, total + r.count
  end
  assert.equal(n, total, where)

  -- every seq through assign(): exactly one role, indexes 1..count per role
  local seen = {}
  for _, r in ipairs(plan) do seen[r.name] = {} end
  for seq = 1, n do
    local role, index = roles.assign(spec, { seq = seq, count = n })
    assert(seen[role], where .. ": unknown role " .. tostring(role))
    assert(not seen[role][index], ("%s: %s index %d given twice"):format(where, role, index))
    seen[role][index] = seq
  end
  for _, r in ipairs(plan) do
    for idx = 1, r.count do
      assert(seen[r.name][idx] == r.first + idx - 1,
        ("%s: %s index %d is not seq %d"):format(where, r.name, idx, r.first + idx - 1))
    end
    assert.is_nil(seen[r.name][r.count + 1], where)
  end
  return n
end

describe("roles.plan and roles.assign", function()
  it("match the largest-remainder rule for n = 1..300 and every seq, for many shapes", function()
    local names = {}
    for label in pairs(shapes) do names[#names + 1] = label end
    table.sort(names)
    local checked = 0
    for _, label in ipairs(names) do
      for n = 1, 300 do checked = checked + check_plan(label, shapes[label], n) end
    end
    assert.is_true(checked > 300 * 300)   -- most shapes fit most n
  end)

  it("gives the examples of the documentation", function()
    local function counts(spec, n)
      local out = {}
      for i, r in ipairs(roles.plan(spec, n)) do out[i] = r.count end
      return out
    end
    assert.same({ 1, 2, 7 }, counts({ { "b", 1 }, { "s", 0.2 }, { "l", "rest" } }, 10))
    assert.same({ 4, 3 }, counts({ { "a", 0.5 }, { "b", 0.5 } }, 7))
    -- fractions share what the counts leave: 0.5 of 3 - 1 = 2
    assert.same({ 1, 1, 1 }, counts({ { "boot", 1 }, { "seed", 0.5 }, { "leech", "rest" } }, 3))
    -- 1.0 is the count one, not "all"
    assert.same({ 1, 4 }, counts({ { "one", 1.0 }, { "others", "rest" } }, 5))
    -- n = 0: an empty run has empty roles
    assert.same({ 0, 0 }, counts({ { "a", 0 }, { "b", "rest" } }, 0))
  end)

  it("gives seq ranges in spec order, empty roles included", function()
    assert.same({
      { name = "boot", count = 1, first = 1, last = 1 },
      { name = "none", count = 0, first = 2, last = 1 },
      { name = "leech", count = 6, first = 2, last = 7 },
      { name = "seed", count = 3, first = 8, last = 10 },
    }, roles.plan({ { "boot", 1 }, { "none", 0 }, { "leech", "rest" }, { "seed", 0.3 } }, 10))
  end)

  it("gives the same role for the same seq whatever order assign() is called in", function()
    local spec = { { "boot", 1 }, { "seed", 0.2 }, { "leech", "rest" }, { "obs", 3 } }
    local n = 57
    local forward = {}
    for seq = 1, n do forward[seq] = { roles.assign(spec, { seq = seq, count = n }) } end
    local order = {}
    for seq = 1, n do order[seq] = seq end
    for round = 1, 20 do
      if round == 1 then
        for i = 1, n // 2 do order[i], order[n + 1 - i] = order[n + 1 - i], order[i] end
      else
        for i = n, 2, -1 do
          local j = math.random(1, i)
          order[i], order[j] = order[j], order[i]
        end
      end
      for _, seq in ipairs(order) do
        -- another spec in between: assign() keeps no state
        roles.assign({ { "x", "rest" } }, { seq = seq, count = n })
        assert.same(forward[seq], { roles.assign(spec, { seq = seq, count = n }) })
      end
    end
  end)

  it("gives concurrent arrivals each a role, the counts exact, whoever comes first", function()
    local state = h.uniq("roles-arrive")
    local spec = { { "boot", 1 }, { "seed", 0.25 }, { "leech", "rest" } }
    local n = 21
    local tasks = {}
    for i = 1, n do
      tasks[i] = tg.spawn(function()
        tg.sleep(math.random() * 0.05)   -- a random arrival order
        local seq = sync.signal_entry(state)
        local role, index = roles.assign(spec, { seq = seq, count = n })
        return seq, role, index
      end)
    end
    local by_role = {}
    for i = 1, n do
      local seq, role, index = tasks[i]:join()
      by_role[role] = by_role[role] or {}
      assert.is_nil(by_role[role][index])
      by_role[role][index] = seq
    end
    for _, r in ipairs(roles.plan(spec, n)) do
      local got = by_role[r.name] or {}
      assert.equal(r.count, #got)
      for idx = 1, r.count do assert.equal(r.first + idx - 1, got[idx]) end
    end
  end)

  it("uses this instance's global_seq and instance_count, or its group's with opts.group", function()
    assert.equal(roles, tg.roles)
    local cfg = core.config()
    assert.is_number(cfg.global_seq)
    local spec = { { "first", 1 }, { "others", "rest" } }
    local role, index = roles.assign(spec)
    assert.equal(cfg.global_seq == 1 and "first" or "others", role)
    assert.equal(cfg.global_seq == 1 and 1 or cfg.global_seq - 1, index)
    local grole, gindex = roles.assign(spec, { group = true })
    assert.equal(cfg.group_seq == 1 and "first" or "others", grole)
    assert.equal(cfg.group_seq == 1 and 1 or cfg.group_seq - 1, gindex)
    -- opts.seq alone is checked against this run's instance count
    local ok, err = pcall(roles.assign, spec, { seq = cfg.instance_count + 1 })
    assert.is_false(ok)
    assert.equal("invalid", err.code)
    assert.matches("out of range 1%.%." .. cfg.instance_count, err.message)
  end)
end)

describe("roles errors", function()
  local fails = require("helpers").fails_invalid

  it("names fixed counts that need more instances than there are", function()
    fails("^roles%.plan: cannot assign 3 instances to fixed roles with only 2 instances$",
      roles.plan, { { "a", 1 }, { "b", 2 }, { "c", "rest" } }, 2)
    fails("^roles%.assign: cannot assign 2 instances to fixed roles with only 1 instance$",
      roles.assign, { { "a", 2 }, { "b", 0.5 } }, { seq = 1, count = 1 })
    -- huge counts do not wrap around
    fails("cannot assign %d+ instances to fixed roles with only 5 instances",
      roles.plan, { { "a", math.maxinteger }, { "b", math.maxinteger }, { "c", "rest" } }, 5)
  end)

  it("rejects duplicate role names", function()
    fails('role "seed" appears twice in the spec %(entries 1 and 3%)',
      roles.plan, { { "seed", 1 }, { "leech", "rest" }, { "seed", 0.5 } }, 10)
  end)

  it("rejects two rest roles", function()
    fails('only one role may take "rest", but "a" %(entry 1%) and "c" %(entry 3%) both do',
      roles.plan, { { "a", "rest" }, { "b", 1 }, { "c", "rest" } }, 10)
  end)

  it("rejects bad specs and entries", function()
    fails("spec must be a list of {role, amount} entries, got nothing", roles.plan, nil, 3)
    fails('spec must be a list of {role, amount} entries, got "a"', roles.plan, "a", 3)
    fails("spec must list at least one", roles.plan, {}, 3)
    fails('spec entry 1 must be a {role, amount} table, got "a"', roles.plan, { "a", 1 }, 3)
    fails("spec entry 2: the role name must be a non%-empty string, got an empty string",
      roles.plan, { { "a", 1 }, { "", "rest" } }, 3)
    fails("spec entry 1: the role name must be a non%-empty string, got 7", roles.plan, { { 7, "rest" } }, 3)
    fails('role "a": the amount must be a count, a fraction between 0 and 1 or "rest", got nothing',
      roles.plan, { { "a" } }, 3)
    fails('role "a": the amount must be .*got "all"', roles.plan, { { "a", "all" } }, 3)
    fails('role "a": the amount must be .*got a boolean', roles.plan, { { "a", true } }, 3)
    fails('role "a": a count must be a whole number >= 0, got %-1', roles.plan, { { "a", -1 }, { "b", "rest" } }, 3)
  end)

  it("rejects fractions > 1 or <= 0, NaN and infinities", function()
    for _, f in ipairs({ 1.5, -0.5, 0 / 0, math.huge, -math.huge, 1e300 * 10 }) do
      fails('role "a": a fraction must be > 0 and < 1 %(a whole number is a count%), got',
        roles.plan, { { "a", f }, { "b", "rest" } }, 10)
    end
    fails("the fractions add up to 1%.2, more than 1",
      roles.plan, { { "a", 0.6 }, { "b", 0.6 }, { "c", "rest" } }, 10)
  end)

  it("rejects counts or fractions that do not add up without rest", function()
    fails('the counts add up to 2 but the run has 3 instances; make them add up or give one role "rest"',
      roles.plan, { { "a", 1 }, { "b", 1 } }, 3)
    fails('the counts add up to 0 but the run has 1 instance;', roles.plan, { { "a", 0 } }, 1)
    fails('the fractions add up to 0%.8, not 1, and no role takes "rest"',
      roles.plan, { { "a", 0.5 }, { "b", 0.3 } }, 10)
    fails('the fractions add up to 0%.5, not 1', roles.plan, { { "a", 2 }, { "b", 0.5 } }, 10)
  end)

  it("rejects a bad instance count, seq or options", function()
    for _, n in ipairs({ -1, 2.5, "3" }) do
      fails("^roles%.plan: the instance count must be a whole number >= 0", roles.plan, { { "a", "rest" } }, n)
    end
    local spec = { { "a", 1 }, { "b", "rest" } }
    fails("^roles%.assign: seq 0 is out of range 1%.%.5$", roles.assign, spec, { seq = 0, count = 5 })
    fails("^roles%.assign: seq 6 is out of range 1%.%.5$", roles.assign, spec, { seq = 6, count = 5 })
    fails("seq must be a whole number, got 1%.5", roles.assign, spec, { seq = 1.5, count = 5 })
    fails("seq must be a whole number, got \"1\"", roles.assign, spec, { seq = "1", count = 5 })
    fails("the instance count must be a whole number >= 0, got %-2", roles.assign, spec, { seq = 1, count = -2 })
    fails("options must be a table, got 3", roles.assign, spec, 3)
    -- a bad spec is reported even for a seq that is out of range
    fails("appears twice", roles.assign, { { "a", 1 }, { "a", 1 } }, { seq = 9, count = 2 })
  end)
end)
