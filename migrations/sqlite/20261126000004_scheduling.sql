-- Teacher availability, closures/time off/terms, lesson series and occurrences, makeup credits
-- (src/scheduling/). On SQLite, overlapping lessons are prevented by checking inside the
-- single-writer transaction (BEGIN IMMEDIATE).
CREATE TABLE teacher_availability (
    id         BLOB PRIMARY KEY,
    teacher_id BLOB NOT NULL REFERENCES teachers (id) ON DELETE CASCADE,
    weekday    INTEGER NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_time TEXT NOT NULL,
    end_time   TEXT NOT NULL
);
CREATE INDEX teacher_availability_teacher_idx ON teacher_availability (teacher_id);

-- closure: the school is closed; time_off: one teacher is away; term: lessons happen only
-- inside terms (when any term is defined). Dates are school-local and inclusive.
CREATE TABLE calendar_exceptions (
    id         BLOB PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('closure', 'time_off', 'term')),
    teacher_id BLOB REFERENCES teachers (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    starts_on  TEXT NOT NULL,
    ends_on    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CHECK (ends_on >= starts_on),
    CHECK ((kind = 'time_off') = (teacher_id IS NOT NULL))
);
CREATE INDEX calendar_exceptions_range_idx ON calendar_exceptions (kind, starts_on, ends_on);

CREATE TABLE lesson_series (
    id               BLOB PRIMARY KEY,
    rrule            TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    created_by       BLOB,
    created_at       TEXT NOT NULL
);

CREATE TABLE lessons (
    id                    BLOB PRIMARY KEY,
    series_id             BLOB REFERENCES lesson_series (id) ON DELETE CASCADE,
    teacher_id            BLOB NOT NULL REFERENCES teachers (id) ON DELETE RESTRICT,
    student_id            BLOB NOT NULL REFERENCES students (id) ON DELETE RESTRICT,
    room_id               BLOB REFERENCES rooms (id) ON DELETE RESTRICT,
    starts_at             TEXT NOT NULL,
    ends_at               TEXT NOT NULL,
    status                TEXT NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled')),
    attendance            TEXT CHECK (attendance IN ('present', 'absent', 'cancelled_by_student', 'cancelled_by_teacher')),
    attendance_note       TEXT,
    attendance_marked_by  BLOB,
    attendance_marked_at  TEXT,
    is_makeup             INTEGER NOT NULL DEFAULT 0,
    availability_override INTEGER NOT NULL DEFAULT 0,
    notes                 TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX lessons_teacher_time_idx ON lessons (teacher_id, starts_at);
CREATE INDEX lessons_student_time_idx ON lessons (student_id, starts_at);
CREATE INDEX lessons_room_time_idx ON lessons (room_id, starts_at);
CREATE INDEX lessons_time_idx ON lessons (starts_at);
CREATE INDEX lessons_series_idx ON lessons (series_id, starts_at);

CREATE TABLE makeup_credits (
    id               BLOB PRIMARY KEY,
    student_id       BLOB NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    source_lesson_id BLOB NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    status           TEXT NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'used', 'expired')),
    expires_at       TEXT NOT NULL,
    used_lesson_id   BLOB REFERENCES lessons (id) ON DELETE SET NULL,
    created_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX makeup_credits_source_key ON makeup_credits (source_lesson_id);
CREATE INDEX makeup_credits_student_idx ON makeup_credits (student_id, status, expires_at);
