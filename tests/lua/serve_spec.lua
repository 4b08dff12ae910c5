-- serve_spec.lua -- `tgrun serve` facing clients as they really are and as
-- they should not be: the protocol as Testground's SDKs speak it, then
-- hostile input (bad JSON, null, wrong types, unknown requests, bad
-- frames), huge messages, a client that never reads, clients that leave
-- mid-barrier, a thousand connections, shutdown and the loss of Redis.
-- Every server is a real process on a real socket; every wait is bounded.
local h = require "helpers"
local W = require "ws_helpers"
local json = require "tg.json"
local tg = require "tg"

after_each(h.check_clean)

describe("tgrun serve", function()
  local srv
  before_each(function() srv = W.serve() end)
  after_each(function() if srv then srv.stop() end srv = nil end)

  it("answers signal_entry, barrier, publish and subscribe as the reference server does", function()
    local P = W.prefix()
    local a, b = W.connect(srv.addr), W.connect(srv.addr)
    assert.matches("^HTTP/1.1 101", a.status)
    assert.equal("1", a.headers["x-tgrun-sync"])
    assert.is_nil(a.headers["sec-websocket-extensions"])
    local r = a:ask({ id = "0", signal_entry = { state = P .. ":states:s" } })
    assert.same({ id = "0", error = "", publish = json.null, subscribe = "", signal_entry = { seq = 1 } }, r)
    -- a barrier answers once, when released, pushed by the entry that completes it
    a:send(json.encode({ barrier = { state = P .. ":states:s", target = 2 }, id = "1" }))
    local t0 = tg.now()
    assert.equal(2, b:ask({ id = "9", signal_entry = { state = P .. ":states:s" } }).signal_entry.seq)
    r = a:json(5)
    assert.same({ id = "1", error = "", publish = json.null, subscribe = "", signal_entry = json.null }, r)
    assert.is_true(tg.now() - t0 < 0.5, "released in " .. (tg.now() - t0) .. " s")
    -- target 0 or below: at once
    assert.equal("2", a:ask({ id = "2", barrier = { state = P .. ":states:none", target = 0 } }).id)
    -- publish: seq across the topic; subscribe replays from the first value, byte-exact
    local text = '{"z":1, "big":12345678901234567890, "s":"<>&", "f":1.50}'
    a:send('{"id":"3","publish":{"topic":"' .. P .. ':topics:t","payload":' .. text .. '}}')
    assert.same({ seq = 1 }, a:json().publish)
    assert.equal(2, a:ask({ id = "4", publish = { topic = P .. ":topics:t", payload = { n = 2 } } }).publish.seq)
    b:send(json.encode({ subscribe = { topic = P .. ":topics:t" }, id = "5" }))
    r = b:json()
    assert.equal("5", r.id)
    assert.equal(text, r.subscribe)
    assert.equal('{"n":2}', b:json().subscribe)
    -- and later values are pushed as they come
    a:ask({ id = "6", publish = { topic = P .. ":topics:t", payload = "three" } })
    assert.equal('"three"', b:json(2).subscribe)
    a:close()
    b:close()
  end)

  it("keeps the state in tgrun's key layout, with a TTL and nothing collected", function()
    local P = W.prefix()
    local a = W.connect(srv.addr)
    a:ask({ id = "1", signal_entry = { state = P .. ":states:ready" } })
    a:ask({ id = "2", publish = { topic = P .. ":topics:x", payload = { v = 1 } } })
    a:ask({ id = "3", publish = { topic = P .. ":run_events", payload = { success_event = { group = "g" } } } })
    local redis = require "tg.redis"
    assert.equal("1", redis.call({ "GET", P .. ":states:ready" }))
    local entries = redis.call({ "XRANGE", P .. ":topics:x", "-", "+" })
    assert.same({ "p", '{"v":1}' }, entries[1][2])
    entries = redis.call({ "XRANGE", P .. ":run_events", "-", "+" })
    assert.same({ "p", '{"success_event":{"group":"g"}}' }, entries[1][2])
    for _, k in ipairs({ ":states:ready", ":topics:x", ":run_events" }) do
      local ttl = redis.call({ "TTL", P .. k })
      assert.is_true(ttl > 80000, k .. " has TTL " .. tostring(ttl))
    end
    a:close()
  end)

  it("closes with 1007 and the reason on a message that is not JSON", function()
    local a = W.connect(srv.addr)
    a:send('{"id":"1","signal_entry":')
    local m = a:recv(5)
    assert.equal(8, m.opcode)
    assert.equal(1007, m.code)
    assert.matches("invalid JSON at byte 25", m.reason)
    a:close()
  end)

  it("closes with 1008 and the reason on the literal null (nobody to answer)", function()
    local a = W.connect(srv.addr)
    a:send("null")
    local m = a:recv(5)
    assert.equal(1008, m.code)
    assert.equal("a request must be a JSON object, not null", m.reason)
    a:close()
    a = W.connect(srv.addr)
    a:send("[]")
    assert.equal(1008, a:recv(5).code)
    a:close()
  end)

  it("answers wrong types and unknown requests with an error, and stays usable", function()
    local P = W.prefix()
    local a = W.connect(srv.addr)
    local r = a:ask({ id = "1", barrier = { state = P .. ":states:s", target = "2" } })
    assert.equal("1", r.id)
    assert.equal("barrier.target must be a whole number", r.error)
    r = a:ask({ id = "2", frobnicate = {} })
    assert.matches("unknown request", r.error)
    r = a:ask({ id = "3", signal_entry = { state = "not-a-key" } })
    assert.matches('"not%-a%-key" is not a state key', r.error)
    r = a:ask({ id = "4", publish = { topic = P .. ":states:s", payload = 1 } })
    assert.matches("is not a topic key", r.error)
    r = a:ask({ id = "5", signal_entry = { state = P .. ":states:s" } })
    assert.equal("", r.error)
    assert.equal(1, r.signal_entry.seq)
    a:close()
  end)

  it("takes fragmented messages and declines permessage-deflate", function()
    local P = W.prefix()
    local a = W.connect(srv.addr, { extra = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" })
    assert.matches("^HTTP/1.1 101", a.status)
    assert.is_nil(a.headers["sec-websocket-extensions"])
    local msg = json.encode({ id = "7", signal_entry = { state = P .. ":states:f" } })
    a:send_raw(W.frame(1, msg:sub(1, 10), { fin = false }) .. W.frame(0, msg:sub(11, 20), { fin = false })
      .. W.frame(9, "ping") .. W.frame(0, msg:sub(21)))
    local m = a:recv(5)
    assert.equal(1, json.decode(m.data).signal_entry.seq)
    a:close()
  end)

  it("refuses frames with RSV bits (no compression was agreed) and unmasked frames: close 1002", function()
    local a = W.connect(srv.addr)
    a:send_raw(W.frame(1, "{}", { rsv = 4 }))
    assert.equal(1002, a:recv(5).code)
    a:close()
    a = W.connect(srv.addr)
    a:send_raw(W.frame(1, "{}", { mask = false }))
    assert.equal(1002, a:recv(5).code)
    a:close()
  end)

  it("refuses a plain HTTP request with 426 and a reason", function()
    local net = require "tg.net"
    local c = net.connect(srv.addr, { timeout = 5 })
    c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.matches("^HTTP/1.1 426", c:read_line({ timeout = 5 }))
    c:close()
  end)

  it("passes a 20 MB payload through byte-exact", function()
    local P = W.prefix()
    local big = '"' .. string.rep("0123456789abcdef", 20 * 65536) .. '"'      -- 20 MiB + 2
    local a, b = W.connect(srv.addr), W.connect(srv.addr)
    b:send(json.encode({ subscribe = { topic = P .. ":topics:big" }, id = "s" }))
    local t0 = tg.now()
    a:send('{"id":"p","publish":{"topic":"' .. P .. ':topics:big","payload":' .. big .. '}}')
    assert.equal(1, a:json(30).publish.seq)
    local r = b:json(30)
    assert.equal("s", r.id)
    assert.equal(#big, #r.subscribe)
    assert.is_true(r.subscribe == big)
    assert.is_true(tg.now() - t0 < 20)
    a:close()
    b:close()
  end)

  it("a client that disconnects mid-barrier stays counted; the others go on", function()
    local P = W.prefix()
    local a, b, c = W.connect(srv.addr), W.connect(srv.addr), W.connect(srv.addr)
    a:ask({ id = "1", signal_entry = { state = P .. ":states:mid" } })
    a:send(json.encode({ id = "2", barrier = { state = P .. ":states:mid", target = 3 } }))
    tg.sleep(0.1)
    a.conn:close()                               -- gone, without a close frame
    b:ask({ id = "1", signal_entry = { state = P .. ":states:mid" } })
    b:send(json.encode({ id = "2", barrier = { state = P .. ":states:mid", target = 3 } }))
    c:ask({ id = "1", signal_entry = { state = P .. ":states:mid" } })
    c:send(json.encode({ id = "2", barrier = { state = P .. ":states:mid", target = 3 } }))
    assert.equal("2", b:json(5).id)
    assert.equal("2", c:json(5).id)
    b:close()
    c:close()
  end)

  it("is_cancel stops a subscription and drops a barrier wait", function()
    local P = W.prefix()
    local a = W.connect(srv.addr)
    a:send(json.encode({ id = "s", subscribe = { topic = P .. ":topics:c" } }))
    a:send(json.encode({ id = "b", barrier = { state = P .. ":states:c", target = 1 } }))
    tg.sleep(0.1)
    a:send(json.encode({ id = "s", is_cancel = true }))
    a:send(json.encode({ id = "b", is_cancel = true }))
    local r = a:ask({ id = "e", signal_entry = { state = P .. ":states:c" } })
    assert.equal("e", r.id)                      -- the cancelled barrier did not answer first
    a:ask({ id = "p", publish = { topic = P .. ":topics:c", payload = 1 } })
    local ok, err = pcall(a.json, a, 0.5)         -- nothing more for "s" or "b"
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    a:close()
  end)

  it("holds a thousand clients at one barrier on one loop", function()
    local P = W.prefix()
    local n = 1000
    local t0 = tg.now()
    local tasks = {}
    for i = 1, n do
      tasks[i] = tg.spawn(function()
        local c = W.connect(srv.addr, { timeout = 20 })
        c:ask({ id = "1", signal_entry = { state = P .. ":states:k" } }, 20)
        local r = c:ask({ id = "2", barrier = { state = P .. ":states:k", target = n } }, 30)
        c:close()
        return r.id == "2" and r.error == ""
      end)
    end
    local released = 0
    for i = 1, n do if tasks[i]:join({ timeout = 60 }) then released = released + 1 end end
    assert.equal(n, released)
    assert.is_true(tg.now() - t0 < 60)
  end)
end)

describe("tgrun serve's limits", function()
  it("closes 1009 with a reason past --max-message", function()
    local srv = W.serve({ "--max-message", "1048576" })
    local ok, err = pcall(function()
      local a = W.connect(srv.addr)
      a:send('{"id":"1","publish":{"topic":"run:r:plan:p:case:c:topics:t","payload":"' .. string.rep("x", 2 * 1048576) .. '"}}')
      local m = a:recv(10)
      assert.equal(1009, m.code)
      assert.matches("over 1048576 bytes %(the server's %-%-max%-message%)", m.reason)
      a:close()
    end)
    srv.stop()
    assert(ok, err)
  end)

  it("bounds what waits for subscribers that never read, closes them after --stall, and serves the rest", function()
    -- (in a sanitizer build, freed memory is not held back in quarantine:
    -- the measure is of what the server keeps, not of ASan's bookkeeping)
    local srv = W.serve({ "--max-backlog", "1048576", "--stall", "2" },
      { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=0" })
    local ok, err = pcall(function()
      local P = W.prefix()
      local slow = {}
      for i = 1, 5 do
        slow[i] = W.connect(srv.addr)
        slow[i]:send(json.encode({ id = "s", subscribe = { topic = P .. ":topics:flood" } }))
      end
      local fast = W.connect(srv.addr)
      fast:send(json.encode({ id = "f", subscribe = { topic = P .. ":topics:flood" } }))
      local rss0 = srv.rss_kb()
      local pub = W.connect(srv.addr)
      local chunk = '"' .. string.rep("y", 512 * 1024) .. '"'
      -- 20 MB into the topic: more than the kernel's socket buffers take for
      -- a client that reads nothing, so the server has to hold the rest
      for i = 1, 40 do
        pub:send('{"id":"' .. i .. '","publish":{"topic":"' .. P .. ':topics:flood","payload":' .. chunk .. '}}')
        assert.equal(i, pub:json(10).publish.seq)
        assert.equal(#chunk, #fast:json(10).subscribe)   -- the reader is not held up
      end
      -- five clients that read nothing would hold 5 x 20 MB without a
      -- bound; with it, each holds at most about --max-backlog and a
      -- message (the topic's 20 MB are kept once for all)
      local grown = (srv.rss_kb() - rss0) / 1024
      assert.is_true(grown < 70, ("the server grew by %.0f MB"):format(grown))
      -- and they are closed once nothing drained for --stall seconds
      assert.truthy(h.wait_until(function() return W.connections_to(srv.port) <= 2 end, 20),
        "slow clients still connected: " .. W.connections_to(srv.port))
      for _, c in ipairs(slow) do c.conn:close() end
      fast:close()
      pub:close()
    end)
    srv.stop()
    assert(ok, err)
  end)
end)

describe("tgrun serve's end", function()
  it("closes every client with 1001 on SIGTERM and exits 0", function()
    local srv = W.serve()
    local a = W.connect(srv.addr)
    local r = srv.stop("TERM")
    assert.equal(0, r.code)
    local m = a:recv(5)
    assert.is_true(m.eof or m.code == 1001, "got " .. tostring(m.code))
    a:close()
  end)

  it("closes every client with 1011 when Redis is lost, and exits 1", function()
    local redis = h.redis_server()
    local srv = W.serve({ "--redis", "redis://127.0.0.1:" .. redis.port })
    local a = W.connect(srv.addr)
    local P = W.prefix()
    a:ask({ id = "1", signal_entry = { state = P .. ":states:x" } })
    a:send(json.encode({ id = "2", barrier = { state = P .. ":states:x", target = 5 } }))
    redis.kill()
    local m = a:recv(10)
    assert.equal(1011, m.code)
    assert.equal("the sync service lost its Redis", m.reason)
    local r = srv.stop()
    assert.equal(1, r.code)
    assert.matches("lost the connection to Redis", r.stderr)
    a:close()
  end)

  it("without --redis or REDIS_HOST starts a private redis-server and stops it", function()
    local srv = W.serve(nil, nil, { private = true })
    local out = h.read(srv.dir .. "/out")
    assert.matches("private", out)
    local sock = out:match("Redis at unix:(%S+),")
    local a = W.connect(srv.addr)
    assert.equal(1, a:ask({ id = "1", signal_entry = { state = W.prefix() .. ":states:p" } }).signal_entry.seq)
    a:close()
    assert.equal(0, srv.stop().code)
    assert.is_nil(io.open(sock, "r"), "the private redis socket is still there")
  end)

  it("says in one line what is wrong with its options (exit 2)", function()
    for _, case in ipairs({
      { { "serve", "--listen", "nowhere" }, "is not HOST:PORT" },
      { { "serve", "--max-message", "12" }, "from 1024 up" },
      { { "serve", "--redis", "redis://127.0.0.1:1" }, "cannot connect to Redis" },
      { { "serve", "--bogus" }, "unknown option" },
    }) do
      local r = h.run(case[1])
      assert.equal(2, r.code)
      assert.matches(case[2], r.stderr)
      local _, lines = r.stderr:gsub("\n", "")
      assert.equal(1, lines)
    end
  end)
end)
