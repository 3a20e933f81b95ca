-- Notifications: the outbox of e-mails and webhook calls. A row is one notice to one
-- recipient over one channel, written in the transaction of the change that causes it, so
-- that a change rolled back notifies nobody and a committed one is never lost. dedupe_key
-- is unique: a transaction run again, or a second coordinator noticing the same thing,
-- adds nothing. The sender claims due rows with a lease (lease_until, lease_owner), so
-- that two coordinators never send one row at once and a row whose sender died is taken
-- up again once its lease ends. held marks rows the recipient's rate limit held back:
-- they go out together as one digest; delivery_id is the message a row went out in (its
-- own ID, or the digest's), which the rate limit counts.
-- Users get a notification language ('' for the coordinator's default).
-- Keep this file and ../postgres/00010_notifications.sql describing the same schema.

-- +goose Up
CREATE TABLE notifications (
    id           TEXT PRIMARY KEY,
    dedupe_key   TEXT NOT NULL UNIQUE,
    event        TEXT NOT NULL,
    channel      TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
    recipient    TEXT NOT NULL,          -- an e-mail address, or a webhook's name
    user_id      TEXT NOT NULL DEFAULT '', -- the person, for e-mail
    language     TEXT NOT NULL DEFAULT '',
    subject      TEXT NOT NULL DEFAULT '',
    body         BLOB NOT NULL,          -- the e-mail's text, or the webhook's JSON
    state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TEXT NOT NULL,
    lease_until  TEXT,
    lease_owner  TEXT NOT NULL DEFAULT '',
    held         INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT '',
    delivery_id  TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    sent_at      TEXT
);
-- The sender's claim: due pending rows, oldest due first.
CREATE INDEX notifications_due ON notifications (next_attempt_at, id) WHERE state = 'pending';
-- Lists by state, newest first.
CREATE INDEX notifications_state ON notifications (state, created_at, id);
CREATE INDEX notifications_created ON notifications (created_at, id);
-- The rate limit: what a recipient was sent lately.
CREATE INDEX notifications_recipient_sent ON notifications (channel, recipient, sent_at) WHERE sent_at IS NOT NULL;

ALTER TABLE users ADD COLUMN language TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE users DROP COLUMN language;
DROP TABLE notifications;
