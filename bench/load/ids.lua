-- GET a path built from a random id: PATH_PREFIX .. id .. PATH_SUFFIX, ids from IDS (one per line).
local ids = {}
for line in io.lines(os.getenv("IDS")) do ids[#ids + 1] = line end
local prefix, suffix = os.getenv("PATH_PREFIX"), os.getenv("PATH_SUFFIX") or ""
local token = os.getenv("TOKEN")
math.randomseed(os.time())
request = function()
  local path = prefix .. ids[math.random(#ids)] .. suffix
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
