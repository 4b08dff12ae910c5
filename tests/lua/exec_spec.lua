-- exec_spec.lua -- tg.exec: real programs run by the real runtime, while
-- other tasks keep running; timeouts, cancel and shutdown kill them.
local tg = require "tg"
local h = require "helpers"

after_each(h.check_clean)   -- nothing left behind by any spec

-- pcall(fn, ...) that must fail: returns the error value.
local function fails(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

-- Whether process pid exists (a zombie counts: only a reaped one is gone).
local function alive(pid)
  return tg.exec({ "sh", "-c", "kill -0 " .. pid .. " 2>/dev/null" }, { timeout = 5 }).code == 0
end

describe("tg.exec results", function()
  it("returns exit code, stdout and stderr; a non-zero exit is not an error", function()
    local r = tg.exec({ "sh", "-c", "echo out; echo err >&2; exit 3" }, { timeout = 5 })
    assert.equal(3, r.code)
    assert.equal("out\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.is_nil(r.signal)
    r = tg.exec({ "true" })
    assert.same({ code = 0, stdout = "", stderr = "" }, r)
  end)

  it("reports a signal death as signal and 128 + signal", function()
    local r = tg.exec({ "sh", "-c", "echo before; kill -9 $$" }, { timeout = 5 })
    assert.equal(9, r.signal)
    assert.equal(137, r.code)
    assert.equal("before\n", r.stdout)
  end)

  it("feeds opts.stdin to the program and closes it; without it stdin is empty", function()
    local r = tg.exec({ "cat" }, { stdin = "hello\nworld\0bytes", timeout = 5 })
    assert.equal(0, r.code)
    assert.equal("hello\nworld\0bytes", r.stdout)
    local big = ("0123456789abcdef"):rep(2 ^ 16)            -- 1 MiB, more than a pipe holds
    r = tg.exec({ "wc", "-c" }, { stdin = big, timeout = 10 })
    assert.equal(#big, tonumber(r.stdout))
    r = tg.exec({ "cat" }, { timeout = 5 })                  -- would hang on an open stdin
    assert.equal("", r.stdout)
  end)

  it("survives a program that never reads its stdin", function()
    local r = tg.exec({ "true" }, { stdin = ("x"):rep(4 * 2 ^ 20), timeout = 10 })
    assert.equal(0, r.code)
  end)

  it("merges opts.env over the environment and runs in opts.cwd", function()
    local dir = h.tmpdir()
    h.write(dir .. "/marker", "here")
    local r = tg.exec({ "sh", "-c", 'echo "$TG_EXEC_A $TG_EXEC_B"; echo "$PATH"; cat marker' },
      { env = { TG_EXEC_A = "a b", TG_EXEC_B = 42 }, cwd = dir, timeout = 5 })
    assert.equal(0, r.code, r.stderr)
    assert.equal("a b 42\n" .. os.getenv("PATH") .. "\nhere", r.stdout)   -- merged, not replaced
    r = tg.exec({ "sh", "-c", "pwd -P" }, { cwd = dir, timeout = 5 })
    local real = tg.exec({ "sh", "-c", "cd " .. h.shq(dir) .. " && pwd -P" }).stdout
    assert.equal(real, r.stdout)
  end)

  it("unsets a variable given as false", function()
    if not os.getenv("HOME") then return pending("HOME is not set in this environment") end
    local r = tg.exec({ "sh", "-c", 'echo "${HOME-unset}"' }, { env = { HOME = false }, timeout = 5 })
    assert.equal("unset\n", r.stdout)
  end)

  it("reads a large output on both pipes without deadlock", function()
    -- 3 MB on stderr first: a reader that drained stdout only would block the child.
    local r = tg.exec({ "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' y >&2; "
      .. "head -c 10000000 /dev/zero | tr '\\0' x" }, { timeout = 30 })
    assert.equal(0, r.code)
    assert.equal(10000000, #r.stdout)
    assert.equal(3000000, #r.stderr)
    assert.is_nil(r.stdout:find("[^x]"))
    assert.is_nil(r.stderr:find("[^y]"))
  end)
end)

describe("tg.exec and other tasks", function()
  it("lets other tasks run while a program runs", function()
    local ticks, stop = 0, false
    local ticker = tg.spawn(function()
      while not stop do
        tg.sleep(0.05)
        ticks = ticks + 1
      end
    end)
    local t0 = tg.now()
    tg.exec({ "sleep", "0.3" }, { timeout = 5 })
    stop = true
    ticker:join()
    assert.is_true(tg.now() - t0 >= 0.3)
    assert.is_true(ticks >= 4, ("only %d ticks during a 0.3 s exec"):format(ticks))
  end)

  it("runs two programs in parallel", function()
    local t0 = tg.now()
    local a = tg.spawn(function() return tg.exec({ "sleep", "0.5" }, { timeout = 5 }).code end)
    local b = tg.spawn(function() return tg.exec({ "sleep", "0.3" }, { timeout = 5 }).code end)
    assert.equal(0, a:join())
    assert.equal(0, b:join())
    local took = tg.now() - t0
    assert.is_true(took >= 0.5 and took < 0.75, ("took %.3f s"):format(took))
  end)
end)

describe("tg.exec timeout and cancel", function()
  it("kills the program at opts.timeout and raises timeout once it is gone", function()
    local t0 = tg.now()
    local err = fails(tg.exec, { "sh", "-c", "echo $$; echo started >&2; exec sleep 10" }, { timeout = 0.3 })
    local took = tg.now() - t0
    assert.equal("timeout", err.code)
    assert.equal('exec "sh -c echo $$; echo started >&2; exec sleep 10" timed out after 0.3 s; killed',
      err.message)
    assert.equal("started\n", err.stderr)
    local pid = tonumber(err.stdout)
    assert.is_not_nil(pid, err.stdout)
    assert.is_true(took >= 0.25 and took < 0.6, ("took %.3f s"):format(took))
    assert.is_false(alive(pid))                  -- reaped before the error was raised
  end)

  it("says what timed out for a plain program", function()
    local err = fails(tg.exec, { "sleep", "10" }, { timeout = 0.2 })
    assert.equal('exec "sleep 10" timed out after 0.2 s; killed', tostring(err))
    assert.equal("", err.stdout)
  end)

  it("kills what the program started too (its process group)", function()
    local err = fails(tg.exec, { "sh", "-c", "sleep 10 & echo $!; wait" }, { timeout = 0.3 })
    assert.equal("timeout", err.code)
    local pid = tonumber(err.stdout)
    assert.is_not_nil(pid, err.stdout)
    -- the grandchild is init's to reap: poll, bounded
    assert.is_true(h.wait_until(function() return not alive(pid) end, 5), "grandchild still alive")
  end)

  it("kills the program when the waiting task is cancelled", function()
    local dir = h.tmpdir()
    local task = tg.spawn(function()
      return tg.exec({ "sh", "-c", "echo $$ > pid.tmp && mv pid.tmp pid; exec sleep 10" }, { cwd = dir, timeout = 20 })
    end)
    local pid = h.wait_until(function() return tonumber(h.read(dir .. "/pid")) end, 5)
    assert.is_not_nil(pid)
    assert.is_true(alive(pid))
    local t0 = tg.now()
    task:cancel()
    local err = fails(task.join, task, { timeout = 2 })
    assert.equal("cancelled", err.code)
    assert.matches('exec "sh %-c', err.message)
    assert.is_true(tg.now() - t0 < 0.2)
    assert.is_true(h.wait_until(function() return not alive(pid) end, 5), "program still alive after cancel")
  end)

  it("kills a program still running when the instance ends, and exits cleanly", function()
    local dir = h.tmpdir()
    local plan = h.write(dir .. "/plan.lua", ([[
      local tg = require "tg"
      return function()
        tg.spawn(function()
          tg.exec({ "sh", "-c", "echo $$ > pid.tmp && mv pid.tmp pid; exec sleep 30" }, { cwd = %q })
        end)
        local f
        repeat tg.sleep(0.01); f = io.open(%q) until f
        f:close()
      end
    ]]):format(dir, dir .. "/pid"))
    local r = h.run({ plan }, { REDIS_HOST = "127.0.0.1", REDIS_PORT = tostring(h.redis_port) })
    assert.equal(0, r.code, r.stderr)
    assert.is_nil(r.stderr:find("left open"), r.stderr)
    assert.is_true(r.secs < 10, ("took %.1f s"):format(r.secs))
    local pid = tonumber(h.read(dir .. "/pid"))
    assert.is_not_nil(pid)
    assert.is_true(h.wait_until(function() return not alive(pid) end, 5), "program outlived tgrun")
  end)
end)

describe("tg.exec errors at once", function()
  it("raises not_found for a missing program, without waiting", function()
    local t0 = tg.now()
    local err = fails(tg.exec, { "tg-no-such-program", "x" }, { timeout = 5 })
    assert.equal("not_found", err.code)
    assert.equal('exec: program "tg-no-such-program" not found', err.message)
    assert.is_true(tg.now() - t0 < 0.1)
    err = fails(tg.exec, { "/nonexistent/bin/prog" })
    assert.equal("not_found", err.code)
  end)

  it("raises invalid for a cwd that is not a directory and a program it cannot run", function()
    local err = fails(tg.exec, { "true" }, { cwd = "/nonexistent/dir" })
    assert.equal("invalid", err.code)
    assert.matches('cwd "/nonexistent/dir" is not a directory', err.message)
    err = fails(tg.exec, { "/etc/passwd" })
    assert.equal("invalid", err.code)
    assert.matches('exec "/etc/passwd": cannot start', err.message)
  end)

  it("raises invalid for bad arguments", function()
    local bad = {
      { nil, nil, "argv must be a non%-empty list" },
      { "echo hi", nil, "argv must be a non%-empty list" },
      { {}, nil, "argv must be a non%-empty list" },
      { { "echo", 42 }, nil, "argv%[2%] must be a string" },
      { { "" }, nil, "must not be empty" },
      { { "echo", "a\0b" }, nil, "NUL" },
      { { "true" }, 5, "options must be a table" },
      { { "true" }, { timeout = -1 }, "timeout must be" },
      { { "true" }, { timeout = "1" }, "timeout must be" },
      { { "true" }, { timout = 1 }, 'unknown option "timout"' },
      { { "true" }, { cwd = 1 }, "cwd must be" },
      { { "true" }, { env = "A=1" }, "env must be a table" },
      { { "true" }, { env = { ["A=B"] = "1" } }, "env names" },
      { { "true" }, { env = { A = true } }, "env.A must be" },
      { { "true" }, { stdin = 5 }, "stdin must be a string" },
    }
    for i, case in ipairs(bad) do
      local err = fails(tg.exec, case[1], case[2])
      assert.equal("invalid", err.code, ("case %d: %s"):format(i, tostring(err)))
      assert.matches(case[3], err.message)
    end
  end)

  it("refuses to run outside a task's own coroutine, starting nothing", function()
    local dir = h.tmpdir()
    local ok, err = coroutine.wrap(function()
      return pcall(tg.exec, { "sh", "-c", "touch started" }, { cwd = dir })
    end)()
    assert.is_false(ok)
    assert.equal("invalid", err.code)
    assert.matches("must run in a task", err.message)
    tg.sleep(0.1)
    assert.is_nil(h.read(dir .. "/started"))
  end)
end)
