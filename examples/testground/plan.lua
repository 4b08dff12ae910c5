-- plan.lua -- the tgrun examples as one Testground test plan (docker:generic).
--
--   Under Testground:  testground run single --plan tgrun-examples --testcase phases \
--                        --builder docker:generic --runner local:docker --instances 4
--   Locally:           TG_LUA_PATH=examples tgrun -n 4 -c phases examples/testground/plan.lua
--
-- Each case is one of the example plans in examples/, found through
-- TG_LUA_PATH (the image sets it to the examples' folder; see the
-- Dockerfile).  The case names match manifest.toml's [[testcases]].
local cases = {}
for _, name in ipairs({ "bootstrap", "addresses", "roles", "exec", "locks", "phases" }) do
  cases[name] = require(name)
end
return cases
