-- The school year (src/school_year/): terms with the months they bill, re-enrollment offers
-- for the next term, substitutes on single lessons, the secret that signs email links, and
-- Stripe Checkout Sessions opened from pay links.
CREATE TABLE terms (
    id             BLOB PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    starts_on      TEXT NOT NULL,
    ends_on        TEXT NOT NULL,
    -- First days of the months the monthly billing run bills ('2026-09-01', ...).
    billing_months TEXT NOT NULL DEFAULT '[]',
    created_at     TEXT NOT NULL,
    CHECK (ends_on > starts_on)
);
CREATE INDEX terms_dates_idx ON terms (starts_on, ends_on);

CREATE TABLE reenrollments (
    id         BLOB PRIMARY KEY,
    -- The term the student is offered a place in.
    term_id    BLOB NOT NULL REFERENCES terms (id) ON DELETE CASCADE,
    student_id BLOB NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    family_id  BLOB NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    status     TEXT NOT NULL DEFAULT 'offered' CHECK (status IN ('offered', 'accepted', 'declined')),
    -- What accepting did: lessons booked in the new term, weeks that could not be booked.
    outcome    TEXT,
    offered_at TEXT NOT NULL,
    decided_at TEXT,
    decided_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    -- A declined place withdraws the student when the current term ends.
    withdraw_on TEXT,
    withdrawn_at TEXT,
    UNIQUE (term_id, student_id)
);
CREATE INDEX reenrollments_family_idx ON reenrollments (family_id, status);

-- The teacher whose lesson a substitute teaches (`teacher_id` is then the substitute).
ALTER TABLE lessons ADD COLUMN substitute_for BLOB REFERENCES teachers (id) ON DELETE SET NULL;

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at TEXT NOT NULL
);

-- The Checkout Session a pay link opened for the invoice's balance (one per balance).
ALTER TABLE invoices ADD COLUMN stripe_checkout_session_id TEXT;
ALTER TABLE invoices ADD COLUMN stripe_checkout_url TEXT;
ALTER TABLE invoices ADD COLUMN stripe_checkout_key TEXT;
ALTER TABLE invoices ADD COLUMN stripe_checkout_expires_at TEXT;
