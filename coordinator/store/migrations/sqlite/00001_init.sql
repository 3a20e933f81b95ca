-- tokenfleet coordinator store, SQLite dialect.
-- Times are TEXT in one fixed-width UTC form (2006-01-02T15:04:05.000000Z): readable in the
-- sqlite3 shell and ordered correctly by plain string comparison. Booleans are 0/1, JSON is
-- TEXT. Keep this file and ../postgres/00001_init.sql describing the same schema.

-- +goose Up
CREATE TABLE organisations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL UNIQUE, -- lower-cased name: "Acme" and "ACME" are one organisation
    created_at TEXT NOT NULL
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL,
    username_key    TEXT NOT NULL UNIQUE, -- lower-cased username, as directories compare them
    display_name    TEXT NOT NULL DEFAULT '',
    email           TEXT NOT NULL DEFAULT '',
    upn             TEXT NOT NULL DEFAULT '',
    organisation_id TEXT REFERENCES organisations (id),
    attributes      TEXT NOT NULL DEFAULT '{}',
    disabled        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL
);
CREATE INDEX users_organisation ON users (organisation_id, username_key);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role ON user_roles (role, user_id);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,     -- public part of the token, used for lookup
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,        -- hex SHA-256 of the whole token; the token itself is never stored
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);

CREATE TABLE agents (
    id                TEXT PRIMARY KEY,
    hostname          TEXT NOT NULL,
    os                TEXT NOT NULL DEFAULT '',
    version           TEXT NOT NULL DEFAULT '',
    public_key        BLOB,
    broker_user       TEXT,
    enrolled_at       TEXT NOT NULL,
    approved_at       TEXT,
    approved_by       TEXT NOT NULL DEFAULT '',
    last_seen_at      TEXT,
    last_heartbeat_at TEXT,
    online            INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX agents_broker_user ON agents (broker_user) WHERE broker_user IS NOT NULL;
CREATE INDEX agents_heartbeat ON agents (online, last_heartbeat_at);

CREATE TABLE tokens (
    serial       TEXT PRIMARY KEY,
    agent_id     TEXT REFERENCES agents (id),
    label        TEXT NOT NULL DEFAULT '',
    manufacturer TEXT NOT NULL DEFAULT '',
    model        TEXT NOT NULL DEFAULT '',
    flags        TEXT NOT NULL DEFAULT '{}',
    last_seen_at TEXT NOT NULL
);
CREATE INDEX tokens_agent ON tokens (agent_id, serial);

CREATE TABLE profiles (
    name         TEXT PRIMARY KEY,
    content      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1),
    updated_at   TEXT NOT NULL,
    updated_by   TEXT NOT NULL
);

-- Every version of every profile, so the profile a job was approved against can be shown later.
CREATE TABLE profile_revisions (
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    content      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    updated_by   TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    state_since     TEXT NOT NULL,
    holder_id       TEXT REFERENCES users (id),
    profile_name    TEXT NOT NULL DEFAULT '',
    profile_hash    TEXT NOT NULL DEFAULT '',
    agent_id        TEXT REFERENCES agents (id),
    token_serial    TEXT,
    requester_id    TEXT NOT NULL REFERENCES users (id),
    organisation_id TEXT REFERENCES organisations (id),
    binding_hash    TEXT NOT NULL DEFAULT '',
    attempt         INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    step_current    TEXT NOT NULL DEFAULT '', -- progress of the current attempt
    step_highest    TEXT NOT NULL DEFAULT '',
    deadline        TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    error_code      TEXT NOT NULL DEFAULT '',
    error_message   TEXT NOT NULL DEFAULT '',
    superseded_by   TEXT REFERENCES jobs (id),
    version         INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)
);
-- Lists are newest first; each filter has an index ending in the list order.
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_state ON jobs (state, created_at, id);
CREATE INDEX jobs_organisation ON jobs (organisation_id, created_at, id);
CREATE INDEX jobs_holder ON jobs (holder_id, created_at, id);
CREATE INDEX jobs_agent ON jobs (agent_id, created_at, id);
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE job_attempts (
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    attempt    INTEGER NOT NULL CHECK (attempt >= 1),
    started_at TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_steps (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL REFERENCES jobs (id),
    attempt INTEGER NOT NULL,
    step    TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    at      TEXT NOT NULL
);
CREATE INDEX job_steps_job ON job_steps (job_id, id);

CREATE TABLE job_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    from_state TEXT NOT NULL DEFAULT '',
    to_state   TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    at         TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    gate        TEXT NOT NULL CHECK (gate IN ('request', 'ca_operator')),
    approver_id TEXT NOT NULL REFERENCES users (id),
    verdict     TEXT NOT NULL CHECK (verdict IN ('approve', 'reject')),
    bound_hash  TEXT NOT NULL,
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    reason      TEXT NOT NULL DEFAULT '',
    at          TEXT NOT NULL,
    expires_at  TEXT,
    -- one decision per approver, gate, approved content and attempt: an edit (new hash)
    -- or a retry (new attempt, for the CA-operator gate) asks again
    UNIQUE (job_id, gate, approver_id, bound_hash, attempt)
);

CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY, -- lower-case hex, no leading zeros
    job_id            TEXT REFERENCES jobs (id),
    holder_id         TEXT REFERENCES users (id),
    profile           TEXT NOT NULL DEFAULT '',
    token_serial      TEXT,
    agent_id          TEXT REFERENCES agents (id),
    subject           TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    not_before        TEXT NOT NULL,
    not_after         TEXT NOT NULL,
    der               BLOB NOT NULL,
    created_at        TEXT NOT NULL,
    revoked_at        TEXT,
    revocation_reason INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX certificates_holder ON certificates (holder_id, not_before, serial);
CREATE INDEX certificates_token ON certificates (token_serial, not_before, serial);
CREATE INDEX certificates_agent ON certificates (agent_id, not_before, serial);
CREATE INDEX certificates_job ON certificates (job_id);

-- The audit log is append-only: the store has no method to change it and these triggers
-- refuse it at the database too. The hash chain makes any edit made around them visible.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    job_id    TEXT NOT NULL DEFAULT '', -- no foreign key: the log outlives and may name anything
    target    TEXT NOT NULL DEFAULT '',
    reason    TEXT NOT NULL DEFAULT '',
    details   TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_job ON audit_log (job_id, seq) WHERE job_id <> '';

-- +goose StatementBegin
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
-- +goose StatementEnd

-- The chain head: appenders lock this single row so the chain never forks.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, even after a purge
    message_id     TEXT NOT NULL UNIQUE,
    exchange       TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    type           TEXT NOT NULL,
    correlation_id TEXT NOT NULL DEFAULT '',
    body           BLOB NOT NULL,
    headers        TEXT,
    created_at     TEXT NOT NULL,
    sent_at        TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

CREATE TABLE inbox (
    message_id  TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    job_id      TEXT NOT NULL DEFAULT '',
    result      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX inbox_received ON inbox (received_at);

-- +goose Down
DROP TABLE inbox;
DROP TABLE outbox;
DROP TABLE audit_head;
DROP TRIGGER audit_log_no_delete;
DROP TRIGGER audit_log_no_update;
DROP TABLE audit_log;
DROP TABLE certificates;
DROP TABLE approvals;
DROP TABLE job_events;
DROP TABLE job_steps;
DROP TABLE job_attempts;
DROP TABLE jobs;
DROP TABLE profile_revisions;
DROP TABLE profiles;
DROP TABLE tokens;
DROP TABLE agents;
DROP TABLE api_tokens;
DROP TABLE user_roles;
DROP TABLE users;
DROP TABLE organisations;
