-- A keyed request's write transaction marks its key 'applied' as it commits, naming the
-- answer to rebuild (status + the path to read) should the process die before the
-- response is stored ('completed'). SQLite cannot alter a CHECK: the table is rebuilt.
CREATE TABLE idempotency_keys_new (
    scope            TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('in_progress', 'applied', 'completed')),
    response_status  INTEGER,
    response_headers TEXT,
    response_body    BLOB,
    answer_status    INTEGER,
    answer_path      TEXT,
    locked_until     TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    expires_at       TEXT    NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, idempotency_key)
);
INSERT INTO idempotency_keys_new (scope, idempotency_key, request_hash, state, response_status, response_headers,
    response_body, locked_until, created_at, expires_at)
SELECT scope, idempotency_key, request_hash, state, response_status, response_headers, response_body, locked_until,
    created_at, expires_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_new RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
