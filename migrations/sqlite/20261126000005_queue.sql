-- Recurring schedules for the job queue (src/workflows/cron.rs): each fires by enqueueing a job.
CREATE TABLE schedules (
    name        TEXT PRIMARY KEY,
    queue       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    cron        TEXT NOT NULL,             -- five fields, evaluated in CEDAR_TIMEZONE
    payload     TEXT NOT NULL DEFAULT '{}',
    next_run_at TEXT NOT NULL,
    last_run_at TEXT
);
CREATE INDEX jobs_status_idx ON jobs (status, id);
