-- tokenfleet coordinator store, PostgreSQL dialect.
-- Times are timestamptz (microsecond precision, stored UTC). Semantic JSON (attributes,
-- flags) is jsonb; JSON whose exact bytes matter (audit details are hashed) is json, which
-- keeps the text as given. Keep this file and ../sqlite/00001_init.sql describing the same
-- schema.

-- +goose Up
CREATE TABLE organisations (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    name_key   text NOT NULL UNIQUE, -- lower-cased name: "Acme" and "ACME" are one organisation
    created_at timestamptz NOT NULL
);

CREATE TABLE users (
    id              text PRIMARY KEY,
    username        text NOT NULL,
    username_key    text NOT NULL UNIQUE, -- lower-cased username, as directories compare them
    display_name    text NOT NULL DEFAULT '',
    email           text NOT NULL DEFAULT '',
    upn             text NOT NULL DEFAULT '',
    organisation_id text REFERENCES organisations (id),
    attributes      jsonb NOT NULL DEFAULT '{}',
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL
);
CREATE INDEX users_organisation ON users (organisation_id, username_key);

CREATE TABLE user_roles (
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    text NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role ON user_roles (role, user_id);

CREATE TABLE api_tokens (
    id           text PRIMARY KEY,     -- public part of the token, used for lookup
    user_id      text NOT NULL REFERENCES users (id),
    name         text NOT NULL,
    secret_hash  text NOT NULL,        -- hex SHA-256 of the whole token; the token itself is never stored
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);

CREATE TABLE agents (
    id                text PRIMARY KEY,
    hostname          text NOT NULL,
    os                text NOT NULL DEFAULT '',
    version           text NOT NULL DEFAULT '',
    public_key        bytea,
    broker_user       text,
    enrolled_at       timestamptz NOT NULL,
    approved_at       timestamptz,
    approved_by       text NOT NULL DEFAULT '',
    last_seen_at      timestamptz,
    last_heartbeat_at timestamptz,
    online            boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX agents_broker_user ON agents (broker_user) WHERE broker_user IS NOT NULL;
CREATE INDEX agents_heartbeat ON agents (online, last_heartbeat_at);

CREATE TABLE tokens (
    serial       text PRIMARY KEY,
    agent_id     text REFERENCES agents (id),
    label        text NOT NULL DEFAULT '',
    manufacturer text NOT NULL DEFAULT '',
    model        text NOT NULL DEFAULT '',
    flags        jsonb NOT NULL DEFAULT '{}',
    last_seen_at timestamptz NOT NULL
);
CREATE INDEX tokens_agent ON tokens (agent_id, serial);

CREATE TABLE profiles (
    name         text PRIMARY KEY,
    content      text NOT NULL,
    content_hash text NOT NULL,
    version      bigint NOT NULL CHECK (version >= 1),
    updated_at   timestamptz NOT NULL,
    updated_by   text NOT NULL
);

-- Every version of every profile, so the profile a job was approved against can be shown later.
CREATE TABLE profile_revisions (
    name         text NOT NULL,
    version      bigint NOT NULL,
    content      text NOT NULL,
    content_hash text NOT NULL,
    updated_at   timestamptz NOT NULL,
    updated_by   text NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE jobs (
    id              text PRIMARY KEY,
    kind            text NOT NULL,
    state           text NOT NULL,
    state_since     timestamptz NOT NULL,
    holder_id       text REFERENCES users (id),
    profile_name    text NOT NULL DEFAULT '',
    profile_hash    text NOT NULL DEFAULT '',
    agent_id        text REFERENCES agents (id),
    token_serial    text,
    requester_id    text NOT NULL REFERENCES users (id),
    organisation_id text REFERENCES organisations (id),
    binding_hash    text NOT NULL DEFAULT '',
    attempt         integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    step_current    text NOT NULL DEFAULT '', -- progress of the current attempt
    step_highest    text NOT NULL DEFAULT '',
    deadline        timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    error_code      text NOT NULL DEFAULT '',
    error_message   text NOT NULL DEFAULT '',
    superseded_by   text REFERENCES jobs (id),
    version         bigint NOT NULL DEFAULT 1 CHECK (version >= 1)
);
-- Lists are newest first; each filter has an index ending in the list order.
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_state ON jobs (state, created_at, id);
CREATE INDEX jobs_organisation ON jobs (organisation_id, created_at, id);
CREATE INDEX jobs_holder ON jobs (holder_id, created_at, id);
CREATE INDEX jobs_agent ON jobs (agent_id, created_at, id);
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE job_attempts (
    job_id     text NOT NULL REFERENCES jobs (id),
    attempt    integer NOT NULL CHECK (attempt >= 1),
    started_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_steps (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  text NOT NULL REFERENCES jobs (id),
    attempt integer NOT NULL,
    step    text NOT NULL,
    detail  text NOT NULL DEFAULT '',
    at      timestamptz NOT NULL
);
CREATE INDEX job_steps_job ON job_steps (job_id, id);

CREATE TABLE job_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     text NOT NULL REFERENCES jobs (id),
    from_state text NOT NULL DEFAULT '',
    to_state   text NOT NULL,
    attempt    integer NOT NULL,
    actor      text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    at         timestamptz NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE approvals (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (id),
    gate        text NOT NULL CHECK (gate IN ('request', 'ca_operator')),
    approver_id text NOT NULL REFERENCES users (id),
    verdict     text NOT NULL CHECK (verdict IN ('approve', 'reject')),
    bound_hash  text NOT NULL,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    reason      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,
    expires_at  timestamptz,
    -- one decision per approver, gate, approved content and attempt: an edit (new hash)
    -- or a retry (new attempt, for the CA-operator gate) asks again
    UNIQUE (job_id, gate, approver_id, bound_hash, attempt)
);

CREATE TABLE certificates (
    serial            text PRIMARY KEY, -- lower-case hex, no leading zeros
    job_id            text REFERENCES jobs (id),
    holder_id         text REFERENCES users (id),
    profile           text NOT NULL DEFAULT '',
    token_serial      text,
    agent_id          text REFERENCES agents (id),
    subject           text NOT NULL,
    issuer            text NOT NULL,
    not_before        timestamptz NOT NULL,
    not_after         timestamptz NOT NULL,
    der               bytea NOT NULL,
    created_at        timestamptz NOT NULL,
    revoked_at        timestamptz,
    revocation_reason integer NOT NULL DEFAULT 0
);
CREATE INDEX certificates_holder ON certificates (holder_id, not_before, serial);
CREATE INDEX certificates_token ON certificates (token_serial, not_before, serial);
CREATE INDEX certificates_agent ON certificates (agent_id, not_before, serial);
CREATE INDEX certificates_job ON certificates (job_id);

-- The audit log is append-only: the store has no method to change it and these triggers
-- refuse it at the database too. The hash chain makes any edit made around them visible.
CREATE TABLE audit_log (
    seq       bigint PRIMARY KEY CHECK (seq >= 1),
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    job_id    text NOT NULL DEFAULT '', -- no foreign key: the log outlives and may name anything
    target    text NOT NULL DEFAULT '',
    reason    text NOT NULL DEFAULT '',
    details   json,
    prev_hash text NOT NULL,
    hash      text NOT NULL
);
CREATE INDEX audit_log_job ON audit_log (job_id, seq) WHERE job_id <> '';

-- +goose StatementBegin
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'restrict_violation';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- The chain head: appenders lock this single row (SELECT ... FOR UPDATE) so that several
-- coordinators appending at once still build one linear chain.
CREATE TABLE audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id     text NOT NULL UNIQUE,
    exchange       text NOT NULL,
    routing_key    text NOT NULL,
    type           text NOT NULL,
    correlation_id text NOT NULL DEFAULT '',
    body           bytea NOT NULL,
    headers        json,
    created_at     timestamptz NOT NULL,
    sent_at        timestamptz,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text NOT NULL DEFAULT ''
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

CREATE TABLE inbox (
    message_id  text PRIMARY KEY,
    received_at timestamptz NOT NULL,
    job_id      text NOT NULL DEFAULT '',
    result      text NOT NULL DEFAULT ''
);
CREATE INDEX inbox_received ON inbox (received_at);

-- +goose Down
DROP TABLE inbox;
DROP TABLE outbox;
DROP TABLE audit_head;
DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
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
