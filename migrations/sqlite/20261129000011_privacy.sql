-- PIPEDA (src/privacy): the consent register, erasure requests, and erased families.

CREATE TABLE consents (
    id          BLOB PRIMARY KEY,
    family_id   BLOB NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('data_collection', 'ai_processing', 'marketing_email')),
    granted     INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    recorded_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    method      TEXT NOT NULL CHECK (method IN ('app', 'office', 'migration')),
    note        TEXT
);
CREATE INDEX consents_family_idx ON consents (family_id, kind, id);

-- The AI consent flag becomes the register's first entry for the families that gave it (the
-- current state is the latest by recorded_at, then id).
INSERT INTO consents (id, family_id, kind, granted, recorded_at, method, note)
SELECT randomblob(16), id, 'ai_processing', 1, updated_at, 'migration', 'from families.ai_consent'
FROM families WHERE ai_consent;

CREATE TABLE erasure_requests (
    id           BLOB PRIMARY KEY,
    family_id    BLOB NOT NULL REFERENCES families (id) ON DELETE RESTRICT,
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'rejected')),
    reason       TEXT,
    requested_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    requested_at TEXT NOT NULL,
    decided_by   BLOB REFERENCES users (id) ON DELETE SET NULL,
    decision_note TEXT,
    completed_at TEXT
);
CREATE INDEX erasure_requests_family_idx ON erasure_requests (family_id, id);

ALTER TABLE families ADD COLUMN erased_at TEXT;
