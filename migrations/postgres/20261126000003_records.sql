-- Families, teachers, rooms, students, progress notes, enrollment requests (src/people/),
-- and the job table the workflow queue reads (src/workflows/).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE families (
    id                 UUID PRIMARY KEY,
    name               TEXT NOT NULL,
    email              TEXT,
    phone              TEXT,
    preferred_language TEXT NOT NULL DEFAULT 'en' CHECK (preferred_language IN ('en', 'fr')),
    payee_user_id      UUID REFERENCES users (id) ON DELETE SET NULL,
    address_line1      TEXT,
    address_line2      TEXT,
    city               TEXT,
    province           TEXT,
    postal_code        TEXT,
    notes              TEXT,
    ai_consent         BOOLEAN NOT NULL DEFAULT FALSE,  -- consent to AI processing (privacy work refines it)
    calendar_token     TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX families_calendar_token_key ON families (calendar_token);

CREATE TABLE teachers (
    id             UUID PRIMARY KEY,
    first_name     TEXT NOT NULL,
    last_name      TEXT NOT NULL,
    email          TEXT NOT NULL,
    phone          TEXT,
    instruments    JSONB NOT NULL DEFAULT '[]',
    bio            TEXT,
    pay_rate_cents BIGINT,
    active         BOOLEAN NOT NULL DEFAULT TRUE,
    calendar_token TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX teachers_email_key ON teachers (email);
CREATE UNIQUE INDEX users_teacher_id_key ON users (teacher_id);  -- a teacher record has at most one account
CREATE UNIQUE INDEX teachers_calendar_token_key ON teachers (calendar_token);

ALTER TABLE users ADD CONSTRAINT users_family_id_fkey
    FOREIGN KEY (family_id) REFERENCES families (id) ON DELETE SET NULL;
ALTER TABLE users ADD CONSTRAINT users_teacher_id_fkey
    FOREIGN KEY (teacher_id) REFERENCES teachers (id) ON DELETE SET NULL;
CREATE INDEX users_family_idx ON users (family_id);

CREATE TABLE rooms (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    capacity    INTEGER NOT NULL CHECK (capacity > 0),
    instruments JSONB NOT NULL DEFAULT '[]',
    notes       TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX rooms_name_key ON rooms (name);

CREATE TABLE students (
    id             UUID PRIMARY KEY,
    family_id      UUID NOT NULL REFERENCES families (id) ON DELETE RESTRICT,
    first_name     TEXT NOT NULL,
    last_name      TEXT NOT NULL,
    preferred_name TEXT,
    birth_date     DATE,
    instrument     TEXT NOT NULL,
    instruments    JSONB NOT NULL DEFAULT '[]',
    level          TEXT,
    status         TEXT NOT NULL CHECK (status IN ('active', 'waitlisted', 'inactive', 'withdrawn')),
    teacher_id     UUID REFERENCES teachers (id) ON DELETE SET NULL,
    start_date     DATE,
    notes          TEXT,
    search_text    TEXT NOT NULL,  -- names folded to lower-case ASCII, for accent-insensitive search
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX students_family_idx ON students (family_id, id);
CREATE INDEX students_teacher_idx ON students (teacher_id, id);
CREATE INDEX students_status_idx ON students (status, id);
CREATE INDEX students_instrument_idx ON students (instrument, id);
CREATE INDEX students_search_trgm_idx ON students USING gin (search_text gin_trgm_ops);

CREATE TABLE progress_notes (
    id         UUID PRIMARY KEY,
    student_id UUID NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    teacher_id UUID REFERENCES teachers (id) ON DELETE SET NULL,
    author_id  UUID NOT NULL,
    note_date  DATE NOT NULL,
    lesson_id  UUID,
    body       TEXT NOT NULL,
    pieces     JSONB NOT NULL DEFAULT '[]',
    goals      TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX progress_notes_student_idx ON progress_notes (student_id, id);

CREATE TABLE enrollments (
    id                  UUID PRIMARY KEY,
    family_id           UUID NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    student_id          UUID REFERENCES students (id) ON DELETE SET NULL,
    student             JSONB,                -- details of a new student
    instrument          TEXT NOT NULL,
    lesson_minutes      INTEGER NOT NULL CHECK (lesson_minutes IN (30, 45, 60)),
    preferred_times     JSONB NOT NULL DEFAULT '[]',
    experience          TEXT,
    notes               TEXT,
    status              TEXT NOT NULL CHECK (status IN ('submitted', 'approved', 'declined', 'waitlisted')),
    decision_reason     TEXT,
    assigned_teacher_id UUID REFERENCES teachers (id) ON DELETE SET NULL,
    submitted_by        UUID,
    decided_by          UUID,
    decided_at          TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX enrollments_family_idx ON enrollments (family_id, id);
CREATE INDEX enrollments_status_idx ON enrollments (status, id);
CREATE INDEX enrollments_teacher_idx ON enrollments (assigned_teacher_id, student_id);

-- Durable background work. Rows are written in the same transaction as the change that
-- causes them; the workflow queue claims them with FOR UPDATE SKIP LOCKED.
CREATE TABLE jobs (
    id           UUID PRIMARY KEY,
    queue        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      JSONB NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 10,
    run_at       TIMESTAMPTZ NOT NULL,
    locked_by    TEXT,
    locked_until TIMESTAMPTZ,
    last_error   TEXT,
    dedupe_key   TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX jobs_dedupe_key_key ON jobs (dedupe_key);
CREATE INDEX jobs_ready_idx ON jobs (queue, status, run_at);
