-- POST /v1/lessons: every other request books a new free slot (a fresh block of 2028
-- evenings per thread), the others collide with a seeded lesson (409 listing the conflict).
local teachers, students = {}, {}
for line in io.lines(os.getenv("TEACHERS")) do teachers[#teachers + 1] = line end
for line in io.lines(os.getenv("STUDENTS")) do students[#students + 1] = line end
local token = os.getenv("TOKEN")
local counter, thread_id = 0, 0
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  thread_id = tonumber(wrk.thread:get("id")) or 0
  -- The warm-up (RUN=1) and the measured run (RUN=2) book different free slots.
  counter = (tonumber(os.getenv("RUN")) or 0) * 10000000
end
local base2028 = 1830297600 -- 2028-01-01T00:00:00Z
request = function()
  counter = counter + 1
  local n = counter * 64 + thread_id
  local teacher, student, start
  if n % 2 == 0 then
    local i = math.floor(n / 2) % #students
    teacher = teachers[(i % #teachers) + 1]
    student = students[i + 1]
    -- Student i's first seeded lesson: Monday 4 January 2027 20:00Z + its slot.
    local slot = math.floor(i / 50)
    start = 1799092800 + math.floor(slot / 20) * 86400 + (slot % 20) * 1800
  else
    local k = math.floor(n / 2)
    teacher = teachers[(k % #teachers) + 1]
    student = students[((k * 37) % #students) + 1]
    start = base2028 + math.floor(k / #teachers) * 1800
  end
  local body = string.format('{"teacher_id":"%s","student_id":"%s","starts_at":"%s","duration_minutes":30,"override_availability":true}',
    teacher, student, os.date("!%Y-%m-%dT%H:%M:%SZ", start))
  return wrk.format("POST", "/v1/lessons", {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
