-- Messaging (src/messaging/): threads between users, template overrides, the email outbox,
-- email preferences.
CREATE TABLE threads (
    id              BLOB PRIMARY KEY,
    subject         TEXT NOT NULL,
    family_id       BLOB REFERENCES families (id) ON DELETE CASCADE,
    student_id      BLOB REFERENCES students (id) ON DELETE SET NULL,
    created_by      BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL,
    last_message_at TEXT NOT NULL
);
CREATE INDEX threads_family_idx ON threads (family_id);

CREATE TABLE thread_participants (
    thread_id    BLOB NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    user_id      BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_read_at TEXT,
    notified_at  TEXT,          -- newest message already announced by email
    PRIMARY KEY (thread_id, user_id)
);
CREATE INDEX thread_participants_user_idx ON thread_participants (user_id);

CREATE TABLE messages (
    id         BLOB PRIMARY KEY,
    thread_id  BLOB NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    author_id  BLOB REFERENCES users (id) ON DELETE SET NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX messages_thread_idx ON messages (thread_id, created_at);

-- Overrides of the templates built into the binary.
CREATE TABLE templates (
    name       TEXT NOT NULL,
    language   TEXT NOT NULL CHECK (language IN ('en', 'fr')),
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, language)
);

CREATE TABLE outbox (
    id                  BLOB PRIMARY KEY,
    template            TEXT NOT NULL,
    category            TEXT NOT NULL CHECK (category IN ('transactional', 'notification')),
    to_address          TEXT NOT NULL,
    to_name             TEXT,
    user_id             BLOB REFERENCES users (id) ON DELETE SET NULL,
    language            TEXT NOT NULL,
    subject             TEXT NOT NULL,
    body                TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    list_unsubscribe    TEXT,
    status              TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    transport           TEXT,
    provider_message_id TEXT,        -- the transport's acceptance
    dedupe_key          TEXT,
    created_at          TEXT NOT NULL,
    sent_at             TEXT
);
CREATE UNIQUE INDEX outbox_dedupe_key_key ON outbox (dedupe_key);
CREATE INDEX outbox_status_idx ON outbox (status, id);

CREATE TABLE email_preferences (
    user_id           BLOB PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    reminders         INTEGER NOT NULL DEFAULT 1,
    message_emails    INTEGER NOT NULL DEFAULT 1,
    unsubscribe_token TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX email_preferences_token_key ON email_preferences (unsubscribe_token);
