-- run_specs.lua -- a tgrun plan that runs the busted specs inside tgrun, so
-- that they exercise the real runtime: every spec runs in this instance's
-- main task and may call tg.sync, tg.sleep, ... directly.
--
--   tests/harness/with-redis.sh tgrun tests/lua/run_specs.lua
--   (params: -p pattern=<lua pattern of spec files> -p filter=<test name pattern>
--    -p dir=<folder of the spec files, default this one: tests/docker has
--    the container stage's>)
return function(env)
  -- what is alive before any spec ran: every spec must leave it so
  -- (helpers.check_clean, run after each spec)
  collectgarbage()
  package.loaded["tg.spec_baseline"] = require("tg.core").stats()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  if here:sub(1, 1) ~= "/" then here = os.getenv("PWD") .. "/" .. here end   -- busted changes directory
  package.path = here .. "/?.lua;" .. package.path
  local args = { [0] = "busted", "--output=" .. env:string("output", "utfTerminal"),
    "--pattern=" .. env:string("pattern", "_spec"), "--directory=" .. env:string("dir", here) }
  local filter = env:string("filter", "")
  if filter ~= "" then args[#args + 1] = "--filter=" .. filter end
  args[#args + 1] = "."
  arg = args
  -- busted ends a failed run with os.exit(); make that a failure of this
  -- instance instead, so the runtime shuts down cleanly.
  local exit = os.exit
  os.exit = function(code)
    if code == 0 or code == true or code == nil then return end
    error(("%s spec(s) failed or errored"):format(tostring(code)), 0)
  end
  local ok, err = pcall(require("busted.runner"), { standalone = false })
  os.exit = exit
  if not ok then error(err, 0) end
end
