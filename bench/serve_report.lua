-- serve_report.lua -- turn bench/serve's raw data into numbers.
--   lua5.4 bench/serve_report.lua latency <outputs dir of one run>
--     -> "release_ms med p99 max  deliver_ms med p99 max  rounds R deliveries D"
--   lua5.4 bench/serve_report.lua table <results dir>
--     -> the markdown table of every latency.* and conns.* file there
local mode, dir = arg[1], arg[2]

local function pct(t, p)
  if #t == 0 then return 0 / 0 end
  table.sort(t)
  local i = math.max(1, math.min(#t, math.ceil(p * #t)))
  return t[i]
end

local function latency(root)
  local entry, release, deliver = {}, {}, {}
  local p = io.popen("find '" .. root .. "' -name bench.out")
  for path in p:lines() do
    for line in io.lines(path) do
      local r, a, b = line:match("^r (%d+) (%d+) (%d+)")
      if r then
        r = tonumber(r)
        entry[r] = math.max(entry[r] or 0, tonumber(a))
        release[r] = math.max(release[r] or 0, tonumber(b))
      end
      local _, pub, got = line:match("^d (%d+) (%d+) (%d+)")
      if pub then deliver[#deliver + 1] = (tonumber(got) - tonumber(pub)) / 1e6 end
    end
  end
  p:close()
  -- release latency of a round: the last waiter resumed - the last entry call
  local rel = {}
  for r, e in pairs(entry) do rel[#rel + 1] = (release[r] - e) / 1e6 end
  local rs = { pct(rel, 0.5), pct(rel, 0.99), pct(rel, 1) }
  local ds = { pct(deliver, 0.5), pct(deliver, 0.99), pct(deliver, 1) }
  return ("release_ms %.2f %.2f %.2f deliver_ms %.2f %.2f %.2f rounds %d deliveries %d"):format(
    rs[1], rs[2], rs[3], ds[1], ds[2], ds[3], #rel, #deliver)
end

if mode == "latency" then
  print(latency(dir))
elseif mode == "table" then
  local out = { "| path | N | barrier release ms (median / p99 / max) | topic delivery ms (median / p99 / max) |",
    "|---|---:|---|---|" }
  local p = io.popen("ls '" .. dir .. "' | sort -t_ -k3n")
  local conns = {}
  for f in p:lines() do
    local via, n = f:match("^latency_(%a+)_(%d+)%.txt$")
    if via then
      local s = io.open(dir .. "/" .. f):read("a")
      local r1, r2, r3, d1, d2, d3 = s:match("release_ms (%S+) (%S+) (%S+) deliver_ms (%S+) (%S+) (%S+)")
      if r1 then
        out[#out + 1] = ("| %s | %s | %s / %s / %s | %s / %s / %s |"):format(
          via == "serve" and "through tgrun serve" or "directly on Redis", n, r1, r2, r3, d1, d2, d3)
      end
    end
    if f:match("^conns_%d+%.txt$") then conns[#conns + 1] = io.open(dir .. "/" .. f):read("a") end
  end
  p:close()
  out[#out + 1] = ""
  out[#out + 1] = "| websocket clients | time to connect and enter | release of all | server RSS before / with all | per connection |"
  out[#out + 1] = "|---:|---:|---:|---|---:|"
  for _, s in ipairs(conns) do
    local k, c, r, m0, m1 = s:match("conns (%d+) connect_s (%S+) release_s (%S+) rss0_kb (%d+) rss1_kb (%d+)")
    if k then
      out[#out + 1] = ("| %s | %.2f s | %.3f s | %.1f / %.1f MB | %.1f KB |"):format(k, tonumber(c), tonumber(r),
        m0 / 1024, m1 / 1024, (m1 - m0) / tonumber(k))
    end
  end
  print(table.concat(out, "\n"))
end
