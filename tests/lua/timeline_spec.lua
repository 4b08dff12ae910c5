-- timeline_spec.lua -- the report's timeline.html in a real browser: Debian's
-- Chromium, headless, loads the page from disk (file://, no server, no
-- network), and the DOM it rendered must hold every instance's lane, every
-- barrier span, the failure, and for every barrier the instance that
-- arrived last; a view given in the address (#t=FROM,TO) must be the view
-- drawn; and it must make a screenshot.  A 50-instance run with one failing
-- instance, in processes and in one process.
--
-- Chromium is installed by .ci/deps-browser (CI runs it before the suite;
-- this spec runs it itself when Chromium is missing).
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

local PLAN = h.src .. "/tests/lua/plans/trace.lua"
local REDIS = "redis://127.0.0.1:" .. tostring(h.redis_port)
local CHROMIUM = "/usr/bin/chromium"

local function have_chromium()
  local f = io.open(CHROMIUM, "r")
  if f then f:close() end
  return f ~= nil
end

local function chromium_ready()
  if not have_chromium() then
    os.execute(h.shq(h.src .. "/.ci/deps-browser") .. " >/dev/null 2>&1")
  end
  assert.is_true(have_chromium(), "Chromium is not installed and .ci/deps-browser could not install it "
    .. "(as root: apt-get install chromium)")
end

-- Run headless Chromium on url with extra flags; returns its stdout.  The
-- flags keep it off the network (this machine has none) and out of any
-- profile but a fresh one.
local function chromium(url, flags)
  local profile = h.tmpdir()
  local cmd = { "timeout", "120", CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic", "--disable-dev-shm-usage", "--hide-scrollbars",
    "--user-data-dir=" .. profile }
  for _, f in ipairs(flags) do cmd[#cmd + 1] = f end
  cmd[#cmd + 1] = url
  for i, w in ipairs(cmd) do cmd[i] = h.shq(w) end
  local p = io.popen(table.concat(cmd, " ") .. " 2>" .. h.shq(profile .. "/stderr"))
  local out = p:read("a")
  p:close()
  os.execute("rm -rf " .. h.shq(profile))
  return out
end

-- What the traces say the page must show: the lanes, the barrier spans,
-- and who arrived last at each barrier (the highest arrival seq).
local function expected(rundir, groups)
  local json = require "tg.json"
  local e = { labels = {}, barrier_spans = 0, last = {}, failing = nil }
  local best = {}
  for _, g in ipairs(groups) do
    for i = 0, g[2] - 1 do
      local label = ("%s[%d]"):format(g[1], i)
      e.labels[#e.labels + 1] = label
      local kinds = {}
      for line in h.read(("%s/%s/%d/trace.jsonl"):format(rundir, g[1], i)):gmatch("[^\n]+") do
        local r = json.decode(line)
        local id = r.b or r.s
        if id then kinds[id] = r end
        if id and (r.k == "barrier" or r.k == "signal_and_wait") then e.barrier_spans = e.barrier_spans + 1 end
        local ended = r.s or r.e
        if ended and r.v and kinds[ended] and kinds[ended].k == "signal_and_wait" then
          local state = kinds[ended].n
          if not best[state] or r.v > best[state] then best[state], e.last[state] = r.v, label end
        end
        if r.m == "failure" then e.failing = label end
      end
    end
  end
  return e
end

local function count(text, pattern)
  return select(2, text:gsub(pattern, ""))
end

local function check_page(rundir, groups)
  local e = expected(rundir, groups)
  local dom = chromium("file://" .. rundir .. "/timeline.html", { "--dump-dom", "--virtual-time-budget=5000" })
  assert.truthy(#dom > 1000, "Chromium printed no DOM")
  -- every instance's lane, once
  assert.equal(#e.labels, count(dom, '<div class="lane [%w ]*" data%-instance="'))
  for _, l in ipairs(e.labels) do
    local pat = 'data%-instance="' .. l:gsub("%p", "%%%0") .. '"'
    assert.equal(1, count(dom, pat), "lane " .. l)
  end
  -- every barrier span, each drawn (none hidden in the whole-run view)
  local spans = 0
  for attrs in dom:gmatch('<div class="span k%-[%w_]+[^>]*>') do
    if attrs:match('data%-kind="signal_and_wait"') or attrs:match('data%-kind="barrier"') then
      spans = spans + 1
      assert.not_matches("display: none", attrs)
      assert.matches("left: %-?[%d.]+px; width: [%d.]+px", attrs)
    end
  end
  assert.equal(e.barrier_spans, spans)
  -- the one failure: its lane red, its mark, its message
  assert.truthy(e.failing, "the run has no failing instance")
  assert.equal(1, count(dom, '<div class="lane failed"'))
  assert.matches('<div class="lane failed" data%-instance="' .. e.failing:gsub("%p", "%%%0") .. '"', dom)
  assert.equal(1, count(dom, 'class="mark m%-failure"'))
  assert.matches("found a wrong checksum", dom)
  -- for every barrier, the instance that arrived last (the highest seq)
  local n = 0
  for state, who in pairs(e.last) do
    n = n + 1
    local row = dom:match('<tr data%-barrier="' .. state:gsub("%p", "%%%0") .. '">(.-)</tr>')
    assert.truthy(row, "no row for barrier " .. state)
    assert.matches('<span class="who">' .. who:gsub("%p", "%%%0") .. "</span>", row)
  end
  assert.is_true(n >= 4, "barriers: " .. n)
  assert.equal(n, count(dom, 'class="span k%-signal_and_wait[^"]*%f[%w]last%f[%W][^"]*"'))
  return e, dom
end

describe("timeline.html in headless Chromium", function()
  setup(chromium_ready)

  it("shows every lane, every barrier span, the failure and who arrived last (50 processes)", function()
    local out, id = h.tmpdir(), h.uniq("tl")
    local groups = { { "leaders", 5 }, { "followers", 45 } }
    local r = h.run({ "-n", "50", "-g", "leaders=5", "-g", "followers=45", "-c", "one_fails",
      "-p", "fails=17", "-p", "rounds=4", "--redis", REDIS, "--run-id", id, "--outputs", out,
      "--timeout", "60", PLAN })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local rundir = out .. "/" .. id
    check_page(rundir, groups)
    -- a view in the address is the view drawn: the spans outside it are hidden
    local dom = chromium("file://" .. rundir .. "/timeline.html#t=0,0.000001", { "--dump-dom" })
    local shown, hidden = 0, 0
    for attrs in dom:gmatch('<div class="span k%-signal_and_wait[^>]*>') do
      if attrs:match("display: none") then hidden = hidden + 1 else shown = shown + 1 end
    end
    assert.is_true(hidden > 0, "the view from the address was not applied")
    assert.matches("showing %+0%.000000 s to %+0%.000001 s", dom)
    -- and a screenshot
    local png = h.tmpdir() .. "/timeline.png"
    chromium("file://" .. rundir .. "/timeline.html", { "--screenshot=" .. png, "--window-size=1400,1000" })
    local img = h.read(png)
    assert.truthy(img, "no screenshot")
    assert.equal("\137PNG", img:sub(1, 4))
    assert.is_true(#img > 20000, "a screenshot of " .. #img .. " bytes")
  end)

  it("draws a run without traces (an older tgrun, Testground) and keeps HTML in its data as text", function()
    local json = require "tg.json"
    local dir = h.tmpdir() .. "/oldrun"
    for i = 0, 2 do
      local p = ("%s/g/%d"):format(dir, i)
      os.execute("mkdir -p " .. h.shq(p))
      local function ev(ms, e)
        return json.encode({ ts = 1700000000000000000 + ms * 1000000, msg = "", event = e })
      end
      h.write(p .. "/run.out", table.concat({
        ev(0, { start_event = { runenv = {} } }),
        ev(10, { message_event = { message = "</script><script>alert(1)</script><!--" } }),
        ev(20 + i, i == 1 and { failure_event = { error = "<b>boom</b>" } } or { success_event = {} }),
      }, "\n") .. "\n")
    end
    local rep = h.run({ "report", dir })
    assert.equal(0, rep.code, rep.stdout .. rep.stderr)
    local dom = chromium("file://" .. dir .. "/timeline.html", { "--dump-dom" })
    assert.equal(3, count(dom, '<div class="lane [%w ]*" data%-instance="'))
    assert.equal(1, count(dom, '<div class="lane failed" data%-instance="g%[1%]"'))
    assert.is_nil(dom:find("<script>alert(1)</script>", 1, true))
    assert.is_nil(dom:find("<b>boom</b>", 1, true))      -- shown as text, escaped
    assert.truthy(dom:find("&lt;b&gt;boom&lt;/b&gt;", 1, true))
  end)

  it("shows the same for an in-process run", function()
    local out, id = h.tmpdir(), h.uniq("tl")
    local r = h.run({ "-n", "50", "--inproc", "-c", "one_fails", "-p", "fails=33", "--redis", REDIS,
      "--run-id", id, "--outputs", out, "--timeout", "60", PLAN })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    check_page(out .. "/" .. id, { { "single", 50 } })
  end)
end)
