-- tg.env -- the `env` a case function receives: the run's parameters as
-- Testground runners inject them, and typed parameter accessors.
--
-- A missing parameter without a default, or one that does not parse, raises
-- an error with code "bad_param" naming the parameter; tgrun reports it on
-- one line and exits with status 2.
local core = require "tg.core"
local json = require "tg.json"

local Env = {}
Env.__index = Env

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
  local n = v:match("^%s*[-+]?%d+%s*$") and math.tointeger(tonumber(v))
  if not n then bad('parameter "%s" is not an integer: "%s"', name, v) end
  return n
end

function Env:number(name, default)
  local v = raw(self, name, default, "number")
  if v == nil then return default end
  local n = tonumber(v)
  if not n or n ~= n or n == math.huge or n == -math.huge then
    bad('parameter "%s" is not a number: "%s"', name, v)
  end
  return n
end

local truth = { ["true"] = true, ["1"] = true, yes = true, on = true,
  ["false"] = false, ["0"] = false, no = false, off = false }

function Env:bool(name, default)
  local v = raw(self, name, default, "bool")
  if v == nil then return default end
  local b = truth[v:lower():match("^%s*(.-)%s*$")]
  if b == nil then bad('parameter "%s" is not true or false: "%s"', name, v) end
  return b
end

function Env:json(name, default)
  local v = raw(self, name, default, "json")
  if v == nil then return default end
  local ok, r = pcall(json.decode, v)
  if not ok then bad('parameter "%s" is not JSON: %s', name, tostring(r):gsub("^json%.decode: ", "")) end
  return r
end

local M = {}

function M.new(cfg)
  local params = {}
  for k, v in pairs(cfg.params or {}) do params[k] = v end
  return setmetatable({
    run_id = cfg.run_id, plan = cfg.plan, case = cfg.case,
    instance_count = cfg.instance_count, group_id = cfg.group_id,
    group_instance_count = cfg.group_instance_count,
    params = params, outputs_path = cfg.outputs_path, temp_path = cfg.temp_path,
    sidecar = cfg.sidecar, subnet = cfg.subnet, start_time = cfg.start_time, ip = cfg.ip,
  }, Env)
end

return M
