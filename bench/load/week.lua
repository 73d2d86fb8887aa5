-- GET /v1/lessons for one teacher's week (a random teacher, the week of 11 January 2027).
local ids = {}
for line in io.lines(os.getenv("IDS")) do ids[#ids + 1] = line end
local token = os.getenv("TOKEN")
request = function()
  local path = "/v1/lessons?teacher_id=" .. ids[math.random(#ids)] .. "&from=2027-01-11T00:00:00Z&to=2027-01-18T00:00:00Z"
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
