-- legacy.lua -- an old-style module: it puts itself in package.loaded and
-- returns nothing; still one per instance.
local M = { n = 0 }
package.loaded["legacy"] = M
function M.bump() M.n = M.n + 1 return M.n end
