-- Addresses are confirmed, not assumed: open sign-ups start unconfirmed and cannot be linked to
-- a family by the office until the owner of the mailbox follows the emailed link. Accounts
-- that already exist were created by the office or by invitation: they count as confirmed.
ALTER TABLE users ADD COLUMN email_confirmed_at TIMESTAMPTZ;
UPDATE users SET email_confirmed_at = created_at;

ALTER TABLE one_time_tokens DROP CONSTRAINT one_time_tokens_purpose_check;
ALTER TABLE one_time_tokens ADD CONSTRAINT one_time_tokens_purpose_check
    CHECK (purpose IN ('invite', 'recovery', 'signup'));

-- A link carrying a one-time token is kept out of the stored body: the body holds a marker,
-- the link sits here until the transport accepts the email, then it is erased.
ALTER TABLE outbox ADD COLUMN secret TEXT;
