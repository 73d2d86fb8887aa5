-- Teacher availability, closures/time off/terms, lesson series and occurrences, makeup credits
-- (src/scheduling/). Overlapping lessons are impossible: exclusion constraints per teacher,
-- student and room over the lesson's time range.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE teacher_availability (
    id         UUID PRIMARY KEY,
    teacher_id UUID NOT NULL REFERENCES teachers (id) ON DELETE CASCADE,
    weekday    INTEGER NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_time TEXT NOT NULL,
    end_time   TEXT NOT NULL
);
CREATE INDEX teacher_availability_teacher_idx ON teacher_availability (teacher_id);

-- closure: the school is closed; time_off: one teacher is away; term: lessons happen only
-- inside terms (when any term is defined). Dates are school-local and inclusive.
CREATE TABLE calendar_exceptions (
    id         UUID PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('closure', 'time_off', 'term')),
    teacher_id UUID REFERENCES teachers (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    starts_on  DATE NOT NULL,
    ends_on    DATE NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    CHECK (ends_on >= starts_on),
    CHECK ((kind = 'time_off') = (teacher_id IS NOT NULL))
);
CREATE INDEX calendar_exceptions_range_idx ON calendar_exceptions (kind, starts_on, ends_on);

CREATE TABLE lesson_series (
    id               UUID PRIMARY KEY,
    rrule            TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    created_by       UUID,
    created_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE lessons (
    id                    UUID PRIMARY KEY,
    series_id             UUID REFERENCES lesson_series (id) ON DELETE CASCADE,
    teacher_id            UUID NOT NULL REFERENCES teachers (id) ON DELETE RESTRICT,
    student_id            UUID NOT NULL REFERENCES students (id) ON DELETE RESTRICT,
    room_id               UUID REFERENCES rooms (id) ON DELETE RESTRICT,
    starts_at             TIMESTAMPTZ NOT NULL,
    ends_at               TIMESTAMPTZ NOT NULL,
    status                TEXT NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled')),
    attendance            TEXT CHECK (attendance IN ('present', 'absent', 'cancelled_by_student', 'cancelled_by_teacher')),
    attendance_note       TEXT,
    attendance_marked_by  UUID,
    attendance_marked_at  TIMESTAMPTZ,
    is_makeup             BOOLEAN NOT NULL DEFAULT FALSE,
    availability_override BOOLEAN NOT NULL DEFAULT FALSE,
    notes                 TEXT,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    CHECK (ends_at > starts_at),
    CONSTRAINT lessons_teacher_no_overlap EXCLUDE USING gist
        (teacher_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) WHERE (status = 'scheduled'),
    CONSTRAINT lessons_student_no_overlap EXCLUDE USING gist
        (student_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) WHERE (status = 'scheduled'),
    CONSTRAINT lessons_room_no_overlap EXCLUDE USING gist
        (room_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) WHERE (status = 'scheduled' AND room_id IS NOT NULL)
);
CREATE INDEX lessons_teacher_time_idx ON lessons (teacher_id, starts_at);
CREATE INDEX lessons_student_time_idx ON lessons (student_id, starts_at);
CREATE INDEX lessons_room_time_idx ON lessons (room_id, starts_at);
CREATE INDEX lessons_time_idx ON lessons (starts_at);
CREATE INDEX lessons_series_idx ON lessons (series_id, starts_at);

CREATE TABLE makeup_credits (
    id               UUID PRIMARY KEY,
    student_id       UUID NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    source_lesson_id UUID NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    status           TEXT NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'used', 'expired')),
    expires_at       TIMESTAMPTZ NOT NULL,
    used_lesson_id   UUID REFERENCES lessons (id) ON DELETE SET NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX makeup_credits_source_key ON makeup_credits (source_lesson_id);
CREATE INDEX makeup_credits_student_idx ON makeup_credits (student_id, status, expires_at);
