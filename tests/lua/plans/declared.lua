-- a plan that declares its parameters and instance bounds, used by
-- params_spec.lua (tgrun manifest, --help-params, checks before a run)
local log = require "tg.log"
local json = require "tg.json"

return {
  name = "declared-example",
  params = {
    peers   = { type = "int", default = 4, desc = "peers each instance dials", unit = "peers" },
    timeout = { type = "duration", default = "1m30s", desc = 'how long a "ping" may take' },
    mode    = { type = "string", default = "tcp", allowed = { "tcp", "quic" }, desc = "transport" },
    chunk   = { type = "size", default = "1MiB", cases = { "transfer" } },
    ratio   = { type = "number", default = 0.1 },
    verbose = { type = "bool", default = false },
    layout  = { type = "json", default = { rows = 2, names = { "a", "b" } } },
    label   = "string",
    ["odd name"] = { type = "int", default = 1, desc = "tab\there, ünïcode" },
  },
  instances = { min = 1, max = 50, default = 3, transfer = { min = 2, max = 2 } },

  show = function(env)
    log.info("values %s", json.encode({
      peers = env:param("peers"), timeout = env:param("timeout"), mode = env:param("mode"),
      ratio = env:param("ratio"), verbose = env:param("verbose"), layout = env:param("layout"),
      label = env:param("label"), params = env.params,
    }))
    local ok, err = pcall(env.param, env, "chunk")     -- declared for transfer only
    log.info("chunk %s", ok and "read" or err.code .. ": " .. err.message)
  end,
  transfer = function(env) log.info("chunk %d", env:param("chunk")) end,
}
