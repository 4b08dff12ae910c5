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

-- The JSON text of an event, encoded once: the line and run_events (tg.outcome)
-- both need it.  (Keyed by the event table, weakly: process-wide is fine.)
local encoded = setmetatable({}, { __mode = "k" })
function events.encode(ev)
  local s = encoded[ev]
  if not s then
    s = json.encode(ev)
    encoded[ev] = s
  end
  return s
end

-- '"msg":"","group_id":..,"run_id":..,"event":' of this instance, made once
local function head(cfg)
  local st = core.state("events")
  local h = st.head
  if not h then
    h = ('"msg":"","group_id":%s,"run_id":%s,"event":'):format(json.encode(cfg.group_id or ""),
      json.encode(cfg.run_id or ""))
    st.head = h
  end
  return h
end

local function line_of(cfg, ev)
  return ('{"ts":%d,%s%s}'):format(core.time_ns(), head(cfg), events.encode(ev))
end

-- Write event objects, in order (several at once: one opening of run.out
-- in an in-process run); returns the last line.
function events.emit_all(evs)
  local cfg = core.config()
  local lines = {}
  for i, ev in ipairs(evs) do lines[i] = line_of(cfg, ev) end
  if cfg.label then
    for _, ev in ipairs(evs) do
      local text, important = human(ev)
      if important or not cfg.quiet_stdout then io.stdout:write(cfg.label, " ", text, "\n") end
    end
    local f = cfg.outputs_path and io.open(cfg.outputs_path .. "/run.out", "a")
    if f then
      f:write(table.concat(lines, "\n"), "\n")
      f:close()
    end
    return lines[#lines]
  end
  local out = open(cfg)
  for _, line in ipairs(lines) do io.stdout:write(line, "\n") end
  io.stdout:flush()
  if out then
    for _, line in ipairs(lines) do out:write(line, "\n") end
    out:flush()
  end
  return lines[#lines]
end

-- Write one event object; returns the line.
function events.emit(ev)
  return events.emit_all({ ev })
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
