#!/usr/bin/env python3
"""Seeds the load benchmark's school through Cedar's API: 50 teachers, 2,000 families,
5,000 students, 20,000 lessons (5,000 weekly series of 4). Writes the ids the scenarios use
to OUT (JSON). Usage: seed.py BASE_URL TOKEN OUT"""
import json, sys, threading, http.client, urllib.parse, datetime, queue, random

base, token, out = sys.argv[1], sys.argv[2], sys.argv[3]
host = urllib.parse.urlparse(base)
local = threading.local()
FIRST = ["Anna", "Daniel", "Ryan", "Chloé", "Liam", "Sophie", "Ethan", "Maya", "Noah", "Léa", "Jonah", "Hana",
         "Olivia", "Lucas", "Zoë", "Nathan", "Amélie", "Owen", "Grace", "Samuel", "Emma", "Felix", "Iris", "Jack"]
LAST = ["Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Smith", "Brown", "Martin", "Wilson", "Lee", "Nguyen",
        "Patel", "Morin", "Lavoie", "Fortin", "Chan", "Kaur", "Singh", "Hébert", "Campbell"]


def call(method, path, body=None):
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    payload = json.dumps(body) if body is not None else None
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    conn.request(method, path, payload, headers)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise SystemExit(f"{method} {path} -> {response.status}: {data[:300]!r}")
    return json.loads(data) if data else None


def parallel(jobs, workers=8):
    results = [None] * len(jobs)
    work = queue.Queue()
    for i, job in enumerate(jobs):
        work.put((i, job))

    def run():
        while True:
            try:
                i, (method, path, body) = work.get_nowait()
            except queue.Empty:
                return
            results[i] = call(method, path, body)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


random.seed(20261129)
teachers = parallel([("POST", "/v1/teachers", {"first_name": f"Teacher{t}", "last_name": random.choice(LAST),
                      "email": f"t{t}@load.example", "instruments": ["piano"]}) for t in range(50)])
teachers = [t["id"] for t in teachers]
families = parallel([("POST", "/v1/families", {"name": f"{random.choice(LAST)} {f}"}) for f in range(2000)])
families = [f["id"] for f in families]
students = parallel([("POST", "/v1/students", {"family_id": families[s % 2000], "first_name": random.choice(FIRST),
                      "last_name": random.choice(LAST), "instrument": "piano", "teacher_id": teachers[s % 50]})
                     for s in range(5000)])
students = [s["id"] for s in students]
# Student i: teacher i % 50, slot i // 50 of the week (20 half hours a day, Monday-Friday
# 15:00 Toronto from 4 January 2027), four weekly lessons.
base = datetime.datetime(2027, 1, 4, 20, 0, tzinfo=datetime.timezone.utc)
lessons = []
for i, student in enumerate(students):
    slot = i // 50
    start = base + datetime.timedelta(days=slot // 20, minutes=30 * (slot % 20))
    lessons.append(("POST", "/v1/lessons", {"teacher_id": teachers[i % 50], "student_id": student,
                    "starts_at": start.isoformat().replace("+00:00", "Z"), "duration_minutes": 30,
                    "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"}, "override_availability": True}))
parallel(lessons)
json.dump({"teachers": teachers, "students": students, "families": families}, open(out, "w"))
print(f"seeded {len(teachers)} teachers, {len(families)} families, {len(students)} students, {4 * len(lessons)} lessons")
