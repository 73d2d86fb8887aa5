-- Accounts, sign-in sessions, one-time tokens and the audit trail (src/auth/).
CREATE TABLE users (
    id              BLOB PRIMARY KEY,           -- UUID; for Supabase users, their `sub`
    email           TEXT NOT NULL,              -- stored lower-cased: unique regardless of case
    role            TEXT NOT NULL CHECK (role IN ('admin', 'teacher', 'parent')),
    display_name    TEXT,
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    family_id       BLOB REFERENCES families (id) ON DELETE SET NULL, -- table created in 0003
    teacher_id      BLOB REFERENCES teachers (id) ON DELETE SET NULL, -- table created in 0003
    password_hash   TEXT,                       -- argon2id PHC string; NULL until set
    user_metadata   TEXT NOT NULL DEFAULT '{}', -- free-form, user-editable: never trusted
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_sign_in_at TEXT
);
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_role_idx ON users (role, id);

CREATE TABLE auth_sessions (
    id             BLOB PRIMARY KEY,
    user_id        BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     TEXT NOT NULL,
    refreshed_at   TEXT NOT NULL,
    revoked_at     TEXT,
    revoked_reason TEXT,
    user_agent     TEXT,
    ip             TEXT
);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id);

-- Refresh tokens are stored as SHA-256 hashes; each is single use.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- One-time invite and password-recovery tokens (hashed).
CREATE TABLE one_time_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('invite', 'recovery')),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX one_time_tokens_user_idx ON one_time_tokens (user_id);

CREATE TABLE audit_log (
    id           BLOB PRIMARY KEY,               -- UUIDv7: ordered by time
    occurred_at  TEXT NOT NULL,
    actor_id     BLOB,                           -- no foreign key: the trail outlives accounts
    actor_role   TEXT,
    action       TEXT NOT NULL,
    subject_type TEXT,
    subject_id   TEXT,
    ip           TEXT,
    request_id   TEXT,
    details      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
CREATE INDEX audit_log_subject_idx ON audit_log (subject_id, id);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
