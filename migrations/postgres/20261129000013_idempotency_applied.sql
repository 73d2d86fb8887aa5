-- A keyed request's write transaction marks its key 'applied' as it commits, naming the
-- answer to rebuild (status + the path to read) should the process die before the
-- response is stored ('completed').
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_state_check;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_state_check
    CHECK (state IN ('in_progress', 'applied', 'completed'));
ALTER TABLE idempotency_keys ADD COLUMN answer_status INTEGER;
ALTER TABLE idempotency_keys ADD COLUMN answer_path TEXT;
