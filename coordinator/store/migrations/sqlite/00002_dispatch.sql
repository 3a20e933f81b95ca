-- What the dispatcher records per job attempt, and the PINs agents set on tokens.
-- Keep this file and ../postgres/00002_dispatch.sql describing the same schema.

-- +goose Up
-- The dispatch message written for an attempt (its outbox message ID), why an attempt is
-- not dispatched yet, the public key the agent reported at key_generated and the one CSR
-- accepted for the attempt.
ALTER TABLE job_attempts ADD COLUMN dispatch_message_id TEXT NOT NULL DEFAULT '';
ALTER TABLE job_attempts ADD COLUMN waiting_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE job_attempts ADD COLUMN public_key BLOB;
ALTER TABLE job_attempts ADD COLUMN csr BLOB;
ALTER TABLE job_attempts ADD COLUMN csr_at TEXT;

-- PINs an agent set on a token, as the agent sealed them to the coordinator's result key
-- (JSON of protocol.Sealed, bound to the job, attempt and purpose): never in clear. The
-- newest row of a token and purpose is the PIN the token has.
CREATE TABLE token_pins (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    token_serial TEXT NOT NULL,
    purpose      TEXT NOT NULL CHECK (purpose IN ('user_pin', 'so_pin')),
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    attempt      INTEGER NOT NULL CHECK (attempt >= 1),
    sealed       TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    revealed_at  TEXT,
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
