-- Stored responses of mutating requests sent with an Idempotency-Key (see src/app/idempotency.rs).
CREATE TABLE idempotency_keys (
    scope            TEXT    NOT NULL,  -- who asked: the verified user, else a hash of the credentials
    idempotency_key  TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,  -- sha256 of method, path, query and body
    state            TEXT    NOT NULL CHECK (state IN ('in_progress', 'completed')),
    response_status  INTEGER,
    response_headers TEXT,              -- JSON array of [name, value]
    response_body    BLOB,
    locked_until     TEXT    NOT NULL,  -- an in-progress claim older than this was abandoned
    created_at       TEXT    NOT NULL,
    expires_at       TEXT    NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
