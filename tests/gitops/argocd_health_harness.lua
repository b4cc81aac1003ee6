-- Runs an Argo CD health script the way Argo CD does: the resource as the global `obj`, the
-- script's returned table is the health. Reads {"script": ..., "object": ...} as JSON on stdin.
local cjson = require("cjson")
local input = cjson.decode(io.read("*a"))
local function strip_nulls(value)
  if type(value) == "table" then
    local cleaned = {}
    for key, item in pairs(value) do
      if item ~= cjson.null then cleaned[key] = strip_nulls(item) end
    end
    return cleaned
  end
  return value
end
obj = strip_nulls(input.object)
local chunk = assert(loadstring(input.script))
local health = chunk()
io.write(cjson.encode({status = health.status, message = health.message}))
