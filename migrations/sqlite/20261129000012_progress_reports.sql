-- Progress reports drafted by the progress_report workflow (src/workflows/progress_report.rs).
CREATE TABLE progress_reports (
    id                BLOB PRIMARY KEY,
    student_id        BLOB NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    family_id         BLOB NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    teacher_id        BLOB REFERENCES teachers (id) ON DELETE SET NULL,
    period_start      TEXT NOT NULL,
    period_end        TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'approved', 'sent')),
    language          TEXT NOT NULL,
    summary           TEXT NOT NULL,
    body              TEXT NOT NULL,
    attention         INTEGER NOT NULL DEFAULT 0,
    attention_reasons TEXT NOT NULL DEFAULT '[]',
    metrics           TEXT NOT NULL DEFAULT '{}',
    run_id            BLOB,
    drafted_by        TEXT,
    approved_by       BLOB REFERENCES users (id) ON DELETE SET NULL,
    approved_at       TEXT,
    sent_at           TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX progress_reports_period_key ON progress_reports (student_id, period_start, period_end);
CREATE INDEX progress_reports_family_idx ON progress_reports (family_id, status);
