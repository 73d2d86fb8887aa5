#!/usr/bin/env bash
# EXPLAIN (ANALYZE, BUFFERS) of the statements behind load scenarios b–d, on a database
# seeded by `LOAD_KEEP_DB=1 bench/load.sh` (its URL as the argument). Reads only: every
# statement runs inside a transaction that is rolled back.
set -euo pipefail
db="${1:?usage: bench/explain.sh postgres://…/cedar_load_NNN}"
teacher=$(psql "$db" -Atc "SELECT id FROM teachers ORDER BY id LIMIT 1 OFFSET 7")
student=$(psql "$db" -Atc "SELECT student_id FROM lessons WHERE teacher_id = '$teacher' LIMIT 1")
explain() { # title, statement
  echo "== $1"
  psql "$db" -qAt -v ON_ERROR_STOP=1 <<SQL
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) $2;
ROLLBACK;
SQL
}
cols_s="s.id, s.family_id, s.first_name, s.last_name, s.preferred_name, s.birth_date, s.instrument, s.instruments, s.level, s.status, s.teacher_id, s.start_date, s.end_date, s.notes, s.created_at, s.updated_at"
cols_l="l.id, l.series_id, l.teacher_id, l.student_id, l.room_id, l.starts_at, l.ends_at, l.status, l.attendance, l.attendance_note, l.is_makeup, l.availability_override, l.notes, l.substitute_for, l.created_at, l.updated_at"
explain "b: student search q=an (admin)" \
  "SELECT $cols_s FROM students s WHERE s.search_text LIKE '%an%' ESCAPE '\\' ORDER BY s.id LIMIT 51"
explain "c: one teacher's week" \
  "SELECT $cols_l FROM lessons l WHERE l.teacher_id = '$teacher' AND l.ends_at > '2027-01-11T00:00:00Z' AND l.starts_at > '2027-01-10T20:00:00Z' AND l.starts_at < '2027-01-18T00:00:00Z' ORDER BY l.starts_at, l.id LIMIT 101"
explain "c: the check of a kept week (scheduling::lesson_pages: an index-only scan)" \
  "SELECT l.row_version FROM lessons l WHERE l.teacher_id = '$teacher' AND l.ends_at > '2027-01-11T00:00:00Z' AND l.starts_at > '2027-01-10T20:00:00Z' AND l.starts_at < '2027-01-18T00:00:00Z' ORDER BY l.starts_at, l.id LIMIT 101"
explain "d1: booking, the parties" \
  "SELECT (SELECT COUNT(*) FROM teachers WHERE id = '$teacher'), (SELECT COUNT(*) FROM students WHERE id = '$student')"
explain "d2: booking, closures, time off and terms" \
  "SELECT id, kind, teacher_id, name, starts_on, ends_on, created_at FROM calendar_exceptions WHERE kind = 'term' OR (starts_on <= '2027-01-04' AND ends_on >= '2027-01-04') UNION ALL SELECT id, 'term', NULL, name, starts_on, ends_on, created_at FROM terms"
explain "d3: booking, overlapping lessons" \
  "SELECT id, teacher_id, student_id, room_id, starts_at, ends_at FROM lessons WHERE status = 'scheduled' AND starts_at < '2027-01-04T20:30:00Z' AND ends_at > '2027-01-04T20:00:00Z' AND starts_at > '2027-01-04T16:00:00Z' AND (teacher_id = '$teacher' OR student_id = '$student') ORDER BY starts_at"
explain "d4: booking, the insert (the exclusion constraints check it again)" \
  "INSERT INTO lessons (id, teacher_id, student_id, starts_at, ends_at, status, created_at, updated_at) VALUES (gen_random_uuid(), '$teacher', '$student', '2029-01-01T20:00:00Z', '2029-01-01T20:30:00Z', 'scheduled', now(), now())"
