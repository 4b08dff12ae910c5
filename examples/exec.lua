-- exec.lua -- drive real programs with tg.exec and agree on their output.
--
--   tgrun -n 4 examples/exec.lua
--
-- The leader (global_seq 1) broadcasts a seed.  Every instance builds the
-- same 2000 lines from it but shuffles them its own way, then pipes them
-- through `sort` and `sha256sum` (coreutils, on every Debian machine) and
-- counts them with `wc -l`.  The instances exchange their digests: sorting
-- must have made them equal.  Each tg.exec has a timeout; the other tasks
-- keep running while a program runs.
local tg = require "tg"
local log = require "tg.log"
local broadcast = require "tg.broadcast"
local exchange = require "tg.exchange"

local T = { timeout = 30 }

local function run(argv, stdin, env)
  local r = tg.exec(argv, { stdin = stdin, env = env, timeout = 10 })
  if r.code ~= 0 then
    error(("%s exited with %d: %s"):format(argv[1], r.code, r.stderr))
  end
  return r.stdout
end

return function(env)
  local seed = broadcast.from_leader("seed", function() return math.random(1, 1e9) end, T)

  local lines = {}
  for i = 1, 2000 do lines[i] = ("line %d of seed %d"):format((i * 7919 + seed) % 100003, seed) end
  -- an instance-specific shuffle: the same lines in a different order
  math.randomseed(seed + env.global_seq)
  for i = #lines, 2, -1 do
    local j = math.random(1, i)
    lines[i], lines[j] = lines[j], lines[i]
  end
  local input = table.concat(lines, "\n") .. "\n"

  local sorted = run({ "sort" }, input, { LC_ALL = "C" })   -- one collation everywhere
  local digest = run({ "sha256sum" }, sorted):match("^(%x+)")
  local count = tonumber(run({ "wc", "-l" }, sorted):match("%d+"))
  local unsorted = run({ "sha256sum" }, input):match("^(%x+)")
  log.info("instance %d: %d lines, unsorted %s..., sorted %s...", env.global_seq, count,
    unsorted:sub(1, 12), digest:sub(1, 12))

  local all = exchange.all("digests", { digest = digest, count = count }, T)
  for i, d in ipairs(all) do
    assert(d.digest == digest and d.count == count,
      ("instance %d disagrees: %s (%d lines)"):format(i, d.digest, d.count))
  end
  log.info("all %d instances agree on %s", #all, digest)
end
