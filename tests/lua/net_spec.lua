-- net_spec.lua -- tg.net: listeners, connections, reads and writes between
-- tasks of this instance, the unhappy paths (refused, timeouts, EOF, cancel,
-- bad arguments), and two tgrun processes that meet over TCP.
local tg = require "tg"
local net = require "tg.net"
local core = require "tg.core"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

-- A connected pair: the client's end and the server's end.
local function pair()
  local l = net.listen("127.0.0.1:0")
  local acc = tg.spawn(function() return l:accept({ timeout = 5 }) end)
  local c = net.connect(l.address, { timeout = 5 })
  local s = acc:join()
  l:close()
  return c, s
end

local function err_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(core.is_error(err), "not an error value: " .. tostring(err))
  return err
end

describe("net.listen", function()
  it("on 127.0.0.1:0 reports the bound port, and that address can be dialled", function()
    local l = net.listen("127.0.0.1:0")
    local port = tonumber(l.address:match("^127%.0%.0%.1:(%d+)$"))
    assert.is_truthy(port, l.address)
    assert.is_true(port > 0)
    local acc = tg.spawn(function() return l:accept({ timeout = 5 }) end)
    local c = net.connect(l.address, { timeout = 5 })
    local s = acc:join()
    assert.equal(l.address, c.peer)
    assert.equal(l.address, s.address)
    assert.equal(c.address, s.peer)
    c:close()
    s:close()
    l:close()
  end)

  it("on 0.0.0.0:0 reports the instance's ip with the real port, which a peer can dial", function()
    local l = net.listen("0.0.0.0:0")
    local ip = core.config().ip
    local port = tonumber(l.address:match("^" .. ip:gsub("%.", "%%.") .. ":(%d+)$"))
    assert.is_truthy(port, l.address)
    assert.is_true(port > 0)
    local acc = tg.spawn(function() return l:accept({ timeout = 5 }) end)
    local c = net.connect(l.address, { timeout = 5 })
    local s = acc:join()
    c:write("x")
    assert.equal("x", s:read(1, { timeout = 2 }))
    c:close()
    s:close()
    l:close()
  end)

  it("on [::1]:0 reports a bracketed IPv6 address", function()
    local ok, l = pcall(net.listen, "[::1]:0")
    if not ok then
      assert.equal("net", l.code)
      pending("no IPv6 loopback here: " .. l.message)
      return
    end
    assert.matches("^%[::1%]:%d+$", l.address)
    local acc = tg.spawn(function() return l:accept({ timeout = 5 }) end)
    local c = net.connect(l.address, { timeout = 5 })
    acc:join():close()
    c:close()
    l:close()
  end)

  it("a port in use raises code net, naming the address", function()
    local l = net.listen("127.0.0.1:0")
    local err = err_of(net.listen, l.address)
    assert.equal("net", err.code)
    assert.equal(("net.listen on %s: address already in use"):format(l.address), err.message)
    l:close()
  end)

  it("queues connections that arrive while nobody is in accept()", function()
    local l = net.listen("127.0.0.1:0")
    local c1 = net.connect(l.address, { timeout = 5 })
    local c2 = net.connect(l.address, { timeout = 5 })
    c1:write("1")
    c2:write("2")
    tg.sleep(0.05)
    local s1 = l:accept({ timeout = 0 })    -- already there: no wait needed
    local s2 = l:accept({ timeout = 0 })
    local got = { s1:read(1, { timeout = 2 }), s2:read(1, { timeout = 2 }) }
    table.sort(got)
    assert.same({ "1", "2" }, got)
    for _, x in ipairs({ c1, c2, s1, s2, l }) do x:close() end
  end)

  it("close() ends a waiting accept() with code closed", function()
    local l = net.listen("127.0.0.1:0")
    local addr = l.address
    local t = tg.spawn(function() return l:accept({ timeout = 5 }) end)
    tg.sleep(0.05)
    l:close()
    local err = err_of(t.join, t)
    assert.equal("closed", err.code)
    assert.equal(("accept on %s: the listener was closed"):format(addr), err.message)
    assert.equal("closed", err_of(l.accept, l).code)
  end)
end)

