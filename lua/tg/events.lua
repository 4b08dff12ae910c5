-- tg.events -- Testground event lines (sdk-go v0.2.6+ schema) on stdout and
-- in <outputs>/run.out:
--   {"ts":<epoch ns>,"msg":"","group_id":"..","run_id":"..","event":{...}}
local core = require "tg.core"
local json = require "tg.json"

local events = {}

-- (every instance of a process shares this module: what is an instance's
-- own -- its configuration, its open run.out -- is looked up per call)
local function open(cfg)
  local st = core.state("events")
  if st.out == nil and cfg.outputs_path and cfg.outputs_path ~= "" then
    st.out = io.open(cfg.outputs_path .. "/run.out", "a") or false
  end
  return st.out
end

-- In an in-process run many instances share stdout: print what the process
-- runner would print for an instance ("group[i] text"), and keep run.out
-- closed between lines (ten thousand instances, ten thousand files).
-- (the one classifier of events, shared with the local runner: src/tg_event.c)
local function human(ev)
  local kind, text, important = core.event_describe(ev)
  if not kind then return json.encode(ev), false end
  return text, important
end

-- Write one event object; returns the line.
function events.emit(ev)
  local cfg = core.config()
  local line = ('{"ts":%d,"msg":"","group_id":%s,"run_id":%s,"event":%s}'):format(
    core.time_ns(), json.encode(cfg.group_id or ""), json.encode(cfg.run_id or ""), json.encode(ev))
  if cfg.label then
    local text, important = human(ev)
    if important or not cfg.quiet_stdout then io.stdout:write(cfg.label, " ", text, "\n") end
    local f = cfg.outputs_path and io.open(cfg.outputs_path .. "/run.out", "a")
    if f then
      f:write(line, "\n")
      f:close()
    end
    return line
  end
  local out = open(cfg)
  io.stdout:write(line, "\n")
  io.stdout:flush()
  if out then
    out:write(line, "\n")
    out:flush()
  end
  return line
end

function events.message(text)
  return events.emit({ message_event = { message = text } })
end

function events.stage(kind, name)
  return events.emit({ [kind .. "_event"] = { name = name, group = core.config().group_id } })
end

function events.close()
  local st = core.state("events")
  if st.out then st.out:close() end
  st.out = nil
end

return events
