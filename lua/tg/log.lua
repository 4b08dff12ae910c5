-- tg.log -- log.info(fmt, ...) etc.: string.format style messages, written as
-- Testground message_events.  log.debug prints only with LOG_LEVEL=debug.
local events = require "tg.events"

local log = {}
local debug_on = (os.getenv("LOG_LEVEL") or ""):lower() == "debug"

local function fmt(f, ...)
  if select("#", ...) == 0 then return tostring(f) end
  return string.format(f, ...)
end

function log.info(f, ...) events.message(fmt(f, ...)) end
function log.warn(f, ...) events.message("warning: " .. fmt(f, ...)) end
function log.error(f, ...) events.message("error: " .. fmt(f, ...)) end
function log.debug(f, ...)
  if debug_on then events.message("debug: " .. fmt(f, ...)) end
end

return log
