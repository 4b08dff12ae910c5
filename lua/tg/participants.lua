-- tg.participants -- who takes part in a choreography snippet (tg.phases,
-- tg.exchange, tg.broadcast, tg.rounds), and the option checks they share.
--
-- A snippet counts its participants either over the whole run (global_seq
-- of instance_count) or, with opts.group = true, within this instance's
-- composition group (group_seq of group_instance_count; the group's id then
-- goes into every state and topic name, so groups do not meet).  opts.count
-- and opts.seq override the two numbers, like tg.roles.assign's: to let a
-- subset take part, or to act for several participants from tasks of one
-- instance (the snippets' specs do that).
--
-- Snippets use a state or topic name once per participant: a barrier state
-- entered twice counts twice, so a second run of the same phases would go
-- through without waiting.  claim() refuses a name this instance already
-- used for the same seq, with code "invalid" and a hint to pass opts.prefix
-- (or another topic).  Not a plan-facing module; the snippets require it.
local core = require "tg.core"
local check = require "tg.check"

local participants = {}

-- core.state("participants"): "<what>\0<name>\0<seq>" -> true, for this
-- instance (every instance of a process shares this module)

local describe = check.describe

-- participants.options(call, opts, allowed) -> opts (a table, possibly empty).
-- A table or nil; every key must be one of allowed (a set), so a typo such
-- as `timout` is an error rather than a wait without its bound.
function participants.options(call, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    check.fail("%s: options must be a table, got %s", call, describe(opts))
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      check.fail("%s: unknown option %s (known: %s)", call, describe(k), table.concat(names, ", "))
    end
  end
  check.timeout(call, opts)
  if opts.group ~= nil and type(opts.group) ~= "boolean" then
    check.fail("%s: opts.group must be true or false, got %s", call, describe(opts.group))
  end
  if opts.tolerate_failures ~= nil and type(opts.tolerate_failures) ~= "boolean" then
    check.fail("%s: opts.tolerate_failures must be true or false, got %s", call, describe(opts.tolerate_failures))
  end
  if opts.prefix ~= nil then check.name(call, "opts.prefix", opts.prefix) end
  return opts
end

-- participants.resolve(call, opts) -> {seq =, count =, ns =, group =, where =}
-- ns is "" for the whole run and "<group_id>:" with opts.group; where
-- names the scope in messages ("the run", "group 'seeds'").
function participants.resolve(call, opts)
  local cfg = core.config()
  local group = opts.group == true
  local seq_field = group and "group_seq" or "global_seq"
  local count_field = group and "group_instance_count" or "instance_count"
  local seq, count = opts.seq, opts.count
  if count == nil then count = cfg[count_field] end
  if seq == nil then seq = cfg[seq_field] end
  if seq == nil then
    check.fail("%s: this instance has no %s yet: call it inside a case (or pass opts.seq)", call, seq_field)
  end
  count = check.count(call, "opts.count", count, 1)
  seq = check.count(call, "opts.seq", seq, 1)
  if seq > count then
    check.fail("%s: seq %d is out of range 1..%d", call, seq, count)
  end
  local gid = cfg.group_id or ""
  return {
    seq = seq, count = count, group = group,
    ns = group and (gid .. ":") or "",
    where = group and ("group '" .. gid .. "'") or "the run",
  }
end

-- participants.claim(call, what, name, seq, hint): name is this participant's from
-- now on; a second claim raises "invalid".
function participants.claim(call, what, name, seq, hint)
  local k = what .. "\0" .. name .. "\0" .. seq
  local claimed = core.state("participants")
  if claimed[k] then
    check.fail("%s: %s '%s' was already used by this instance; %s", call, what, name, hint)
  end
  claimed[k] = true
end

-- participants.wait_opts(opts) -> the options a snippet passes to a sync wait.
function participants.wait_opts(opts)
  return { timeout = opts.timeout, tolerate_failures = opts.tolerate_failures }
end

return participants
