-- observer.lua -- a tgrun instance that follows a run's outcome events
-- through the sync service, as Testground's daemon does (tests/sdk-js/run.sh).
-- A one-case plan: run it with -c <the observed case> and TEST_PLAN/TEST_RUN
-- of the observed run, so that its keys are that run's.
local tg = require "tg"
local log = require "tg.log"

-- until params successes and failures were seen (within seconds)
return function(env)
  local svc = require "tg.svc.c"
  local want = { success_event = env:int("successes"), failure_event = env:int("failures") }
  local got = { success_event = 0, failure_event = 0, crash_event = 0 }
  local sub = svc.subscribe(nil, "run_events")
  local deadline = tg.now() + env:number("within", 60)
  while got.success_event < want.success_event or got.failure_event < want.failure_event do
    local left = deadline - tg.now()
    local ok, ev = pcall(sub.next_raw, sub, left > 0 and left or 0)
    if not ok then
      error(("saw %d of %d successes and %d of %d failures: %s"):format(got.success_event, want.success_event,
        got.failure_event, want.failure_event, tostring(ev)))
    end
    for kind in pairs(got) do
      if ev[kind] then
        got[kind] = got[kind] + 1
        log.info("observed %s of group %s%s", kind, tostring(ev[kind].group),
          ev[kind].error and (": " .. ev[kind].error:match("^[^\n]*")) or "")
      end
    end
  end
  sub:close()
  assert(got.crash_event == 0, "crashes seen")
  log.info("observed %d successes and %d failures", got.success_event, got.failure_event)
end
