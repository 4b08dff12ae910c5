-- tg.report -- the picture of a finished run (src/tg_report.h says what and
-- why): read what every instance left in RUN_DIR/<group>/<index>/ --
-- trace.jsonl (lua/tg's own trace: src/tg_trace.h) and run.out (Testground's
-- event lines) -- merge them into one model, find who came last to each
-- barrier, and write timeline.html and trace.json.  Runs in a lua_State of
-- its own (src/tg_report.c), never inside a plan.
--
-- The model.  Times are integer microseconds since the Unix epoch while
-- reading, then relative to the run's first moment (t = 0) in both files.
--   inst  = {label, group, index, dir, spans, marks, messages, start, last,
--            outcome, error, detail, t_out, src, problems}
--   span  = {k = kind, n = name, b = begin, e = end, v = integer result,
--            err = code, msg = message, unfinished, last (arrived last),
--            row (its row in the lane)}
--   mark  = {m = "publish" | "failure" | "crash" | "task_error" | "success", t, msg}
--
-- Bad input is part of the job: every line is read under pcall, a missing or
-- cut file leaves what could be read, and each kind of problem becomes one
-- line of the summary.  Only a folder that is not a run is refused (status 2).
local json = require "tg.json"
local fs = require "tg.report.c"

local M = {}

local MAX_MESSAGES = 200        -- log lines kept per instance (hover ticks on its lane)
local MAX_DETAIL = 4000         -- bytes of an error's full text (traceback) kept for hover

-- ---- small things -----------------------------------------------------------------------

local function first_line(s)
  if type(s) ~= "string" then return nil end
  return s:match("^[^\n]*")
end

local function cap(s, n)
  if type(s) ~= "string" or #s <= n then return s end
  return s:sub(1, n) .. "..."
end

-- "1.52 s", "31.4 ms", "870 µs": a duration given in µs
local function secs(us)
  local s = us / 1e6
  if s >= 100 then return ("%.0f s"):format(s) end
  if s >= 10 then return ("%.1f s"):format(s) end
  if s >= 1 then return ("%.2f s"):format(s) end
  if us >= 100000 then return ("%.0f ms"):format(us / 1000) end
  if us >= 1000 then return ("%.1f ms"):format(us / 1000) end
  return ("%d µs"):format(math.floor(us + 0.5))
end
M.secs = secs

