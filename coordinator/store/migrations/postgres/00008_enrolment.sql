-- Enrolment at fleet scale. An enrolment key lets agents enrol themselves: a one-off
-- activation code (max_uses 1, possibly for one named agent) or a reusable key (a use
-- limit or none). Only the SHA-256 of the whole secret is kept. Agents gain a life cycle
-- (pending, active, disabled, removed: who and why in state_by and state_reason), the
-- organisation and tags their key gave them, the hash of their own secret (with which an
-- enrolled agent fetches its broker credentials), and those credentials sealed to the
-- agent's own key: the coordinator keeps no broker password it could read back.
-- Keep this file and ../sqlite/00008_enrolment.sql describing the same schema.

-- +goose Up
CREATE TABLE enrolment_keys (
    id              text PRIMARY KEY,      -- public part of the secret, used for lookup
    kind            text NOT NULL,         -- 'code' (one-off) or 'key' (reusable)
    name            text NOT NULL DEFAULT '',
    secret_hash     text NOT NULL,
    organisation_id text REFERENCES organisations (id),
    tags            jsonb NOT NULL DEFAULT '[]',
    agent_id        text NOT NULL DEFAULT '', -- a code for one named agent; '' for any
    pre_approved    boolean NOT NULL,
    max_uses        integer NOT NULL DEFAULT 0, -- 0: no limit
    uses            integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    created_by      text NOT NULL,
    expires_at      timestamptz NOT NULL,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    revoked_by      text NOT NULL DEFAULT ''
);
CREATE INDEX enrolment_keys_created ON enrolment_keys (created_at, id);

ALTER TABLE agents ADD COLUMN state text NOT NULL DEFAULT 'active';
ALTER TABLE agents ADD COLUMN state_reason text NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN state_by text NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN state_at timestamptz;
ALTER TABLE agents ADD COLUMN organisation_id text REFERENCES organisations (id);
ALTER TABLE agents ADD COLUMN tags jsonb NOT NULL DEFAULT '[]';
ALTER TABLE agents ADD COLUMN enrolled_with text NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN secret_hash text;
ALTER TABLE agents ADD COLUMN credentials bytea;
ALTER TABLE agents ADD COLUMN credentials_at timestamptz;
CREATE INDEX agents_state ON agents (state, id);

-- +goose Down
DROP INDEX agents_state;
ALTER TABLE agents DROP COLUMN credentials_at;
ALTER TABLE agents DROP COLUMN credentials;
ALTER TABLE agents DROP COLUMN secret_hash;
ALTER TABLE agents DROP COLUMN enrolled_with;
ALTER TABLE agents DROP COLUMN tags;
ALTER TABLE agents DROP COLUMN organisation_id;
ALTER TABLE agents DROP COLUMN state_at;
ALTER TABLE agents DROP COLUMN state_by;
ALTER TABLE agents DROP COLUMN state_reason;
ALTER TABLE agents DROP COLUMN state;
DROP TABLE enrolment_keys;
