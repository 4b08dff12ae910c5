-- tg.env -- the `env` a case function receives: the run's parameters as
-- Testground runners inject them, and typed parameter accessors.
--
-- A missing parameter without a default, or one that does not parse, raises
-- an error with code "bad_param" naming the parameter; tgrun reports it on
-- one line and exits with status 2.
local core = require "tg.core"
local json = require "tg.json"

local Env = {}
-- env.temp_path of an in-process instance is made when first asked for
-- (ten thousand instances, ten thousand folders, most never used); its
-- path is in env._temp until then
Env.__index = function(self, k)
  if k == "temp_path" then
    local p = rawget(self, "_temp")
    if p == nil then return nil end
    local ok, err = core.mkdir_p(p)
    if not ok then error(core.error("io", "env.temp_path: " .. err), 2) end
    rawset(self, "temp_path", p)
    return p
  end
  return Env[k]
end

local function bad(fmt, ...)
  error(core.error("bad_param", fmt:format(...)), 3)
end

local function raw(self, name, default, kind)
  if type(name) ~= "string" or name == "" then
    error(core.error("invalid", "env:" .. kind .. ": the parameter name must be a non-empty string"), 3)
  end
  local v = self.params[name]
  if v == nil and default == nil then
    bad('parameter "%s" is missing (pass --param %s=<%s> or give a default)', name, name, kind)
  end
  return v
end

function Env:string(name, default)
  local v = raw(self, name, default, "string")
  if v == nil then return default end
  return v
end

function Env:int(name, default)
  local v = raw(self, name, default, "integer")
  if v == nil then return default end
  local n = core.parse("int", v)
  if not n then bad('parameter "%s" is not an integer: "%s"', name, v) end
  return n
end

function Env:number(name, default)
  local v = raw(self, name, default, "number")
  if v == nil then return default end
  local n = core.parse("number", v)
  if not n then bad('parameter "%s" is not a number: "%s"', name, v) end
  return n
end

-- true/false 1/0 yes/no on/off t/f in any case: everything Go's
-- strconv.ParseBool takes, and what tgrun always took
function Env:bool(name, default)
  local v = raw(self, name, default, "bool")
  if v == nil then return default end
  local b = core.parse("bool", v)
  if b == nil then bad('parameter "%s" is not true or false: "%s"', name, v) end
  return b
end

-- env:duration(name [, default]) -> seconds (a float).  The value is
-- written as Go's time.ParseDuration reads it: "10s", "1m30s", "250ms",
-- "1.5h", "-2m", "0".  A default is seconds or such a string.
function Env:duration(name, default)
  if default ~= nil and type(default) ~= "number" then
    local ns = core.parse("duration", default)
    if not ns then
      error(core.error("invalid", ('env:duration: the default of "%s" must be seconds or a duration '
        .. 'such as "10s", got %s'):format(name, require("tg.check").describe(default))), 2)
    end
    default = ns / 1e9
  end
  local v = raw(self, name, default, "duration")
  if v == nil then return default end
  local ns = core.parse("duration", v)
  if not ns then
    bad('parameter "%s" is not a duration: "%s" (write it as Go does: 10s, 1m30s, 250ms, 1.5h)', name, v)
  end
  return ns / 1e9
end

-- env:size(name [, default]) -> bytes (an integer).  "10KB" = 10000 and
-- "10K" = 10000 (SI), "1MiB" = 1048576 and "1Mi" the same (IEC), "512" or
-- "512B" bytes, any case, as go-humanize (sdk-go's SizeParam) reads them.
-- A default is bytes or such a string.
function Env:size(name, default)
  if default ~= nil and math.type(default) ~= "integer" then
    local n = core.parse("size", default)
    if not n then
      error(core.error("invalid", ('env:size: the default of "%s" must be a whole number of bytes or a size '
        .. 'such as "1MiB", got %s'):format(name, require("tg.check").describe(default))), 2)
    end
    default = n
  end
  local v = raw(self, name, default, "size")
  if v == nil then return default end
  local n = core.parse("size", v)
  if not n then
    bad('parameter "%s" is not a size: "%s" (bytes, or with a unit: 10KB = 10000, 1MiB = 1048576)', name, v)
  end
  return n
end

function Env:json(name, default)
  local v = raw(self, name, default, "json")
  if v == nil then return default end
  local ok, r = pcall(json.decode, v)
  if not ok then bad('parameter "%s" is not JSON: %s', name, tostring(r):gsub("^json%.decode: ", "")) end
  return r
end

-- env:param(name) -> the value of a parameter the plan declares, read as
-- its declared type says (env:int, env:duration, ...); its default when
-- not given.  An undeclared name raises "invalid".
function Env:param(name)
  return require("tg.params").get(self, name)
end

-- env:record_failure(err): record a failure and go on, as sdk-go's
-- RecordFailure: a failure_event now (stdout, run.out, run_events), and
-- the instance's outcome is failure however the case ends.  err: a
-- message or an error value (tg.outcome).  Does not yield.
function Env:record_failure(err)
  return require("tg.outcome").record_failure(err)
end

-- env:record_message(fmt, ...): a message_event, as sdk-go's
-- RecordMessage (the same as log.info).
function Env:record_message(fmt, ...)
  return require("tg.log").info(fmt, ...)
end

-- env:R() / env:D(): tg.metrics and tg.metrics.diagnostics (results.out
-- and diagnostics.out), as sdk-go's runenv.R() and runenv.D().
function Env:R() return require "tg.metrics" end
function Env:D() return require("tg.metrics").diagnostics end

local M = {}

function M.new(cfg)
  local params = {}
  for k, v in pairs(cfg.params or {}) do params[k] = v end
  return setmetatable({
    run_id = cfg.run_id, plan = cfg.plan, case = cfg.case,
    instance_count = cfg.instance_count, group_id = cfg.group_id,
    group_instance_count = cfg.group_instance_count,
    params = params, outputs_path = cfg.outputs_path,
    temp_path = not cfg.temp_lazy and cfg.temp_path or nil, _temp = cfg.temp_lazy and cfg.temp_path or nil,
    sidecar = cfg.sidecar, subnet = cfg.subnet, start_time = cfg.start_time, ip = cfg.ip,
    start_time_ns = cfg.start_time_ns,
  }, Env)
end

return M
