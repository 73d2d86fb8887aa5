-- The owner's follow-up tasks (src/tasks), billing inquiries (src/billing/inquiries.rs) and
-- payment plans created by the payment_issue workflow (src/workflows/payment_issue.rs).

CREATE TABLE tasks (
    id           BLOB PRIMARY KEY,
    title        TEXT NOT NULL,
    detail       TEXT,
    status       TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'dismissed')),
    due_on       TEXT,
    assignee_id  BLOB REFERENCES users (id) ON DELETE SET NULL,
    subject_type TEXT,
    subject_id   BLOB,
    run_id       BLOB REFERENCES workflow_runs (id) ON DELETE SET NULL,
    -- A workflow step that creates a task names it, so a repeated step creates it once.
    dedupe_key   TEXT,
    created_by   BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    closed_at    TEXT
);
CREATE UNIQUE INDEX tasks_dedupe_key ON tasks (dedupe_key);
CREATE INDEX tasks_status_idx ON tasks (status, due_on, id);
CREATE INDEX tasks_assignee_idx ON tasks (assignee_id, status);

CREATE TABLE billing_inquiries (
    id           BLOB PRIMARY KEY,
    family_id    BLOB NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    invoice_id   BLOB REFERENCES invoices (id) ON DELETE SET NULL,
    message      TEXT NOT NULL,
    thread_id    BLOB REFERENCES threads (id) ON DELETE SET NULL,
    -- The payment_issue run answering it (created by the worker moments after the inquiry).
    run_id       BLOB NOT NULL,
    status       TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'closed')),
    submitted_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    answered_at  TEXT
);
CREATE INDEX billing_inquiries_family_idx ON billing_inquiries (family_id, id);

CREATE TABLE payment_plans (
    id         BLOB PRIMARY KEY,
    invoice_id BLOB NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    run_id     BLOB,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX payment_plans_run_key ON payment_plans (run_id);

CREATE TABLE payment_plan_instalments (
    id           BLOB PRIMARY KEY,
    plan_id      BLOB NOT NULL REFERENCES payment_plans (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    due_on       TEXT NOT NULL,
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    UNIQUE (plan_id, seq)
);
