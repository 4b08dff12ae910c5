-- tg.params -- the parameters a plan declares, and what follows from them:
-- defaults applied, given values checked before anything runs (one line,
-- exit 2), env:param(name) typed, `tgrun --help-params` and the Testground
-- manifest.toml that `tgrun manifest` prints.
--
-- A plan declares them in the table it returns, next to its cases (fields
-- that are not functions are not cases; a function is always a case, so a
-- plan whose case is called params, instances or name declares nothing
-- under that name):
--
--   return {
--     name = "pingpong",                       -- the manifest's name (default: the file's)
--     params = {
--       peers   = { type = "int", default = 4, desc = "peers each instance dials", unit = "peers" },
--       timeout = { type = "duration", default = "30s" },
--       mode    = { type = "string", default = "tcp", allowed = { "tcp", "quic" } },
--       size    = { type = "size", default = "1MiB", cases = { "transfer" } },   -- only this case
--       label   = "string",                     -- shorthand: a type, no default
--     },
--     instances = { min = 2, max = 200, default = 4,      -- every case ...
--                   transfer = { min = 2, max = 2 } },    -- ... or one
--     ping = function(env) ... end,
--     transfer = function(env) ... end,
--   }
--
-- Types: int, number (or float), bool, string, duration (Go's syntax,
-- env:duration), size (go-humanize's, env:size), json.  A default and the
-- allowed values are Lua values of the type, or strings that parse as it
-- (a duration may also be a number of seconds, a size a number of bytes).
-- A declared parameter without a default must be given.  Undeclared
-- parameters still reach the plan (Testground passes what a composition
-- says); tgrun warns about them, since a typo is the usual cause.
local core = require "tg.core"
local json = require "tg.json"

local M = {}

local TYPES = { int = "int", number = "float", float = "float", bool = "bool", string = "string",
  duration = "duration", size = "size", json = "json" }
local WORD = { int = "an integer", float = "a number", bool = "true or false", string = "a string",
  duration = "a duration such as 10s, 1m30s, 250ms", size = "a size such as 512, 10KB, 1MiB",
  json = "JSON" }
local FIELDS = { type = true, default = true, allowed = true, desc = true, unit = true, cases = true }

local function describe(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if v == nil then return "nothing" end
  if type(v) == "table" then return "a table" end
  return tostring(v)
end

-- The shortest decimal that reads back as v (0.1, not 0.10000000000000001).
local function shortest(v)
  for prec = 1, 17 do
    local t = ("%." .. prec .. "g"):format(v)
    if tonumber(t) == v then return t end
  end
  return ("%.17g"):format(v)
end

-- value (a string) of type t -> the typed value, or nil
local function parse(t, s)
  if type(s) ~= "string" then return nil end
  if t == "int" then return core.parse("int", s)
  elseif t == "float" then return core.parse("number", s)
  elseif t == "bool" then return core.parse("bool", s)
  elseif t == "duration" then return core.parse("duration", s)
  elseif t == "size" then return core.parse("size", s)
  elseif t == "json" then
    local ok, v = pcall(json.decode, s)
    if ok then return v end
    return nil
  end
  return s
end

-- A declared value (default or allowed: a Lua value of the type, or a
-- string that parses) -> the string an instance is given, or nil.
local function to_string(t, v)
  if type(v) == "string" then return parse(t, v) ~= nil and v or nil end
  if t == "int" then return math.type(v) == "integer" and tostring(v) or nil end
  if t == "float" then
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then return nil end
    return math.type(v) == "integer" and tostring(v) or shortest(v)
  end
  if t == "bool" then return type(v) == "boolean" and tostring(v) or nil end
  if t == "duration" then
    return type(v) == "number" and v == v and math.abs(v) < 9.2e9 and core.format_duration(math.floor(v * 1e9 + 0.5)) or nil
  end
  if t == "size" then return math.type(v) == "integer" and v >= 0 and tostring(v) or nil end
  if t == "json" then
    local ok, s = pcall(json.encode, v)
    return ok and s or nil
  end
  return nil
end

-- The form values are compared in (allowed values).
local function canonical(t, s)
  local v = parse(t, s)
  if t == "json" then return json.encode(v) end
  return v
end

local function utf8_ok(s) return type(s) == "string" and utf8.len(s) ~= nil end

-- M.declared(plan) -> decl | nil, error: the plan's declaration, checked
-- and normalised: {name =, params = {[name] = {type, default (string),
-- allowed = {strings}, desc, unit, cases = set|nil}}, names = sorted,
-- instances = {min, max, default, per = {[case] = {...}}}}.
function M.declared(plan)
  local d = { params = {}, names = {}, instances = nil }
  if type(plan) ~= "table" then return d end
  local function bad(fmt, ...) return nil, "the plan declares " .. fmt:format(...) end
  -- a function is a case, whatever its name: a plan with a case called
  -- params (or name, or instances) declares nothing under that name
  local function field(k)
    local v = plan[k]
    if type(v) == "function" then return nil end
    return v
  end
  if field("name") ~= nil then
    if type(plan.name) ~= "string" or plan.name == "" or not utf8_ok(plan.name) then
      return bad("a bad name: it must be a non-empty string, got %s", describe(plan.name))
    end
    d.name = plan.name
  end
  local ps = field("params")
  if ps ~= nil and type(ps) ~= "table" then return bad("params that are not a table (%s)", describe(ps)) end
  for name, spec in pairs(ps or {}) do
    if type(name) ~= "string" or name == "" or name:find("[=|]") or not utf8_ok(name) then
      return bad("a parameter named %s: a name is a non-empty string without '=' or '|'", describe(name))
    end
    if type(spec) == "string" then spec = { type = spec } end
    if type(spec) ~= "table" then
      return bad('parameter "%s" as %s: give a table such as { type = "int", default = 1 }', name, describe(spec))
    end
    for k in pairs(spec) do
      if not FIELDS[k] then
        return bad('parameter "%s" with an unknown field %s (type, default, allowed, desc, unit, cases)',
          name, describe(k))
      end
    end
    local t = TYPES[spec.type]
    if not t then
      return bad('parameter "%s" of type %s: one of int, number, bool, string, duration, size, json',
        name, describe(spec.type))
    end
    local p = { type = t, declared_type = spec.type }
    for _, f in ipairs({ "desc", "unit" }) do
      if spec[f] ~= nil and not utf8_ok(spec[f]) then
        return bad('parameter "%s" with a %s that is not a string of UTF-8', name, f)
      end
      p[f] = spec[f]
    end
    if spec.default ~= nil then
      p.default = to_string(t, spec.default)
      if not p.default then
        return bad('parameter "%s" with a default that is not %s: %s', name, WORD[t], describe(spec.default))
      end
    end
    if spec.allowed ~= nil then
      if type(spec.allowed) ~= "table" or #spec.allowed == 0 then
        return bad('parameter "%s" with allowed values that are not a list of values', name)
      end
      p.allowed = {}
      for i, v in ipairs(spec.allowed) do
        p.allowed[i] = to_string(t, v)
        if not p.allowed[i] then
          return bad('parameter "%s" with an allowed value that is not %s: %s', name, WORD[t], describe(v))
        end
      end
      if p.default and not M.allows(p, p.default) then
        return bad('parameter "%s" with a default (%s) that is not among its allowed values', name, p.default)
      end
    end
    if spec.cases ~= nil then
      if type(spec.cases) ~= "table" or #spec.cases == 0 then
        return bad('parameter "%s" with cases that are not a list of case names', name)
      end
      p.cases = {}
      for _, c in ipairs(spec.cases) do
        if type(c) ~= "string" or type(plan[c]) ~= "function" then
          return bad('parameter "%s" for a case the plan does not have: %s', name, describe(c))
        end
        p.cases[c] = true
      end
    end
    d.params[name] = p
    d.names[#d.names + 1] = name
  end
  table.sort(d.names)
  local ins = field("instances")
  if ins ~= nil then
    if type(ins) ~= "table" then return bad("instances that are not a table (%s)", describe(ins)) end
    local function bounds(t, where)
      local b = {}
      for _, f in ipairs({ "min", "max", "default" }) do
        local v = t[f]
        if v ~= nil and (math.type(v) ~= "integer" or v < 1) then
          return nil, ("instances%s.%s that is not a whole number >= 1: %s"):format(where, f, describe(v))
        end
        b[f] = v
      end
      if b.min and b.max and b.min > b.max then
        return nil, ("instances%s with min %d above max %d"):format(where, b.min, b.max)
      end
      if b.default and ((b.min and b.default < b.min) or (b.max and b.default > b.max)) then
        return nil, ("instances%s with a default (%d) outside min..max"):format(where, b.default)
      end
      return b
    end
    local all, why = bounds(ins, "")
    if not all then return bad("%s", why) end
    all.per = {}
    for k, v in pairs(ins) do
      if k ~= "min" and k ~= "max" and k ~= "default" then
        if type(k) ~= "string" or type(v) ~= "table" or type(plan[k]) ~= "function" then
          return bad("instances for %s, which is not a case of the plan (min, max, default, or a case name "
            .. "with its own { min =, max =, default = })", describe(k))
        end
        local b, why2 = bounds(v, "." .. k)
        if not b then return bad("%s", why2) end
        all.per[k] = b
      end
    end
    d.instances = all
  end
  return d
end

-- Does declared parameter p allow the string value s?
function M.allows(p, s)
  if not p.allowed then return true end
  local v = canonical(p.type, s)
  for _, a in ipairs(p.allowed) do
    if canonical(p.type, a) == v then return true end
  end
  return false
end

-- The declared parameters of `case`, sorted by name: {name, p}.
local function of_case(d, case)
  local out = {}
  for _, name in ipairs(d.names) do
    local p = d.params[name]
    if not p.cases or p.cases[case] then out[#out + 1] = { name, p } end
  end
  return out
end

-- The instance bounds of `case` (nil: none declared).
local function bounds_of(d, case)
  local i = d.instances
  if not i then return nil end
  local per = i.per[case] or {}
  local b = { min = per.min or i.min, max = per.max or i.max, default = per.default or i.default }
  -- a case's own bounds keep the general default inside them
  if b.default and b.min and b.default < b.min then b.default = b.min end
  if b.default and b.max and b.default > b.max then b.default = b.max end
  return b
end

local function plan_of()
  return require("tg.core").plan()
end

-- M.check(case, params, instances) -> nil | error, warnings: the run's
-- parameters (a table of strings) against what the loaded plan (this
-- instance's, core.plan()) declares for `case`; instances: how many run (nil: unknown).
-- One line for the first problem.  warnings: undeclared parameters.
function M.check(case, params, instances)
  local d, err = M.declared(plan_of())
  if not d then return err, {} end
  local warnings = {}
  for _, np in ipairs(of_case(d, case)) do
    local name, p = np[1], np[2]
    local v = params[name]
    if v == nil then
      if not p.default then
        return ('parameter "%s" is missing: the plan declares it without a default (pass --param %s=<%s>)')
          :format(name, name, p.declared_type), warnings
      end
    elseif parse(p.type, v) == nil then
      return ('parameter "%s" is not %s: "%s" (the plan declares it %s)'):format(name, WORD[p.type], v,
        p.declared_type), warnings
    elseif not M.allows(p, v) then
      return ('parameter "%s" must be one of %s; got "%s"'):format(name, table.concat(p.allowed, ", "), v), warnings
    end
  end
  if #d.names > 0 then
    local declared = {}
    for _, np in ipairs(of_case(d, case)) do declared[np[1]] = true end
    local extra = {}
    for k in pairs(params) do if not declared[k] then extra[#extra + 1] = k end end
    table.sort(extra)
    for _, k in ipairs(extra) do
      local names = {}
      for _, np in ipairs(of_case(d, case)) do names[#names + 1] = np[1] end
      warnings[#warnings + 1] = ('parameter "%s" is not declared by the plan for case %s (it declares: %s)')
        :format(k, case, #names > 0 and table.concat(names, ", ") or "none")
    end
  end
  local b = bounds_of(d, case)
  if b and instances then
    if (b.min and instances < b.min) or (b.max and instances > b.max) then
      return ("case %s runs with %s instances (the plan declares), not %d"):format(case,
        b.min and b.max and (b.min == b.max and ("exactly %d"):format(b.min) or ("%d to %d"):format(b.min, b.max))
        or b.min and ("at least %d"):format(b.min) or ("at most %d"):format(b.max), instances), warnings
    end
  end
  return nil, warnings
end

-- M.apply(cfg): the declared defaults of cfg.case into cfg.params where
-- not given, as Testground passes a manifest's defaults.
function M.apply(cfg)
  local d = M.declared(plan_of())
  if not d then return end
  for _, np in ipairs(of_case(d, cfg.case)) do
    if cfg.params[np[1]] == nil and np[2].default then cfg.params[np[1]] = np[2].default end
  end
end

-- M.get(env, name) -> the value of declared parameter name as its type
-- reads it (env:int, env:duration, ...).  Raises bad_param like them.
function M.get(env, name)
  local d = M.declared(plan_of())
  local p = d and d.params[name]
  if not p or (p.cases and not p.cases[env.case]) then
    error(core.error("invalid", ('env:param: "%s" is not a parameter the plan declares for case %s (read an '
      .. 'undeclared one with env:string, env:int, ...)'):format(tostring(name), tostring(env.case))), 3)
  end
  local getter = ({ int = "int", float = "number", bool = "bool", string = "string", duration = "duration",
    size = "size", json = "json" })[p.type]
  return env[getter](env, name)
end

-- ---- tgrun --help-params and tgrun manifest --------------------------------

-- The cases of the plan, sorted.
local function cases_of(plan)
  if type(plan) == "function" then return { "default" } end
  local names = {}
  if type(plan) == "table" then
    for k, v in pairs(plan) do
      if type(k) == "string" and type(v) == "function" then names[#names + 1] = k end
    end
  end
  table.sort(names)
  return names
end

-- M.help(path, case) -> text | nil, error: what `tgrun --help-params` prints.
function M.help(path, case)
  local plan = plan_of()
  local d, err = M.declared(plan)
  if not d then return nil, err end
  local cases = cases_of(plan)
  if case then
    local known = false
    for _, c in ipairs(cases) do known = known or c == case end
    if not known then return nil, ("unknown case '%s'; the plan has: %s"):format(case, table.concat(cases, ", ")) end
    cases = { case }
  end
  local out = {}
  local function line(s) out[#out + 1] = s end
  if #d.names == 0 and not d.instances then
    line(("%s declares no parameters.  A plan declares them in the table it returns:"):format(path))
    line('  params = { peers = { type = "int", default = 4, desc = "..." } }   (see docs/api.md)')
    return table.concat(out, "\n") .. "\n"
  end
  line(("parameters of %s%s, by case (pass one with -p NAME=VALUE):"):format(path,
    d.name and (" (plan " .. d.name .. ")") or ""))
  for _, c in ipairs(cases) do
    local ps = of_case(d, c)
    line(("case %s:"):format(c))
    if #ps == 0 then line("  (no parameters)") end
    local w = 0
    for _, np in ipairs(ps) do w = math.max(w, #np[1]) end
    for _, np in ipairs(ps) do
      local name, p = np[1], np[2]
      local text = {}
      text[#text + 1] = p.default and ("default %s"):format(p.default) or "required"
      if p.allowed then text[#text + 1] = "one of: " .. table.concat(p.allowed, ", ") end
      if p.unit then text[#text + 1] = "unit: " .. p.unit end
      local desc = p.desc and (p.desc .. " ") or ""
      line(("  %-" .. w .. "s  %-8s  %s(%s)"):format(name, p.declared_type, desc, table.concat(text, "; ")))
    end
    local b = bounds_of(d, c)
    if b then
      line(("  instances: %s to %s%s"):format(b.min or 1, b.max and tostring(b.max) or "any",
        b.default and (", default " .. b.default) or ""))
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- TOML: a basic string (UTF-8 passes; quotes, backslashes and control
-- characters escaped), a bare or quoted key.
local function toml_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r",
      ["\b"] = "\\b", ["\f"] = "\\f" }
    return named[c] or ("\\u%04X"):format(c:byte())
  end) .. '"'
end

local function toml_key(k)
  if k:match("^[%w_%-]+$") then return k end
  return toml_str(k)
end

-- The default as the manifest writes it: a TOML integer, float, boolean,
-- or string (Testground passes a string as it is, and anything else
-- JSON-encoded: the same text the instance gets either way).
local function toml_default(p)
  local s = p.default
  if p.type == "int" then return s end
  if p.type == "bool" then return tostring(parse("bool", s)) end
  if p.type == "float" then
    local t = shortest(parse("float", s))
    if not t:find("[%.eEn]") then t = t .. ".0" end     -- a TOML float needs a point or exponent
    return t
  end
  return toml_str(s)
end

-- M.manifest(path, name, version) -> text | nil, error: the Testground
-- manifest.toml of the loaded plan (what `tgrun manifest` prints).
function M.manifest(path, name, version)
  local plan = plan_of()
  local d, err = M.declared(plan)
  if not d then return nil, err end
  local out = {}
  local function line(s) out[#out + 1] = s end
  line(("# manifest.toml of %s, written by `tgrun manifest` (tgrun %s): a docker:generic plan whose"):format(
    path, version))
  line("# image runs tgrun on the plan (see examples/testground in tgrun's sources for a Dockerfile).")
  line(("name = %s"):format(toml_str(d.name or name)))
  line("")
  line("[defaults]")
  line('builder = "docker:generic"')
  line('runner = "local:docker"')
  line("")
  line('[builders."docker:generic"]')
  line("enabled = true")
  line("")
  line('[runners."local:docker"]')
  line("enabled = true")
  line("")
  line('[runners."cluster:k8s"]')
  line("enabled = true")
  for _, c in ipairs(cases_of(plan)) do
    line("")
    line("[[testcases]]")
    line(("name = %s"):format(toml_str(c)))
    local b = bounds_of(d, c) or {}
    local min, max = b.min or 1, b.max or math.max(b.min or 1, b.default or 1, 1000)
    line(("instances = { min = %d, max = %d, default = %d }"):format(min, max, b.default or min))
    local ps = of_case(d, c)
    if #ps > 0 then
      line("")
      line("  [testcases.params]")
      for _, np in ipairs(ps) do
        local pname, p = np[1], np[2]
        local fields = { ("type = %s"):format(toml_str(p.type)) }
        local desc = p.desc
        if p.allowed then desc = (desc and (desc .. " ") or "") .. "(one of: " .. table.concat(p.allowed, ", ") .. ")" end
        if desc then fields[#fields + 1] = ("desc = %s"):format(toml_str(desc)) end
        if p.unit then fields[#fields + 1] = ("unit = %s"):format(toml_str(p.unit)) end
        if p.default then fields[#fields + 1] = ("default = %s"):format(toml_default(p)) end
        line(("  %s = { %s }"):format(toml_key(pname), table.concat(fields, ", ")))
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

return M
