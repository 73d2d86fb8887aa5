-- PIPEDA (src/privacy): the consent register, erasure requests, and erased families.

CREATE TABLE consents (
    id          UUID PRIMARY KEY,
    family_id   UUID NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('data_collection', 'ai_processing', 'marketing_email')),
    granted     BOOLEAN NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    recorded_by UUID REFERENCES users (id) ON DELETE SET NULL,
    method      TEXT NOT NULL CHECK (method IN ('app', 'office', 'migration')),
    note        TEXT
);
CREATE INDEX consents_family_idx ON consents (family_id, kind, id);

-- The AI consent flag becomes the register's first entry for the families that gave it (the
-- current state is the latest by recorded_at, then id).
INSERT INTO consents (id, family_id, kind, granted, recorded_at, method, note)
SELECT gen_random_uuid(), id, 'ai_processing', TRUE, updated_at, 'migration', 'from families.ai_consent'
FROM families WHERE ai_consent;

CREATE TABLE erasure_requests (
    id           UUID PRIMARY KEY,
    family_id    UUID NOT NULL REFERENCES families (id) ON DELETE RESTRICT,
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'rejected')),
    reason       TEXT,
    requested_by UUID REFERENCES users (id) ON DELETE SET NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    decided_by   UUID REFERENCES users (id) ON DELETE SET NULL,
    decision_note TEXT,
    completed_at TIMESTAMPTZ
);
CREATE INDEX erasure_requests_family_idx ON erasure_requests (family_id, id);

ALTER TABLE families ADD COLUMN erased_at TIMESTAMPTZ;
