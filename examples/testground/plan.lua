-- plan.lua -- the tgrun examples as one Testground test plan (docker:generic).
--
--   Under Testground:  testground run single --plan tgrun-examples --testcase phases \
--                        --builder docker:generic --runner local:docker --instances 4
--   Locally:           TG_LUA_PATH=examples tgrun -n 4 -c phases examples/testground/plan.lua
--
-- Each case is one of the example plans in examples/, found through
-- TG_LUA_PATH (the image sets it to the examples' folder; see the
-- Dockerfile).  The plan declares its parameters and instance bounds, so
-- `TG_LUA_PATH=examples tgrun manifest examples/testground/plan.lua` prints
-- manifest.toml's [[testcases]] (tests/lua/params_spec.lua checks they
-- agree), and a run is checked against them before it starts.
local plan = {
  name = "tgrun-examples",
  params = {
    chunks = { type = "int", default = 4, desc = "chunks each seed serves", unit = "chunks", cases = { "roles" } },
    phase_timeout = { type = "int", default = 30, desc = "seconds each phase barrier may wait", unit = "s",
      cases = { "phases" } },
  },
  instances = {
    bootstrap = { min = 1, max = 1000, default = 5 },
    addresses = { min = 2, max = 200, default = 5 },
    roles = { min = 1, max = 500, default = 10 },
    exec = { min = 1, max = 200, default = 4 },
    locks = { min = 1, max = 100, default = 5 },
    phases = { min = 1, max = 200, default = 4 },
  },
}
for _, name in ipairs({ "bootstrap", "addresses", "roles", "exec", "locks", "phases" }) do
  plan[name] = require(name)
end
return plan
