-- Progress reports drafted by the progress_report workflow (src/workflows/progress_report.rs).
CREATE TABLE progress_reports (
    id                UUID PRIMARY KEY,
    student_id        UUID NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    family_id         UUID NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    teacher_id        UUID REFERENCES teachers (id) ON DELETE SET NULL,
    period_start      DATE NOT NULL,
    period_end        DATE NOT NULL,
    status            TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'approved', 'sent')),
    language          TEXT NOT NULL,
    summary           TEXT NOT NULL,
    body              TEXT NOT NULL,
    attention         BOOLEAN NOT NULL DEFAULT FALSE,
    attention_reasons JSONB NOT NULL DEFAULT '[]',
    metrics           JSONB NOT NULL DEFAULT '{}',
    run_id            UUID,
    drafted_by        TEXT,
    approved_by       UUID REFERENCES users (id) ON DELETE SET NULL,
    approved_at       TIMESTAMPTZ,
    sent_at           TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX progress_reports_period_key ON progress_reports (student_id, period_start, period_end);
CREATE INDEX progress_reports_family_idx ON progress_reports (family_id, status);