-- "a[0], a[1], a[2] and 4 more"
local function some(labels, n)
  n = n or 5
  local out = {}
  for i = 1, math.min(#labels, n) do out[i] = labels[i] end
  local s = table.concat(out, ", ")
  if #labels > n then s = s .. (" and %d more"):format(#labels - n) end
  return s
end

local function is_int(v) return math.type(v) == "integer" end

-- ---- the folder -----------------------------------------------------------------------------

local function kind_of(path) return (fs.stat(path)) end

local function has_files(dir)
  return kind_of(dir .. "/run.out") == "file" or kind_of(dir .. "/trace.jsonl") == "file"
end

-- The instance folders of a run: {group, index, dir} sorted by group, then
-- index; or nil and why this is not a run.
local function find_instances(dir)
  local t = kind_of(dir)
  if t == nil then return nil, ("%s does not exist"):format(dir) end
  if t ~= "dir" then return nil, ("%s is not a folder: give the folder of one run, outputs/<run>"):format(dir) end
  local names, err = fs.listdir(dir)
  if not names then return nil, ("cannot read %s: %s"):format(dir, err) end
  local found, empty = {}, #names == 0
  for _, g in ipairs(names) do
    local gdir = dir .. "/" .. g
    if kind_of(gdir) == "dir" then
      for _, i in ipairs(fs.listdir(gdir) or {}) do
        if i:match("^%d+$") and kind_of(gdir .. "/" .. i) == "dir" then
          found[#found + 1] = { group = g, index = tonumber(i), dir = gdir .. "/" .. i }
        end
      end
    end
  end
  if #found == 0 and not empty then
    -- say what it looks like instead, so the fix is one step
    if has_files(dir) then
      return nil, ("%s is one instance's folder; give the run's folder, two levels up"):format(dir)
    end
    for _, g in ipairs(names) do
      if g:match("^%d+$") and has_files(dir .. "/" .. g) then
        return nil, ("%s is one group's folder; give the run's folder, one level up"):format(dir)
      end
    end
    local runs = {}
    for _, r in ipairs(names) do
      local sub = dir .. "/" .. r
      if kind_of(sub) == "dir" and (select(1, find_instances(sub))) then runs[#runs + 1] = r end
    end
    if #runs > 0 then
      return nil, ("%s holds %d run%s, it is not one: give one of them, e.g. tgrun report %s/%s"):format(
        dir, #runs, #runs > 1 and "s" or "", dir, runs[#runs])
    end
    return nil, ("%s is not a run's folder: expected <group>/<index>/ folders with run.out or trace.jsonl"):format(dir)
  end
  table.sort(found, function(a, b)
    if a.group ~= b.group then return a.group < b.group end
    return a.index < b.index
  end)
  return found
end

-- ---- reading an instance ------------------------------------------------------------------

local function seen(inst, t)
  if not t then return end
  if not inst.first or t < inst.first then inst.first = t end
  if not inst.last or t > inst.last then inst.last = t end
end

local function int(s) return s and math.tointeger(tonumber(s)) end

-- The lines a trace is mostly made of, read without the JSON decoder when
-- they have exactly the shape tg_trace.c writes (a name without escapes);
-- anything else goes through json.decode.
local function quick(line)
  local id, t, d, task, k, name, rest = line:match(
    '^{"s":(%d+),"t":(%d+),"d":(%d+),"task":(%d+),"k":"([%w_]+)","n":"([^"\\]*)"(.*)}$')
  if id then
    local v = rest:match('^,"v":(%-?%d+)$')
    if rest == "" or v then
      return { s = int(id), t = int(t), d = int(d), task = int(task), k = k, n = name, v = int(v) }
    end
  end
  local b, tb, taskb, kb, nameb = line:match('^{"b":(%d+),"t":(%d+),"task":(%d+),"k":"([%w_]+)","n":"([^"\\]*)"}$')
  if b then
    return { b = int(b), t = int(tb), task = int(taskb), k = kb, n = nameb }
  end
  local e, te, v = line:match('^{"e":(%d+),"t":(%d+)(.*)}$')
  if e then
    if v == "" then return { e = math.tointeger(tonumber(e)), t = math.tointeger(tonumber(te)) } end
    v = v:match('^,"v":(%-?%d+)$')
    if v then
      return { e = math.tointeger(tonumber(e)), t = math.tointeger(tonumber(te)), v = math.tointeger(tonumber(v)) }
    end
  end
  return nil
end

-- trace.jsonl: a header line, then one record per line (docs/api.md).
local function read_trace(inst, path)
  local f = io.open(path, "rb")
  if not f then return false end
  inst.has_trace = true
  local t0, open = nil, {}
  local n, bad, last_bad = 0, 0, false
  for line in f:lines() do
    n = n + 1
    local r = n > 1 and quick(line)
    local ok = r ~= nil
    if not r then ok, r = pcall(json.decode, line) end
    if not ok or type(r) ~= "table" then
      bad, last_bad = bad + 1, true
    elseif n == 1 then
      if not is_int(r.t0) then
        inst.problems.not_trace = true
        break
      end
      t0 = r.t0 // 1000
      inst.host, inst.pid = r.host, r.pid
      if is_int(r.tgtrace) and r.tgtrace > 1 then inst.problems.newer = true end
    else
      last_bad = false
      local t = is_int(r.t) and t0 + r.t or nil
      if not t then
        bad = bad + 1
      elseif is_int(r.s) then                  -- a whole wait on one line
        local s = { k = tostring(r.k or "other"), n = tostring(r.n or ""), b = t, task = r.task,
          e = t + (is_int(r.d) and math.max(r.d, 0) or 0) }
        if is_int(r.v) then s.v = r.v end
        inst.spans[#inst.spans + 1] = s
        seen(inst, s.e)
      elseif is_int(r.b) then
        local s = { k = tostring(r.k or "other"), n = tostring(r.n or ""), b = t, task = r.task }
        open[r.b] = s
        inst.spans[#inst.spans + 1] = s
      elseif is_int(r.e) then
        local s = open[r.e]
        if s then
          open[r.e] = nil
          s.e = math.max(t, s.b)
          if is_int(r.v) then s.v = r.v end
          if r.err ~= nil then
            s.err, s.msg = tostring(r.err), r.msg and tostring(r.msg) or tostring(r.err)
          end
        end
      elseif type(r.m) == "string" then
        local msg = type(r.msg) == "string" and r.msg or nil
        if r.m == "start" then
          inst.start = inst.start and math.min(inst.start, t) or t
        elseif r.m == "success" or r.m == "failure" or r.m == "crash" then
          inst.outcome, inst.t_out, inst.error = r.m, t, msg or inst.error
        elseif r.m == "dropped" then
          inst.problems.dropped = true
        end
        if r.m ~= "start" then inst.marks[#inst.marks + 1] = { m = r.m, t = t, msg = msg } end
      end
      seen(inst, t)
    end
  end
  f:close()
  if n == 0 then inst.problems.empty_trace = true
  elseif not t0 and not inst.problems.not_trace then inst.problems.not_trace = true
  elseif last_bad and bad == 1 then inst.problems.cut = true
  elseif bad > 0 then inst.problems.bad_lines = (inst.problems.bad_lines or 0) + bad end
  return true
end

-- Testground's event object, in the sdk-go v0.2.6+ shape ({"message_event": {...}})
-- or the older one ({"type": "message", ...}): kind, body.
local function event_of(ev)
  if type(ev) ~= "table" then return nil end
  if type(ev.type) == "string" then return ev.type, ev end
  for k, v in pairs(ev) do
    if type(k) == "string" and k:match("_event$") then return k:gsub("_event$", ""), v end
  end
  return nil
end

-- run.out: Testground event lines {"ts": <epoch ns>, "event": {...}}.
local function read_runout(inst, path)
  local f = io.open(path, "rb")
  if not f then return false end
  inst.has_runout = true
  local stages, bad = {}, 0
  for line in f:lines() do
    local ok, r = pcall(json.decode, line)
    local kind, body
    if ok and type(r) == "table" and is_int(r.ts) then kind, body = event_of(r.event) end
    if not kind then
      if line:match("%S") then bad = bad + 1 end
    else
      local t = r.ts // 1000
      seen(inst, t)
      body = type(body) == "table" and body or {}
      if kind == "start" then
        inst.ro_start = inst.ro_start or t
      elseif kind == "message" then
        if #inst.messages < MAX_MESSAGES then
          inst.messages[#inst.messages + 1] = { t = t, msg = cap(tostring(body.message or ""), 300) }
        end
      elseif kind == "success" or kind == "failure" or kind == "crash" then
        inst.ro_outcome, inst.ro_t_out = kind, t
        local e = body.error
        if type(e) == "string" then
          inst.ro_error = first_line(e)
          inst.detail = cap(e .. (type(body.stacktrace) == "string" and "\n" .. body.stacktrace or ""), MAX_DETAIL)
        end
      elseif kind == "stage_start" and body.name then
        stages[tostring(body.name)] = t
      elseif kind == "stage_end" and body.name and stages[tostring(body.name)] then
        inst.stages[#inst.stages + 1] = { k = "stage", n = tostring(body.name), b = stages[tostring(body.name)], e = t }
        stages[tostring(body.name)] = nil
      end
    end
  end
  f:close()
  if bad > 0 then inst.problems.bad_runout = true end
  return true
end

-- One instance: both files, then what each says merged.
local function read_instance(found)
  local inst = { group = found.group, index = found.index, dir = found.dir,
    label = ("%s[%d]"):format(found.group, found.index),
    spans = {}, marks = {}, messages = {}, stages = {}, problems = {} }
  local ok, err = pcall(function()
    read_trace(inst, found.dir .. "/trace.jsonl")
    read_runout(inst, found.dir .. "/run.out")
  end)
  if not ok then inst.problems.unreadable = tostring(err) end
  -- an older run, or tracing off: the stages are all the spans there are
  if not inst.has_trace then
    for _, s in ipairs(inst.stages) do inst.spans[#inst.spans + 1] = s end
  end
  inst.start = inst.start or inst.ro_start or inst.first
  if not inst.outcome and inst.ro_outcome then
    inst.outcome, inst.t_out = inst.ro_outcome, inst.ro_t_out
    inst.marks[#inst.marks + 1] = { m = inst.ro_outcome, t = inst.ro_t_out, msg = inst.ro_error }
  end
  inst.error = inst.error or inst.ro_error
  inst.src = inst.has_trace and "trace" or inst.has_runout and "run.out" or "none"
  if not inst.has_trace and not inst.has_runout then inst.problems.nothing = true
  elseif not inst.has_trace then inst.problems.no_trace = true end
  if not inst.outcome and (inst.has_trace or inst.has_runout) then inst.problems.no_outcome = true end
  -- waits that never ended: up to the last moment the instance was seen
  for _, s in ipairs(inst.spans) do
    if not s.e then
      s.e, s.unfinished = math.max(inst.last or s.b, s.b), true
      inst.unfinished = (inst.unfinished or 0) + 1
    end
  end
  -- a trace's spans come in the order they began; only stages from
  -- run.out (or clocks that stepped back) need sorting
  local sorted = true
  for i = 2, #inst.spans do
    if inst.spans[i].b < inst.spans[i - 1].b then sorted = false break end
  end
  if not sorted then
    table.sort(inst.spans, function(a, b)
      if a.b ~= b.b then return a.b < b.b end
      return a.e > b.e
    end)
  end
  -- rows: a span goes to the first row that is free when it begins (tasks
  -- of one instance wait side by side)
  local rows = {}
  for _, s in ipairs(inst.spans) do
    local r = 1
    while rows[r] and rows[r] > s.b do r = r + 1 end
    rows[r] = s.e
    s.row = r - 1
  end
  inst.rows = math.max(1, #rows)
  return inst
end

-- ---- barriers -------------------------------------------------------------------------------

local WAITS = { barrier = true, signal_and_wait = true }
local ENTERS = { entry = true, signal_and_wait = true }

-- For every state somebody waited at: who entered, who entered last (the
-- highest arrival seq, else the latest begin), when it was released, and
-- how long the instances waited in all and for the last one.  A state that
-- nobody entered in the traces (plain barriers on Go SDK entries, stages
-- of an older run) has no "last": its waits' first begin stands in for
-- the first arrival.
local function analyse_barriers(insts)
  local by, order = {}, {}
  for _, inst in ipairs(insts) do
    for _, s in ipairs(inst.spans) do
      -- an entry counts when it got its seq, or when it was signal_and_wait
      -- (it entered, then its wait failed: the seq never came back)
      local entered = (s.k == "entry" and s.v) or s.k == "signal_and_wait"
      if WAITS[s.k] or entered then
        local B = by[s.n]
        if not B then
          B = { name = s.n, waits = {}, entries = {} }
          by[s.n] = B
          order[#order + 1] = B
        end
        if WAITS[s.k] then B.waits[#B.waits + 1] = { inst = inst, s = s } end
        if entered then B.entries[#B.entries + 1] = { inst = inst, s = s } end
      end
    end
  end
  local out = {}
  for _, B in ipairs(order) do
    if #B.waits > 0 then
      local arrivals = #B.entries > 0 and B.entries or B.waits
      -- the last: by the order Redis gave (the seqs) when every entry has
      -- one -- it holds across hosts whose clocks disagree -- else by the
      -- clocks; one pass, no sort (a run may have thousands of barriers)
      local by_seq = true
      for _, a in ipairs(arrivals) do if not a.s.v then by_seq = false end end
      local first, last = math.huge, nil
      for _, a in ipairs(arrivals) do
        local s = a.s
        if s.b < first then first = s.b end
        if not last then last = a
        elseif by_seq then
          if s.v > last.s.v then last = a end
        elseif s.b > last.s.b or (s.b == last.s.b and a.inst.label > last.inst.label) then
          last = a
        end
      end
      if #B.entries == 0 then last = nil end
      if last then last.s.last = true end
      local last_b = last and last.s.b or first
      local release, total, for_last, failed, ended, gave_up = nil, 0, 0, 0, 0, first
      for _, w in ipairs(B.waits) do
        local s = w.s
        total = total + (s.e - s.b)
        gave_up = math.max(gave_up, s.e)
        if s.b < last_b then for_last = for_last + (math.min(s.e, last_b) - s.b) end
        if s.err then failed = failed + 1
        elseif not s.unfinished then
          ended = ended + 1
          release = math.max(release or s.e, s.e)
        end
      end
      out[#out + 1] = { name = B.name, entries = #B.entries, waits = #B.waits, first = first,
        last = last_b, last_inst = last and last.inst, release = release, total = total, for_last = for_last,
        failed = failed, ended = ended, gave_up = gave_up }
    end
  end
  return out
end

-- ---- the summary's lines --------------------------------------------------------------------

local PROBLEMS = {
  { "nothing", "left nothing (no trace.jsonl, no run.out)" },
  { "no_trace", "left no trace.jsonl (an older tgrun, --no-trace, or another SDK): drawn from run.out alone" },
  { "not_trace", "have a trace.jsonl without its header line: not used" },
  { "empty_trace", "have an empty trace.jsonl (killed in their first second?)" },
  { "cut", "have a trace.jsonl that ends in a cut line (killed while writing?)" },
  { "bad_lines", "have lines in trace.jsonl that could not be read" },
  { "bad_runout", "have lines in run.out that could not be read" },
  { "newer", "have a trace.jsonl from a newer tgrun: read as far as understood" },
  { "dropped", "lost trace records (out of memory)" },
  { "no_outcome", "recorded no outcome (killed, crashed, or still running): their last waits are drawn as unfinished" },
  { "unreadable", "could not be read" },
}

local function problem_lines(insts)
  local lines = {}
  for _, p in ipairs(PROBLEMS) do
    local who = {}
    for _, inst in ipairs(insts) do
      if inst.problems[p[1]] then who[#who + 1] = inst.label end
    end
    if #who > 0 then
      lines[#lines + 1] = ("report: %d of %d instance%s %s: %s"):format(#who, #insts,
        #insts > 1 and "s" or "", p[2], some(who))
    end
  end
  return lines
end

local function summary_lines(bars)
  local lines = {}
  local slow = {}
  for _, b in ipairs(bars) do
    b.duration = (b.release or b.gave_up) - b.first
    slow[#slow + 1] = b
  end
  table.sort(slow, function(a, b)
    if a.duration ~= b.duration then return a.duration > b.duration end
    return a.name < b.name
  end)
  if #slow > 0 then
    lines[#lines + 1] = "slowest barriers (first arrival to release):"
    local width = 0
    for i = 1, math.min(3, #slow) do width = math.max(width, #slow[i].name + 3) end
    for i = 1, math.min(3, #slow) do
      local b = slow[i]
      local how = b.release and secs(b.duration) or ("never released (waited %s)"):format(secs(b.duration))
      local who = b.last_inst and ("%s arrived last, %s after the first; the others waited %s in all for it")
        :format(b.last_inst.label, secs(b.last - b.first), secs(b.for_last))
        or ("nobody entered it in the traces; %d instance%s waited %s in all"):format(b.waits,
          b.waits > 1 and "s" or "", secs(b.total))
      lines[#lines + 1] = ("  %-" .. width .. "s %s: %s"):format("'" .. b.name .. "'", how, who)
    end
    local per = {}
    for _, b in ipairs(bars) do per[#per + 1] = b end
    table.sort(per, function(a, b)
      if a.total ~= b.total then return a.total > b.total end
      return a.name < b.name
    end)
    local parts = {}
    for i = 1, math.min(5, #per) do parts[i] = ("'%s' %s"):format(per[i].name, secs(per[i].total)) end
    lines[#lines + 1] = ("time waited per state (all instances): %s%s"):format(table.concat(parts, ", "),
      #per > 5 and (", and %d more"):format(#per - 5) or "")
  end
  return lines
end

-- ---- trace.json: Chrome's trace event format ---------------------------------------------------

local function label_of(s)
  if s.k == "sleep" then return ("sleep %s s"):format(s.n) end
  if s.n == "" then return s.k end
  return ("%s %s"):format(s.k, s.n)
end

-- One event per line inside {"traceEvents": [...]}, written as it goes.
local function write_chrome(path, run, insts, t0)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:setvbuf("full", 1 << 20)
  local first = true
  local function ev(e)
    f:write(first and "\n" or ",\n", json.encode(e))
    first = false
  end
  -- the waits, by far the most events, are formatted by hand: a run of a
  -- thousand instances has hundreds of thousands (json.encode sorts every
  -- object's keys); a name is encoded once however often it comes
  local quoted = setmetatable({}, { __index = function(t, s)
    local q = json.encode(s)
    t[s] = q
    return q
  end })
  local X = [[{"ph":"X","name":%s,"cat":%s,"ts":%d,"dur":%d,"pid":%d,"tid":%d,"args":{"name":%s%s}}]]
  f:write('{"displayTimeUnit":"ms","otherData":', json.encode({ run = run.run or "", plan = run.plan or "",
    case = run.case or "", generator = "tgrun report" }), ',"traceEvents":[')
  local groups, gpid = {}, {}
  for _, inst in ipairs(insts) do
    if not gpid[inst.group] then
      groups[#groups + 1] = inst.group
      gpid[inst.group] = #groups
    end
  end
  for i, g in ipairs(groups) do
    local n = 0
    for _, inst in ipairs(insts) do if inst.group == g then n = n + 1 end end
    ev({ ph = "M", name = "process_name", pid = i, tid = 0,
      args = { name = ("group %s (%d instance%s)"):format(g, n, n > 1 and "s" or "") } })
    ev({ ph = "M", name = "process_sort_index", pid = i, tid = 0, args = { sort_index = i } })
  end
  local tid = 0
  for _, inst in ipairs(insts) do
    local pid, base = gpid[inst.group], tid
    for r = 1, inst.rows do
      tid = tid + 1
      local name = r == 1 and inst.label or ("%s (%d)"):format(inst.label, r)
      ev({ ph = "M", name = "thread_name", pid = pid, tid = tid, args = { name = name } })
      ev({ ph = "M", name = "thread_sort_index", pid = pid, tid = tid, args = { sort_index = tid } })
    end
    for _, s in ipairs(inst.spans) do
      local more = ""
      if s.v or s.err or s.unfinished or s.last then
        more = (s.v and ',"result":' .. s.v or "")
          .. (s.err and ',"error":' .. json.encode(s.err) .. ',"message":' .. json.encode(s.msg) or "")
          .. (s.unfinished and ',"unfinished":true' or "") .. (s.last and ',"arrived_last":true' or "")
      end
      f:write(first and "\n" or ",\n", X:format(quoted[label_of(s)], quoted[s.k], s.b - t0, s.e - s.b, pid,
        base + 1 + s.row, quoted[s.n], more))
      first = false
    end
    for _, m in ipairs(inst.marks) do
      if m.m ~= "success" then
        ev({ ph = "i", s = "t", name = m.m, ts = m.t - t0, pid = pid, tid = base + 1,
          args = { message = m.m == inst.outcome and (inst.detail or m.msg) or m.msg } })
      end
    end
    for _, s in ipairs(inst.spans) do
      if s.k == "publish" and s.v and not s.err then
        ev({ ph = "i", s = "t", name = ("published '%s' #%d"):format(s.n, s.v), ts = s.e - t0, pid = pid,
          tid = base + 1 + s.row, args = { topic = s.n, seq = s.v } })
      end
    end
  end
  f:write("\n]}\n")
  local ok, werr = f:close()
  if not ok then return nil, werr end
  return true
end

-- ---- timeline.html: the page ------------------------------------------------------------------

-- The page's data: compact arrays, strings interned (docs/api.md describes
-- what the page shows; assets/timeline.html draws it).
local function page_data(run, insts, bars, notes, t0, t1)
  local strs, index = {}, {}
  local function S(s)
    if s == nil then return -1 end
    s = tostring(s)
    local i = index[s]
    if not i then
      strs[#strs + 1] = s
      i = #strs - 1
      index[s] = i
    end
    return i
  end
  local kinds, kindix = {}, {}
  local function K(k)
    if not kindix[k] then
      kinds[#kinds + 1] = k
      kindix[k] = #kinds - 1
    end
    return kindix[k]
  end
  local groups, gix, lanes, spans, marks = {}, {}, {}, {}, {}
  for li, inst in ipairs(insts) do
    local g = gix[inst.group]
    if not g then
      groups[#groups + 1] = { name = inst.group, lanes = json.array({}), ok = 0, failed = 0 }
      g = #groups
      gix[inst.group] = g
    end
    local G = groups[g]
    G.lanes[#G.lanes + 1] = li - 1
    if inst.outcome == "success" then G.ok = G.ok + 1 elseif inst.outcome then G.failed = G.failed + 1 end
    local notes_i = {}
    for _, p in ipairs(PROBLEMS) do
      if inst.problems[p[1]] then notes_i[#notes_i + 1] = p[2] end
    end
    lanes[li] = { id = inst.label, g = g - 1, rows = inst.rows, outcome = inst.outcome or "unknown",
      err = inst.error, detail = inst.detail, src = inst.src,
      start = inst.start and inst.start - t0 or json.null,
      ["end"] = inst.last and inst.last - t0 or json.null, host = inst.host,
      notes = json.array(notes_i) }
    for _, s in ipairs(inst.spans) do
      local flags = (s.err and 1 or 0) | (s.unfinished and 2 or 0) | (s.last and 4 or 0)
      spans[#spans + 1] = json.array({ li - 1, s.row, K(s.k), S(s.n), s.b - t0, s.e - s.b, flags,
        s.v or json.null, S(s.err), S(s.msg) })
    end
    for _, m in ipairs(inst.marks) do
      local msg = m.msg
      if m.m == inst.outcome and inst.detail then msg = inst.detail end
      marks[#marks + 1] = json.array({ li - 1, m.t - t0, m.m, S(msg) })
    end
    for _, s in ipairs(inst.spans) do
      if s.k == "publish" and s.v and not s.err then
        marks[#marks + 1] = json.array({ li - 1, s.e - t0, "publish", S(("'%s' #%d"):format(s.n, s.v)) })
      end
    end
    for _, m in ipairs(inst.messages) do
      marks[#marks + 1] = json.array({ li - 1, m.t - t0, "message", S(m.msg) })
    end
  end
  local B = {}
  for _, b in ipairs(bars) do
    B[#B + 1] = { name = b.name, entries = b.entries, waits = b.waits, first = b.first - t0,
      gave_up = b.gave_up - t0,
      last = b.last - t0, last_lane = b.last_inst and b.last_inst.label or json.null,
      release = b.release and b.release - t0 or json.null,
      total = b.total, for_last = b.for_last, failed = b.failed }
  end
  return { v = 1, run = run.run, plan = run.plan, case = run.case, t0 = t0, duration = t1 - t0,
    kinds = json.array(kinds), groups = json.array(groups), lanes = json.array(lanes),
    spans = json.array(spans), marks = json.array(marks), strs = json.array(strs),
    barriers = json.array(B), notes = json.array(notes) }
end

local function write_html(path, data)
  local page = fs.asset("timeline.html")
  if not page then return nil, "the page's template is not in this tgrun binary" end
  -- JSON inside <script>: no "<" at all, so that neither "</script" nor
  -- "<!--" in a name or message can end or bend the element ("<" appears
  -- in JSON only inside strings, where \u003c means the same)
  local text = json.encode(data):gsub("<", "\\u003c")
  local a, b = page:find("/*TG_DATA*/null", 1, true)
  if not a then return nil, "the page's template has no data slot" end
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(page:sub(1, a - 1), text, page:sub(b + 1))
  local ok, werr = f:close()
  if not ok then return nil, werr end
  return true
end

-- Write through a temporary file, so that a reader never sees half a file.
local function replace(path, writer, ...)
  local tmp = path .. ".tmp"
  local ok, err = writer(tmp, ...)
  if ok then ok, err = os.rename(tmp, path) end
  if not ok then os.remove(tmp) end
  return ok, err
end

-- ---- the whole report ---------------------------------------------------------------------------

-- M.run(run_dir [, out_dir]) -> {status = 0 | 1 | 2, error = line, lines = {...}, html =, json =}
function M.run(dir, out_dir)
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  local found, why = find_instances(dir)
  if not found then return { status = 2, error = why } end
  local insts = {}
  for i, f in ipairs(found) do insts[i] = read_instance(f) end
  -- groups in the order they started (tgrun -n starts them in the order of
  -- its -g options), instances by index
  local gstart = {}
  for _, inst in ipairs(insts) do
    local t = inst.start or inst.first or math.huge
    gstart[inst.group] = math.min(gstart[inst.group] or math.huge, t)
  end
  table.sort(insts, function(a, b)
    if a.group ~= b.group then
      if gstart[a.group] ~= gstart[b.group] then return gstart[a.group] < gstart[b.group] end
      return a.group < b.group
    end
    return a.index < b.index
  end)

  -- the run's name and extent
  local run = { run = dir:match("([^/]+)$") }
  for _, inst in ipairs(insts) do
    local ok, h = pcall(function()
      local f = io.open(inst.dir .. "/trace.jsonl", "rb")
      if not f then return nil end
      local l = f:read("l")
      f:close()
      return json.decode(l)
    end)
    if ok and type(h) == "table" then
      run.run, run.plan, run.case = h.run or run.run, h.plan, h.case
      break
    end
  end
  local t0, t1 = math.huge, -math.huge
  for _, inst in ipairs(insts) do
    if inst.first then t0, t1 = math.min(t0, inst.first), math.max(t1, inst.last) end
    if inst.start then t0 = math.min(t0, inst.start) end
    for _, s in ipairs(inst.spans) do t0, t1 = math.min(t0, s.b), math.max(t1, s.e) end
  end
  if t0 == math.huge then t0, t1 = 0, 0 end

  local bars = analyse_barriers(insts)
  local lines = {}
  local notes = problem_lines(insts)
  if #insts == 0 then
    notes[#notes + 1] = ("report: %s holds no instance folders (<group>/<index>/) yet: the page is empty"):format(dir)
  end
  for _, l in ipairs(summary_lines(bars)) do lines[#lines + 1] = l end
  for _, l in ipairs(notes) do lines[#lines + 1] = l end

  local out = out_dir or dir
  local html, chrome = out .. "/timeline.html", out .. "/trace.json"
  local ok, err = replace(html, write_html, page_data(run, insts, bars, notes, t0, t1))
  collectgarbage()                              -- the page's data: a run of many spans is big
  if ok then ok, err = replace(chrome, write_chrome, run, insts, t0) end
  if not ok then
    return { status = 1, error = ("cannot write %s: %s"):format(out, tostring(err)), lines = lines }
  end
  lines[#lines + 1] = ("timeline: %s (and %s, for Perfetto or chrome://tracing)"):format(html, chrome)
  return { status = 0, lines = lines, html = html, json = chrome, instances = #insts }
end

return M
