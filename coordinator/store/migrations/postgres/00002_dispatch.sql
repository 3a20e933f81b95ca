-- What the dispatcher records per job attempt, and the PINs agents set on tokens.
-- Keep this file and ../sqlite/00002_dispatch.sql describing the same schema.

-- +goose Up
-- The dispatch message written for an attempt (its outbox message ID), why an attempt is
-- not dispatched yet, the public key the agent reported at key_generated and the one CSR
-- accepted for the attempt.
ALTER TABLE job_attempts ADD COLUMN dispatch_message_id text NOT NULL DEFAULT '';
ALTER TABLE job_attempts ADD COLUMN waiting_reason text NOT NULL DEFAULT '';
ALTER TABLE job_attempts ADD COLUMN public_key bytea;
ALTER TABLE job_attempts ADD COLUMN csr bytea;
ALTER TABLE job_attempts ADD COLUMN csr_at timestamptz;

-- PINs an agent set on a token, as the agent sealed them to the coordinator's result key
-- (JSON of protocol.Sealed, bound to the job, attempt and purpose): never in clear. The
-- newest row of a token and purpose is the PIN the token has.
CREATE TABLE token_pins (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_serial text NOT NULL,
    purpose      text NOT NULL CHECK (purpose IN ('user_pin', 'so_pin')),
    job_id       text NOT NULL REFERENCES jobs (id),
    attempt      integer NOT NULL CHECK (attempt >= 1),
    sealed       json NOT NULL,
    recorded_at  timestamptz NOT NULL,
    revealed_at  timestamptz,
    UNIQUE (job_id, attempt, purpose)
);
CREATE INDEX token_pins_token ON token_pins (token_serial, purpose, id);

-- +goose Down
DROP TABLE token_pins;
ALTER TABLE job_attempts DROP COLUMN csr_at;
ALTER TABLE job_attempts DROP COLUMN csr;
ALTER TABLE job_attempts DROP COLUMN public_key;
ALTER TABLE job_attempts DROP COLUMN waiting_reason;
ALTER TABLE job_attempts DROP COLUMN dispatch_message_id;
