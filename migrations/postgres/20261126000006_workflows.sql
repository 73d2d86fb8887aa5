-- The workflow engine (src/workflows/engine.rs): runs, their steps, human reviews, AI calls.
CREATE TABLE workflow_runs (
    id             UUID PRIMARY KEY,
    workflow       TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'running', 'waiting_for_review', 'succeeded', 'failed', 'cancelled')),
    input          JSONB NOT NULL,
    context        JSONB NOT NULL DEFAULT '{}',   -- checkpoint: each finished step's output by step name
    current_step   TEXT,                          -- the step to run (or waiting for review) next
    step_seq       INTEGER NOT NULL DEFAULT 0,    -- how many steps have been entered; the checkpoint's version
    subject_kind   TEXT,
    subject_id     UUID,
    family_id      UUID REFERENCES families (id) ON DELETE SET NULL,  -- whose data it handles (AI consent)
    started_by     UUID REFERENCES users (id) ON DELETE SET NULL,
    dedupe_key     TEXT,
    error          TEXT,
    ai_tokens      BIGINT NOT NULL DEFAULT 0,
    ai_cost_micros BIGINT NOT NULL DEFAULT 0,     -- millionths of a Canadian dollar
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX workflow_runs_dedupe_key_key ON workflow_runs (dedupe_key);
CREATE INDEX workflow_runs_workflow_idx ON workflow_runs (workflow, status, id);
CREATE INDEX workflow_runs_status_idx ON workflow_runs (status, id);

CREATE TABLE workflow_steps (
    id          UUID PRIMARY KEY,
    run_id      UUID NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('api', 'ai', 'decision', 'action', 'review')),
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'waiting', 'cancelled')),
    attempts    INTEGER NOT NULL DEFAULT 1,
    input       JSONB,
    output      JSONB,
    error       TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    duration_ms BIGINT
);
CREATE UNIQUE INDEX workflow_steps_run_seq_key ON workflow_steps (run_id, seq);

CREATE TABLE reviews (
    id              UUID PRIMARY KEY,
    run_id          UUID NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_seq        INTEGER NOT NULL,
    step            TEXT NOT NULL,
    workflow        TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled')),
    subject         JSONB NOT NULL,
    proposal        JSONB NOT NULL,
    context         JSONB NOT NULL,
    proposal_schema JSONB,
    teacher_id      UUID REFERENCES teachers (id) ON DELETE SET NULL,  -- besides admins, who may decide
    on_approve      TEXT NOT NULL,
    on_reject       TEXT,
    edits           JSONB,
    reason          TEXT,
    decided_by      UUID REFERENCES users (id) ON DELETE SET NULL,
    decided_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX reviews_run_step_key ON reviews (run_id, step_seq);
CREATE INDEX reviews_status_idx ON reviews (status, id);

CREATE TABLE ai_calls (
    id            UUID PRIMARY KEY,
    run_id        UUID REFERENCES workflow_runs (id) ON DELETE SET NULL,
    step          TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cost_micros   BIGINT NOT NULL DEFAULT 0,
    latency_ms    BIGINT NOT NULL,
    outcome       TEXT NOT NULL,   -- ok, invalid_output, error, skipped
    error         TEXT,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX ai_calls_created_idx ON ai_calls (created_at);
CREATE INDEX ai_calls_run_idx ON ai_calls (run_id);
