-- counter.lua -- a module of the plan's own, with module-level state: each
-- instance must get its own copy of `n`.
local M = {}
local n = 0
function M.bump() n = n + 1 return n end
loaded_at = (loaded_at or 0) + 1   -- a global set at load time, in the instance's globals
return M
