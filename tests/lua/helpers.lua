-- helpers.lua -- what the specs share: running tgrun as a real child process,
-- private redis-servers, unique names, bounded polling.
local tg = require "tg"
local json = require "tg.json"

local h = {}

-- Lua seeds math.random from the clock's second and a few addresses, and
-- the ASan build's addresses do not change from run to run: spec files
-- started in the same second would pick the same "random" ports and names.
-- The harness's Redis port is unique to each spec process.
math.randomseed(require("tg.core").time_ns(), tonumber(os.getenv("REDIS_PORT")) or 0)

h.tgrun = os.getenv("TGRUN") or require("tg.core").exe_path()
h.src = os.getenv("TG_SOURCE_DIR") or (function()
  local p = io.popen("cd \"$(dirname '" .. debug.getinfo(1, "S").source:sub(2) .. "')/../..\" && pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()
h.redis_port = tonumber(os.getenv("REDIS_PORT"))

local counter = 0
-- A name no other spec uses in this run.
function h.uniq(prefix)
  counter = counter + 1
  return ("%s-%d-%d"):format(prefix or "n", counter, math.random(1, 1e9))
end

function h.tmpdir()
  local p = io.popen("mktemp -d")
  local d = p:read("*l")
  p:close()
  return d
end

function h.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

function h.read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
h.shq = shq

-- The environment part of a command: opts.unset names variables the child
-- must not inherit (REDIS_HOST, to run without Redis).
local function env_cmd(cmd, env, opts)
  for _, k in ipairs(opts and opts.unset or {}) do cmd[#cmd + 1] = "-u " .. k end
  for k, v in pairs(env or {}) do cmd[#cmd + 1] = shq(k .. "=" .. v) end
end

-- Run tgrun with args (a list) and env (a table of variables); waits for it.
-- opts.cwd: where; opts.prefix: words before it (e.g. {"ip", "netns", "exec", NS}).
-- Returns {code =, stdout =, stderr =, secs =}.
function h.run(args, env, opts)
  local dir = h.tmpdir()
  local cmd = { "cd", shq(opts and opts.cwd or dir), "&&" }
  for _, w in ipairs(opts and opts.prefix or {}) do cmd[#cmd + 1] = shq(w) end
  cmd[#cmd + 1] = "env"
  env_cmd(cmd, env, opts)
  cmd[#cmd + 1] = shq(h.tgrun)
  for _, a in ipairs(args) do cmd[#cmd + 1] = shq(a) end
  cmd[#cmd + 1] = ">" .. dir .. "/out 2>" .. dir .. "/err </dev/null; echo $? >" .. dir .. "/rc"
  local t0 = tg.now()
  os.execute(table.concat(cmd, " "))
  local r = { code = tonumber(h.read(dir .. "/rc")), stdout = h.read(dir .. "/out"),
    stderr = h.read(dir .. "/err"), secs = tg.now() - t0, dir = dir }
  return r
end

-- Start tgrun in the background; returns a handle with :wait(timeout) and :pid().
function h.spawn(args, env, opts)
  local dir = h.tmpdir()
  local cmd = { "cd", shq(opts and opts.cwd or dir), "&&" }
  for _, w in ipairs(opts and opts.prefix or {}) do cmd[#cmd + 1] = shq(w) end
  cmd[#cmd + 1] = "env"
  env_cmd(cmd, env, opts)
  cmd[#cmd + 1] = shq(opts and opts.bin or h.tgrun)
  for _, a in ipairs(args) do cmd[#cmd + 1] = shq(a) end
  local inner = table.concat(cmd, " ") .. " >" .. dir .. "/out 2>" .. dir .. "/err </dev/null"
  os.execute("(" .. inner .. "; echo $? >" .. dir .. "/rc.tmp; mv " .. dir .. "/rc.tmp " .. dir
    .. "/rc) >/dev/null 2>&1 & echo $! >" .. dir .. "/pid")
  local p = { dir = dir }
  function p.wait(_, timeout)
    local t0 = tg.now()
    while not h.read(dir .. "/rc") do
      if tg.now() - t0 > (timeout or 30) then return nil, "still running after " .. (timeout or 30) .. " s" end
      tg.sleep(0.02)
    end
    return { code = tonumber(h.read(dir .. "/rc")), stdout = h.read(dir .. "/out"),
      stderr = h.read(dir .. "/err") }
  end
  function p.kill()
    os.execute("pkill -KILL -P $(cat " .. dir .. "/pid) 2>/dev/null")
  end
  return p
end

-- Poll fn() every 10 ms until it returns a true value; nil after timeout s.
function h.wait_until(fn, timeout)
  local t0 = tg.now()
  repeat
    local v = fn()
    if v then return v end
    tg.sleep(0.01)
  until tg.now() - t0 > (timeout or 10)
  return nil
end

-- tgrun args... plan against the harness's Redis in a fresh outputs folder
-- and with a fresh run id (prefix: its first letters), waited for: h.run's
-- result with .out (the outputs folder), .id and .rundir (out/id).
function h.run_plan(plan, prefix, args, env)
  local out, id = h.tmpdir(), h.uniq(prefix)
  local a = { "--redis", "redis://127.0.0.1:" .. tostring(h.redis_port), "--run-id", id, "--outputs", out,
    "--timeout", "60" }
  for _, v in ipairs(args) do a[#a + 1] = v end
  a[#a + 1] = plan
  local r = h.run(a, env)
  r.out, r.id, r.rundir = out, id, out .. "/" .. id
  return r
end

-- A private redis-server on a free port: {port =, pid =, stop(), kill(),
-- restart(), cli(cmd), url}.  opts.aof: append-only file, fsync always
-- (a restart keeps everything); opts.debug: DEBUG enabled (DEBUG SLEEP);
-- opts.password.  restart() starts it again on the same port and folder.
-- It lives until the spec ends: h.check_clean (every spec file's
-- after_each) stops every one a spec started.
local private_servers = {}
function h.redis_server(opts)
  opts = opts or {}
  local dir = h.tmpdir()
  local function start(port)
    os.execute(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly %s --appendfsync always "
      .. "--enable-debug-command %s %s --dir %s --logfile %s/redis.log --daemonize yes --pidfile %s/redis.pid "
      .. ">/dev/null 2>&1"):format(port, opts.aof and "yes" or "no", opts.debug and "yes" or "no",
      opts.password and ("--requirepass " .. opts.password) or "", dir, dir, dir))
    local auth = opts.password and ("-a " .. opts.password .. " --no-auth-warning ") or ""
    return h.wait_until(function()
      local p = io.popen(("redis-cli -p %d %sping 2>/dev/null"):format(port, auth))
      local s = p:read("*a")
      p:close()
      return s:match("PONG")
    end, 3)
  end
  for _ = 1, 20 do
    local port = math.random(20000, 59999)
    os.remove(dir .. "/redis.pid")
    if start(port) then
      local srv = { port = port, dir = dir, url = "redis://127.0.0.1:" .. port }
      local function pid()
        return h.wait_until(function() return tonumber(h.read(dir .. "/redis.pid")) end, 3)
      end
      srv.pid = pid()
      function srv.kill()
        os.execute("kill -9 " .. srv.pid .. " 2>/dev/null")
        h.wait_until(function() return not h.alive(srv.pid) end, 5)
      end
      function srv.stop() os.execute("kill " .. srv.pid .. " 2>/dev/null") end
      function srv.restart()
        os.remove(dir .. "/redis.pid")
        assert(start(port), "redis-server did not come back on port " .. port)
        srv.pid = pid()
      end
      function srv.gone()
        if srv.pid then srv.kill() else srv.cli("SHUTDOWN NOSAVE") end
      end
      private_servers[#private_servers + 1] = srv
      function srv.cli(cmd)
        local auth = opts.password and ("-a " .. opts.password .. " --no-auth-warning ") or ""
        local p = io.popen(("redis-cli -p %d %s%s 2>&1"):format(port, auth, cmd))
        local s = p:read("*a")
        p:close()
        return s
      end
      return srv
    end
  end
  error("could not start a private redis-server")
end

-- Is process pid alive (and not a zombie)?
function h.alive(pid)
  local st = h.read("/proc/" .. tostring(pid) .. "/stat")
  return st ~= nil and not st:match("^%d+ %b() Z")
end

-- Every line of text parsed as JSON (errors name the line).
function h.json_lines(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local ok, v = pcall(json.decode, line)
    if not ok then error(("not JSON: %s (%s)"):format(line, v)) end
    out[#out + 1] = v
  end
  return out
end

-- The outcome events in a list of event lines.
function h.events_of(lines, kind)
  local out = {}
  for _, l in ipairs(lines) do
    if l.event and l.event[kind] then out[#out + 1] = l.event[kind] end
  end
  return out
end

-- fn(...) must raise an error value with code "invalid" whose message
-- matches pattern.
function h.fails_invalid(pattern, fn, ...)
  local assert = require "luassert"    -- busted's assert lives in the spec's environment
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_true(require("tg.core").is_error(err), "not an error value: " .. tostring(err))
  assert.equal("invalid", err.code)
  assert.matches(pattern, err.message)
end

-- After every spec (each spec file calls after_each(h.check_clean)): no
-- task, timer or other handle, and no Redis request may be left behind.
-- Garbage is collected first (a dropped listener or subscription closes in
-- its __gc); what is still finishing (a heartbeat reply in flight, a
-- handle closing) gets a bounded moment.  Compared with what was alive
-- before the first spec ran (run_specs.lua).
function h.check_clean()
  -- the spec's private redis-servers go first (daemons: nothing else ends them)
  for i = #private_servers, 1, -1 do
    private_servers[i].gone()
    private_servers[i] = nil
  end
  local core = require "tg.core"
  local base = package.loaded["tg.spec_baseline"]
  if type(base) ~= "table" then return end
  local s
  local function left()
    collectgarbage()
    collectgarbage()
    s = core.stats()
    return s.tasks <= base.tasks and s.live_tasks <= base.live_tasks and s.handles <= base.handles
      and s.requests == 0
  end
  if h.wait_until(left, 3) then return end
  error(("left behind after the spec: %d task(s) (%d before), %d task record(s) (%d before), "
    .. "%d active handle(s) (%d before), %d Redis request(s) in flight"):format(
    s.tasks, base.tasks, s.live_tasks, base.live_tasks, s.handles, base.handles, s.requests), 0)
end

return h
