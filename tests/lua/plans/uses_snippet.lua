local helper = require "snippet"
return function(env)
  require("tg.log").info("snippet says %s", helper.greet())
end
