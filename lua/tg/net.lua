-- tg.net -- TCP for plans: talk to peers and to systems under test.
--
--   local net = require "tg.net"
--   local l = net.listen("0.0.0.0:0")          -- l.address: "10.1.0.3:41234"
--   sync.publish("addr", l.address)            -- peers dial that address
--   local conn = l:accept({ timeout = 30 })
--   local line = conn:read_line({ timeout = 5 })
--   conn:write("echo " .. line .. "\n")
--   conn:close()
--
--   local c = net.connect(addr, { timeout = 5 })
--   c:write("hello\n")
--   local header = c:read(4)                   -- exactly 4 bytes
--
-- Every call that waits yields only the calling task, and takes an options
-- table whose `timeout` (seconds) bounds the wait; without one, the run's
-- deadline does.  Errors are values with a `code` and a `message` that says
-- what was waited for and how far it got:
--   "invalid"   a bad argument or address (raised at once, nothing waits)
--   "timeout"   e.g. "read of 100 bytes from 10.1.0.4:4001 timed out after 2 s: got 37"
--   "closed"    the peer closed or reset the connection, or this side closed
--               it; a short conn:read(n) carries `partial`, what did arrive
--   "refused"   net.connect: nobody listens there
--   "cancelled" the task was cancelled (task:cancel()) while it waited
--   "net"       any other socket error (address in use, unreachable, ...)
-- Bytes that arrived before a read timed out stay buffered for the next read.
-- A write that timed out or was cancelled still goes out in the background.
-- Listeners and connections are closed when collected; close them yourself
-- to free the port or tell the peer at once (they also work with <close>).
local c = require "tg.net.c"
local check = require "tg.check"

local net = {}
local Listener = c.listener_methods   -- listener.address is a field
local Conn = c.conn_methods           -- conn.peer and conn.address are fields

local function address(call, a)
  return check.name(call, "address", a)
end

-- net.listen(address) -> listener.  Does not yield.
-- address: "ip:port" or "[ipv6]:port"; "0.0.0.0:0" listens on every
-- interface on a free port.  listener.address is the "host:port" a peer can
-- dial: the bound address, or for 0.0.0.0 / [::] this instance's ip
-- (env.ip) with the real port.  A port in use raises code "net".
function net.listen(a)
  address("net.listen", a)
  return c.listen(a)
end

-- net.connect(address [, opts]) -> conn.  Yields until connected.
-- address: "ip:port", "[ipv6]:port" or "hostname:port".  Raises "refused"
-- when nobody listens there, "timeout" after opts.timeout.
function net.connect(a, opts)
  address("net.connect", a)
  check.timeout("net.connect", opts)
  return c.connect(a, opts)
end

-- listener:accept([opts]) -> conn.  Yields until a peer connects.
-- Connections that arrive while nobody waits in accept() are queued.
-- One task at a time may wait in accept() of a listener.
function Listener:accept(opts)
  check.timeout("listener:accept", opts)
  return c.accept(self, opts)
end

-- listener:close().  Stops listening; queued connections are closed and a
-- pending accept() ends with code "closed".  Does not yield.
function Listener:close()
  c.close_listener(self)
end

-- conn:write(data [, opts]).  Yields until the data is handed to the
-- system; raises "closed" when the peer is gone.
function Conn:write(data, opts)
  if type(data) ~= "string" then
    check.fail("conn:write: data must be a string, got %s", data == nil and "nothing" or "a " .. type(data))
  end
  check.timeout("conn:write", opts)
  return c.write(self, data, opts)
end

-- conn:read([n [, opts]]) -> data.  Yields until the data is there.
-- With n: exactly n bytes; if the connection ends first, raises "closed"
-- whose field `partial` holds what arrived.  Without n: whatever is
-- buffered, else the next chunk (at least one byte); "closed" at the end.
-- One task at a time may read from a connection.
function Conn:read(n, opts)
  if n ~= nil then n = check.count("conn:read", "n", n, 0) end
  check.timeout("conn:read", opts)
  return c.read(self, n, opts)
end

-- conn:read_line([opts]) -> line, without its "\n" (or "\r\n").  Yields.
-- At the end of the connection returns the last line even without a
-- newline; raises "closed" when nothing is left.
function Conn:read_line(opts)
  check.timeout("conn:read_line", opts)
  return c.read_line(self, opts)
end

-- conn:close().  A read that waits ends with code "closed".  Does not yield.
function Conn:close()
  c.close(self)
end

return net
