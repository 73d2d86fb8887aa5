-- The owner's follow-up tasks (src/tasks), billing inquiries (src/billing/inquiries.rs) and
-- payment plans created by the payment_issue workflow (src/workflows/payment_issue.rs).

CREATE TABLE tasks (
    id           UUID PRIMARY KEY,
    title        TEXT NOT NULL,
    detail       TEXT,
    status       TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'dismissed')),
    due_on       DATE,
    assignee_id  UUID REFERENCES users (id) ON DELETE SET NULL,
    subject_type TEXT,
    subject_id   UUID,
    run_id       UUID REFERENCES workflow_runs (id) ON DELETE SET NULL,
    -- A workflow step that creates a task names it, so a repeated step creates it once.
    dedupe_key   TEXT,
    created_by   UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    closed_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX tasks_dedupe_key ON tasks (dedupe_key);
CREATE INDEX tasks_status_idx ON tasks (status, due_on, id);
CREATE INDEX tasks_assignee_idx ON tasks (assignee_id, status);

CREATE TABLE billing_inquiries (
    id           UUID PRIMARY KEY,
    family_id    UUID NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    invoice_id   UUID REFERENCES invoices (id) ON DELETE SET NULL,
    message      TEXT NOT NULL,
    thread_id    UUID REFERENCES threads (id) ON DELETE SET NULL,
    -- The payment_issue run answering it (created by the worker moments after the inquiry).
    run_id       UUID NOT NULL,
    status       TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'closed')),
    submitted_by UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    answered_at  TIMESTAMPTZ
);
CREATE INDEX billing_inquiries_family_idx ON billing_inquiries (family_id, id);

CREATE TABLE payment_plans (
    id         UUID PRIMARY KEY,
    invoice_id UUID NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    run_id     UUID,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX payment_plans_run_key ON payment_plans (run_id);

CREATE TABLE payment_plan_instalments (
    id           UUID PRIMARY KEY,
    plan_id      UUID NOT NULL REFERENCES payment_plans (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    due_on       DATE NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    UNIQUE (plan_id, seq)
);
