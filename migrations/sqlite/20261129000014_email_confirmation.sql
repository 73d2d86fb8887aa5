-- Addresses are confirmed, not assumed: open sign-ups start unconfirmed and cannot be linked to
-- a family by the office until the owner of the mailbox follows the emailed link. Accounts
-- that already exist were created by the office or by invitation: they count as confirmed.
ALTER TABLE users ADD COLUMN email_confirmed_at TEXT;
UPDATE users SET email_confirmed_at = created_at;

-- SQLite cannot alter a CHECK: one_time_tokens is rebuilt to allow 'signup'.
CREATE TABLE one_time_tokens_new (
    token_hash TEXT PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('invite', 'recovery', 'signup')),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
INSERT INTO one_time_tokens_new SELECT token_hash, user_id, purpose, created_at, expires_at, used_at FROM one_time_tokens;
DROP TABLE one_time_tokens;
ALTER TABLE one_time_tokens_new RENAME TO one_time_tokens;
CREATE INDEX one_time_tokens_user_idx ON one_time_tokens (user_id);

-- A link carrying a one-time token is kept out of the stored body: the body holds a marker,
-- the link sits here until the transport accepts the email, then it is erased.
ALTER TABLE outbox ADD COLUMN secret TEXT;
