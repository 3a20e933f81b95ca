-- Enrolment at fleet scale. An enrolment key lets agents enrol themselves: a one-off
-- activation code (max_uses 1, possibly for one named agent) or a reusable key (a use
-- limit or none). Only the SHA-256 of the whole secret is kept. Agents gain a life cycle
-- (pending, active, disabled, removed: who and why in state_by and state_reason), the
-- organisation and tags their key gave them, the hash of their own secret (with which an
-- enrolled agent fetches its broker credentials), and those credentials sealed to the
-- agent's own key: the coordinator keeps no broker password it could read back.
-- Keep this file and ../postgres/00008_enrolment.sql describing the same schema.

-- +goose Up
CREATE TABLE enrolment_keys (
    id              TEXT PRIMARY KEY,      -- public part of the secret, used for lookup
    kind            TEXT NOT NULL,         -- 'code' (one-off) or 'key' (reusable)
    name            TEXT NOT NULL DEFAULT '',
    secret_hash     TEXT NOT NULL,
    organisation_id TEXT REFERENCES organisations (id),
    tags            TEXT NOT NULL DEFAULT '[]',
    agent_id        TEXT NOT NULL DEFAULT '', -- a code for one named agent; '' for any
    pre_approved    INTEGER NOT NULL,
    max_uses        INTEGER NOT NULL DEFAULT 0, -- 0: no limit
    uses            INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    last_used_at    TEXT,
    revoked_at      TEXT,
    revoked_by      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX enrolment_keys_created ON enrolment_keys (created_at, id);

ALTER TABLE agents ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
ALTER TABLE agents ADD COLUMN state_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN state_by TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN state_at TEXT;
ALTER TABLE agents ADD COLUMN organisation_id TEXT REFERENCES organisations (id);
ALTER TABLE agents ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE agents ADD COLUMN enrolled_with TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN secret_hash TEXT;
ALTER TABLE agents ADD COLUMN credentials BLOB;
ALTER TABLE agents ADD COLUMN credentials_at TEXT;
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
