-- Families, teachers, rooms, students, progress notes, enrollment requests (src/people/),
-- and the job table the workflow queue reads (src/workflows/).
CREATE TABLE families (
    id                 BLOB PRIMARY KEY,
    name               TEXT NOT NULL,
    email              TEXT,
    phone              TEXT,
    preferred_language TEXT NOT NULL DEFAULT 'en' CHECK (preferred_language IN ('en', 'fr')),
    payee_user_id      BLOB REFERENCES users (id) ON DELETE SET NULL,
    address_line1      TEXT,
    address_line2      TEXT,
    city               TEXT,
    province           TEXT,
    postal_code        TEXT,
    notes              TEXT,
    ai_consent         INTEGER NOT NULL DEFAULT 0,  -- consent to AI processing (privacy work refines it)
    calendar_token     TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE UNIQUE INDEX families_calendar_token_key ON families (calendar_token);
CREATE INDEX users_family_idx ON users (family_id);

CREATE TABLE teachers (
    id             BLOB PRIMARY KEY,
    first_name     TEXT NOT NULL,
    last_name      TEXT NOT NULL,
    email          TEXT NOT NULL,
    phone          TEXT,
    instruments    TEXT NOT NULL DEFAULT '[]',
    bio            TEXT,
    pay_rate_cents INTEGER,
    active         INTEGER NOT NULL DEFAULT 1,
    calendar_token TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE UNIQUE INDEX teachers_email_key ON teachers (email);
CREATE UNIQUE INDEX users_teacher_id_key ON users (teacher_id);  -- a teacher record has at most one account
CREATE UNIQUE INDEX teachers_calendar_token_key ON teachers (calendar_token);

CREATE TABLE rooms (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    capacity    INTEGER NOT NULL CHECK (capacity > 0),
    instruments TEXT NOT NULL DEFAULT '[]',
    notes       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX rooms_name_key ON rooms (name);

CREATE TABLE students (
    id             BLOB PRIMARY KEY,
    family_id      BLOB NOT NULL REFERENCES families (id) ON DELETE RESTRICT,
    first_name     TEXT NOT NULL,
    last_name      TEXT NOT NULL,
    preferred_name TEXT,
    birth_date     TEXT,
    instrument     TEXT NOT NULL,
    instruments    TEXT NOT NULL DEFAULT '[]',
    level          TEXT,
    status         TEXT NOT NULL CHECK (status IN ('active', 'waitlisted', 'inactive', 'withdrawn')),
    teacher_id     BLOB REFERENCES teachers (id) ON DELETE SET NULL,
    start_date     TEXT,
    notes          TEXT,
    search_text    TEXT NOT NULL,  -- names folded to lower-case ASCII, for accent-insensitive search
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX students_family_idx ON students (family_id, id);
CREATE INDEX students_teacher_idx ON students (teacher_id, id);
CREATE INDEX students_status_idx ON students (status, id);
CREATE INDEX students_instrument_idx ON students (instrument, id);

CREATE TABLE progress_notes (
    id         BLOB PRIMARY KEY,
    student_id BLOB NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    teacher_id BLOB REFERENCES teachers (id) ON DELETE SET NULL,
    author_id  BLOB NOT NULL,
    note_date  TEXT NOT NULL,
    lesson_id  BLOB,
    body       TEXT NOT NULL,
    pieces     TEXT NOT NULL DEFAULT '[]',
    goals      TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX progress_notes_student_idx ON progress_notes (student_id, id);

CREATE TABLE enrollments (
    id                  BLOB PRIMARY KEY,
    family_id           BLOB NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    student_id          BLOB REFERENCES students (id) ON DELETE SET NULL,
    student             TEXT,                 -- details of a new student, JSON
    instrument          TEXT NOT NULL,
    lesson_minutes      INTEGER NOT NULL CHECK (lesson_minutes IN (30, 45, 60)),
    preferred_times     TEXT NOT NULL DEFAULT '[]',
    experience          TEXT,
    notes               TEXT,
    status              TEXT NOT NULL CHECK (status IN ('submitted', 'approved', 'declined', 'waitlisted')),
    decision_reason     TEXT,
    assigned_teacher_id BLOB REFERENCES teachers (id) ON DELETE SET NULL,
    submitted_by        BLOB,
    decided_by          BLOB,
    decided_at          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX enrollments_family_idx ON enrollments (family_id, id);
CREATE INDEX enrollments_status_idx ON enrollments (status, id);
CREATE INDEX enrollments_teacher_idx ON enrollments (assigned_teacher_id, student_id);

-- Durable background work. Rows are written in the same transaction as the change that
-- causes them; the workflow queue claims and runs them.
CREATE TABLE jobs (
    id           BLOB PRIMARY KEY,
    queue        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 10,
    run_at       TEXT NOT NULL,
    locked_by    TEXT,
    locked_until TEXT,
    last_error   TEXT,
    dedupe_key   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX jobs_dedupe_key_key ON jobs (dedupe_key);
CREATE INDEX jobs_ready_idx ON jobs (queue, status, run_at);
