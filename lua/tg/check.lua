-- tg.check -- argument checks shared by the modules: a bad argument raises an
-- error value with code "invalid" at once, naming the call and the argument.
local core = require "tg.core"

local check = {}

-- the largest value (as JSON) a topic or queue takes: Redis refuses a bulk
-- string of 512 MB, and the runtime keeps a copy per process
check.MAX_VALUE = 256 * 1048576

function check.fail(fmt, ...)
  error(core.error("invalid", fmt:format(...)), 3)
end

-- How a bad argument is shown in a message.
local function describe(v)
  if v == nil then return "nothing" end
  if v == "" then return "an empty string" end
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "number" then return tostring(v) end
  return "a " .. type(v)
end
check.describe = describe

-- A non-empty string name (state, topic, lock, ...).
function check.name(call, what, v)
  if type(v) ~= "string" or v == "" then
    local got = type(v) == "number" and "a number" or describe(v)   -- a name: its type is the point
    error(core.error("invalid", ("%s: %s must be a non-empty string, got %s"):format(call, what, got)), 3)
  end
  return v
end

-- A whole number >= min.
function check.count(call, what, v, min)
  local n = type(v) == "number" and math.tointeger(v)
  if not n or n < (min or 0) then
    error(core.error("invalid", ("%s: %s must be a whole number >= %d, got %s"):format(
      call, what, min or 0, describe(v))), 3)
  end
  return n
end

-- opts.timeout in seconds, or -1 (the run's deadline).  The one timeout
-- parser is in C (tg_opt_timeout), shared with the runtime's own calls.
check.timeout = core.timeout

-- check.message_of(e) -> the message an error value carries, or nil: a
-- string or number as it is; a tgrun error value's message; a table's
-- __tostring, else its string field message, msg or error (the shapes
-- other libraries raise); nothing else has one.
function check.message_of(e)
  if type(e) == "string" or math.type(e) then return tostring(e) end
  if core.is_error(e) then return e.message end
  local mt = getmetatable(e)
  if type(mt) == "table" and mt.__tostring then
    local ok, s = pcall(tostring, e)
    if ok and type(s) == "string" then return s end
  end
  if type(e) == "table" then
    for _, k in ipairs({ "message", "msg", "error" }) do
      local v = rawget(e, k)
      if type(v) == "string" or math.type(v) then return tostring(v) end
    end
  end
  return nil
end

-- check.first_line(err) -> the first line of an error's message, at most
-- 300 bytes: what a failure record carries to the peers.
function check.first_line(e)
  local m = check.message_of(e) or ("error object is a " .. type(e) .. " value")
  m = m:match("^[^\n]*")
  if #m > 300 then m = m:sub(1, 297) .. "..." end
  return m
end

return check
