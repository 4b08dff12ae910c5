-- serve.lua -- the plans of bench/serve: latency through `tgrun serve`
-- against the same plan directly on Redis, and many websocket clients.
--
-- latency: every instance subscribes to topic "lat" (a task of its own
-- records each value's arrival at once), lines up at "r0", then runs R
-- rounds of signal_and_wait("b<r>", N); after each round instance 1
-- publishes {r, t = now}.  Written to <outputs>/bench.out after the
-- measured part:
--   r <round> <entry_ns> <release_ns>        around signal_and_wait
--   d <round> <published_ns> <arrived_ns>    each value of "lat"
--
-- conns: ONE instance opens `clients` websockets to the sync service at
-- param addr (a client written here over tg.net: handshake, masked text
-- frames), each enters state "c" and waits at barrier "c" for all of them;
-- it prints one line:
--   conns <clients> connect_s <s> release_s <s> rss0_kb <kB> rss1_kb <kB>
-- (rss of the server, param pid, before the first and after the last
-- connection was open and waiting).
local core = require "tg.core"
local sync = require "tg.sync"
local json = require "tg.json"
local net = require "tg.net"
local tg = require "tg"

local cases = {}

function cases.latency(env)
  local n, rounds = env.instance_count, env:int("rounds", 10)
  local sub = sync.subscribe("lat")
  local arrivals = {}
  local reader = tg.spawn(function()
    for _ = 1, rounds do
      local v = sub:next({ timeout = 120 })
      arrivals[#arrivals + 1] = ("d %d %d %d"):format(v.r, v.t, core.time_ns())
    end
  end)
  sync.signal_and_wait("r0", n, { timeout = 300 })
  local lines = {}
  for r = 1, rounds do
    local t0 = core.time_ns()
    sync.signal_and_wait("b" .. r, n, { timeout = 120 })
    lines[#lines + 1] = ("r %d %d %d"):format(r, t0, core.time_ns())
    if env.global_seq == 1 then sync.publish("lat", { r = r, t = core.time_ns() }) end
  end
  reader:join({ timeout = 120 })
  sub:close()
  for _, l in ipairs(arrivals) do lines[#lines + 1] = l end
  local f = assert(io.open(env.outputs_path .. "/bench.out", "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end

-- ---- many clients ---------------------------------------------------------------

local function frame(text)        -- a masked text frame; the zero mask keeps the bytes
  local n = #text
  local hdr = n < 126 and string.char(0x81, 0x80 | n) or string.char(0x81, 0x80 | 126) .. string.pack(">I2", n)
  return hdr .. "\0\0\0\0" .. text
end

local function read_frame(c)
  local hd = c:read(2, { timeout = 300 })
  local n = hd:byte(2) & 127
  if n == 126 then n = string.unpack(">I2", c:read(2, { timeout = 300 })) end
  return c:read(n, { timeout = 300 })
end

local function rss_kb(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  local s = f and f:read("a") or ""
  if f then f:close() end
  return tonumber(s:match("VmRSS:%s*(%d+)")) or -1
end

function cases.conns(env)
  local k, addr, pid = env:int("clients"), env:string("addr"), env:int("pid")
  local P = ("run:%s:plan:conns:case:c"):format(env.run_id)
  local rss0 = rss_kb(pid)
  local t0 = tg.now()
  local connected, last_entry = 0, 0
  local all_in = false
  local tasks = {}
  for i = 1, k do
    tasks[i] = tg.spawn(function()
      local c = net.connect(addr, { timeout = 120 })
      c:write("GET / HTTP/1.1\r\nHost: " .. addr .. "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
      repeat local line = c:read_line({ timeout = 120 }) until line == ""
      connected = connected + 1
      c:write(frame(json.encode({ id = "1", signal_entry = { state = P .. ":states:c" } })))
      read_frame(c)
      last_entry = tg.now()
      c:write(frame(json.encode({ id = "2", barrier = { state = P .. ":states:c", target = k } })))
      read_frame(c)
      return c
    end)
  end
  -- the server's memory with every connection open and waiting
  local rss1
  tg.spawn(function()
    while connected < k do tg.sleep(0.05) end
    tg.sleep(0.5)
    rss1 = rss_kb(pid)
  end)
  local conns = {}
  for i = 1, k do conns[i] = tasks[i]:join({ timeout = 300 }) end
  local t_done = tg.now()
  while not rss1 do tg.sleep(0.05) end
  for _, c in ipairs(conns) do c:close() end
  print(("conns %d connect_s %.3f release_s %.3f rss0_kb %d rss1_kb %d"):format(k, last_entry - t0,
    t_done - last_entry, rss0, rss1))
  all_in = true
  return all_in
end

return cases
