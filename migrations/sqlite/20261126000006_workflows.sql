-- The workflow engine (src/workflows/engine.rs): runs, their steps, human reviews, AI calls.
CREATE TABLE workflow_runs (
    id             BLOB PRIMARY KEY,
    workflow       TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'running', 'waiting_for_review', 'succeeded', 'failed', 'cancelled')),
    input          TEXT NOT NULL,
    context        TEXT NOT NULL DEFAULT '{}',   -- checkpoint: each finished step's output by step name
    current_step   TEXT,                          -- the step to run (or waiting for review) next
    step_seq       INTEGER NOT NULL DEFAULT 0,    -- how many steps have been entered; the checkpoint's version
    subject_kind   TEXT,
    subject_id     BLOB,
    family_id      BLOB REFERENCES families (id) ON DELETE SET NULL,  -- whose data it handles (AI consent)
    started_by     BLOB REFERENCES users (id) ON DELETE SET NULL,
    dedupe_key     TEXT,
    error          TEXT,
    ai_tokens      INTEGER NOT NULL DEFAULT 0,
    ai_cost_micros INTEGER NOT NULL DEFAULT 0,     -- millionths of a Canadian dollar
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT
);
CREATE UNIQUE INDEX workflow_runs_dedupe_key_key ON workflow_runs (dedupe_key);
CREATE INDEX workflow_runs_workflow_idx ON workflow_runs (workflow, status, id);
CREATE INDEX workflow_runs_status_idx ON workflow_runs (status, id);

CREATE TABLE workflow_steps (
    id          BLOB PRIMARY KEY,
    run_id      BLOB NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('api', 'ai', 'decision', 'action', 'review')),
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'waiting', 'cancelled')),
    attempts    INTEGER NOT NULL DEFAULT 1,
    input       TEXT,
    output      TEXT,
    error       TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER
);
CREATE UNIQUE INDEX workflow_steps_run_seq_key ON workflow_steps (run_id, seq);

CREATE TABLE reviews (
    id              BLOB PRIMARY KEY,
    run_id          BLOB NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_seq        INTEGER NOT NULL,
    step            TEXT NOT NULL,
    workflow        TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled')),
    subject         TEXT NOT NULL,
    proposal        TEXT NOT NULL,
    context         TEXT NOT NULL,
    proposal_schema TEXT,
    teacher_id      BLOB REFERENCES teachers (id) ON DELETE SET NULL,  -- besides admins, who may decide
    on_approve      TEXT NOT NULL,
    on_reject       TEXT,
    edits           TEXT,
    reason          TEXT,
    decided_by      BLOB REFERENCES users (id) ON DELETE SET NULL,
    decided_at      TEXT,
    created_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX reviews_run_step_key ON reviews (run_id, step_seq);
CREATE INDEX reviews_status_idx ON reviews (status, id);

CREATE TABLE ai_calls (
    id            BLOB PRIMARY KEY,
    run_id        BLOB REFERENCES workflow_runs (id) ON DELETE SET NULL,
    step          TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros   INTEGER NOT NULL DEFAULT 0,
    latency_ms    INTEGER NOT NULL,
    outcome       TEXT NOT NULL,   -- ok, invalid_output, error, skipped
    error         TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX ai_calls_created_idx ON ai_calls (created_at);
CREATE INDEX ai_calls_run_idx ON ai_calls (run_id);
