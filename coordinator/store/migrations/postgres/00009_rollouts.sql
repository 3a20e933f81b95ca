-- Fleet rollouts: one approved request becomes many jobs, in waves. A rollout keeps its
-- spec as the JSON text it was given (what its approvers approved, byte for byte, hence
-- text and not jsonb), its frozen target list (each target with its wave, and the one job
-- made for it once made), its approvals (round 0 approves the rollout; round n resumes it
-- after the n-th brake trip) and where the engine is (current wave, pause, brake trip).
-- version is the compare-and-set row version two coordinators race on. A standing rollout
-- (standing renewals) stays open until aborted: one open standing rollout per profile.
-- A creation may carry an Idempotency-Key, kept with the request's hash like a job's.
-- Jobs name the rollout that made them; tokens keep the firmware version they report.
-- Keep this file and ../sqlite/00009_rollouts.sql describing the same schema.

-- +goose Up
CREATE TABLE rollouts (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    state            text NOT NULL,
    spec             text NOT NULL,          -- JSON as given, byte for byte
    standing         boolean NOT NULL DEFAULT false,
    profile_name     text NOT NULL DEFAULT '',
    binding_hash     text NOT NULL DEFAULT '',
    target_count     integer NOT NULL DEFAULT 0,
    created_by       text NOT NULL REFERENCES users (id),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    approved_at      timestamptz,
    current_wave     integer NOT NULL DEFAULT 0 CHECK (current_wave >= 0),
    wave_finished_at timestamptz,
    promoted         boolean NOT NULL DEFAULT false, -- promoted past the pause after the current wave
    pause_kind       text NOT NULL DEFAULT '',
    pause_reason     text NOT NULL DEFAULT '',
    paused_by        text NOT NULL DEFAULT '',
    paused_at        timestamptz,
    pause_round      integer NOT NULL DEFAULT 0 CHECK (pause_round >= 0), -- brake trips so far
    trip             text NOT NULL DEFAULT '', -- JSON of the last brake trip; '' for none
    finished_at      timestamptz,
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    idempotency_key  text,                   -- the creator's Idempotency-Key; NULL for none
    request_hash     text NOT NULL DEFAULT '' -- which request the key named
);
-- Lists are newest first.
CREATE INDEX rollouts_created ON rollouts (created_at, id);
CREATE INDEX rollouts_state ON rollouts (state, created_at, id);
-- A creation sent again with its Idempotency-Key finds the rollout the first one made
-- (as for jobs, 00006): one key per creator, kept as long as the rollout.
CREATE UNIQUE INDEX rollouts_idempotency ON rollouts (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX rollouts_standing_profile ON rollouts (profile_name)
    WHERE standing AND state NOT IN ('completed', 'rejected', 'expired', 'aborted');

CREATE TABLE rollout_targets (
    rollout_id         text NOT NULL REFERENCES rollouts (id),
    seq                integer NOT NULL CHECK (seq >= 1), -- the frozen order, from 1
    wave               integer NOT NULL CHECK (wave >= 0), -- 0: the canary
    agent_id           text NOT NULL REFERENCES agents (id),
    token_serial       text NOT NULL DEFAULT '', -- '' (not NULL) so that the unique key compares it
    holder_id          text REFERENCES users (id),
    certificate_serial text NOT NULL DEFAULT '',
    token_model        text NOT NULL DEFAULT '',
    organisation_id    text REFERENCES organisations (id),
    job_id             text REFERENCES jobs (id), -- set once, when the target's job is made
    added_at           timestamptz NOT NULL,
    PRIMARY KEY (rollout_id, seq)
);
-- No target twice; no job for two targets.
CREATE UNIQUE INDEX rollout_targets_target ON rollout_targets (rollout_id, agent_id, token_serial, certificate_serial);
CREATE UNIQUE INDEX rollout_targets_job ON rollout_targets (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX rollout_targets_wave ON rollout_targets (rollout_id, wave, seq);
-- The engine's next targets: those of a wave still without a job.
CREATE INDEX rollout_targets_pending ON rollout_targets (rollout_id, wave, seq) WHERE job_id IS NULL;
-- A certificate is renewed once per rollout, whichever agent its token was on when found.
CREATE UNIQUE INDEX rollout_targets_certificate ON rollout_targets (rollout_id, certificate_serial) WHERE certificate_serial <> '';

CREATE TABLE rollout_approvals (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id  text NOT NULL REFERENCES rollouts (id),
    approver_id text NOT NULL REFERENCES users (id),
    verdict     text NOT NULL CHECK (verdict IN ('approve', 'reject')),
    bound_hash  text NOT NULL,
    round       integer NOT NULL DEFAULT 0 CHECK (round >= 0),
    reason      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,
    -- one decision per approver, approved content and round
    UNIQUE (rollout_id, approver_id, round, bound_hash)
);

ALTER TABLE jobs ADD COLUMN rollout_id text REFERENCES rollouts (id);
CREATE INDEX jobs_rollout ON jobs (rollout_id, state) WHERE rollout_id IS NOT NULL;

ALTER TABLE tokens ADD COLUMN firmware text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE tokens DROP COLUMN firmware;
DROP INDEX jobs_rollout;
ALTER TABLE jobs DROP COLUMN rollout_id;
DROP TABLE rollout_approvals;
DROP TABLE rollout_targets;
DROP TABLE rollouts;
