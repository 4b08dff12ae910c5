-- bench/analyze.lua -- turns bench/run's raw results into numbers, a table
-- and BENCHMARKS.md.  Plain Lua 5.4, no modules:
--
--   lua5.4 bench/analyze.lua collect RUNDIR        one run -> RUNDIR/summary.lua
--   lua5.4 bench/analyze.lua oneline RUNDIR        one progress line for that run
--   lua5.4 bench/analyze.lua oneline-baselines RES REP
--   lua5.4 bench/analyze.lua profiles RES          scenarios to profile (missed targets)
--   lua5.4 bench/analyze.lua report RES MDFILE     table on stdout, markdown to MDFILE
--
-- A run directory holds: meta (k=v lines from bench/run), time (GNU time
-- "%e %U %S %M"), cmdstats (INFO commandstats after the run), stdout,
-- stderr, and out/<run>/single/<i>/bench.out written by bench/plans/bench.lua.
-- All times inside are wall-clock nanoseconds (CLOCK_REALTIME, one machine).

local unpack = table.unpack

-- ---- small helpers ---------------------------------------------------------

local function readfile(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local function lines(s)
  local t = {}
  for l in (s or ""):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local function kv(path)
  local t = {}
  for _, l in ipairs(lines(readfile(path))) do
    local k, v = l:match("^([%w_]+)=(.*)$")
    if k then t[k] = tonumber(v) and math.tointeger(tonumber(v)) or tonumber(v) or v end
  end
  return t
end

local function sorted(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c
end

-- nearest-rank percentile of a list (p in 0..100); nil for an empty list
local function pct(t, p)
  if #t == 0 then return nil end
  local s = sorted(t)
  local k = math.max(1, math.min(#s, math.ceil(p / 100 * #s)))
  return s[k]
end

local function median(t)
  if #t == 0 then return nil end
  local s = sorted(t)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- serialize a table of numbers/strings/booleans/tables as Lua source
local function ser(v, ind)
  ind = ind or ""
  local tv = type(v)
  if tv == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v or v == math.huge or v == -math.huge then return "nil" end
    return string.format("%.17g", v)
  elseif tv == "string" then
    return string.format("%q", v)
  elseif tv == "boolean" then
    return tostring(v)
  elseif tv == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) then return a < b end
      return type(a) == "number"
    end)
    local out = { "{\n" }
    for _, k in ipairs(keys) do
      local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. ser(k) .. "]")
      out[#out + 1] = ind .. "  " .. ks .. " = " .. ser(v[k], ind .. "  ") .. ",\n"
    end
    out[#out + 1] = ind .. "}"
    return table.concat(out)
  end
  return "nil"
end

local function load_summary(dir)
  local s = readfile(dir .. "/summary.lua")
  if not s then return nil end
  local f = load(s, "=summary", "t", {})
  return f and f()
end

local function ls(dir)
  local t = {}
  local p = io.popen("ls -1 '" .. dir .. "' 2>/dev/null")
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

-- ---- formatting ---------------------------------------------------------------

local function fms(ns)        -- nanoseconds -> "12.3 ms" / "850 µs" / "1.23 s"
  if ns == nil then return "–" end
  local ms = ns / 1e6
  if ms >= 999.5 then return string.format("%.2f s", ms / 1000) end
  if ms >= 100 then return string.format("%.0f ms", ms) end
  if ms >= 10 then return string.format("%.1f ms", ms) end
  if ms >= 1 then return string.format("%.2f ms", ms) end
  return string.format("%.0f µs", ns / 1e3)
end

local function fnum(x, digits)
  if x == nil then return "–" end
  return string.format("%." .. (digits or 2) .. "f", x)
end

local function fint(x)       -- 1234567 -> 1,234,567
  if x == nil then return "–" end
  local s = string.format("%d", math.floor(x + 0.5))
  local neg = s:sub(1, 1) == "-"
  if neg then s = s:sub(2) end
  s = s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return (neg and "-" or "") .. s
end

local function frate(x)      -- per second, compact
  if x == nil then return "–" end
  if x >= 1e6 then return string.format("%.2f M/s", x / 1e6) end
  if x >= 1e3 then return string.format("%.0f k/s", x / 1e3) end
  return string.format("%.0f /s", x)
end

local function fkb(kb)
  if kb == nil then return "–" end
  if kb >= 1024 * 10 then return string.format("%.0f MB", kb / 1024) end
  if kb >= 1024 then return string.format("%.2f MB", kb / 1024) end
  return string.format("%.0f KB", kb)
end

-- ---- collect: one run -------------------------------------------------------------

-- Commands the bench itself (or the census in the plan) sends: not tgrun's cost.
local NOT_OURS = { ["config|resetstat"] = true, ["info"] = true, ["client|list"] = true,
  ["flushall"] = true, ["script|load"] = true }
-- Commands a client sends over the wire (everything else ran inside a script).
local ON_WIRE = { evalsha = true, eval = true, evalsha_ro = true, eval_ro = true, fcall = true,
  xread = true, mget = true, ["client|unblock"] = true, ["client|setname"] = true,
  ["client|id"] = true, ping = true, time = true, ["script|load"] = true }

local function parse_cmdstats(path)
  local t = {}
  for _, l in ipairs(lines(readfile(path))) do
    local name, calls = l:match("^cmdstat_([^:]+):calls=(%d+)")
    if name and not NOT_OURS[name] then t[name] = math.tointeger(tonumber(calls)) end
  end
  return t
end

local function parse_time(path)
  local ls_ = lines(readfile(path))
  for i = #ls_, 1, -1 do
    local e, u, s, m = ls_[i]:match("^([%d.]+) ([%d.]+) ([%d.]+) (%d+)$")
    if e then return { elapsed = tonumber(e), user = tonumber(u), sys = tonumber(s), maxrss_kb = tonumber(m) } end
  end
  return {}
end

local function collect(dir)
  local meta = kv(dir .. "/meta")
  local S = { meta = meta, time = parse_time(dir .. "/time"), cmds = parse_cmdstats(dir .. "/cmdstats") }
  local stdout = readfile(dir .. "/stdout") or ""
  local n_ok, n_fail, secs = stdout:match("(%d+) succeeded, (%d+) failed, in ([%d.]+) s")
  S.succeeded, S.failed, S.tgrun_secs = tonumber(n_ok), tonumber(n_fail), tonumber(secs)
  -- what failed, in a few words (first distinct messages)
  local fails, seen = {}, {}
  for msg in stdout:gmatch("%] failed: ([^\n]+)") do
    local key = msg:gsub("%d+", "#")
    if not seen[key] and #fails < 3 then seen[key] = true; fails[#fails + 1] = msg end
  end
  for msg in stdout:gmatch("%] FAILED: ([^\n]+)") do
    local key = msg:gsub("%d+", "#")
    if not seen[key] and #fails < 3 then seen[key] = true; fails[#fails + 1] = msg end
  end
  S.fail_msgs = fails
  local stderr = readfile(dir .. "/stderr") or ""
  S.stderr_head = stderr:sub(1, 600)
  -- values that timed-out takes got (tgrun prints "got X of N values")
  local partial = 0
  for got in stdout:gmatch("got (%d+) of %d+ values") do partial = partial + tonumber(got) end
  S.partial_taken = partial

  local n = meta.n or 0
  local files = {}
  if meta.mode == "single" then
    files[1] = dir .. "/out/bench.out"
  else
    local out = meta.outputs or (dir .. "/out")
    for i = 0, n - 1 do files[#files + 1] = ("%s/%s/single/%d/bench.out"):format(out, meta.run_id, i) end
  end

  local R = meta.rounds or 0
  local emax, emin, xmax, xmin = {}, {}, {}, {}
  local per = {}            -- per instance: {e = {}, x = {}}
  local e0s, hwm, rss, luakb, lualive = {}, {}, {}, {}, {}
  local cpu_tg, cpu_redis = {}, nil
  local a2a = { t0 = nil, t1 = nil, taken = 0, done = 0, durs = {} }
  local reported = 0
  for _, path in ipairs(files) do
    local s = readfile(path)
    if s then
      reported = reported + 1
      local inst = { e = {}, x = {} }
      per[#per + 1] = inst
      for l in s:gmatch("[^\n]+") do
        local tag = l:match("^(%S+)")
        if tag == "r" then
          local r, e, x = l:match("^r (%d+) (%d+) (%d+)")
          r, e, x = math.tointeger(tonumber(r)), math.tointeger(tonumber(e)), math.tointeger(tonumber(x))
          inst.e[r], inst.x[r] = e, x
          if not emax[r] or e > emax[r] then emax[r] = e end
          if not emin[r] or e < emin[r] then emin[r] = e end
          if not xmax[r] or x > xmax[r] then xmax[r] = x end
          if not xmin[r] or x < xmin[r] then xmin[r] = x end
          if r == 0 then e0s[#e0s + 1] = e end
        elseif tag == "a2a" then
          local t0, t1, got = l:match("^a2a (%d+) (%d+) (%d+)")
          t0, t1, got = math.tointeger(tonumber(t0)), math.tointeger(tonumber(t1)), math.tointeger(tonumber(got))
          if not a2a.t0 or t0 < a2a.t0 then a2a.t0 = t0 end
          if not a2a.t1 or t1 > a2a.t1 then a2a.t1 = t1 end
          a2a.taken = a2a.taken + got
          a2a.done = a2a.done + 1
          a2a.durs[#a2a.durs + 1] = t1 - t0
        elseif tag == "first" and meta.case == "all_to_all" then
          e0s[#e0s + 1] = math.tointeger(tonumber(l:match("^first (%d+)")))
        elseif tag == "mem" then
          local h, r_, lk, live = l:match("^mem (%d+) (%d+) ?([%d.]*) ?([%d.]*)")
          hwm[#hwm + 1] = tonumber(h)
          rss[#rss + 1] = tonumber(r_)
          if lk and lk ~= "" then luakb[#luakb + 1] = tonumber(lk) end
          if live and live ~= "" then lualive[#lualive + 1] = tonumber(live) end
        elseif tag == "cpu" then
          local a, b = l:match("^cpu (%d+) (%d+)")
          cpu_tg[#cpu_tg + 1] = tonumber(b) - tonumber(a)
        elseif tag == "rcpu" then
          local a, b = l:match("^rcpu (%d+) (%d+)")
          cpu_redis = tonumber(b) - tonumber(a)
        elseif tag == "clients" then
          local cc = l:match("^clients (%-?%d+)")
          local by = {}
          for k, v in l:gmatch("(%S+)=(%d+)") do by[k] = tonumber(v) end
          S.clients = { connected = tonumber(cc), by_name = by }
        end
      end
    end
  end
  S.reported = reported

  if #e0s > 0 and meta.launch_ns then
    local d = {}
    for i, e in ipairs(e0s) do d[i] = e - meta.launch_ns end
    S.startup = { first = pct(d, 0), median = median(d), all = pct(d, 100) }
  end
  if #hwm > 0 then
    S.mem = { hwm_med = median(hwm), hwm_max = pct(hwm, 100), rss_med = median(rss),
      lua_kb_med = median(luakb), lua_live_med = median(lualive) }
  end

  if meta.case == "barrier" or meta.case == "poller" then
    local period, last, first, fanout, waiter = {}, {}, {}, {}, {}
    for r = 1, R do
      if xmax[r] and xmax[r - 1] and emax[r] then
        period[#period + 1] = xmax[r] - xmax[r - 1]
        last[#last + 1] = xmax[r] - emax[r]
        first[#first + 1] = xmin[r] - emax[r]
        fanout[#fanout + 1] = xmax[r] - xmin[r]
      end
    end
    for _, inst in ipairs(per) do
      for r = 1, R do
        if inst.x[r] and emax[r] then waiter[#waiter + 1] = inst.x[r] - emax[r] end
      end
    end
    S.barrier = {
      rounds_measured = #period,
      period_med = median(period), period_p99 = pct(period, 99), period_max = pct(period, 100),
      lat_med = median(last), lat_p99 = pct(last, 99),
      first_med = median(first), fanout_med = median(fanout),
      waiter_med = median(waiter), waiter_p99 = pct(waiter, 99),
      r0_span = (xmax[0] and emin[0]) and (xmax[0] - emin[0]) or nil,
    }
    local nb = R + 2    -- r0 .. rR and "end"
    S.barriers_per_instance = nb
    -- CPU during rounds 1..R: in-proc one process (instance 1 read it), as
    -- processes the sum over every instance's process
    if #cpu_tg > 0 and R > 0 then
      local sum = 0
      for _, c in ipairs(cpu_tg) do sum = sum + c end
      if meta.mode == "inproc" then sum = cpu_tg[1] end
      S.round_cpu = { tgrun_ns = sum / (n * R), redis_ns = cpu_redis and cpu_redis / (n * R) or nil,
        tgrun_per_round_ns = sum / R, redis_per_round_ns = cpu_redis and cpu_redis / R or nil }
    end
  elseif meta.case == "all_to_all" then
    if a2a.t0 then
      S.a2a = { time = a2a.t1 - a2a.t0, taken = a2a.taken, done = a2a.done,
        dur_med = median(a2a.durs), rate = a2a.taken / ((a2a.t1 - a2a.t0) / 1e9) }
    else
      S.a2a = { taken = 0, done = 0 }
    end
    S.a2a.expected = n * n
  end

  -- CPU: tgrun (GNU time, user+sys of tgrun and its children) and redis-server
  local clk = tonumber((readfile(dir .. "/../../host.txt") or ""):match("clk_tck=(%d+)")) or 100
  S.cpu = { tgrun = (S.time.user or 0) + (S.time.sys or 0),
    redis = meta.redis_cpu_ticks and meta.redis_cpu_ticks / clk or nil }
  writefile(dir .. "/summary.lua", "return " .. ser(S) .. "\n")
  return S
end

local function oneline(S)
  if not S then return "no summary" end
  local m = S.meta
  local head = ("rc=%s %s/%s ok"):format(m.rc, S.succeeded or "?", m.n)
  if S.barrier then
    local b = S.barrier
    return ("%s, round %s, release %s (first waiter %s), start-up %s"):format(head,
      fms(b.period_med), fms(b.lat_med), fms(b.first_med), S.startup and fms(S.startup.all) or "–")
  elseif S.a2a then
    local a = S.a2a
    if a.time then
      return ("%s, %s deliveries in %s = %s"):format(head, fint(a.taken), fms(a.time), frate(a.rate))
    end
    return ("%s, no instance finished its take (%s values taken by timed-out instances)"):format(head,
      fint(S.partial_taken))
  end
  return ("%s, maxrss %s"):format(head, fkb(S.time.maxrss_kb))
end

-- ---- loading a results folder -----------------------------------------------------------

-- headline used to choose the median repetition of a scenario
local function headline(S)
  if S.barrier then return S.barrier.period_med end
  if S.a2a then return S.a2a.time or math.huge end
  if S.meta.label:match("^zero") then return S.time.maxrss_kb end
  return S.time.maxrss_kb or 0
end

local function load_results(res)
  local by = {}
  for _, d in ipairs(ls(res .. "/runs")) do
    local S = load_summary(res .. "/runs/" .. d)
    if S then
      local label = S.meta.label
      by[label] = by[label] or {}
      table.insert(by[label], S)
    end
  end
  local med = {}
  for label, reps in pairs(by) do
    local ok = {}
    for _, S in ipairs(reps) do ok[#ok + 1] = S end
    table.sort(ok, function(a, b)
      local ha, hb = headline(a) or math.huge, headline(b) or math.huge
      return ha < hb
    end)
    med[label] = ok[(#ok + 1) // 2]
    med[label].reps = reps
    local hs = {}
    for _, S in ipairs(reps) do hs[#hs + 1] = headline(S) end
    med[label].headline_min, med[label].headline_max = pct(hs, 0), pct(hs, 100)
  end
  return med, by
end

local function load_baselines(res)
  local by = {}
  for _, f in ipairs(ls(res .. "/baselines")) do
    local s = readfile(res .. "/baselines/" .. f) or ""
    local fields = {}
    for v in s:gmatch('"([^"]*)"') do fields[#fields + 1] = v end
    -- name, requests, clients, pipeline, test, rps, avg, min, p50, p95, p99, max
    if #fields >= 12 then
      local name = fields[1]
      by[name] = by[name] or { rps = {}, p50 = {}, p99 = {} }
      by[name].requests, by[name].clients, by[name].pipeline = tonumber(fields[2]), tonumber(fields[3]), tonumber(fields[4])
      table.insert(by[name].rps, tonumber(fields[6]))
      table.insert(by[name].p50, tonumber(fields[9]))
      table.insert(by[name].p99, tonumber(fields[11]))
    end
  end
  local out = {}
  for name, b in pairs(by) do
    out[name] = { rps = median(b.rps), p50_ms = median(b.p50), p99_ms = median(b.p99),
      requests = b.requests, clients = b.clients, pipeline = b.pipeline, reps = #b.rps }
  end
  return out
end

-- ---- the cost model -----------------------------------------------------------------------

-- per instance per barrier, per command: (calls(R rounds) - calls(0 rounds)) / (N * R)
local function marginal(run, zero)
  if not run or not zero or not run.barrier then return nil end
  local n, R = run.meta.n, run.meta.rounds
  local per, total, wire = {}, 0, 0
  local names = {}
  for k in pairs(run.cmds) do names[k] = true end
  for k in pairs(zero.cmds) do names[k] = true end
  for k in pairs(names) do
    local d = ((run.cmds[k] or 0) - (zero.cmds[k] or 0)) / (n * R)
    if math.abs(d) >= 0.0005 then
      per[k] = d
      total = total + d
      if ON_WIRE[k] then wire = wire + d end
    end
  end
  -- per instance (>= 0.05 each) vs per barrier, shared by all N (XADD notify, EXPIRE of new keys)
  local own, shared = 0, 0
  for _, d in pairs(per) do if d >= 0.05 then own = own + d else shared = shared + d end end
  return { per = per, total = total, wire = wire, n = n, R = R, own = own, shared = shared }
end

-- raw: every command of the run / (N * barriers), as the brief's first definition
local function raw_cost(run)
  if not run or not run.barrier then return nil end
  local total = 0
  for _, c in pairs(run.cmds) do total = total + c end
  return total / (run.meta.n * run.barriers_per_instance)
end

-- ---- targets ---------------------------------------------------------------------------------

-- kind: "lt" (value < limit), "le" (value <= limit), "ge" (value >= limit)
local function verdict(value, limit, kind, fmt)
  if value == nil then return "not measured", nil end
  fmt = fmt or function(x) return tostring(x) end
  if kind == true then kind = "lt" elseif kind == false then kind = "ge" end
  local met
  if kind == "lt" then met = value < limit elseif kind == "le" then met = value <= limit + 1e-9
  else met = value >= limit end
  local lower_is_better = kind ~= "ge"
  local how
  if lower_is_better then
    if met and value > 0.95 * limit then
      how = value == limit and "met (at the limit)" or ("met (%.0f%% of the limit)"):format(100 * value / limit)
    elseif met then how = ("met: " .. (limit / value < 1.1 and "%.2f" or "%.1f") .. "× below the limit"):format(limit / value)
    else
      local r = value / limit
      how = ("**missed** by %s (" .. (r < 1.1 and "%.2f" or "%.1f") .. "× the limit)"):format(fmt(value - limit), r)
    end
  else
    if met then how = ("met: %.1f× the minimum"):format(value / limit)
    else how = ("**missed**: %.1f× short (%.0f%% of the minimum)"):format(limit / value, 100 * value / limit) end
  end
  return how, met
end

local function targets(med, base)
  local T = {}
  local b1k = med.barrier_inproc_1000
  local p1k = med.poller_procs_1000 or med.poller_procs_100
  local b10k = med.barrier_inproc_10000
  local b100p = med.barrier_procs_100
  local a1k = med.a2a_inproc_1000
  -- issue 12's numbers are read against redis-benchmark's floor of the same
  -- run: N entry scripts (enter.lua) at the pipelined rate, and the range
  -- over the repetitions
  local enter_p16 = base and base.enter_c50_p16 and base.enter_c50_p16.rps
  local function vs_floor(S, v)
    local floor = S and enter_p16 and S.meta.n / enter_p16 * 1e9
    local range = S and S.headline_min and #S.reps > 1 and ("; reps %s–%s"):format(fms(S.headline_min), fms(S.headline_max)) or ""
    if not floor then return fms(v) .. range end
    return ("%s (floor %s: %.2f× the floor%s)"):format(fms(v), fms(floor), v / floor, range)
  end
  -- 1. release latency at N = 1,000 in-proc
  do
    local v = b1k and b1k.barrier.lat_med
    local how, met = verdict(v and v / 1e6, 2, true, function(x) return ("%.1f ms"):format(x) end)
    T[#T + 1] = { key = "latency", name = "barrier release latency, median, N = 1,000 in-proc",
      limit = "< 2 ms", value = v and vs_floor(b1k, v) or "–", how = how, met = met,
      profile = met == false and "barrier_inproc_1000" or nil }
  end
  -- 2. vs the poller
  do
    local ratio = (b1k and p1k) and p1k.barrier.lat_med / b1k.barrier.lat_med or nil
    local how, met = verdict(ratio, 100, false)
    T[#T + 1] = { key = "poller", name = ("release latency (N = 1,000 in-proc) vs the once-a-second poller (N = %s processes)"):format(
      p1k and fint(p1k.meta.n) or "?"), limit = "≥ 100× better",
      value = ratio and ("%.0f× (poller %s / tgrun %s)"):format(ratio, fms(p1k.barrier.lat_med), fms(b1k.barrier.lat_med)) or "–",
      how = how, met = met, profile = met == false and "barrier_inproc_1000" or nil }
  end
  -- 3. 10,000 in-proc round (issue 12: < 100 ms; it was < 1 s)
  do
    local v = b10k and b10k.barrier.period_med
    local how, met = verdict(v and v / 1e6, 100, true, function(x) return ("%.1f ms"):format(x) end)
    T[#T + 1] = { key = "round10k", name = "barrier round, median, N = 10,000 in-proc", limit = "< 100 ms",
      value = v and vs_floor(b10k, v) or "–", how = b10k and how or "not run (--quick)", met = met,
      profile = met == false and "barrier_inproc_10000" or nil }
  end
  -- 3b. 100 processes round (issue 12)
  do
    local v = b100p and b100p.barrier.period_med
    local how, met = verdict(v and v / 1e6, 5, true, function(x) return ("%.1f ms"):format(x) end)
    T[#T + 1] = { key = "round100p", name = "barrier round, median, N = 100 processes", limit = "< 5 ms",
      value = v and vs_floor(b100p, v) or "–", how = b100p and how or "not run", met = met }
      -- (not profiled: perf attaches to one process, and the time is spread over 101)
  end
  -- 4. all-to-all 1,000 in-proc
  do
    local v = a1k and a1k.a2a.time
    local how, met = verdict(v and v / 1e9, 5, true, function(x) return ("%.2f s"):format(x) end)
    if a1k and a1k.a2a.taken ~= a1k.a2a.expected then how, met = "**missed**: not every value was delivered", false end
    T[#T + 1] = { key = "a2a", name = "all-to-all, N = 1,000 in-proc (1 M deliveries)", limit = "< 5 s",
      value = v and fms(v) or "–", how = how, met = met, profile = met == false and "a2a_inproc_1000" or nil }
  end
  -- 5. commands per instance per barrier (marginal), each mode
  for _, m in ipairs({ { "procs", "barrier_procs_100", "zero_procs_100" },
                       { "in-proc", "barrier_inproc_1000", "zero_inproc_1000" } }) do
    local c = marginal(med[m[2]], med[m[3]])
    local how, met = verdict(c and c.own, 3, "le", function(x) return ("%.2f"):format(x) end)
    T[#T + 1] = { key = "cmds_" .. m[1], name = ("Redis commands per instance per barrier (%s, N = %s; counting those a script runs)"):format(
      m[1], c and fint(c.n) or "?"), limit = "≤ 3",
      value = c and ("%.3f = %.2f per instance + %.3f shared (%s per barrier for all N); %.2f sent over the wire"):format(
        c.total, c.own, c.shared, fnum(c.shared * c.n, 1), c.wire) or "–", how = how, met = met }
  end
  -- 6. connections per process
  for _, m in ipairs({ { "procs", { "barrier_procs_1000", "barrier_procs_100" } },
                       { "in-proc", { "barrier_inproc_10000", "barrier_inproc_1000" } } }) do
    local run
    for _, l in ipairs(m[2]) do if med[l] and med[l].clients then run = med[l]; break end end
    local per
    if run then
      local procs = run.meta.mode == "procs" and run.meta.n or 1
      per = run.clients.connected / procs
    end
    local how, met = verdict(per, 2, "le", function(x) return ("%.2f"):format(x) end)
    local names = {}
    if run then for k, v in pairs(run.clients.by_name) do names[#names + 1] = k .. " " .. fint(v) end end
    table.sort(names)
    T[#T + 1] = { key = "conns_" .. m[1], name = ("Redis connections per process (%s, N = %s)"):format(m[1],
      run and fint(run.meta.n) or "?"), limit = "≤ 2",
      value = per and ("%.2f (%s connected: %s)"):format(per, fint(run.clients.connected), table.concat(names, ", ")) or "–",
      how = how, met = met }
  end
  -- 7. memory per in-proc instance (the minimal plan bench/plans/idle.lua)
  do
    local lo, hi
    for _, l in ipairs({ "mem_inproc_300", "mem_inproc_1000", "mem_inproc_3000" }) do
      if med[l] and med[l].time.maxrss_kb then
        if not lo then lo = med[l] else hi = med[l] end
      end
    end
    local per, range = nil, ""
    if lo and hi then
      per = (hi.time.maxrss_kb - lo.time.maxrss_kb) / (hi.meta.n - lo.meta.n)
      -- the same slope for each repetition k (run k of both sizes)
      local slopes = {}
      for _, a in ipairs(lo.reps) do
        for _, b in ipairs(hi.reps) do
          if a.meta.rep == b.meta.rep and a.time.maxrss_kb and b.time.maxrss_kb then
            slopes[#slopes + 1] = (b.time.maxrss_kb - a.time.maxrss_kb) / (b.meta.n - a.meta.n)
          end
        end
      end
      if #slopes > 1 then
        local lo_, hi_ = ("%.0f"):format(pct(slopes, 0)), ("%.0f"):format(pct(slopes, 100))
        range = lo_ == hi_ and (", %s KB in each of %d repetitions"):format(lo_, #slopes)
          or (", %s–%s KB over the repetitions"):format(lo_, hi_)
      end
    end
    local how, met = verdict(per, 20, true, function(x) return ("%.1f KB"):format(x) end)
    T[#T + 1] = { key = "mem_inproc", name = "memory per in-proc instance (minimal plan: bench/plans/idle.lua; issue 12: < 20 KB, it was < 100 KB)", limit = "< 20 KB",
      value = per and ("%.1f KB ((%s − %s) / (%s − %s)%s)"):format(per, fkb(hi.time.maxrss_kb), fkb(lo.time.maxrss_kb),
        fint(hi.meta.n), fint(lo.meta.n), range) or "–", how = how, met = met }
  end
  -- 7b. start-up of 10,000 in-proc instances (issue 12: < 1 s): launch to
  -- every instance at its first barrier, outputs on tmpfs and on the disk
  do
    local t, d = med.zero_inproc_10000_tmpfs, med.barrier_inproc_10000
    local v = t and t.startup and t.startup.all
    local how, met = verdict(v and v / 1e9, 1, true, function(x) return ("%.2f s"):format(x) end)
    T[#T + 1] = { key = "startup10k", name = "start-up of 10,000 in-proc instances (launch → all at the first barrier)",
      limit = "< 1 s", value = v and ("%s with outputs on tmpfs%s; %s with outputs on the disk (barrier_inproc_10000)"):format(
        fms(v), "", d and d.startup and fms(d.startup.all) or "–") or "–",
      how = t and how or "not run (--quick)", met = met }
  end
  -- 7c. 100,000 instances in one process complete a barrier round (issue 12)
  do
    local S = med.barrier_inproc_100000_tmpfs
    local ok = S and S.meta.rc == 0 and S.failed == 0 and S.succeeded == S.meta.n
    local v = S and ("rc %s, %s of %s succeeded; start-up %s, round %s, max RSS %s (%s per instance)"):format(
      S.meta.rc, fint(S.succeeded or 0), fint(S.meta.n), S.startup and fms(S.startup.all) or "–",
      S.barrier and S.barrier.period_med and fms(S.barrier.period_med) or "–",
      S.time.maxrss_kb and fkb(S.time.maxrss_kb) or "–",
      S.time.maxrss_kb and ("%.1f KB"):format(S.time.maxrss_kb / S.meta.n) or "–")
    T[#T + 1] = { key = "inproc100k", name = "100,000 in-proc instances in one process complete a barrier round",
      limit = "completes", value = v or "–", how = S and (ok and "met" or "**missed**") or "not run (--quick)",
      met = S and ok or nil }
  end
  -- 8. RSS per instance process
  do
    local run = med.barrier_procs_100 or med.barrier_procs_10
    local v = run and run.mem and run.mem.hwm_med
    local single = med.single and med.single.time.maxrss_kb
    local how, met = verdict(v and v / 1024, 5, true, function(x) return ("%.2f MB"):format(x) end)
    T[#T + 1] = { key = "rss_proc", name = ("RSS per instance process (VmHWM, median of N = %s)"):format(run and fint(run.meta.n) or "?"),
      limit = "< 5 MB", value = v and ("%s (one single-instance run: %s)"):format(fkb(v), fkb(single)) or "–",
      how = how, met = met }
  end
  -- 9. the cost of tracing: the 1,000 in-proc round with and without it
  do
    local on, off = med.barrier_inproc_1000, med.barrier_inproc_1000_notrace
    local cost, range = nil, ""
    if on and off and on.barrier and off.barrier then
      cost = (on.barrier.period_med / off.barrier.period_med - 1) * 100
      -- repetition k with tracing against repetition k without (run one after the other)
      local pairs_ = {}
      for _, a in ipairs(on.reps) do
        for _, b in ipairs(off.reps) do
          if a.meta.rep == b.meta.rep and a.barrier and b.barrier then
            pairs_[#pairs_ + 1] = (a.barrier.period_med / b.barrier.period_med - 1) * 100
          end
        end
      end
      if #pairs_ > 1 then
        range = (("; rep by rep %+.1f %% to %+.1f %%, median %+.1f %%"):format(pct(pairs_, 0), pct(pairs_, 100),
          pct(pairs_, 50)))
      end
    end
    local how, met = verdict(cost and math.max(cost, 0), 5, true, function(x) return ("%.1f %%"):format(x) end)
    T[#T + 1] = { key = "trace_cost", name = "cost of tracing: round median, N = 1,000 in-proc, traced vs --no-trace",
      limit = "< 5 %", value = cost and ("%+.1f %% (%s traced, %s not%s)"):format(cost, fms(on.barrier.period_med),
        fms(off.barrier.period_med), range) or "–", how = how, met = met }
  end
  return T
end

-- ---- profiles ------------------------------------------------------------------------------

local function profiles(res)
  local med = load_results(res)
  local T = targets(med, load_baselines(res))
  local want = {}
  for _, t in ipairs(T) do if t.profile then want[t.profile] = true end end
  local out = {}
  for key in pairs(want) do
    local S = med[key]
    if S then
      local startup = (S.startup and S.startup.all or 2e9) / 1e9
      local delay = math.ceil(startup + 1)
      local window = 5
      local rounds = 0
      if S.barrier then
        local period = S.barrier.period_med / 1e9
        rounds = math.max(50, math.min(5000, math.ceil((window + 3) / period)))
      else
        window = math.max(2, math.ceil((S.a2a.time or 2e9) / 1e9) + 1)
      end
      out[#out + 1] = ("%s %s %s %d %d %d %d"):format(key, S.meta.case, S.meta.mode, S.meta.n, rounds, delay, window)
    end
  end
  table.sort(out)
  print(table.concat(out, "\n"))
end

-- folded perf output -> share of samples by the innermost named (non-address)
-- frames of each stack (up to three, outermost first)
local function folded_summary(path, topn)
  local s = readfile(path)
  if not s then return nil end
  local total, by = 0, {}
  for l in s:gmatch("[^\n]+") do
    local n, stack = l:match("^%s*(%d+)%s+(%S.*)$")
    if n and not l:match("^#") then
      n = tonumber(n)
      total = total + n
      local frames = {}
      for f in stack:gmatch("[^;]+") do frames[#frames + 1] = f end
      local named = {}
      for i = #frames, 1, -1 do
        local f = frames[i]
        if not f:match("^0x") and not f:match("^%[") then table.insert(named, 1, f) end
        if #named == 3 then break end
      end
      local key = #named > 0 and table.concat(named, " → ") or "(no named frame)"
      if frames[#frames] and frames[#frames]:match("^0x") then key = key .. " → [liblua/unresolved]" end
      by[key] = (by[key] or 0) + n
    end
  end
  if total == 0 then return nil end
  local list = {}
  for k, v in pairs(by) do list[#list + 1] = { k, v } end
  table.sort(list, function(a, b) return a[2] > b[2] end)
  local out = {}
  for i = 1, math.min(topn, #list) do out[i] = ("%5.1f%%  %s"):format(100 * list[i][2] / total, list[i][1]) end
  return out, total
end

-- Debian's liblua5.4.so.0 is stripped.  Internal functions of the build
-- measured here, identified by disassembly (address ranges from .eh_frame):
local LIBLUA_SYMS = {
  ["31adfea5d64ca45c3826ea317483e811c7c91598"] = {   -- liblua5.4-0 5.4.4-3+deb12u1 amd64
    { 0x10710, 0x1098f, "luaD_precall" },
    { 0x12290, 0x12377, "sweeplist (GC sweep)" },
    { 0x1a9a0, 0x1ab33, "internshrstr (string interning)" },
    { 0x1ad50, 0x1aded, "luaS_new (C-string cache)" },
    { 0x1b480, 0x1b4d0, "luaH_getshortstr (table get, string key)" },
    { 0x1ef00, 0x22a6a, "luaV_execute (the VM)" },
  },
}

local function symbolize(line, build_id)
  local syms = LIBLUA_SYMS[build_id or ""]
  if not syms or not line:find("liblua") then return line end
  return (line:gsub("0x0*(%x+)$", function(hex)
    local a = tonumber(hex, 16)
    for _, sy in ipairs(syms) do
      if a >= sy[1] and a < sy[2] then return ("%s +0x%x"):format(sy[3], a - sy[1]) end
    end
    return "0x" .. hex
  end))
end

-- inclusive share of samples under some runtime functions (folded stacks)
local INCLUSIVE = {
  { "lua_resume", "resuming tasks (lua_resume): the plan's and tg's Lua code and what it calls" },
  { "l_barrier", "  core.barrier (l_barrier): argv, waiter, send" },
  { "tg_redis_send_for", "    tg_redis_send_for (format + queue the EVALSHA)" },
  { "tg_wait_begin", "    tg_wait_begin (deadline timer)" },
  { "luaL_tolstring", "  tostring / string.format %s (luaL_tolstring)" },
  { "l_config", "  core.config() (l_config)" },
  { "redisProcessCallbacks", "hiredis replies (redisProcessCallbacks)" },
  { "tg_barrier_on_reply", "  tg_barrier_on_reply (script replies)" },
  { "on_xread", "  on_xread (notify stream)" },
  { "tg_barrier_count", "    tg_barrier_count (release waiters)" },
  { "redisAsyncHandleWrite", "hiredis writes (redisAsyncHandleWrite)" },
  { "@malloc", "malloc/free/realloc/calloc anywhere" },
  { "@kernel", "system calls" },
}

local function inclusive_summary(path)
  local s = readfile(path)
  if not s then return nil end
  local total, hit = 0, {}
  for l in s:gmatch("[^\n]+") do
    local n, stack = l:match("^%s*(%d+)%s+(%S.*)$")
    if n and not l:match("^#") then
      n = tonumber(n)
      total = total + n
      local seen = {}
      for f in stack:gmatch("[^;]+") do
        seen[f] = true
        if f:match("malloc") or f:match("free") or f:match("realloc") or f:match("calloc") then seen["@malloc"] = true end
        if f:match("^entry_SYSCALL") or f:match("do_syscall") then seen["@kernel"] = true end
      end
      for _, it in ipairs(INCLUSIVE) do if seen[it[1]] then hit[it[1]] = (hit[it[1]] or 0) + n end end
    end
  end
  if total == 0 then return nil end
  local out = {}
  for _, it in ipairs(INCLUSIVE) do
    out[#out + 1] = ("%5.1f%%  %s"):format(100 * (hit[it[1]] or 0) / total, it[2])
  end
  return out
end

local function perf_lines(path, maxn)
  local out = {}
  for _, l in ipairs(lines(readfile(path))) do
    if l:match("%%") and not l:match("^#") then
      out[#out + 1] = l
      if #out >= maxn then break end
    end
  end
  return out
end

-- ---- report ---------------------------------------------------------------------------------

local function mdtable(header, rows)
  local out = { "| " .. table.concat(header, " | ") .. " |" }
  local sep = {}
  for i = 1, #header do sep[i] = "---" end
  out[#out + 1] = "|" .. table.concat(sep, "|") .. "|"
  for _, r in ipairs(rows) do out[#out + 1] = "| " .. table.concat(r, " | ") .. " |" end
  return table.concat(out, "\n")
end

-- plain aligned table for the terminal (strips markdown emphasis)
local function txttable(header, rows)
  local all = { header }
  for _, r in ipairs(rows) do all[#all + 1] = r end
  local w = {}
  local function len(s) return utf8.len(s) or #s end
  for _, r in ipairs(all) do
    for i, c in ipairs(r) do
      c = tostring(c):gsub("%*%*", "")
      r[i] = c
      w[i] = math.max(w[i] or 0, len(c))
    end
  end
  local out = {}
  for k, r in ipairs(all) do
    local cells = {}
    for i, c in ipairs(r) do cells[i] = c .. string.rep(" ", w[i] - len(c)) end
    out[#out + 1] = table.concat(cells, "  ")
    if k == 1 then
      local d = {}
      for i = 1, #r do d[i] = string.rep("-", w[i]) end
      out[#out + 1] = table.concat(d, "  ")
    end
  end
  return table.concat(out, "\n")
end

local function copy_rows(rows)
  local c = {}
  for i, r in ipairs(rows) do
    c[i] = {}
    for j, v in ipairs(r) do c[i][j] = v end
  end
  return c
end

local MODE = { procs = "processes", inproc = "in-proc", single = "1 process" }

local function report(res, mdpath)
  local host = kv(res .. "/host.txt")
  local med, by = load_results(res)
  local base = load_baselines(res)
  local T = targets(med, base)
  local md, txt = {}, {}
  local function P(s) md[#md + 1] = s or "" end
  local function X(s) txt[#txt + 1] = s or "" end

  local enter_p16 = base.enter_c50_p16 and base.enter_c50_p16.rps
  local enter_p1 = base.enter_c50_p1 and base.enter_c50_p1.rps

  P("# tgrun benchmarks")
  P()
  P(("Generated by `bench/run%s` on %s (%s mode, every scenario run %s× and the **median run** shown; "
    .. "%s s wall time).  Machine: %s CPUs (%s), %s, Linux %s; load average %s at the start, %s at the end "
    .. "(other work on the machine shows up as noise).  Binary: `%s` (%s build); %s; %s.")
    :format(host.mode == "quick" and " --quick" or "", host.date or "?", host.mode or "?", host.reps or "?",
      host.wall_seconds or "?", host.cpus or "?", host.cpu or "?", host.mem_total or "?", host.kernel or "?",
      host.loadavg_start or "?", host.loadavg_end or "?", (host.tgrun or "?"):gsub("^.*/main/", ""),
      host.tgrun_build or "?", host.redis and ("Redis " .. host.redis:match("v=(%S+)")) or "Redis ?", host.lua or "?"))
  P()
  P("Every run talks to one private `redis-server` on a unix socket that bench/run started (`--redis unix://…`), "
    .. "flushed and with its statistics reset before each run. Definitions of every number: bench/README.md "
    .. "and [How it is measured](#how-it-is-measured) below.")
  P()

  -- targets
  P("## Targets")
  P()
  local trow = {}
  for _, t in ipairs(T) do
    trow[#trow + 1] = { t.name, t.limit, t.value, t.how }
  end
  P(mdtable({ "target", "limit", "measured", "verdict" }, trow))
  P()
  X("TARGETS")
  X(txttable({ "target", "limit", "measured", "verdict" }, copy_rows(trow)))
  X()

  -- barrier table
  P("## Barrier rounds")
  P()
  P("N instances each call `sync.signal_and_wait` R times in a row (plus one round 0 to line them up after start-up, "
    .. "not counted). *round* = time between the last release of one round and the last release of the next; "
    .. "*release* = last waiter resumed − last entry call (median and p99 over the R rounds); *first waiter* = first "
    .. "waiter resumed − last entry call; *start-up* = `tgrun` launched → every instance at its first barrier. "
    .. "*floor* = N entry scripts at the rate redis-benchmark reaches on this machine (enter.lua, 50 clients, "
    .. "pipeline 16): no barrier round of N can be faster than that.")
  P()
  local brow = {}
  local order = { "barrier_procs_10", "barrier_procs_100", "barrier_procs_1000", "barrier_inproc_100",
    "barrier_inproc_1000", "barrier_inproc_1000_notrace", "barrier_inproc_10000", "poller_procs_100",
    "poller_procs_1000" }
  for _, label in ipairs(order) do
    local S = med[label]
    if S and S.barrier then
      local b = S.barrier
      local floor = S.meta.case == "barrier" and enter_p16 and S.meta.n / enter_p16 * 1e9 or nil
      local ok = S.failed == 0 and S.meta.rc == 0
      brow[#brow + 1] = {
        (S.meta.case == "poller" and "poller (Go SDK v0.2 style)" or
          S.meta.trace == "off" and "tgrun barrier, --no-trace" or "tgrun barrier"),
        fint(S.meta.n), MODE[S.meta.mode], tostring(S.meta.rounds),
        fms(b.period_med), fms(b.period_p99), fms(b.lat_med), fms(b.lat_p99), fms(b.first_med),
        S.startup and fms(S.startup.all) or "–",
        floor and fms(floor) or "–",
        floor and ("%.1f×"):format(b.period_med / floor) or "–",
        ("%s–%s"):format(fms(S.headline_min), fms(S.headline_max)),
        ok and "ok" or ("rc %s, %s failed"):format(S.meta.rc, S.failed or "?"),
      }
    end
  end
  local bh = { "what", "N", "mode", "R", "round median", "round p99", "release median", "release p99",
    "first waiter", "start-up", "floor", "round / floor", "round, range of reps", "runs" }
  P(mdtable(bh, brow))
  P()
  X("BARRIER ROUNDS")
  X(txttable(bh, copy_rows(brow)))
  X()

  -- latency decomposition for in-proc
  local dec = {}
  for _, label in ipairs({ "barrier_procs_10", "barrier_procs_100", "barrier_procs_1000", "barrier_inproc_100",
    "barrier_inproc_1000", "barrier_inproc_10000" }) do
    local S = med[label]
    if S and S.barrier then
      local b = S.barrier
      local rc = S.round_cpu or {}
      dec[#dec + 1] = { fint(S.meta.n), MODE[S.meta.mode], fms(b.lat_med), fms(b.first_med), fms(b.fanout_med),
        ("%.1f µs"):format(b.fanout_med / 1e3 / math.max(1, S.meta.n - 1)),
        fms(b.waiter_med), fms(b.waiter_p99),
        rc.tgrun_ns and ("%.1f µs"):format(rc.tgrun_ns / 1e3) or "–",
        rc.redis_ns and ("%.1f µs"):format(rc.redis_ns / 1e3) or "–",
        rc.tgrun_ns and ("%.0f%%"):format(100 * rc.tgrun_per_round_ns / b.period_med) or "–",
        rc.redis_ns and ("%.0f%%"):format(100 * rc.redis_per_round_ns / b.period_med) or "–" }
    end
  end
  if #dec > 0 then
    P("Where the release time goes: *release* ≈ *first waiter* (the notification reaches the process) + *fan-out* "
      .. "(last − first waiter resumed: waking the waiters one after another on one loop; each resumed waiter also "
      .. "runs on to its next `signal_and_wait` before the next one is resumed). CPU during rounds 1..R "
      .. "(/proc/<pid>/schedstat read by the plan after round 0 and after round R; as processes summed over all "
      .. "instance processes), per instance per barrier, and as a share of the round's wall time (*busy*: above "
      .. "100% means both cores were used at once).")
    P()
    P(mdtable({ "N", "mode", "release median", "first waiter", "fan-out", "fan-out per waiter", "any waiter median",
      "any waiter p99", "tgrun CPU / instance·barrier", "redis CPU / instance·barrier", "tgrun busy", "redis busy" }, dec))
    P()
  end

  -- baselines
  P("## Baselines (same machine, same redis-server, same run)")
  P()
  local basrow = {}
  local bnames = { { "enter_c50_p1", "EVALSHA enter.lua (INCR + BITFIELD), 50 clients, no pipelining" },
    { "enter_c50_p16", "EVALSHA enter.lua, 50 clients, pipeline 16" },
    { "incr_c50_p1", "EVAL \"return redis.call('INCR', KEYS[1])\", 50 clients, no pipelining" },
    { "incr_c50_p16", "EVAL INCR script, 50 clients, pipeline 16" },
    { "enter_c1_p1", "EVALSHA enter.lua, 1 client, no pipelining (one round trip)" } }
  for _, bn in ipairs(bnames) do
    local b = base[bn[1]]
    if b then
      basrow[#basrow + 1] = { bn[2], fint(b.requests), frate(b.rps), ("%.3f ms"):format(b.p50_ms),
        ("%.3f ms"):format(b.p99_ms) }
    end
  end
  P("`redis-benchmark -s <sock> -n <requests> -c <clients> -P <pipeline> --csv <command>`; "
    .. "enter.lua is called as signal_and_wait calls it before the target is reached "
    .. "(`EVALSHA <sha> 4 s w n m 1000000000 86400 7 \"\"`).")
  P()
  local bah = { "baseline", "requests", "rate", "p50 latency", "p99 latency" }
  P(mdtable(bah, basrow))
  P()
  X("BASELINES (redis-benchmark)")
  X(txttable(bah, copy_rows(basrow)))
  X()
  do
    local rows = {}
    for _, label in ipairs({ "barrier_procs_100", "barrier_inproc_1000", "barrier_procs_1000", "barrier_inproc_10000" }) do
      local S = med[label]
      if S and S.barrier then
        local calls = S.meta.n * S.meta.rounds
        local tg_secs = S.barrier.period_med * S.meta.rounds / 1e9
        rows[#rows + 1] = { fint(S.meta.n) .. " " .. MODE[S.meta.mode], fint(calls),
          ("%.2f s"):format(tg_secs),
          enter_p16 and ("%.2f s"):format(calls / enter_p16) or "–",
          enter_p1 and ("%.2f s"):format(calls / enter_p1) or "–",
          enter_p16 and ("%.1f×"):format(tg_secs / (calls / enter_p16)) or "–" }
      end
    end
    if #rows > 0 then
      P("The same number of script calls (N × R) as the barrier runs: tgrun's R rounds against redis-benchmark's floor.")
      P()
      P(mdtable({ "scenario", "N × R calls", "tgrun (R × median round)", "floor, pipelined", "floor, unpipelined",
        "tgrun / pipelined floor" }, rows))
      P()
    end
  end
  do
    local rows = {}
    for _, n in ipairs({ 100, 1000 }) do
      local pp = med["poller_procs_" .. n]
      if pp then
        for _, tl in ipairs({ "barrier_procs_" .. n, "barrier_inproc_" .. n }) do
          local tg = med[tl]
          if tg then
            rows[#rows + 1] = { fint(n), MODE[tg.meta.mode], fms(tg.barrier.lat_med), fms(pp.barrier.lat_med),
              ("%.0f×"):format(pp.barrier.lat_med / tg.barrier.lat_med) }
          end
        end
      end
    end
    if #rows > 0 then
      P("The Go SDK v0.2 barrier as a plan (`poller` case: INCR, then GET at once and after every `tg.sleep(1)`), "
        .. "run as processes — one client per instance, as the Go SDK has. (In one process every INCR of a round is "
        .. "pipelined before any GET, so nobody would ever sleep: the poller is only meaningful as processes.)")
      P()
      P(mdtable({ "N", "tgrun mode", "tgrun release median", "poller release median (processes)",
        "poller / tgrun" }, rows))
      P()
    end
  end

  -- before / after: bench/run --before PATH runs the barrier scenarios with
  -- that binary too, interleaved, as before_<label>
  do
    local rows = {}
    for _, label in ipairs({ "barrier_inproc_1000", "barrier_inproc_10000", "barrier_procs_100", "barrier_procs_10",
      "barrier_procs_1000", "barrier_inproc_100" }) do
      local A, B = med[label], med["before_" .. label]
      if A and B and A.barrier and B.barrier then
        local floor = enter_p16 and A.meta.n / enter_p16 * 1e9
        for _, f in ipairs({ { "release", "lat_med" }, { "round", "period_med" } }) do
          local function col(S)
            local t = {}
            for _, r in ipairs(S.reps) do if r.barrier and r.barrier[f[2]] then t[#t + 1] = r.barrier[f[2]] end end
            local m = median(t)
            return m, #t > 1 and ("%s (%s–%s)"):format(fms(m), fms(pct(t, 0)), fms(pct(t, 100))) or fms(m)
          end
          local mb, sb = col(B)
          local ma, sa = col(A)
          rows[#rows + 1] = { fint(A.meta.n) .. " " .. MODE[A.meta.mode], f[1] .. " median", sb, sa,
            (ma and mb) and ("%.2f×"):format(mb / ma) or "–", floor and fms(floor) or "–",
            (floor and mb) and ("%.2f×"):format(mb / floor) or "–", (floor and ma) and ("%.2f×"):format(ma / floor) or "–" }
        end
      end
    end
    if #rows > 0 then
      P("## Before / after")
      P()
      P(("Each scenario also run with the binary given as `--before` (%s), interleaved with this one, the same "
        .. "repetitions against the same server: median over the repetitions of each run's median (range of the "
        .. "repetitions), and both against the floor of this run (N entry scripts at redis-benchmark's pipelined rate)."):format(
        host.before and ("`" .. host.before .. "`") or "?"))
      P()
      local hdr = { "scenario", "what", "before", "after", "before / after", "floor", "before / floor", "after / floor" }
      P(mdtable(hdr, rows))
      P()
      X("BEFORE / AFTER")
      X(txttable(hdr, copy_rows(rows)))
      X()
    end
  end

  -- all-to-all
  P("## All-to-all")
  P()
  P("Every instance `sync.publish_subscribe`s one value (its number) and `sub:take(N)`s N values. "
    .. "*time* = first publish → last take done, over all instances; deliveries = N² values handed to `take`.")
  P()
  local arow = {}
  for _, label in ipairs({ "a2a_procs_100", "a2a_procs_1000", "a2a_inproc_1000", "a2a_inproc_10000" }) do
    local S = med[label]
    if S and S.a2a then
      local a = S.a2a
      local status
      if S.meta.rc == 0 and a.taken == a.expected then status = "ok"
      else
        status = ("rc %s: %s of %s instances finished, %s of %s values taken%s"):format(S.meta.rc,
          fint(a.done), fint(S.meta.n), fint(a.taken + (S.partial_taken or 0)), fint(a.expected),
          S.fail_msgs and S.fail_msgs[1] and (" — “" .. S.fail_msgs[1]:sub(1, 160) .. "”") or "")
      end
      arow[#arow + 1] = { fint(S.meta.n), MODE[S.meta.mode], a.time and fms(a.time) or ("> " .. S.meta.timeout .. " s"),
        fint(a.expected), a.rate and frate(a.rate) or "–", a.dur_med and fms(a.dur_med) or "–",
        ("%s–%s"):format(fms(S.headline_min ~= math.huge and S.headline_min or nil),
          fms(S.headline_max ~= math.huge and S.headline_max or nil)),
        S.time.maxrss_kb and fkb(S.time.maxrss_kb) or "–", status }
    end
  end
  local ah = { "N", "mode", "time", "deliveries", "deliveries/s", "per instance (median)", "time, range of reps",
    "max RSS (GNU time)", "result" }
  P(mdtable(ah, arow))
  P()
  X("ALL-TO-ALL")
  X(txttable(ah, copy_rows(arow)))
  X()

  -- cost
  P("## Cost")
  P()
  P("### Redis commands per instance per barrier")
  P()
  P("INFO commandstats after a run of R rounds minus after the same run with 0 rounds (start-up, the session "
    .. "heartbeat, the end barrier and the outcome events cancel out), divided by N × R. Redis counts the commands a "
    .. "script runs (INCR, BITFIELD, XADD) as well as the EVALSHA itself; *wire* marks the ones a client sends.")
  P()
  local crow, all = {}, {}
  local costs = {}
  for _, m in ipairs({ { "processes", "barrier_procs_100", "zero_procs_100" },
                       { "in-proc", "barrier_inproc_1000", "zero_inproc_1000" } }) do
    local c = marginal(med[m[2]], med[m[3]])
    if c then
      costs[#costs + 1] = { m[1], c, med[m[2]] }
      for k in pairs(c.per) do all[k] = true end
    end
  end
  local names = {}
  for k in pairs(all) do names[#names + 1] = k end
  table.sort(names, function(a, b)
    local va, vb = 0, 0
    for _, c in ipairs(costs) do va = va + (c[2].per[a] or 0); vb = vb + (c[2].per[b] or 0) end
    return va > vb
  end)
  for _, k in ipairs(names) do
    local r = { k .. (ON_WIRE[k] and " (wire)" or "") }
    for _, c in ipairs(costs) do r[#r + 1] = fnum(c[2].per[k] or 0, 3) end
    crow[#crow + 1] = r
  end
  local tot = { "**total**" }
  local wire = { "sent over the wire" }
  local rawr = { "every command of the run / (N × (R + 2) barriers), start-up included" }
  for _, c in ipairs(costs) do
    tot[#tot + 1] = "**" .. fnum(c[2].total, 3) .. "**"
    wire[#wire + 1] = fnum(c[2].wire, 3)
    rawr[#rawr + 1] = fnum(raw_cost(c[3]), 3)
  end
  crow[#crow + 1] = tot
  crow[#crow + 1] = wire
  crow[#crow + 1] = rawr
  local ch = { "command" }
  for _, c in ipairs(costs) do ch[#ch + 1] = ("%s, N = %s, R = %s"):format(c[1], fint(c[2].n), c[2].R) end
  if #costs > 0 then
    P(mdtable(ch, crow))
    P()
  end
  local cpu_notes = {}
  for _, c in ipairs(costs) do
    local x = c[2].per.xread or 0
    if x > 0.5 then
      cpu_notes[#cpu_notes + 1] = ("%s: %.2f XREAD per instance per barrier — every process re-issues its blocking "
        .. "`XREAD` of the notify stream after each notification it receives (src/tg_redis.c `on_xread` → "
        .. "`issue_xread`), and with one instance per process that is one more command per instance per barrier; "
        .. "in-proc one XREAD serves every instance of the process."):format(c[1], x)
    end
  end
  for _, n in ipairs(cpu_notes) do P("- " .. n) end
  if #cpu_notes > 0 then P() end

  P("### Connections, memory, start-up")
  P()
  local mrow = {}
  for _, label in ipairs({ "barrier_procs_10", "barrier_procs_100", "barrier_procs_1000", "barrier_inproc_100",
    "barrier_inproc_1000", "barrier_inproc_10000", "zero_inproc_1000", "mem_inproc_300", "mem_inproc_1000",
    "mem_inproc_3000", "single" }) do
    local S = med[label]
    if S then
      local procs = S.meta.mode == "procs" and S.meta.n or 1
      local names_ = {}
      if S.clients then for k, v in pairs(S.clients.by_name) do names_[#names_ + 1] = k .. " " .. fint(v) end end
      table.sort(names_)
      mrow[#mrow + 1] = { label, fint(S.meta.n), MODE[S.meta.mode],
        S.clients and ("%s (%.2f / process; %s)"):format(fint(S.clients.connected), S.clients.connected / procs,
          table.concat(names_, ", ")) or "–",
        S.mem and fkb(S.mem.hwm_med) or "–",
        S.time.maxrss_kb and fkb(S.time.maxrss_kb) or "–",
        (S.meta.mode == "inproc" and S.time.maxrss_kb) and ("%.0f KB"):format(S.time.maxrss_kb / S.meta.n) or "–",
        (S.mem and S.mem.lua_kb_med) and ("%.0f KB (live %s)"):format(S.mem.lua_kb_med,
          S.mem.lua_live_med and ("%.0f KB"):format(S.mem.lua_live_med) or "?") or "–",
        S.startup and fms(S.startup.first) or "–", S.startup and fms(S.startup.all) or "–" }
    end
  end
  local mh = { "run", "N", "mode", "Redis clients during the run", "VmHWM per process (median)",
    "max RSS (GNU time)", "max RSS / N", "Lua heap per instance (live after a full GC)", "start-up: first instance at barrier 1",
    "start-up: all at barrier 1" }
  P(mdtable(mh, mrow))
  P()
  for _, t in ipairs(T) do
    if t.key == "mem_inproc" then
      P(("Memory per in-proc instance: %s — the slope of max RSS between two in-proc runs of the minimal plan "
        .. "`bench/plans/idle.lua` (one barrier; the bench plan itself, with its timing code and tables, costs "
        .. "~15–20 KB more per instance: compare zero_inproc_1000 with mem_inproc_1000); *Lua heap per "
        .. "instance* (collectgarbage(\"count\") at the end of the case, and after a full collection) is the part that "
        .. "lives in the instance's lua_State; the rest is C-side state (instance, tasks, waiters, timers, hiredis "
        .. "buffers) and allocator slack."):format(t.value))
      P()
    end
  end
  X("COST")
  X(txttable(ch, copy_rows(crow)))
  X()
  X(txttable(mh, copy_rows(mrow)))
  X()

  -- profiles
  local profs = ls(res .. "/profiles")
  local any = false
  for _, key in ipairs(profs) do
    local pdir = res .. "/profiles/" .. key
    local top = perf_lines(pdir .. "/tgrun.top.txt", 30)
    if #top > 0 then
      if not any then
        P("## Profiles of the missed targets")
        P()
        P("Taken after the timed runs, on the same machine and server: `perf record` attached to the running tgrun "
          .. "(DWARF call graphs) and, in the same window, to redis-server. Debian's liblua5.4 is stripped, so its "
          .. "internal functions show as addresses; the *named frames* table groups samples by the nearest named "
          .. "frames of their call stacks (\"→ [liblua/unresolved]\": the sample itself was inside Lua's VM, GC, "
          .. "string or table code, reached from there).")
        P()
        any = true
      end
      P("### " .. key)
      P()
      P("```")
      for _, l in ipairs(lines(readfile(pdir .. "/cmd.txt"))) do P(l) end
      P("```")
      P()
      local dso = perf_lines(pdir .. "/tgrun.dso.txt", 8)
      P("tgrun CPU by library (`perf report --no-children --sort dso`):")
      P()
      P("```")
      for _, l in ipairs(dso) do P(l) end
      P("```")
      P()
      P("tgrun top entries (`perf report --stdio --no-children --sort dso,sym`"
        .. (LIBLUA_SYMS[host.liblua_build_id or ""] and "; liblua addresses named by bench/analyze.lua" or "") .. "):")
      P()
      P("```")
      for _, l in ipairs(top) do P(symbolize(l, host.liblua_build_id)) end
      P("```")
      P()
      local inc = inclusive_summary(pdir .. "/tgrun.folded.txt")
      if inc then
        P("tgrun samples with these functions on the stack (inclusive):")
        P()
        P("```")
        for _, l in ipairs(inc) do P(l) end
        P("```")
        P()
      end
      local fs, total = folded_summary(pdir .. "/tgrun.folded.txt", 18)
      if fs then
        P(("tgrun samples by named frames (%s samples):"):format(fint(total)))
        P()
        P("```")
        for _, l in ipairs(fs) do P(l) end
        P("```")
        P()
      end
      local rtop = perf_lines(pdir .. "/redis.top.txt", 15)
      if #rtop > 0 then
        local rd = perf_lines(pdir .. "/redis.dso.txt", 5)
        P("redis-server in the same window (`perf report --stdio --no-children`), by library, then top entries "
          .. "(Debian's redis-server binary is the same file as redis-check-rdb, hence the name):")
        P()
        P("```")
        for _, l in ipairs(rd) do P(l) end
        P("")
        for _, l in ipairs(rtop) do P(l) end
        P("```")
        P()
      end
    end
  end

  -- hand-written analysis
  local notes = readfile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/analysis.md")
  if notes then
    P(notes)
    P()
  end

  -- definitions
  P("## How it is measured")
  P()
  P([[- Plans: `bench/plans/bench.lua`. Each instance records `require("tg.core").time_ns()` (CLOCK_REALTIME, one machine, so comparable across processes) just before `signal_and_wait` and just after it returns, for rounds 0..R, keeps them in a table and writes them to `<outputs>/bench.out` after the measured part (no I/O while measuring).
- Per round r ≥ 1: *round* = max resume(r) − max resume(r−1); *release* = max resume(r) − max entry(r); *first waiter* = min resume(r) − max entry(r); *fan-out* = max resume(r) − min resume(r); *any waiter* = every instance's resume(r) − max entry(r). Medians and p99 (nearest rank) are over the R rounds (over N × R for *any waiter*).
- *start-up*: bench/run takes `date +%s%N` just before it starts `tgrun`; *first instance* / *all* = earliest / latest entry into round 0 minus that. It includes starting N processes (or creating N lua_States), connecting to Redis, loading the plan and the two Testground start-up entries.
- Commands: `CONFIG RESETSTAT` before, `INFO commandstats` after each run; the commands of bench/run and of the plan's census (`INFO`, `CLIENT LIST`) are left out. Connections: instance 1 counts `CLIENT LIST` by name and `INFO clients` after the last round, while every instance is still connected (they wait at a last barrier).
- Memory: per process, `VmHWM` from /proc/self/status at the end of the case (processes: median over the instances; in-proc: the one process); GNU time's max RSS of the whole `tgrun`; per in-proc instance, the slope of max RSS between two in-proc runs of different N.
- The poller case (`poller`) is the Go SDK v0.2 barrier: `INCR` the Testground state key, then `GET` it at once and after every `tg.sleep(1)` until it reaches N.
- All-to-all: every instance enters a start barrier, takes its time, `publish_subscribe`s its number and `take`s N values; *time* is the earliest start to the latest end.
- Each scenario ran the number of times given at the top; the row shown is the median run by the headline (round median, all-to-all time, or max RSS), and the *range of reps* column shows the spread. Raw data: `bench/results/<stamp>/` (summary.lua per run).]])
  P()

  -- runs
  P("## Runs")
  P()
  local rrow = {}
  local labels = {}
  for l in pairs(by) do labels[#labels + 1] = l end
  table.sort(labels)
  for _, l in ipairs(labels) do
    for _, S in ipairs(by[l]) do
      rrow[#rrow + 1] = { l, tostring(S.meta.rep), tostring(S.meta.rc), ("%s/%s"):format(S.succeeded or "?", S.meta.n),
        S.time.elapsed and ("%.2f s"):format(S.time.elapsed) or "–", ("%.2f s"):format(S.cpu.tgrun or 0),
        S.cpu.redis and ("%.2f s"):format(S.cpu.redis) or "–", "`" .. (S.meta.cmd or "") .. "`" }
    end
  end
  P(mdtable({ "scenario", "rep", "exit", "succeeded", "wall", "tgrun CPU", "redis CPU", "command" }, rrow))
  P()
  writefile(mdpath, table.concat(md, "\n"))
  print(table.concat(txt, "\n"))
end

-- ---- main ------------------------------------------------------------------------------------

local cmd = arg[1]
if cmd == "collect" then
  collect(arg[2])
elseif cmd == "oneline" then
  print(oneline(load_summary(arg[2])))
elseif cmd == "oneline-baselines" then
  local parts = {}
  for _, name in ipairs({ "enter_c50_p1", "enter_c50_p16", "incr_c50_p1", "incr_c50_p16", "enter_c1_p1" }) do
    local s = readfile(("%s/baselines/%s.%s.csv"):format(arg[2], name, arg[3])) or ""
    local f = {}
    for v in s:gmatch('"([^"]*)"') do f[#f + 1] = v end
    if #f >= 9 then parts[#parts + 1] = ("%s %s (p50 %s ms)"):format(name, frate(tonumber(f[6])), f[9]) end
  end
  print(table.concat(parts, ", "))
elseif cmd == "profiles" then
  profiles(arg[2])
elseif cmd == "report" then
  report(arg[2], arg[3])
else
  io.stderr:write("usage: lua5.4 bench/analyze.lua collect|oneline|oneline-baselines|profiles|report ...\n")
  os.exit(2)
end
