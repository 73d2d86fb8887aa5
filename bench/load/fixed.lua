-- GET one PATH with the bearer TOKEN (the search; or a tampered token → 401).
local path, token = os.getenv("PATH_Q"), os.getenv("TOKEN")
request = function()
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
