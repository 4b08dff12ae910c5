return function(env)
  local x = 
  end
end
