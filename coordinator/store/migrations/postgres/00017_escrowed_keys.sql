-- Escrowed encryption keys and the holders' encryption keys.
--
-- escrowed_keys: one archive (coordinator/escrow, its JSON form) per attempt of a
-- server_keygen job, written with the attempt's dispatch. The coordinator cannot open it:
-- it is sealed to the recovery certificates in use. state: pending (dispatched, not yet
-- on the token), active (the job succeeded), superseded (a new attempt made a new key, or
-- the job ended without it). recovered_to is where the last recovery put the key: a
-- token serial, or "officer" for a PKCS#12 handed to an officer.
--
-- holder_encryption_keys: the public keys others encrypt to, per holder: escrowed (a
-- server_keygen job succeeded) or registered (a register_certificate job read an existing
-- certificate from the holder's token).
-- key_requests: what a recover_key or register_certificate job is about, beyond the job
-- row: the escrowed key to recover and where to (a token, or "officer" for a PKCS#12),
-- or the CKA_ID of the certificate to register. delivered_key is the recovered key as an
-- officer's tool sealed it to the target agent (protocol.Sealed, JSON), for the attempt
-- delivered_attempt: the coordinator cannot open it.
-- Keep this file and ../sqlite/00017_escrowed_keys.sql describing the same schema.

-- +goose Up
CREATE TABLE escrowed_keys (
    id                 text PRIMARY KEY,
    job_id             text NOT NULL REFERENCES jobs (id),
    attempt            integer NOT NULL CHECK (attempt >= 1),
    holder_id          text NOT NULL REFERENCES users (id),
    token_serial       text NOT NULL DEFAULT '',
    key_id             text NOT NULL,
    certificate_serial text NOT NULL DEFAULT '',
    archive            bytea NOT NULL,
    state              text NOT NULL CHECK (state IN ('pending', 'active', 'superseded')),
    state_reason       text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL,
    state_since        timestamptz NOT NULL,
    recovered_to       text NOT NULL DEFAULT '',
    recovered_job_id   text NOT NULL DEFAULT '',
    recovered_at       timestamptz,
    UNIQUE (job_id, attempt)
);
CREATE INDEX escrowed_keys_holder ON escrowed_keys (holder_id);
CREATE INDEX escrowed_keys_token ON escrowed_keys (token_serial);

CREATE TABLE holder_encryption_keys (
    id                 text PRIMARY KEY,
    holder_id          text NOT NULL REFERENCES users (id),
    key_id             text NOT NULL,
    public_key         bytea NOT NULL,
    certificate        bytea NOT NULL,
    certificate_serial text NOT NULL DEFAULT '',
    token_serial       text NOT NULL DEFAULT '',
    source             text NOT NULL CHECK (source IN ('escrowed', 'registered')),
    job_id             text NOT NULL REFERENCES jobs (id) UNIQUE,
    escrowed_key_id    text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL
);
CREATE INDEX holder_encryption_keys_holder ON holder_encryption_keys (holder_id);

CREATE TABLE key_requests (
    job_id            text PRIMARY KEY REFERENCES jobs (id),
    escrowed_key_id   text NOT NULL DEFAULT '',
    target            text NOT NULL DEFAULT '' CHECK (target IN ('', 'token', 'officer')),
    cka_id            text NOT NULL DEFAULT '',
    delivered_key     bytea,
    delivered_attempt integer NOT NULL DEFAULT 0,
    delivered_by      text NOT NULL DEFAULT '',
    delivered_at      timestamptz
);

-- +goose Down
DROP TABLE key_requests;
DROP TABLE holder_encryption_keys;
DROP TABLE escrowed_keys;
