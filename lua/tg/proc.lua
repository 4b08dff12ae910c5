-- tg.proc -- tg.exec: run a program while the other tasks keep running.
--
--   local r = tg.exec({ "sh", "-c", "echo hi; exit 3" }, { timeout = 5 })
--   -- r.code == 3, r.stdout == "hi\n", r.stderr == "", r.signal == nil
--
-- argv[1] is looked up on PATH.  Options:
--   timeout  seconds; when it expires the program's process group gets
--            SIGKILL and the call raises code "timeout" once the program is
--            gone, with what it printed in err.stdout and err.stderr.
--            Without it the run's deadline bounds the call.
--   cwd      the directory to run in.
--   env      variables merged over tgrun's environment; false unsets one.
--   stdin    a string written to the program's stdin, which is then closed;
--            without it stdin is /dev/null.
-- The call returns when the program has exited and closed its stdout and
-- stderr.  A non-zero exit is a result, not an error: code is the exit
-- status, or 128 + signal (and signal is set) when a signal ended it.
-- Errors: "invalid" (bad arguments, at once), "not_found" (no such program,
-- at once), "timeout", "cancelled" (task:cancel() also kills the program).
local c = require "tg.proc.c"
local check = require "tg.check"

local proc = {}

local options = { timeout = true, cwd = true, env = true, stdin = true }

local describe = check.describe

local function no_nul(what, s)
  if s:find("\0", 1, true) then check.fail("exec: %s contains a NUL byte", what) end
  return s
end

-- A copy of opts.env whose values are strings (numbers converted) or false.
local function env_of(env)
  if type(env) ~= "table" then
    check.fail("exec: env must be a table of variables, got %s", describe(env))
  end
  local out = {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or k == "" or k:find("=", 1, true) then
      check.fail("exec: env names must be non-empty strings without '=', got %s", describe(k))
    end
    no_nul("env name " .. describe(k), k)
    if type(v) == "number" then v = tostring(v) end
    if type(v) == "string" then out[k] = no_nul("env." .. k, v)
    elseif v == false then out[k] = false
    else check.fail("exec: env.%s must be a string, a number or false, got %s", k, describe(v)) end
  end
  return out
end

-- proc.exec(argv [, opts]) -> {code =, signal =, stdout =, stderr =}.  Yields.
function proc.exec(argv, opts)
  if type(argv) ~= "table" or rawlen(argv) == 0 then
    check.fail("exec: argv must be a non-empty list of strings, got %s",
      type(argv) == "table" and "an empty table" or describe(argv))
  end
  for i = 1, rawlen(argv) do
    local a = rawget(argv, i)
    if type(a) ~= "string" then check.fail("exec: argv[%d] must be a string, got %s", i, describe(a)) end
    no_nul(("argv[%d]"):format(i), a)
  end
  if argv[1] == "" then check.fail("exec: argv[1], the program, must not be empty") end
  local timeout = check.timeout("exec", opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not options[k] then check.fail("exec: unknown option %s", describe(k)) end
  end
  local cwd, env, stdin = opts.cwd, opts.env, opts.stdin
  if cwd ~= nil and (type(cwd) ~= "string" or cwd == "") then
    check.fail("exec: cwd must be a non-empty string, got %s", describe(cwd))
  end
  if cwd then no_nul("cwd", cwd) end
  if env ~= nil then env = env_of(env) end
  if stdin ~= nil and type(stdin) ~= "string" then
    check.fail("exec: stdin must be a string, got %s", describe(stdin))
  end
  return c.exec(argv, timeout, cwd, env, stdin)
end

return proc
