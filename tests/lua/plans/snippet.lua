return { greet = function() return "hi" end }
