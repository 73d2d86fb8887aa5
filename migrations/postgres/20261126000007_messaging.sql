-- Messaging (src/messaging/): threads between users, template overrides, the email outbox,
-- email preferences.
CREATE TABLE threads (
    id              UUID PRIMARY KEY,
    subject         TEXT NOT NULL,
    family_id       UUID REFERENCES families (id) ON DELETE CASCADE,
    student_id      UUID REFERENCES students (id) ON DELETE SET NULL,
    created_by      UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    last_message_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX threads_family_idx ON threads (family_id);

CREATE TABLE thread_participants (
    thread_id    UUID NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_read_at TIMESTAMPTZ,
    notified_at  TIMESTAMPTZ,          -- newest message already announced by email
    PRIMARY KEY (thread_id, user_id)
);
CREATE INDEX thread_participants_user_idx ON thread_participants (user_id);

CREATE TABLE messages (
    id         UUID PRIMARY KEY,
    thread_id  UUID NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    author_id  UUID REFERENCES users (id) ON DELETE SET NULL,
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_thread_idx ON messages (thread_id, created_at);

-- Overrides of the templates built into the binary.
CREATE TABLE templates (
    name       TEXT NOT NULL,
    language   TEXT NOT NULL CHECK (language IN ('en', 'fr')),
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_by UUID REFERENCES users (id) ON DELETE SET NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, language)
);

CREATE TABLE outbox (
    id                  UUID PRIMARY KEY,
    template            TEXT NOT NULL,
    category            TEXT NOT NULL CHECK (category IN ('transactional', 'notification')),
    to_address          TEXT NOT NULL,
    to_name             TEXT,
    user_id             UUID REFERENCES users (id) ON DELETE SET NULL,
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
    created_at          TIMESTAMPTZ NOT NULL,
    sent_at             TIMESTAMPTZ
);
CREATE UNIQUE INDEX outbox_dedupe_key_key ON outbox (dedupe_key);
CREATE INDEX outbox_status_idx ON outbox (status, id);

CREATE TABLE email_preferences (
    user_id           UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    reminders         BOOLEAN NOT NULL DEFAULT TRUE,
    message_emails    BOOLEAN NOT NULL DEFAULT TRUE,
    unsubscribe_token TEXT NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX email_preferences_token_key ON email_preferences (unsubscribe_token);
