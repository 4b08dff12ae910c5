-- ws_helpers.lua -- what the sync-service specs share: a `tgrun serve`
-- started as a real process on a free port, and a websocket client written
-- here over tg.net, frame by frame, so that a spec can send what no
-- well-behaved client would (bad JSON, unmasked or RSV1 frames, fragments,
-- 20 MB messages) and read exactly what the server answers.
local h = require "helpers"
local net = require "tg.net"
local json = require "tg.json"
local tg = require "tg"

local W = {}

-- Start `tgrun serve --listen 127.0.0.1:0 ...args` (against the spec
-- harness's Redis unless args say --redis, or opts.private asks for a
-- private redis-server).  Returns a handle:
--   srv.port, srv.addr ("127.0.0.1:port"), srv.url ("ws://..."),
--   srv.stop([signal]) -> {code=, stdout=, stderr=} (SIGTERM by default),
--   srv.pid() the server's own pid, srv.rss_kb() its VmRSS.
function W.serve(args, env, opts)
  local argv = { "serve", "--listen", "127.0.0.1:0" }
  local has_redis = false
  for _, a in ipairs(args or {}) do
    argv[#argv + 1] = a
    if a == "--redis" then has_redis = true end
  end
  if opts and opts.private then                 -- its own redis-server
    opts.unset = { "REDIS_HOST", "REDIS_PORT" }
  elseif not has_redis and h.redis_port then
    argv[#argv + 1] = "--redis"
    argv[#argv + 1] = "redis://127.0.0.1:" .. h.redis_port
  end
  local p = h.spawn(argv, env, opts)
  local port = h.wait_until(function()
    local o = h.read(p.dir .. "/out")
    return o and tonumber(o:match("listening on 127%.0%.0%.1:(%d+)"))
  end, 10)
  if not port then
    p.kill()
    error("tgrun serve did not start: " .. (h.read(p.dir .. "/err") or "?"), 2)
  end
  p.port, p.addr, p.url = port, "127.0.0.1:" .. port, "ws://127.0.0.1:" .. port
  function p.pid()
    local f = io.popen("pgrep -P $(cat " .. p.dir .. "/pid)")
    local pid = tonumber(f:read("*l"))
    f:close()
    return pid
  end
  function p.rss_kb()
    local s = h.read("/proc/" .. tostring(p.pid()) .. "/status") or ""
    return tonumber(s:match("VmRSS:%s*(%d+)"))
  end
  function p.stop(sig)
    if h.read(p.dir .. "/rc") then return p:wait(1) end
    os.execute(("pkill -%s -P $(cat %s/pid) 2>/dev/null"):format(sig or "TERM", p.dir))
    local r, err = p:wait(15)
    if not r then
      p.kill()
      error("tgrun serve did not stop: " .. err, 2)
    end
    return r
  end
  return p
end

-- Established TCP connections whose peer port is port (clients of a server).
function W.connections_to(port)
  local f = io.popen(("ss -Htn state established '( dport = :%d )' 2>/dev/null | wc -l"):format(port))
  local n = tonumber(f:read("*l"))
  f:close()
  return n
end

-- ---- a websocket client, by hand ---------------------------------------------

-- One frame: opcode, payload, opts {fin = true, rsv = 0, mask = true}.  A
-- client must mask; the mask key is zeros, which leaves the payload as it
-- is (so 20 MB cost nothing to mask).
function W.frame(opcode, payload, o)
  o = o or {}
  local b1 = (o.fin == false and 0 or 0x80) | ((o.rsv or 0) << 4) | opcode
  local n = #payload
  local mbit = o.mask == false and 0 or 0x80
  local hdr
  if n < 126 then hdr = string.char(b1, mbit | n)
  elseif n < 65536 then hdr = string.char(b1, mbit | 126) .. string.pack(">I2", n)
  else hdr = string.char(b1, mbit | 127) .. string.pack(">I8", n) end
  if mbit ~= 0 then hdr = hdr .. "\0\0\0\0" end
  return hdr .. payload
end

local WS = {}
WS.__index = WS

-- W.connect(addr [, {extra = "Header: v\r\n", timeout =}]) -> ws, after the
-- upgrade; ws.status is the answer's status line, ws.headers its headers
-- (lower-case names).
function W.connect(addr, o)
  o = o or {}
  local c = net.connect(addr, { timeout = o.timeout or 5 })
  c:write("GET / HTTP/1.1\r\nHost: " .. addr .. "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" .. (o.extra or "") .. "\r\n")
  local ws = setmetatable({ conn = c, headers = {} }, WS)
  ws.status = c:read_line({ timeout = o.timeout or 5 })
  while true do
    local line = c:read_line({ timeout = o.timeout or 5 })
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then ws.headers[k:lower()] = v end
  end
  return ws
end

function WS:send(text, o)
  self.conn:write(W.frame(o and o.opcode or 1, text, o), { timeout = 30 })
end

function WS:send_raw(bytes)
  self.conn:write(bytes, { timeout = 30 })
end

-- ws:recv([timeout]) -> {opcode =, data =} for a data message (fragments
-- joined), or {opcode = 8, code =, reason =} for a close; {eof = true}
-- when the connection ended without one.  Pings are answered.
function WS:recv(timeout)
  local opts = { timeout = timeout or 10 }
  local parts, first = {}, nil
  while true do
    local ok, hd = pcall(self.conn.read, self.conn, 2, opts)
    if not ok then
      if hd.code == "closed" then return { eof = true } end
      error(hd, 2)
    end
    local b1, b2 = hd:byte(1, 2)
    local op, fin, n = b1 & 15, b1 & 0x80 ~= 0, b2 & 127
    if b2 & 0x80 ~= 0 then error("the server masked a frame", 2) end
    if n == 126 then n = string.unpack(">I2", self.conn:read(2, opts))
    elseif n == 127 then n = string.unpack(">I8", self.conn:read(8, opts)) end
    local data = n > 0 and self.conn:read(n, opts) or ""
    if op == 8 then
      local code = #data >= 2 and string.unpack(">I2", data) or nil
      return { opcode = 8, code = code, reason = data:sub(3) }
    elseif op == 9 then
      self.conn:write(W.frame(10, data))
    elseif op ~= 10 then
      if op ~= 0 then first = op end
      parts[#parts + 1] = data
      if fin then return { opcode = first, data = table.concat(parts) } end
    end
  end
end

-- The next data message, decoded as JSON (errors say what came instead).
function WS:json(timeout)
  local m = self:recv(timeout)
  if not m.data then
    error(("expected a message, got %s"):format(m.eof and "the end of the connection"
      or ("close " .. tostring(m.code) .. " " .. tostring(m.reason))), 2)
  end
  return json.decode(m.data)
end

-- Send a request table (the id is set) and return the first answer for it.
function WS:ask(req, timeout)
  self:send(json.encode(req))
  return self:json(timeout)
end

function WS:close()
  pcall(function() self.conn:write(W.frame(8, string.pack(">I2", 1000))) end)
  self.conn:close()
end

-- The run prefix every spec uses for keys it builds by hand.
function W.prefix(run)
  return ("run:%s:plan:p:case:c"):format(run or h.uniq("r"))
end

W.sleep = tg.sleep
return W
