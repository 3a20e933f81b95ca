-- The token life cycle (package tokenlife): where each token is (a token without a row is
-- active), every change with its actor and reason, and the jobs that issue a temporary
-- token for a suspended one or a replacement for an old one. No foreign key to tokens: a
-- serial is what the help desk and the certificates name, whether or not an agent has
-- reported the token yet.
-- Keep this file and ../sqlite/00014_token_life.sql describing the same schema.

-- +goose Up
CREATE TABLE token_life (
    serial        text PRIMARY KEY,
    state         text NOT NULL CHECK (state IN ('active', 'suspended', 'lost', 'stolen', 'damaged', 'retired', 'replaced')),
    holder_id     text REFERENCES users (id),
    reason        text NOT NULL DEFAULT '',
    changed_by    text NOT NULL,
    changed_at    timestamptz NOT NULL,
    temporary_for text NOT NULL DEFAULT '', -- the suspended token this one stands in for
    replaced_by   text NOT NULL DEFAULT '', -- the token that replaced this one
    version       bigint NOT NULL DEFAULT 1 CHECK (version >= 1)
);
CREATE INDEX token_life_temporary ON token_life (temporary_for, serial) WHERE temporary_for <> '';

CREATE TABLE token_life_events (
    id         bigserial PRIMARY KEY,
    serial     text NOT NULL,
    from_state text NOT NULL,
    to_state   text NOT NULL,
    actor      text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    job_id     text NOT NULL DEFAULT '', -- the job whose success made the change, if any
    at         timestamptz NOT NULL
);
CREATE INDEX token_life_events_serial ON token_life_events (serial, id);

CREATE TABLE token_requests (
    job_id       text PRIMARY KEY REFERENCES jobs (id),
    purpose      text NOT NULL CHECK (purpose IN ('temporary', 'replacement')),
    token_serial text NOT NULL -- the suspended original, or the token to replace
);
CREATE INDEX token_requests_token ON token_requests (token_serial);

-- +goose Down
DROP TABLE token_requests;
DROP TABLE token_life_events;
DROP TABLE token_life;
