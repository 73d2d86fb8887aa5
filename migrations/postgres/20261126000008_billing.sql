-- Billing (src/billing/): tuition rates, invoices with gap-free numbers, billing runs,
-- payments and refunds, Stripe customers and webhook events.
ALTER TABLE students ADD COLUMN billing_mode TEXT NOT NULL DEFAULT 'per_lesson'
    CHECK (billing_mode IN ('per_lesson', 'monthly'));
ALTER TABLE students ADD COLUMN end_date DATE;  -- last day billed (withdrawal), flat-rate proration
ALTER TABLE families ADD COLUMN stripe_customer_id TEXT;

CREATE TABLE tuition_rates (
    id               UUID PRIMARY KEY,
    lesson_minutes   INTEGER NOT NULL CHECK (lesson_minutes BETWEEN 15 AND 240),
    teacher_id       UUID REFERENCES teachers (id) ON DELETE CASCADE,
    instrument       TEXT,
    per_lesson_cents BIGINT NOT NULL CHECK (per_lesson_cents >= 0),
    monthly_cents    BIGINT NOT NULL CHECK (monthly_cents >= 0),
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX tuition_rates_key ON tuition_rates (lesson_minutes, COALESCE(teacher_id::text, ''), COALESCE(instrument, ''));

CREATE TABLE billing_runs (
    id               UUID PRIMARY KEY,
    period_start     DATE NOT NULL,
    period_end       DATE NOT NULL,
    created_by       UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    CHECK (period_end >= period_start)
);
CREATE UNIQUE INDEX billing_runs_period_key ON billing_runs (period_start, period_end);

CREATE TABLE invoice_counters (
    year INTEGER PRIMARY KEY,
    last INTEGER NOT NULL
);

CREATE TABLE invoices (
    id                       UUID PRIMARY KEY,
    number                   TEXT NOT NULL,
    family_id                UUID NOT NULL REFERENCES families (id) ON DELETE RESTRICT,
    billing_run_id           UUID REFERENCES billing_runs (id) ON DELETE SET NULL,
    period_start             DATE NOT NULL,
    period_end               DATE NOT NULL,
    status                   TEXT NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'partially_paid', 'void', 'uncollectible')),
    currency                 TEXT NOT NULL DEFAULT 'CAD',
    subtotal_cents           BIGINT NOT NULL,
    discount_cents           BIGINT NOT NULL,
    tax_cents                BIGINT NOT NULL,
    total_cents              BIGINT NOT NULL,
    amount_paid_cents        BIGINT NOT NULL DEFAULT 0,
    due_date                 DATE NOT NULL,
    late_fee_applied         BOOLEAN NOT NULL DEFAULT FALSE,
    stripe_payment_intent_id TEXT,
    issued_at                TIMESTAMPTZ NOT NULL,
    created_at               TIMESTAMPTZ NOT NULL,
    updated_at               TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX invoices_number_key ON invoices (number);
CREATE UNIQUE INDEX invoices_family_period_key ON invoices (family_id, period_start, period_end);
CREATE INDEX invoices_status_idx ON invoices (status, due_date);

CREATE TABLE invoice_lines (
    id           UUID PRIMARY KEY,
    invoice_id   UUID NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('tuition', 'credit', 'discount', 'registration', 'late_fee')),
    description  TEXT NOT NULL,
    student_id   UUID REFERENCES students (id) ON DELETE SET NULL,
    quantity     INTEGER NOT NULL,
    unit_cents   BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL
);
CREATE INDEX invoice_lines_invoice_idx ON invoice_lines (invoice_id, position);

CREATE TABLE payments (
    id                       UUID PRIMARY KEY,
    invoice_id               UUID NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    family_id                UUID NOT NULL REFERENCES families (id) ON DELETE RESTRICT,
    kind                     TEXT NOT NULL CHECK (kind IN ('payment', 'refund')),
    amount_cents             BIGINT NOT NULL CHECK (amount_cents > 0),
    currency                 TEXT NOT NULL DEFAULT 'CAD',
    method                   TEXT NOT NULL CHECK (method IN ('cash', 'cheque', 'e_transfer', 'stripe')),
    reference                TEXT,
    status                   TEXT NOT NULL DEFAULT 'succeeded' CHECK (status IN ('succeeded', 'disputed')),
    refund_of                UUID REFERENCES payments (id) ON DELETE RESTRICT,
    stripe_payment_intent_id TEXT,
    stripe_refund_id         TEXT,
    created_by               UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at               TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX payments_stripe_intent_key ON payments (stripe_payment_intent_id) WHERE kind = 'payment';
CREATE UNIQUE INDEX payments_stripe_refund_key ON payments (stripe_refund_id);
CREATE INDEX payments_invoice_idx ON payments (invoice_id, id);
CREATE INDEX payments_family_idx ON payments (family_id, id);

CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    payload      JSONB NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    processed_at TIMESTAMPTZ
);