describe("connections", function()
  it("echo: lines go back and forth between two tasks", function()
    local c, s = pair()
    local server = tg.spawn(function()
      local n = 0
      while true do
        local ok, line = pcall(s.read_line, s, { timeout = 5 })
        if not ok then
          assert.equal("closed", line.code)
          break
        end
        n = n + 1
        s:write("echo " .. line .. "\n")
      end
      s:close()
      return n
    end)
    for i = 1, 20 do
      c:write("line " .. i .. "\n")
      assert.equal("echo line " .. i, c:read_line({ timeout = 5 }))
    end
    c:close()
    assert.equal(20, server:join())
  end)

  it("read(n) returns exactly n bytes that came in several writes", function()
    local c, s = pair()
    local writer = tg.spawn(function()
      c:write("ab")
      tg.sleep(0.05)
      c:write("cde")
      tg.sleep(0.05)
      c:write("fghijXY")
    end)
    local t0 = tg.now()
    assert.equal("abcdefghij", s:read(10, { timeout = 5 }))
    assert.is_true(tg.now() - t0 >= 0.09, "returned before the last write")
    writer:join()
    assert.equal("XY", s:read(nil, { timeout = 5 }))   -- without n: what is buffered
    assert.equal("", s:read(0))
    c:close()
    s:close()
  end)

  it("read_line strips \\n and \\r\\n, returns a last unterminated line, then raises closed", function()
    local c, s = pair()
    c:write("one\r\ntwo\n\nthree")
    c:close()
    assert.equal("one", s:read_line({ timeout = 5 }))
    assert.equal("two", s:read_line({ timeout = 5 }))
    assert.equal("", s:read_line({ timeout = 5 }))
    assert.equal("three", s:read_line({ timeout = 5 }))
    local err = err_of(s.read_line, s, { timeout = 5 })
    assert.equal("closed", err.code)
    assert.equal(("read_line from %s: the peer closed the connection"):format(s.peer), err.message)
    s:close()
  end)

  it("a 4 MB transfer arrives intact while the reader lags behind", function()
    local c, s = pair()
    local parts = {}
    for i = 1, 4 * 1024 * 1024 // 16 do parts[i] = ("%015d\n"):format(i) end
    local big = table.concat(parts)
    assert.equal(4 * 1024 * 1024, #big)
    local wrote_at
    local writer = tg.spawn(function()
      c:write(big, { timeout = 30 })
      wrote_at = tg.now()
    end)
    -- Let it pile up: the receiver stops reading ahead at 1 MB and must
    -- resume as the reads below take the data.
    tg.sleep(0.2)
    local got, sizes, i = {}, { 1, 1000, 65543, 300000, 7 }, 0
    local total = 0
    while total < #big do
      i = i + 1
      local n = math.min(sizes[i % #sizes + 1], #big - total)
      got[#got + 1] = s:read(n, { timeout = 10 })
      total = total + n
    end
    writer:join()
    assert.is_truthy(wrote_at)
    assert.is_true(table.concat(got) == big, "the data differs")
    c:close()
    s:close()
  end)

  it("write to a peer that is gone raises closed", function()
    local c, s = pair()
    s:close()
    tg.sleep(0.05)
    local err
    for _ = 1, 50 do       -- the first writes may still land in the kernel's buffer
      local ok, e = pcall(c.write, c, ("x"):rep(65536), { timeout = 5 })
      if not ok then err = e break end
      tg.sleep(0.01)
    end
    assert.is_truthy(err, "writes kept succeeding")
    assert.equal("closed", err.code)
    assert.matches("^write of 65536 bytes to " .. c.peer:gsub("%p", "%%%0"), err.message)
    c:close()
    assert.equal("closed", err_of(c.write, c, "x").code)
  end)

  it("close() ends a waiting read in another task with closed", function()
    local c, s = pair()
    local t = tg.spawn(function() return s:read(4, { timeout = 5 }) end)
    tg.sleep(0.05)
    s:close()
    local err = err_of(t.join, t)
    assert.equal("closed", err.code)
    assert.equal("", err.partial)
    assert.equal("closed", err_of(s.read, s, 1).code)
    assert.equal(c.address, s.peer)   -- the names outlive the socket
    c:close()
  end)
end)

describe("net.connect", function()
  it("to a port nobody listens on raises refused at once", function()
    local l = net.listen("127.0.0.1:0")
    local addr = l.address
    l:close()
    tg.sleep(0.02)
    local t0 = tg.now()
    local err = err_of(net.connect, addr, { timeout = 5 })
    assert.equal("refused", err.code)
    assert.equal(("connect to %s refused"):format(addr), err.message)
    assert.is_true(tg.now() - t0 < 1)
  end)

  it("times out against a listener whose queues are full; accept() then takes every one", function()
    local l = net.listen("127.0.0.1:0")
    local cs, err = {}, nil
    for _ = 1, 400 do
      local ok, c = pcall(net.connect, l.address, { timeout = 0.3 })
      if not ok then
        err = c
        break
      end
      cs[#cs + 1] = c
    end
    if not err then
      for _, c in ipairs(cs) do c:close() end
      l:close()
      pending("this kernel took 400 connections that nobody accepted")
      return
    end
    assert.equal("timeout", err.code)
    assert.equal(("connect to %s timed out after 0.3 s"):format(l.address), err.message)
    assert.is_true(#cs > 64, "only " .. #cs .. " connected")   -- 64 queued by us, more by the kernel
    for i, c in ipairs(cs) do c:write(i .. "\n") end
    local got = {}
    for _ = 1, #cs do
      local s = l:accept({ timeout = 2 })
      got[#got + 1] = tonumber(s:read_line({ timeout = 2 }))
      s:close()
    end
    table.sort(got)
    for i = 1, #cs do assert.equal(i, got[i]) end
    for _, c in ipairs(cs) do c:close() end
    l:close()
  end)

  it("to a host name resolves it", function()
    local l = net.listen("127.0.0.1:0")
    local port = l.address:match(":(%d+)$")
    local acc = tg.spawn(function() return l:accept({ timeout = 5 }) end)
    local ok, c = pcall(net.connect, "localhost:" .. port, { timeout = 5 })
    if not ok then
      acc:cancel()
      l:close()
      pending("localhost does not resolve to 127.0.0.1 here: " .. tostring(c))
      return
    end
    acc:join():close()
    c:close()
    l:close()
  end)
end)

describe("bounded waits", function()
  it("accept with a timeout raises timeout naming the listener address", function()
    local l = net.listen("127.0.0.1:0")
    local t0 = tg.now()
    local err = err_of(l.accept, l, { timeout = 0.2 })
    local took = tg.now() - t0
    assert.equal("timeout", err.code)
    assert.equal(("accept on %s timed out after 0.2 s"):format(l.address), err.message)
    assert.is_true(took >= 0.19 and took < 1, "took " .. took)
    l:close()
  end)

  it("a read timeout says how far it got, and keeps what arrived", function()
    local c, s = pair()
    c:write(("z"):rep(37))
    local err = err_of(s.read, s, 100, { timeout = 0.3 })
    assert.equal("timeout", err.code)
    assert.equal(("read of 100 bytes from %s timed out after 0.3 s: got 37"):format(s.peer), err.message)
    assert.equal(("z"):rep(37), s:read(37, { timeout = 1 }))
    local e2 = err_of(s.read_line, s, { timeout = 0.1 })
    assert.equal(("read_line from %s timed out after 0.1 s: got 0 bytes without a newline"):format(s.peer),
      e2.message)
    c:close()
    s:close()
  end)

  it("EOF in the middle of read(n) raises closed with the partial data", function()
    local c, s = pair()
    local t = tg.spawn(function() return s:read(100, { timeout = 5 }) end)
    c:write(("p"):rep(37))
    tg.sleep(0.05)
    c:close()
    local err = err_of(t.join, t)
    assert.equal("closed", err.code)
    assert.equal(("p"):rep(37), err.partial)
    assert.equal(("read of 100 bytes from %s: the peer closed the connection: got 37"):format(s.peer),
      err.message)
    assert.equal("closed", err_of(s.read, s, nil, { timeout = 1 }).code)
    s:close()
  end)

  it("cancel of a task blocked in read ends it with cancelled; the connection still works", function()
    local c, s = pair()
    local before = core.stats().tasks
    local t = tg.spawn(function() return s:read(10, { timeout = 5 }) end)
    tg.sleep(0.05)
    assert.equal("waiting", t:status())
    t:cancel()
    local err = err_of(t.join, t)
    assert.equal("cancelled", err.code)
    assert.equal(("read of 10 bytes from %s: cancelled"):format(s.peer), err.message)
    assert.equal(before, core.stats().tasks)
    c:write("after")
    assert.equal("after", s:read(5, { timeout = 2 }))   -- a new reader is welcome
    s:close()
    assert.equal("closed", err_of(c.read, c, nil, { timeout = 2 }).code)
    c:close()
  end)

  it("a second reader of one connection is refused with invalid", function()
    local c, s = pair()
    local t = tg.spawn(function() return s:read(1, { timeout = 5 }) end)
    tg.sleep(0.02)
    local err = err_of(s.read, s, 1, { timeout = 1 })
    assert.equal("invalid", err.code)
    assert.matches("another task is already reading", err.message)
    c:write("!")
    assert.equal("!", t:join())
    c:close()
    s:close()
  end)
end)

describe("bad arguments", function()
  it("malformed addresses raise invalid at once", function()
    for _, bad in ipairs({ "", "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:99999", "127.0.0.1:8x",
      "::1:80", "[::1]80", "[nope]:80", "localhost:0", "1.2.3.4.5:80", 42 }) do
      local err = err_of(net.listen, bad)
      assert.equal("invalid", err.code, tostring(bad))
      assert.matches("^net%.listen: address", err.message)
    end
    assert.equal("invalid", err_of(net.listen).code)
    for _, bad in ipairs({ "127.0.0.1:0", "bad host!:80", "[nothost]:80", "256.1.1.1:80", "x", "" }) do
      local t0 = tg.now()
      local err = err_of(net.connect, bad, { timeout = 5 })
      assert.equal("invalid", err.code, bad)
      assert.matches("^net%.connect: address", err.message)
      assert.is_true(tg.now() - t0 < 0.1)
    end
  end)

  it("bad counts, data and options raise invalid at once", function()
    local c, s = pair()
    for _, case in ipairs({
      { s.read, s, -1 }, { s.read, s, 1.5 }, { s.read, s, "3" },
      { s.read, s, 1, { timeout = -1 } }, { s.read, s, 1, 5 },
      { s.read_line, s, { timeout = "soon" } },
      { c.write, c, 42 }, { c.write, c, nil }, { c.write, c, "x", { timeout = -2 } },
      { net.connect, "127.0.0.1:1", 3 },
      { s.read, "not a conn", 1 },
    }) do
      local err = err_of(table.unpack(case))
      assert.equal("invalid", err.code)
    end
    local l = net.listen("127.0.0.1:0")
    assert.equal("invalid", err_of(l.accept, l, { timeout = -1 }).code)
    assert.equal("invalid", err_of(l.accept, c).code)
    l:close()
    c:close()
    s:close()
  end)
end)

describe("shutdown", function()
  it("ends waits in accept, read, read_line and write and closes every handle left open", function()
    local p = h.spawn({ "--timeout", "30", h.src .. "/tests/lua/plans/net_shutdown.lua" },
      { REDIS_HOST = os.getenv("REDIS_HOST") or "127.0.0.1", REDIS_PORT = tostring(h.redis_port) })
    local t0 = tg.now()
    local r, why = p:wait(20)
    if not r then p:kill() end
    assert.is_truthy(r, "tgrun did not exit: " .. tostring(why))
    assert.equal(0, r.code, r.stderr)
    assert.matches("leaving with everything open", r.stdout, 1, true)
    assert.equal(0, #h.events_of(h.json_lines(r.stdout), "failure_event"))
    assert.equal("", r.stderr)        -- no "handles left open", no sanitizer report
    assert.is_true(tg.now() - t0 < 10, "took " .. tg.now() - t0)
  end)
end)

describe("two tgrun processes", function()
  it("meet over TCP: one publishes listener.address through sync, the other dials it", function()
    local run = h.uniq("netpeers")
    local env = { REDIS_HOST = os.getenv("REDIS_HOST") or "127.0.0.1", REDIS_PORT = tostring(h.redis_port),
      TEST_RUN = run, TEST_PLAN = "net_peers", TEST_CASE = "default", TEST_INSTANCE_COUNT = "2" }
    local plan = h.src .. "/tests/lua/plans/net_peers.lua"
    local a = h.spawn({ "--timeout", "60", plan }, env)
    local b = h.spawn({ "--timeout", "60", plan }, env)
    local ra = assert(a:wait(60))
    local rb = assert(b:wait(60))
    assert.equal(0, ra.code, ra.stderr .. ra.stdout)
    assert.equal(0, rb.code, rb.stderr .. rb.stdout)
    local out = ra.stdout .. rb.stdout
    assert.matches("server got: ping from 2", out, 1, true)
    assert.matches("client got: pong to ping from 2", out, 1, true)
  end)
end)
